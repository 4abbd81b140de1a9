package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rocketqueue/sse/ssetest"
)

// take attaches a subscription to key, as a handler does, takes n events
// (all that are ready, at least n) and records them, then detaches without
// anyone having seen them. It returns the key's epoch.
func take(t *testing.T, b *Broker[string], key string, req SubscribeRequest, n int) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	sub, err := b.Subscribe(ctx, key, req)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var buf []Event
	for got := 0; got < n; {
		evs, _, err := sub.Next(ctx, buf, nil, math.MaxInt)
		got += len(evs)
		if err == io.EOF && got < n || err != nil && err != io.EOF {
			t.Fatalf("took %d of %d events: %v", got, n, err)
		}
		buf = evs
	}
	return sub.Epoch()
}

// missed returns what sub sends first, as a handler would: the gap and the
// events an earlier connection took and the client may not have received.
// Nothing else must be ready.
func missed(t *testing.T, sub Subscription) (Gap, []Event) {
	t.Helper()
	ready := make(chan time.Time, 1)
	ready <- time.Time{} // if nothing is to be sent again, Next returns at once
	evs, gap, err := sub.Next(context.Background(), nil, ready, math.MaxInt)
	if err != nil {
		t.Fatal(err)
	}
	return gap, evs
}

// TestResumeAfterCutConnections is a client on a bad network: each
// connection is cut after a random number of bytes, often mid-event, and the
// client reconnects with the last ID it dispatched, as a browser does, while
// a producer keeps going at about 5,000 events a second. It must end with
// every event exactly once, in order. What a dead connection took and never
// delivered must fit in the default replay window: at this rate it does.
func TestResumeAfterCutConnections(t *testing.T) {
	b := newBroker[string](t) // default settings
	srv, h := serve(t, b)
	const total = 3000
	go func() {
		for i := 1; i <= total; i++ {
			if err := b.Enqueue(context.Background(), "k", strconv.Itoa(i)); err != nil {
				t.Error(err)
				return
			}
			if i%5 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		if err := b.Close(context.Background(), "k"); err != nil {
			t.Error(err)
		}
	}()

	rng := rand.New(rand.NewPCG(1, 2))
	var got []ssetest.Event
	last := "0" // the first request says, by query, that it has nothing yet
	var stale []*http.Response
	var cancels []context.CancelFunc
	defer func() {
		for _, r := range stale {
			r.Body.Close()
		}
		for _, cancel := range cancels {
			cancel()
		}
	}()
	for conn := 0; ; conn++ {
		if conn > 10*total {
			t.Fatal("too many connections")
		}
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		cancels = append(cancels, cancel)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"?key=k&lastEventId=0", nil)
		if conn > 0 {
			req.Header.Set("Last-Event-ID", last) // the header wins over the query
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusNoContent {
			resp.Body.Close()
			break
		}
		if err := ssetest.CheckResponse(resp); err != nil {
			t.Fatal(err)
		}
		r := ssetest.NewReader(io.LimitReader(resp.Body, int64(1+rng.IntN(400))))
		closed := false
		for {
			ev, err := r.Next()
			if err != nil {
				break // cut, mid-event or not; the partial event is dropped
			}
			if ev.Type == "gap" {
				t.Fatalf("gap %s with the default window", ev.Data)
			}
			if ev.Type == "close" {
				closed = true
				break
			}
			got = append(got, ev)
			last = ev.ID
		}
		if rng.IntN(3) == 0 {
			// Leave the connection open but unread, as a dead network does:
			// the next request must take the key over.
			stale = append(stale, resp)
		} else {
			resp.Body.Close()
		}
		if closed {
			break
		}
	}
	for _, r := range stale {
		r.Body.Close()
	}
	stale = nil
	if len(got) != total {
		t.Fatalf("got %d events, want %d", len(got), total)
	}
	for i, ev := range got {
		if want := strconv.Itoa(i + 1); seqOf(ev.ID) != want || ev.Data != want {
			t.Fatalf("event %d is %+v, want %s", i, ev, want)
		}
	}
	h.waitIdle(t)
}

func TestResumeReplaysWhatTheClientMissed(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	enqueueSeq(t, b, "k", 1, 5)
	epoch := take(t, b, "k", SubscribeRequest{}, 5) // a connection took 1-5 and died

	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", epoch+"-2")
	c.expectSeq(t, 3, 5) // replayed
	enqueueSeq(t, b, "k", 6, 6)
	c.expectSeq(t, 6, 6) // then live
	c.close()

	// The client confirmed 5 by resuming from it: only 6 is replayed now.
	c = open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", epoch+"-5")
	c.expectSeq(t, 6, 6)
}

func TestResumeGap(t *testing.T) {
	b := newBroker[string](t, WithReplay(4, 1<<20))
	srv, _ := serve(t, b)
	enqueueSeq(t, b, "k", 1, 22)
	// A client read 1-22 but lost 3-22 on the way (say, a proxy buffered
	// them when the connection died): it comes back from 2.
	first := open(t, srv.Client(), srv.URL, "k")
	first.expectSeq(t, 1, 22)
	first.close()

	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", first.wireID(2))
	if ev := c.next(t); ev.Type != "gap" || ev.Data != `{"from":3,"to":18}` || ev.ID != "18" {
		t.Fatalf("got %+v, want the gap 3-18", ev)
	}
	c.expectSeq(t, 19, 22) // the window's 4
	enqueueSeq(t, b, "k", 23, 23)
	c.expectSeq(t, 23, 23)
}

// TestDefaultReplayWindow: by default the window is bounded by bytes, 16
// MiB of events counted as 48 bytes plus their Name and Data.
func TestDefaultReplayWindow(t *testing.T) {
	if DefaultReplayBytes != 16<<20 || DefaultReplayEvents != DefaultReplayBytes/48 || DefaultReplayBudget != 512<<20 {
		t.Fatalf("defaults %d events, %d bytes, budget %d: not the documented 349,525, 16 MiB and 512 MiB",
			DefaultReplayEvents, DefaultReplayBytes, DefaultReplayBudget)
	}
	b := newBroker[string](t) // default settings
	const size = 1024
	const fits = DefaultReplayBytes / (48 + size)
	const n = fits + 100
	data := func(id int) string { s := strconv.Itoa(id); return s + strings.Repeat(" ", size-len(s)) }
	for i := 1; i <= n; i++ {
		must(t, b.Enqueue(context.Background(), "k", data(i)))
	}
	take(t, b, "k", SubscribeRequest{}, n) // a connection took all, then died
	sub, err := b.Subscribe(context.Background(), "k", SubscribeRequest{Resume: true, LastID: 0})
	must(t, err)
	defer sub.Close()
	gap, missed := missed(t, sub)
	if want := (Gap{From: 1, To: 100}); gap != want {
		t.Fatalf("gap %+v, want %+v", gap, want)
	}
	if len(missed) != fits {
		t.Fatalf("%d events replayed, want the %d that fit in 16 MiB", len(missed), fits)
	}
	for i, ev := range missed {
		if ev.ID != uint64(101+i) || ev.Data != data(101+i) {
			t.Fatalf("replayed event %d is %d, want %d", i, ev.ID, 101+i)
		}
	}
	if st := b.Stats(); st.Replay != fits*(48+size) {
		t.Fatalf("Stats.Replay %d, want %d", st.Replay, fits*(48+size))
	}
}

func TestResumeUnusableLastEventID(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	for i, c := range []struct{ name, header, query string }{
		{"text", "abc", ""},
		{"negative", "-1", ""},
		{"plus sign", "+1", ""},
		{"too big", "18446744073709551616", ""},
		{"huge", "99999999999999999999999999", ""},
		{"empty header wins", "", "0"},
		{"inner space", "1 2", ""}, // (HTTP trims outer spaces)
		{"exponent", "1e3", ""},
		{"hex", "0x1", ""},
		{"future", "EPOCH-1000", ""},
		{"no epoch before the dash", "-3", ""},
		{"epoch not alphanumeric", "a_b-1", ""},
		{"two dashes", "EPOCH--1", ""},
		{"text query", "-", "abc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			key := "k" + strconv.Itoa(i)
			enqueueSeq(t, b, key, 1, 3)
			epoch := take(t, b, key, SubscribeRequest{}, 3) // retained: 1-3
			c.header = strings.ReplaceAll(c.header, "EPOCH", epoch)
			u := srv.URL + "?key=" + key
			if c.query != "" {
				u += "&lastEventId=" + url.QueryEscape(c.query)
			}
			req, _ := http.NewRequest(http.MethodGet, u, nil)
			if c.header != "-" {
				req.Header["Last-Event-Id"] = []string{c.header}
			}
			ctx, cancel := context.WithTimeout(context.Background(), patience)
			defer cancel()
			resp, err := srv.Client().Do(req.WithContext(ctx))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if err := ssetest.CheckResponse(resp); err != nil {
				t.Fatal(err) // no 500, no refusal
			}
			// Treated as no ID: live events only, nothing replayed.
			r := ssetest.NewReader(resp.Body)
			enqueueSeq(t, b, key, 4, 4)
			if ev, err := r.Next(); err != nil || ev.ID != epoch+"-4" {
				t.Fatalf("got %+v %v, want the live event 4", ev, err)
			}
		})
	}
}

