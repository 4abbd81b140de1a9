package sse

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestShutdownWithManyStreams shuts the broker down under 1,000 open
// streams: Shutdown returns within its deadline, every stream ends with its
// events and the close event, and every handler returns (goleak checks that
// nothing is left behind).
func TestShutdownWithManyStreams(t *testing.T) {
	const conns, events = 1000, 3
	needFiles(t, 2*conns+100)
	deadline := time.Now().Add(30 * time.Second)
	b := New[string]()
	h := &tracked{h: Handler(b, queryKey)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	streams := openStreams(t, srv.Listener.Addr().String(), conns, strconv.Itoa, deadline)
	h.waitActive(t, conns)
	for k := range conns {
		key := strconv.Itoa(k)
		for i := 1; i <= events; i++ {
			must(t, b.Enqueue(context.Background(), key, key+"/"+strconv.Itoa(i)))
		}
	}
	var readers sync.WaitGroup
	for k, s := range streams {
		readers.Go(func() {
			if err := s.expect(strconv.Itoa(k), events); err != nil {
				t.Error(err)
			}
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := b.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	readers.Wait()
	h.waitIdle(t)
	t.Logf("Shutdown with %d streams: %v", conns, time.Since(start).Round(time.Millisecond))
}

// TestShutdownDeadlineWithStalledStream: a stream whose client stopped
// reading cannot drain; Shutdown still returns at its deadline, and the
// handler ends.
func TestShutdownDeadlineWithStalledStream(t *testing.T) {
	b := New[string]()
	h := &tracked{h: Handler(b, queryKey, WithWriteTimeout(time.Minute))}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	s, err := dialStream(srv.Listener.Addr().String(), "k", time.Now().Add(patience))
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	big := strings.Repeat("x", 64<<10)
	for range 300 { // far more than the socket buffers hold; nobody reads
		must(t, b.Enqueue(context.Background(), "k", big))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := b.Shutdown(ctx); !errors.Is(err, ErrDropped) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want ErrDropped and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Shutdown took %v with a 300ms deadline", d)
	}
	s.conn.Close() // the handler is stuck in a write until the client goes
	h.waitIdle(t)
	if st := b.Stats(); st.Dropped == 0 {
		t.Fatalf("stats %+v: the undelivered events should count as dropped", st)
	}
}

// TestPanickingKeyFunction: a key function that panics gets its request a
// 500 and a log line, and the broker and the other streams carry on.
func TestPanickingKeyFunction(t *testing.T) {
	b := newBroker[string](t)
	var logs syncBuffer
	srv, _ := serve(t, b, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	c := open(t, srv.Client(), srv.URL, "k")
	enqueueSeq(t, b, "k", 1, 1)
	c.expectSeq(t, 1, 1)
	for range 3 {
		resp, err := srv.Client().Get(srv.URL + "?key=panic")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("panicking key function: %d, want 500", resp.StatusCode)
		}
	}
	if n := strings.Count(logs.String(), "key function panicked: key function exploded"); n != 3 {
		t.Fatalf("%d log lines for 3 panics:\n%s", n, logs.String())
	}
	enqueueSeq(t, b, "k", 2, 3)
	c.expectSeq(t, 2, 3)
	other := open(t, srv.Client(), srv.URL, "other")
	enqueueSeq(t, b, "other", 1, 1)
	other.expectSeq(t, 1, 1)
}
