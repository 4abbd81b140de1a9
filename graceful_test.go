package sse

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// recordingBroker records when it was shut down.
type recordingBroker struct {
	*Broker[string]
	at chan time.Time
}

func (r recordingBroker) Shutdown(ctx context.Context) error {
	r.at <- time.Now()
	return r.Broker.Shutdown(ctx)
}

// TestGraceful: one call before Serve makes shutdown end every stream with
// a jittered retry and no close, stop the server, then shut the brokers
// down, keeping the server's own BaseContext.
func TestGraceful(t *testing.T) {
	b := New[string]()
	rb := recordingBroker{b, make(chan time.Time, 1)}
	h := &tracked{h: Handler(b, queryKey)}
	srv := httptest.NewUnstartedServer(h)
	type ctxKey struct{}
	srv.Config.BaseContext = func(net.Listener) context.Context {
		return context.WithValue(context.Background(), ctxKey{}, "mine")
	}
	var kept bool
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kept = kept || r.Context().Value(ctxKey{}) == "mine"
		h.ServeHTTP(w, r)
	})
	shutdown := Graceful(srv.Config, rb)
	srv.Start()
	t.Cleanup(srv.Close)

	const streams = 20
	conns := make([]*client, streams)
	for i := range conns {
		b.Stream(strconv.Itoa(i))
		conns[i] = open(t, srv.Client(), srv.URL, strconv.Itoa(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	start := time.Now()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	retries := make(map[time.Duration]bool)
	for _, c := range conns {
		c.expectCut(t) // no close
		d, ok := c.events.Retry()
		if !ok || d < ShutdownRetryMin || d > ShutdownRetryMax {
			t.Fatalf("retry %v %v, want one in [%v, %v]", d, ok, ShutdownRetryMin, ShutdownRetryMax)
		}
		retries[d] = true
	}
	if len(retries) < streams/2 {
		t.Errorf("%d different retries for %d streams: not spread", len(retries), streams)
	}
	if at := <-rb.at; at.Before(start) || at.After(stopped) || h.active.Load() != 0 {
		t.Errorf("the broker was shut down at %v, the server stopped at %v, %d handlers running", at.Sub(start), stopped.Sub(start), h.active.Load())
	}
	if !kept {
		t.Error("the server's own BaseContext was not kept")
	}
	if _, err := b.Subscribe(ctx, "0", SubscribeRequest{}); err != ErrShutdown {
		t.Errorf("the broker after shutdown: %v", err)
	}
}
