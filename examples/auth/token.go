package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// tokens mints and checks stream tokens. A token lets whoever holds it open
// one key's stream until it expires:
//
//	<expiry>.<signature>
//
// expiry in Unix seconds, signature the unpadded base64url HMAC-SHA256,
// under the server's secret, of the purpose, the expiry and the key. The
// token does not name its key (the URL does), but it is valid for that key
// only, and changing its expiry breaks its signature. It holds nothing
// secret: only the secret makes one.
type tokens struct {
	secret []byte // at least minSecret bytes; immutable
}

// minSecret is the shortest secret a server may sign with: HMAC-SHA256's
// own size.
const minSecret = sha256.Size

// tokenPurpose starts what a token signs, so that nothing else the server
// signs with the same secret (a cookie, another kind of token) is ever
// taken for a stream token.
const tokenPurpose = "rocketqueue/sse examples/auth stream token v1\x00"

// The reasons a token is refused. They go to the server's log: none says
// anything of the token itself.
var (
	errTokenMalformed = errors.New("stream token malformed")
	errTokenSignature = errors.New("stream token's signature does not match (tampered, another key's, or another secret's)")
	errTokenExpired   = errors.New("stream token expired")
)

// mint returns a token for key that expires at exp, to the second below.
func (t tokens) mint(key string, exp time.Time) (token string, expires int64) {
	expires = exp.Unix()
	e := strconv.FormatInt(expires, 10)
	return e + "." + base64.RawURLEncoding.EncodeToString(t.sign(key, e)), expires
}

//readme:token

// sign returns the signature of a token for key that expires at exp, in
// its decimal form. exp holds digits only, so that it cannot run into the
// key: no two (exp, key) pairs sign the same bytes.
func (t tokens) sign(key, exp string) []byte {
	m := hmac.New(sha256.New, t.secret)
	m.Write([]byte(tokenPurpose))
	m.Write([]byte(exp))
	m.Write([]byte{0})
	m.Write([]byte(key))
	return m.Sum(nil)
}

// check returns the expiry of token if it is a token for key, not expired
// at now.
func (t tokens) check(token, key string, now time.Time) (time.Time, error) {
	e, sig, ok := strings.Cut(token, ".")
	exp, eok := parseExpiry(e)
	if !ok || !eok || len(sig) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return time.Time{}, errTokenMalformed
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(sig)
	if err != nil {
		return time.Time{}, errTokenMalformed
	}
	// In constant time: how much of a forged signature matches must not
	// show in how long the refusal takes.
	if !hmac.Equal(got, t.sign(key, e)) {
		return time.Time{}, errTokenSignature
	}
	if !now.Before(exp) {
		return time.Time{}, errTokenExpired
	}
	return exp, nil
}

//readme:end

// parseExpiry reads a token's expiry: a decimal number of seconds, in its
// one canonical form (digits only, no leading zero, no sign).
func parseExpiry(e string) (time.Time, bool) {
	if e == "" || len(e) > 18 || e[0] == '0' && len(e) > 1 {
		return time.Time{}, false
	}
	for i := 0; i < len(e); i++ {
		if e[i] < '0' || e[i] > '9' {
			return time.Time{}, false
		}
	}
	n, err := strconv.ParseInt(e, 10, 64)
	return time.Unix(n, 0), err == nil
}

// tokenExpiry returns the expiry a token says it has, unchecked: the key
// function checks it.
func tokenExpiry(token string) (time.Time, bool) {
	e, _, ok := strings.Cut(token, ".")
	if !ok {
		return time.Time{}, false
	}
	return parseExpiry(e)
}