func TestResumeClosedKey(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	enqueueSeq(t, b, "k", 1, 3)
	must(t, b.Close(context.Background(), "k"))
	epoch := take(t, b, "k", SubscribeRequest{}, 3) // taken, never seen

	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", epoch+"-1")
	c.expectSeq(t, 2, 3)
	c.expectClose(t)
	resp, err := srv.Client().Do(func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
		req.Header.Set("Last-Event-ID", epoch+"-3")
		return req
	}())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("a client with every event: %d, want 204", resp.StatusCode)
	}
}

// TestInProcessReadsAreGapsOverSSE: events read in process cannot be
// replayed to an SSE client that resumes before them: it gets a gap.
func TestInProcessReadsAreGapsOverSSE(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	enqueueSeq(t, b, "k", 1, 2)
	recv(t, b.Stream("k"), 2) // read once, in process
	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", "0")
	enqueueSeq(t, b, "k", 3, 3)
	if ev := c.next(t); ev.Type != EventGap || ev.Data != `{"from":1,"to":2}` || ev.ID != "2" {
		t.Fatalf("got %+v, want the gap 1-2", ev)
	}
	c.expectSeq(t, 3, 3)
}

func TestTakeoverWaitsForTheOldConnection(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t)
		ctx := context.Background()
		old, err := b.Subscribe(ctx, "k", SubscribeRequest{})
		must(t, err)
		if _, err := b.Subscribe(ctx, "k", SubscribeRequest{}); !errors.Is(err, ErrBusy) {
			t.Fatalf("second subscription: %v, want ErrBusy", err)
		}
		type result struct {
			sub Subscription
			err error
		}
		enqueueSeq(t, b, "k", 1, 1)
		evs, _, err := old.Next(ctx, nil, nil, math.MaxInt) // the old one takes 1
		if err != nil || len(evs) != 1 {
			t.Fatalf("the old subscription took %v, %v", evs, err)
		}
		next := make(chan result, 1)
		go func() {
			sub, err := b.Subscribe(ctx, "k", SubscribeRequest{Resume: true, Takeover: true})
			next <- result{sub, err}
		}()
		synctest.Wait() // the takeover waits, and only for the old subscription
		select {
		case r := <-next:
			t.Fatalf("takeover attached (%v) while the old subscription was still attached", r.err)
		default:
		}
		if _, _, err := old.Next(ctx, nil, nil, math.MaxInt); !errors.Is(err, ErrReplaced) {
			t.Fatalf("the old subscription's Next: %v, want ErrReplaced", err)
		}
		old.Close()
		r := <-next
		must(t, r.err)
		defer r.sub.Close()
		if _, got := missed(t, r.sub); len(got) != 1 || got[0].ID != 1 {
			t.Fatalf("missed %v, want the event the old subscription took", got)
		}
	})
}

