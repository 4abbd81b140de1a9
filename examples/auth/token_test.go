package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var testSecret = bytes.Repeat([]byte{7}, minSecret)

// A token opens its key until its expiry, to the second, and no later.
func TestTokenExpires(t *testing.T) {
	tk := tokens{secret: testSecret}
	now := time.Unix(1_800_000_000, 600_000_000)
	token, expires := tk.mint("alice", now.Add(time.Minute))
	if want := now.Add(time.Minute).Unix(); expires != want {
		t.Fatalf("expires %d, want %d (seconds, truncated)", expires, want)
	}
	exp := time.Unix(expires, 0)
	got, err := tk.check(token, "alice", now)
	if err != nil || !got.Equal(exp) {
		t.Fatalf("check at mint: %v, %v; want %v, nil", got, err, exp)
	}
	if _, err := tk.check(token, "alice", exp.Add(-time.Nanosecond)); err != nil {
		t.Errorf("check just before expiry: %v", err)
	}
	for _, at := range []time.Time{exp, exp.Add(time.Second), exp.Add(24 * time.Hour)} {
		if _, err := tk.check(token, "alice", at); !errors.Is(err, errTokenExpired) {
			t.Errorf("check at expiry+%v: %v, want %v", at.Sub(exp), err, errTokenExpired)
		}
	}
}

// A token is valid for its key only: replayed onto any other key, however
// close, it is refused; and a token of another secret is refused.
func TestTokenBoundToKey(t *testing.T) {
	tk := tokens{secret: testSecret}
	now := time.Unix(1_800_000_000, 0)
	token, _ := tk.mint("alice", now.Add(time.Minute))
	for _, key := range []string{"bob", "", "alic", "alice ", "Alice", "alice\x00", "\x00alice", "alicebob"} {
		if _, err := tk.check(token, key, now); !errors.Is(err, errTokenSignature) {
			t.Errorf("alice's token checked for key %q: %v, want %v", key, err, errTokenSignature)
		}
	}
	other := tokens{secret: bytes.Repeat([]byte{8}, minSecret)}
	if _, err := other.check(token, "alice", now); !errors.Is(err, errTokenSignature) {
		t.Errorf("checked under another secret: %v, want %v", err, errTokenSignature)
	}
	// The expiry cannot run into the key: a token for key "" that expires
	// at 1800000001 is no token for key "1" that expires at 180000000.
	t1, _ := tk.mint("", time.Unix(1800000001, 0))
	if _, err := tk.check(strings.Replace(t1, "1800000001", "180000000", 1), "1", now); err == nil {
		t.Errorf("a token whose expiry's last digit moved into the key was accepted")
	}
	// Keys with any bytes work.
	for _, key := range []string{"", "a.b", "a\x00b", "ключ", strings.Repeat("k", 1000)} {
		token, _ := tk.mint(key, now.Add(time.Minute))
		if _, err := tk.check(token, key, now); err != nil {
			t.Errorf("key %q: %v", key, err)
		}
	}
}

// Any change to a token makes it refused: every character replaced by
// every other one a URL may carry, characters added or removed, the expiry
// moved later, and signatures that are not in canonical base64.
func TestTokenTampered(t *testing.T) {
	tk := tokens{secret: testSecret}
	now := time.Unix(1_800_000_000, 0)
	token, expires := tk.mint("alice", now.Add(time.Minute))
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_.+/= %"
	tried := 0
	for i := range len(token) {
		for _, c := range []byte(alphabet) {
			if c == token[i] {
				continue
			}
			tampered := token[:i] + string(c) + token[i+1:]
			tried++
			if _, err := tk.check(tampered, "alice", now); err == nil {
				t.Fatalf("tampered token %q (character %d) accepted", tampered, i)
			} else if !errors.Is(err, errTokenMalformed) && !errors.Is(err, errTokenSignature) && !errors.Is(err, errTokenExpired) {
				t.Fatalf("tampered token: unexpected error %v", err)
			}
		}
	}
	t.Logf("%d tampered tokens refused", tried)

	e, sig, _ := strings.Cut(token, ".")
	later := strings.Replace(token, e, "1900000000", 1)
	if _, err := tk.check(later, "alice", now); !errors.Is(err, errTokenSignature) {
		t.Errorf("expiry moved later: %v, want %v", err, errTokenSignature)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(sig)
	for name, bad := range map[string]string{
		"empty":                "",
		"dot only":             ".",
		"no dot":               e + sig,
		"no signature":         e + ".",
		"no expiry":            "." + sig,
		"leading zero":         "0" + token,
		"sign":                 "+" + token,
		"negative":             "-" + token,
		"two dots":             token + ".",
		"suffix":               token + "A",
		"short signature":      token[:len(token)-1],
		"padded":               token + "=",
		"std base64":           e + "." + base64.RawStdEncoding.EncodeToString(raw),
		"non-canonical base64": e + "." + sig[:len(sig)-1] + string(nonCanonical(sig[len(sig)-1])),
		"expiry too long":      "1" + strings.Repeat("0", 18) + "." + sig,
		"space":                " " + token,
	} {
		if _, err := tk.check(bad, "alice", now); err == nil {
			t.Errorf("%s: %q accepted", name, bad)
		}
	}
	if _, err := tk.check(token, "alice", now); err != nil || expires == 0 {
		t.Fatalf("the original token: %v", err)
	}
}

// nonCanonical returns another last character of a 43-character base64url
// signature that decodes to the same bytes (its two spare bits set).
func nonCanonical(c byte) byte {
	const enc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	return enc[strings.IndexByte(enc, c)|1]
}
