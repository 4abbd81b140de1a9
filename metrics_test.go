package sse

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestMetrics: the counters move as streams open, resume, take over, end,
// and as requests are refused.
func TestMetrics(t *testing.T) {
	b := newBroker[string](t)
	var m Metrics
	srv, h := serve(t, b, WithMetrics(&m), WithHeartbeat(20*time.Millisecond))
	ctx := context.Background()

	c := open(t, srv.Client(), srv.URL, "k")
	enqueueSeq(t, b, "k", 1, 3)
	c.expectSeq(t, 1, 3)
	waitFor(t, "a heartbeat", func() bool { return m.Stats().Heartbeats > 0 })
	s := m.Stats()
	if s.StreamsOpen != 1 || s.StreamsServed != 1 || s.Events != 3 || s.Bytes == 0 {
		t.Fatalf("one stream of 3 events: %+v", s)
	}
	// The client comes back: a resume, which takes the key over.
	back := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", c.wireID(1))
	back.expectSeq(t, 2, 3)
	c.expectCut(t)
	waitFor(t, "the takeover", func() bool { return m.Stats().Takeovers == 1 })
	// Refusals, each with its reason.
	for _, q := range []string{"", "?key=secret", "?key=k"} { // 400, 403, 409
		resp, err := srv.Client().Get(srv.URL + q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	must(t, b.Close(ctx, "k"))
	back.expectClose(t)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
	req.Header.Set("Last-Event-ID", c.wireID(3))
	if resp, err := srv.Client().Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close() // 204
	}
	h.waitIdle(t)
	s = m.Stats()
	if s.StreamsOpen != 0 || s.StreamsServed != 2 || s.Resumes != 1 || s.Takeovers != 1 || s.Events != 5 {
		t.Fatalf("after the resume and the end: %+v", s)
	}
	for r, want := range map[Reason]uint64{RefusedBadRequest: 1, RefusedByKey: 1, RefusedConflict: 1, RefusedFinished: 1, RefusedNotFound: 0} {
		if s.Refused[r] != want {
			t.Errorf("refused %s: %d, want %d (%+v)", r, s.Refused[r], want, s.Refused)
		}
	}
	if len(Reasons()) != len(s.Refused) {
		t.Errorf("%d reasons, %d counted", len(Reasons()), len(s.Refused))
	}
	for _, r := range Reasons() {
		if strings.Contains(r.String(), " ") || r.String() == "unknown" {
			t.Errorf("reason %d has no label: %q", r, r)
		}
	}

	// A gap, and a client dropped by the write deadline.
	gb := newBroker[string](t, WithReplay(2, 1<<20))
	gsrv, gh := serve(t, gb, WithMetrics(&m))
	enqueueSeq(t, gb, "g", 1, 10)
	epoch := take(t, gb, "g", SubscribeRequest{}, 10)
	gc := open(t, gsrv.Client(), gsrv.URL, "g", "Last-Event-ID", epoch+"-1")
	if ev := gc.next(t); ev.Type != EventGap {
		t.Fatalf("got %+v, want a gap", ev)
	}
	gc.close()
	gh.waitIdle(t)
	if s := m.Stats(); s.Gaps != 1 {
		t.Fatalf("gaps %d, want 1", s.Gaps)
	}
	db := New[string]() // its stalled key's events will be dropped at Shutdown
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		defer cancel()
		db.Shutdown(ctx)
	})
	dh := &tracked{h: Handler(db, queryKey, WithMetrics(&m), WithWriteTimeout(100*time.Millisecond))}
	dsrv := httptest.NewUnstartedServer(dh)
	dsrv.Listener = smallBuffers{dsrv.Listener}
	dsrv.Start()
	t.Cleanup(dsrv.Close)
	dialStalled(t, dsrv.Listener.Addr().String(), "d")
	dh.waitActive(t, 1)
	big := strings.Repeat("x", 64<<10)
	for range 50 {
		must(t, db.Enqueue(ctx, "d", big))
	}
	dh.waitIdle(t)
	if s := m.Stats(); s.Dropped != 1 {
		t.Fatalf("dropped %d, want the client that stopped reading", s.Dropped)
	}
}

// waitFor waits, at most patience, until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, patience)
		}
		time.Sleep(time.Millisecond)
	}
}
