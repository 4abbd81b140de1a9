package sse

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestRequestKeyChannel: a key a connection's request creates gets a
// channel of one event, so that an idle stream's key costs little; a key
// the server creates gets the configured buffer. Both deliver every event,
// in order.
func TestRequestKeyChannel(t *testing.T) {
	b := newBroker[string](t)
	ctx := context.Background()
	sub, err := b.Subscribe(ctx, "req", SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if c := cap(b.Stream("req")); c != requestBuffer {
		t.Fatalf("a request key's channel holds %d events, want %d", c, requestBuffer)
	}
	if c := cap(b.Stream("server")); c != DefaultBuffer {
		t.Fatalf("a server key's channel holds %d events, want %d", c, DefaultBuffer)
	}
	for i := range 100 {
		if err := b.Enqueue(ctx, "req", "a", "b"); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := b.Close(ctx, "req"); err != nil {
		t.Fatal(err)
	}
	var next uint64 = 1
	for {
		evs, gap, err := sub.Next(ctx, nil, nil, 1<<20)
		if gap != (Gap{}) {
			t.Fatalf("gap %+v", gap)
		}
		for _, ev := range evs {
			if ev.ID != next {
				t.Fatalf("got ID %d, want %d", ev.ID, next)
			}
			next++
		}
		if err != nil {
			if next != 201 {
				t.Fatalf("ended with %v after %d events, want 200", err, next-1)
			}
			return
		}
	}
}

// BenchmarkRequestKeyBurst measures what a request key's small channel
// costs a burst: batches of 64 events published to a key with a Handler's
// stream attached, on a key the server opened (a channel of DefaultBuffer)
// or one the request created (requestBuffer). It reports the flushes per
// batch: the feeder refills the small channel while the stream takes
// from it, so the stream writes a burst in more, smaller pieces.
//
//	go test -run '^$' -bench RequestKeyBurst -count 6 .
func BenchmarkRequestKeyBurst(b *testing.B) {
	for _, open := range []bool{true, false} {
		name := "key=request"
		if open {
			name = "key=server"
		}
		b.Run(name, func(b *testing.B) {
			br := newBroker[string](b)
			ctx, cancel := context.WithCancel(context.Background())
			if open {
				must(b, br.Open(ctx, "k"))
			}
			w := &flushSignal{header: http.Header{}, flushed: make(chan int)}
			served := make(chan struct{})
			go func() {
				defer close(served)
				Handler(br, queryKey, WithHeartbeat(0)).ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/?key=k", nil))
			}()
			defer func() { cancel(); <-served }()
			<-w.flushed // the headers
			evs := make([]Event, 64)
			for i := range evs {
				evs[i] = Event{Name: "n", Data: "some data of an event"}
			}
			sent, flushes := 0, 0
			for b.Loop() {
				if err := br.Publish(ctx, "k", evs...); err != nil {
					b.Fatal(err)
				}
				for sent += len(evs); ; {
					flushes++
					if <-w.flushed >= sent {
						break
					}
				}
			}
			b.ReportMetric(float64(flushes)/float64(b.N), "flushes/batch")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(sent), "ns/event")
		})
	}
}