func TestSubscribeCancelledWhileWaiting(t *testing.T) {
	b := newBroker[string](t)
	old, err := b.Subscribe(context.Background(), "k", SubscribeRequest{})
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Subscribe(ctx, "k", SubscribeRequest{Resume: true, Takeover: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting takeover: %v, want DeadlineExceeded", err)
	}
	old.Close()
	// The abandoned takeover must not hold the key.
	sub, err := b.Subscribe(context.Background(), "k", SubscribeRequest{})
	must(t, err)
	sub.Close()
}

func TestReplayWindowIsLazy(t *testing.T) {
	b := New[string]()
	enqueueSeq(t, b, "k", 1, 3)
	recv(t, b.Stream("k"), 3)
	b.Stream("sse") // a server key: a request key would be forgotten
	take(t, b, "sse", SubscribeRequest{}, 0)
	must(t, b.Shutdown(context.Background()))
	// The loop has returned: its state can be read.
	if b.loop.topics["k"].session != nil {
		t.Error("a key never streamed over SSE has a session")
	}
	if b.loop.topics["sse"].session == nil {
		t.Error("a key streamed over SSE has no session")
	}
}

// TestResumeFirstConnectionWithQueryID: a page that opens its stream with
// lastEventId=0 loses nothing even if its first connection dies before the
// browser dispatched an event (the reconnection then has no header).
func TestResumeFirstConnectionWithQueryID(t *testing.T) {
	b := newBroker[string](t)
	srv, h := serve(t, b)
	enqueueSeq(t, b, "k", 1, 3)
	resp, err := srv.Client().Get(srv.URL + "?key=k&lastEventId=0")
	must(t, err)
	r := ssetest.NewReader(io.LimitReader(resp.Body, 5)) // cut inside event 1
	if ev, err := r.Next(); err == nil {
		t.Fatalf("dispatched %+v from a cut event", ev)
	}
	resp.Body.Close()
	h.waitIdle(t)
	c := open(t, srv.Client(), srv.URL, "k&lastEventId=0") // same URL, no header
	c.expectSeq(t, 1, 3)
}

// writeWatch wraps a handler so that a test can tell when one of its
// writes has been blocked for a while.
type writeWatch struct {
	h     http.Handler
	since atomic.Int64 // when the Write in progress began, in Unix nanoseconds; 0 if none
}

func (ww *writeWatch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ww.h.ServeHTTP(watchedWriter{w, ww}, r)
}

// blocked waits until a Write has lasted d.
func (ww *writeWatch) blocked(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for {
		if since := ww.since.Load(); since != 0 && time.Since(time.Unix(0, since)) >= d {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no write blocked for %v within %v", d, patience)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type watchedWriter struct {
	http.ResponseWriter
	ww *writeWatch
}

func (w watchedWriter) Write(p []byte) (int, error) {
	w.ww.since.Store(time.Now().UnixNano())
	defer w.ww.since.Store(0)
	return w.ResponseWriter.Write(p)
}

func (w watchedWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestTakeoverAbortsABlockedWrite: a client that comes back while its old
// connection's handler is blocked writing to it (the client stopped
// reading, and the connection is not dead yet) gets its stream at once, not
// after the write timeout, or never without one; and it gets every event
// exactly once, those the old connection took included.
func TestTakeoverAbortsABlockedWrite(t *testing.T) {
	for _, timeout := range []time.Duration{DefaultWriteTimeout, 0} {
		t.Run(fmt.Sprint("write timeout ", timeout), func(t *testing.T) {
			b := newBroker[string](t)
			ww := &writeWatch{h: Handler(b, queryKey, WithWriteTimeout(timeout))}
			h := &tracked{h: ww}
			srv := httptest.NewUnstartedServer(h)
			srv.Listener = smallBuffers{srv.Listener}
			srv.Start()
			t.Cleanup(srv.Close)
			dialStalled(t, srv.Listener.Addr().String(), "k")
			big := strings.Repeat("x", 64<<10)
			const n = 100 // 6.4 MB: far more than the stalled connection holds
			for i := 1; i <= n; i++ {
				must(t, b.Enqueue(context.Background(), "k", strconv.Itoa(i)+big))
			}
			ww.blocked(t, 200*time.Millisecond)

			start := time.Now()
			c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", "0")
			if d := time.Since(start); d > time.Second {
				t.Fatalf("the takeover got its headers after %v, want under 1s", d)
			}
			for i := 1; i <= n; i++ {
				if ev := c.next(t); ev.ID != strconv.Itoa(i) || ev.Data != strconv.Itoa(i)+big {
					t.Fatalf("got event %s, want %d", ev.ID, i)
				}
			}
			if h.active.Load() != 1 {
				t.Fatalf("%d handlers running, want the new one only", h.active.Load())
			}
		})
	}
}

// TestCarriedEventGoesToTheNextConnection: an event Next took from the
// channel and did not return (it did not fit: WithReplay's event bound, the
// 32 KiB write, or a jump in IDs), when the connection then ends, goes first
// to the key's next connection, which carries no ID: it used to go only to
// a client resuming before it, so that nobody else ever got it.
func TestCarriedEventGoesToTheNextConnection(t *testing.T) {
	b := newBroker[string](t, WithReplay(2, 1<<20))
	ctx := context.Background()
	enqueueSeq(t, b, "k", 1, 3)
	sub, err := b.Subscribe(ctx, "k", SubscribeRequest{})
	must(t, err)
	evs, _, err := sub.Next(ctx, nil, nil, math.MaxInt)
	must(t, err)
	if len(evs) != 2 {
		t.Fatalf("took %v, want 1 2", evs)
	}
	sub.Close() // handed over 1 and 2 only
	enqueueSeq(t, b, "k", 4, 4)
	must(t, b.Close(ctx, "k"))
	next, err := b.Subscribe(ctx, "k", SubscribeRequest{})
	must(t, err)
	defer next.Close()
	var got []uint64
	for {
		evs, gap, err := next.Next(ctx, nil, nil, math.MaxInt)
		if gap != (Gap{}) {
			t.Fatalf("gap %+v after %v", gap, got)
		}
		for _, ev := range evs {
			got = append(got, ev.ID)
		}
		if err == io.EOF {
			break
		}
		must(t, err)
	}
	if len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("the next connection got %v, want 3 4: event 3 was taken and never handed to anyone", got)
	}
}
