package ssejs_test

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestLiveOnClosedKey: a FanOut reader that starts live on a closed key
// ends at once, with no event and no error, as the in-process broker's
// does, rather than waiting for an event that cannot come.
func TestLiveOnClosedKey(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 60*time.Second)
	if err := b.Enqueue(ctx, "k", "1", "2"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for ev, err := range b.Events(within(t, 5*time.Second), "k", sse.Live()) {
		t.Fatalf("after %v: %v %v, want the range to end", time.Since(start), ev, err)
	}
}

// TestCorruptClose: a FanOut reader that meets a Close message whose body
// does not decode ends with an error, not as if the key had finished.
func TestCorruptClose(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 30*time.Second)
	if err := b.Enqueue(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	epoch := sub.Epoch()
	sub.Close()
	// Three events announced, and the body ends within the first.
	m := &nats.Msg{Subject: "sse." + name + ".e.k" + base64.RawURLEncoding.EncodeToString([]byte("k")), Header: nats.Header{}, Data: []byte{5, 'a'}}
	m.Header.Set("Sse-Epoch", epoch)
	m.Header.Set("Sse-First", "2")
	m.Header.Set("Sse-Count", "3")
	m.Header.Set("Sse-Close", "1")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	var last error
	for ev, err := range b.Events(ctx, "k") {
		if err != nil {
			last = err
			continue
		}
		ids = append(ids, ev.ID)
	}
	if len(ids) != 1 || ids[0] != 1 {
		t.Errorf("events %v, want 1", ids)
	}
	if last == nil || errors.Is(last, sse.ErrTruncated) {
		t.Fatalf("the range ended with %v, want the corrupt message's error", last)
	}
}

// TestGapBeforeAMessageWithNoEvents: a FanOut key whose oldest message
// held has no events (as an empty Publish stored before v0 made it a
// no-op) still names, to a reader from its start, the events trimmed
// before it; the reader used to jump to the next ID with no gap.
func TestGapBeforeAMessageWithNoEvents(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut), ssejs.WithHistoryMessages(2))
	ctx := within(t, 30*time.Second)
	if err := b.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	epoch := sub.Epoch()
	sub.Close()
	// A message with no events after them; then 4 and the Close: the
	// history of two (three messages with the Close) no longer holds 1-3.
	m := &nats.Msg{Subject: "sse." + name + ".e.k" + base64.RawURLEncoding.EncodeToString([]byte("k")), Header: nats.Header{}}
	m.Header.Set("Sse-Epoch", epoch)
	m.Header.Set("Sse-First", "4")
	m.Header.Set("Sse-Count", "0")
	if _, err := js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := b.Enqueue(ctx, "k", "4"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	for _, from := range [][]sse.ReadOption{nil, {sse.After(0)}} {
		var got []string
		for ev, err := range b.Events(ctx, "k", from...) {
			var g *sse.GapError
			switch {
			case errors.As(err, &g):
				got = append(got, fmt.Sprintf("gap %d-%d", g.From, g.To))
			case err != nil:
				t.Fatal(err)
			default:
				got = append(got, strconv.FormatUint(ev.ID, 10))
			}
		}
		if want := "gap 1-3 4"; strings.Join(got, " ") != want && len(from) > 0 {
			t.Errorf("After(0): %q, want %q", strings.Join(got, " "), want)
		}
		if len(from) == 0 && (len(got) == 0 || got[len(got)-1] != "4") {
			t.Errorf("from the oldest held: %q, want it to end with 4", strings.Join(got, " "))
		}
	}
}
