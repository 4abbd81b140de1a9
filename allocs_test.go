package sse

import (
	"bytes"
	"context"
	"iter"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"
)

// allocsPer runs f, which passes msgs messages, n times after a warm-up,
// and fails t if the runs allocated once per hundred messages or more:
// testing.AllocsPerRun rounds down, so it would pass 0.9 allocations a
// run. The few stray allocations of the runtime are allowed; one per
// message is not. Under the race detector, which makes sync.Pool drop
// what it is given at random, so that the buffers a write borrows are
// made again now and then, the bound is once per message.
func allocsPer(t *testing.T, n, msgs int, f func()) {
	t.Helper()
	for range 200 { // warm up: buffers, pools and the inbox reach their size
		f()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		f()
	}
	runtime.ReadMemStats(&after)
	per := 100
	if raceEnabled {
		per = 1
	}
	if allocs := after.Mallocs - before.Mallocs; allocs >= uint64(n*msgs/per) {
		t.Fatalf("%d allocations for %d messages, want 0 a message", allocs, n*msgs)
	}
}

// TestPublishEventsAllocs: Publish → Events in Queue mode allocates nothing
// per message, one at a time, or in batches that go through the key's
// overflow and feeder, under either policy.
func TestPublishEventsAllocs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		opts  []Option
		batch int
	}{
		{"default/1", nil, 1},
		{"default/64", nil, 64},
		{"block/1", []Option{WithMaxPending(64, Block)}, 1},
		{"block/200", []Option{WithMaxPending(64, Block)}, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker[int](t, tc.opts...)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			next, stop := iter.Pull2(b.Events(ctx, 1))
			defer stop()
			evs := make([]Event, tc.batch)
			for i := range evs {
				evs[i] = Event{Name: "n", Data: "x"}
			}
			// A producer of its own, as a batch beyond the bound waits for
			// the reader.
			todo, done := make(chan struct{}), make(chan error)
			go func() {
				for range todo {
					done <- b.Publish(ctx, 1, evs...)
				}
			}()
			defer close(todo)
			allocsPer(t, 20_000/tc.batch, tc.batch, func() {
				todo <- struct{}{}
				for range tc.batch {
					if _, err, ok := next(); !ok || err != nil {
						t.Fatal(err)
					}
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}
			})
		})
	}
}

// flushSignal is a ResponseWriter that keeps nothing it is sent: it
// counts the events written, and each Flush sends the count so far.
type flushSignal struct {
	header  http.Header
	events  int // the handler's goroutine only
	flushed chan int
}

var dataField = []byte("\ndata: ")

func (f *flushSignal) Header() http.Header { return f.header }
func (f *flushSignal) WriteHeader(int)     {}
func (f *flushSignal) Write(p []byte) (int, error) {
	f.events += bytes.Count(p, dataField)
	return len(p), nil
}
func (f *flushSignal) Flush()                           { f.flushed <- f.events }
func (f *flushSignal) SetWriteDeadline(time.Time) error { return nil }

// TestHandlerWriteAllocs: the handler's write path, from Publish to the
// flush of the event on the wire, allocates nothing per message, one at a
// time or in batches, on a key the server made or one the request made.
func TestHandlerWriteAllocs(t *testing.T) {
	for _, tc := range []struct {
		name  string
		open  bool
		batch int
	}{{"server-key/1", true, 1}, {"server-key/64", true, 64}, {"request-key/1", false, 1}, {"request-key/64", false, 64}} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBroker[string](t)
			ctx, cancel := context.WithCancel(context.Background())
			if tc.open {
				must(t, b.Open(ctx, "k"))
			}
			w := &flushSignal{header: http.Header{}, flushed: make(chan int)}
			served := make(chan struct{})
			go func() {
				defer close(served)
				Handler(b, queryKey, WithHeartbeat(0)).ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/?key=k", nil))
			}()
			defer func() { cancel(); <-served }()
			<-w.flushed // the headers
			evs := make([]Event, tc.batch)
			for i := range evs {
				evs[i] = Event{Name: "n", Data: "some data of an event"}
			}
			sent := 0
			allocsPer(t, 20_000/tc.batch, tc.batch, func() {
				if err := b.Publish(ctx, "k", evs...); err != nil {
					t.Fatal(err)
				}
				for sent += tc.batch; <-w.flushed < sent; {
				}
			})
		})
	}
}
