package ssejs_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// A Broker reports its figures as an sse.Broker does, so that what reads
// one (sseprom's Statser) reads the other.
var _ interface{ Stats() sse.Stats } = (*ssejs.Broker[string])(nil)

// TestStats: Stats counts the events of this process's calls that were
// stored and those refused by a closed key, and the keys it reads; the
// fields it cannot know stay 0, in both modes.
func TestStats(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			ctx := within(t, 30*time.Second)
			name := uniqueName()
			b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
			other := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
			if s := b.Stats(); s != (sse.Stats{}) {
				t.Fatalf("a new broker's Stats: %+v, want zeros", s)
			}
			if err := b.Publish(ctx, "k", sse.Event{Data: "1"}, sse.Event{Data: "2"}); err != nil {
				t.Fatal(err)
			}
			if err := b.Enqueue(ctx, "k", "3"); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			if err := b.Enqueue(ctx, "k", "4", "5"); !errors.Is(err, sse.ErrClosed) {
				t.Fatalf("Enqueue to a closed key: %v, want ErrClosed", err)
			}
			if s := b.Stats(); s != (sse.Stats{Enqueued: 3, Discarded: 2}) {
				t.Errorf("after 3 events stored and 2 refused: %+v", s)
			}
			if s := other.Stats(); s != (sse.Stats{}) {
				t.Errorf("another process's Stats: %+v, want zeros: it made no call", s)
			}

			// A key read here counts while it is read.
			if err := b.Enqueue(ctx, "read", "x"); err != nil {
				t.Fatal(err)
			}
			for _, err := range other.Events(ctx, "read") {
				if err != nil {
					t.Fatal(err)
				}
				if s := other.Stats(); s.Keys != 1 {
					t.Errorf("while it reads a key: Keys %d, want 1", s.Keys)
				}
				break
			}
			waitFor(t, "the reader's key to be let go", func() bool { return other.Stats().Keys == 0 })
		})
	}
}

// panicMessage returns what f panics with, as a string, or "" if it does
// not panic.
func panicMessage(f func()) (msg string) {
	defer func() {
		if v := recover(); v != nil {
			msg = fmt.Sprint(v)
		}
	}()
	f()
	return ""
}

// waitFor waits up to 10 s for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestOptionsPanic: an option's invalid constant argument, and options that
// contradict each other, are the program's error: they panic, the option
// itself when it can tell, or New, before it touches NATS.
func TestOptionsPanic(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	ctx := within(t, 30*time.Second)
	for name, f := range map[string]func(){
		"empty name":                   func() { ssejs.WithName("") },
		"name with a dot":              func() { ssejs.WithName("a.b") },
		"name of 33":                   func() { ssejs.WithName("abcdefghijklmnopqrstuvwxyz0123456") },
		"unknown mode":                 func() { ssejs.WithMode(sse.Mode(7)) },
		"history of 0":                 func() { ssejs.WithHistoryMessages(0) },
		"negative replay":              func() { ssejs.WithReplayEvents(-1) },
		"max age 0":                    func() { ssejs.WithMaxAge(0) },
		"unknown storage":              func() { ssejs.WithStorage(jetstream.StorageType(7)) },
		"replicas 0":                   func() { ssejs.WithReplicas(0) },
		"duplicate window of 1m":       func() { ssejs.WithDuplicateWindow(time.Minute) },
		"timeout 0":                    func() { ssejs.WithTimeout(0) },
		"lease of 1ms":                 func() { ssejs.WithLease(time.Millisecond) },
		"event size 0":                 func() { ssejs.WithMaxEventSize(0) },
		"nil codec":                    func() { ssejs.WithCodec[point](nil) },
		"readers 0":                    func() { ssejs.WithMaxReaders(0) },
		"max bytes below 1 MiB":        func() { ssejs.WithMaxBytes(1 << 19) },
		"nil option":                   func() { ssejs.New[string](ctx, js, ssejs.WithName(uniqueName()), nil) },
		"max age below the dup window": func() { ssejs.New[string](ctx, js, ssejs.WithName(uniqueName()), ssejs.WithMaxAge(time.Minute)) },
		"dup window above the age": func() {
			ssejs.New[string](ctx, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut), ssejs.WithDuplicateWindow(2*time.Hour))
		},
		"no codec": func() { ssejs.New[point](ctx, js, ssejs.WithName(uniqueName())) },
		"a codec of another key type": func() {
			ssejs.New[point](ctx, js, ssejs.WithName(uniqueName()), ssejs.WithCodec[string](stringCodec{}))
		},
	} {
		if msg := panicMessage(f); !strings.HasPrefix(msg, "ssejs: ") {
			t.Errorf("%s: panic %q, want one of ssejs's", name, msg)
		}
	}
}
