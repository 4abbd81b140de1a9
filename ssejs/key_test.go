package ssejs_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

type point struct{ X, Y int32 }

type pointCodec struct{}

func (pointCodec) Encode(p point) ([]byte, error) {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, uint32(p.X)), uint32(p.Y)), nil
}

func (pointCodec) Decode(b []byte) (point, error) {
	if len(b) != 8 {
		return point{}, errors.New("want 8 bytes")
	}
	return point{int32(binary.BigEndian.Uint32(b)), int32(binary.BigEndian.Uint32(b[4:]))}, nil
}

var token = regexp.MustCompile(`^k[A-Za-z0-9_-]*$`)

type stringCodec struct{}

func (stringCodec) Encode(s string) ([]byte, error) { return []byte(s), nil }
func (stringCodec) Decode(b []byte) (string, error) { return string(b), nil }

// TestTokens: keys of any value map to subject tokens and back.
func TestTokens(t *testing.T) {
	seen := make(map[string]string)
	for _, k := range []string{"", "a", "a.b", "*", ">", "a b", "ünïcødé", "日本", "\x00\xff", "k", "a.*.>", strings.Repeat("x", 700)} {
		tok, err := ssejs.Token[string](stringCodec{}, k)
		if err != nil {
			t.Fatal(err)
		}
		if !token.MatchString(tok) {
			t.Errorf("%q → %q, not a valid token", k, tok)
		}
		if prev, ok := seen[tok]; ok {
			t.Errorf("%q and %q share token %q", prev, k, tok)
		}
		seen[tok] = k
		back, err := ssejs.KeyOf[string](stringCodec{}, tok)
		if err != nil || back != k {
			t.Errorf("%q → %q → %q, %v", k, tok, back, err)
		}
	}
	if _, err := ssejs.Token[string](stringCodec{}, strings.Repeat("x", 2000)); !errors.Is(err, sse.ErrInvalidKey) {
		t.Errorf("a 2000-byte key: %v, want ErrInvalidKey", err)
	}
	p := point{-3, 7}
	tok, _ := ssejs.Token[point](pointCodec{}, p)
	if back, err := ssejs.KeyOf[point](pointCodec{}, tok); err != nil || back != p {
		t.Errorf("%v → %q → %v, %v", p, tok, back, err)
	}
}

type jobID string

// TestKeyTypes: strings and integers of any kind need no codec, other
// types do (New panics without one); each round-trips through a broker,
// special keys included.
func TestKeyTypes(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	ctx := within(t, 30e9)
	if !panics(func() { ssejs.New[point](ctx, js, ssejs.WithName(uniqueName())) }) {
		t.Error("New[point] without a codec did not panic")
	}
	if !panics(func() {
		ssejs.New[point](ctx, js, ssejs.WithName(uniqueName()), ssejs.WithCodec[string](stringCodec{}))
	}) {
		t.Error("New[point] with a codec of strings did not panic")
	}
	sb := newBroker[jobID](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut))
	for _, k := range []jobID{"", "a.b", "*", ">", "a b", "ünïcødé"} {
		roundTrip(t, sb, k)
	}
	roundTrip(t, newBroker[int8](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut)), -128)
	roundTrip(t, newBroker[uint64](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut)), 1<<63)
	roundTrip(t, newBroker[point](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut), ssejs.WithCodec[point](pointCodec{})), point{1, -1})
}

// panics reports whether f panics.
func panics(f func()) (panicked bool) {
	defer func() { panicked = recover() != nil }()
	f()
	return false
}

// roundTrip publishes an event to key and a neighbour, and reads key's
// alone back.
func roundTrip[K comparable](t *testing.T, b *ssejs.Broker[K], key K) {
	t.Helper()
	ctx := within(t, 30e9)
	data := fmt.Sprintf("for %v", key)
	if err := b.Enqueue(ctx, key, data); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, key); err != nil {
		t.Fatal(err)
	}
	var got []string
	for ev, err := range b.Events(ctx, key) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev.Data)
	}
	if len(got) != 1 || got[0] != data {
		t.Errorf("key %v: read %q, want [%q]", key, got, data)
	}
}
