package sse

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rocketqueue/sse/ssetest"
)

func TestMaxKeys(t *testing.T) {
	b := newBroker[string](t, WithMaxKeys(2), WithRetention(time.Hour))
	ctx := context.Background()
	must(t, b.Enqueue(ctx, "a", "1"))
	must(t, b.Enqueue(ctx, "b", "1"))
	b.Stats() // the loop holds both keys: the check in the caller sees them
	for name, err := range map[string]error{
		"Enqueue": b.Enqueue(ctx, "c", "1"),
		"Publish": b.Publish(ctx, "c", Event{Data: "1"}),
	} {
		if !errors.Is(err, ErrTooManyKeys) {
			t.Errorf("%s of a third key: %v, want ErrTooManyKeys", name, err)
		}
	}
	expectEnd(t, b.Stream("c"))
	must(t, b.Enqueue(ctx, "a", "2")) // keys it holds are not affected
	checkSeq(t, recv(t, b.Stream("a"), 2), 1)
	// A request key does not count: it is forgotten when its connection
	// leaves, and refused with WithKnownKeysOnly.
	sub, err := b.Subscribe(ctx, "c", SubscribeRequest{})
	must(t, err)
	if s := b.Stats(); s.Keys != 3 {
		t.Fatalf("stats %+v, want 3 open keys", s)
	}
	if err := b.Enqueue(ctx, "d", "1"); !errors.Is(err, ErrTooManyKeys) {
		t.Errorf("with a request key held: %v, want ErrTooManyKeys", err)
	}
	if _, err := b.Subscribe(ctx, "c", SubscribeRequest{Known: true}); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("Subscribe(Known) to a request key: %v, want ErrUnknownKey", err)
	}
	sub.Close()
	if s := b.Stats(); s.Keys != 2 {
		t.Fatalf("stats %+v: the request key was not forgotten", s)
	}
	// Closed keys count until they are forgotten.
	must(t, b.Close(ctx, "b"))
	if err := b.Enqueue(ctx, "c", "1"); !errors.Is(err, ErrTooManyKeys) {
		t.Errorf("with a closed key remembered: %v, want ErrTooManyKeys", err)
	}
	if s := b.Stats(); s.Keys+s.Closed != 2 {
		t.Fatalf("stats %+v, want 2 keys", s)
	}
	// Close still records an unknown key: a late reader sees it ended.
	must(t, b.Close(ctx, "cancelled"))
	if s := b.Stats(); s.Closed != 2 {
		t.Fatalf("stats %+v, want the cancelled key recorded", s)
	}
	if _, err := b.Subscribe(ctx, "cancelled", SubscribeRequest{}); !errors.Is(err, ErrFinished) {
		t.Fatalf("Subscribe to the cancelled key: %v, want ErrFinished", err)
	}
}

func TestMaxKeysAfterShutdown(t *testing.T) {
	b := New[string](WithMaxKeys(1))
	must(t, b.Enqueue(context.Background(), "a", "1"))
	b.Stats()
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	b.Shutdown(ctx) // nobody reads "a": the deadline passes
	if err := b.Enqueue(context.Background(), "b", "1"); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Enqueue after Shutdown at the key limit: %v, want ErrShutdown", err)
	}
}

// TestMaxKeysHoldsUnderRaces makes producers race past the producer-side
// check: the loop still holds no more keys than allowed.
func TestMaxKeysHoldsUnderRaces(t *testing.T) {
	b := newBroker[int](t, WithMaxKeys(10))
	var wg sync.WaitGroup
	var accepted sync.Map
	for p := range 8 {
		wg.Go(func() {
			for k := range 50 {
				if err := b.Enqueue(context.Background(), p*50+k, "x"); err == nil {
					accepted.Store(p*50+k, true)
				} else if !errors.Is(err, ErrTooManyKeys) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	n := 0
	accepted.Range(func(any, any) bool { n++; return true })
	s := b.Stats()
	if s.Keys != 10 || s.Enqueued != 10 || s.Discarded != uint64(n-10) {
		t.Fatalf("stats %+v with %d calls accepted, want 10 keys and the rest discarded", s, n)
	}
}

func TestHandlerKnownKeysOnly(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b, WithKnownKeysOnly())
	resp, err := srv.Client().Get(srv.URL + "?key=guess")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown key: %d, want 404", resp.StatusCode)
	}
	if s := b.Stats(); s.Keys != 0 {
		t.Fatalf("a scan created %d keys", s.Keys)
	}
	enqueueSeq(t, b, "job", 1, 1) // the server creates it
	c := open(t, srv.Client(), srv.URL, "job")
	c.expectSeq(t, 1, 1)
}

// expectTryLater fails unless resp is an empty event stream with a retry
// field: the answer for a request the handler has no room for.
func expectTryLater(t *testing.T, resp *http.Response, retry time.Duration) {
	t.Helper()
	defer resp.Body.Close()
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	r := ssetest.NewReader(resp.Body)
	if ev, err := r.Next(); err == nil {
		t.Fatalf("got event %+v, want an empty stream", ev)
	}
	if d, ok := r.Retry(); !ok || d != retry {
		t.Fatalf("retry %v %v, want %v", d, ok, retry)
	}
}

// TestStrangersCannotLockProducersOut: requests for keys the server did not
// create do not count against WithMaxKeys, so 1,000 open and 20,000
// abandoned ones leave the server's own next key room, and the abandoned
// ones leave nothing behind.
func TestStrangersCannotLockProducersOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithMaxKeys(100), WithIdleTimeout(time.Hour), WithRetention(time.Minute))
		h := Handler(b, queryKey)
		ctx := context.Background()
		for i := range 99 {
			must(t, b.Enqueue(ctx, fmt.Sprint("job-", i), "1"))
		}
		// request starts a GET for key and returns the function that
		// abandons it.
		request := func(key string) (abandon func()) {
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				h.ServeHTTP(&flushRecorder{header: http.Header{}}, httptest.NewRequestWithContext(rctx, http.MethodGet, "/?key="+key, nil))
			}()
			return func() { cancel(); <-done }
		}
		var open []func()
		for i := range 1000 {
			open = append(open, request(fmt.Sprint("stranger-", i)))
		}
		for i := 0; i < 20_000; i += 1000 {
			var batch []func()
			for j := range 1000 {
				batch = append(batch, request(fmt.Sprint("abandoned-", i+j)))
			}
			synctest.Wait() // every request holds its key
			for _, abandon := range batch {
				abandon()
			}
		}
		synctest.Wait()
		if s := b.Stats(); s.Keys != 99+1000 {
			t.Fatalf("stats %+v: want 99 server keys and 1,000 request keys", s)
		}
		must(t, b.Enqueue(ctx, "job-99", "1")) // the 100th server key
		b.Stats()                              // the loop holds it: the check in the caller sees it
		if err := b.Enqueue(ctx, "job-100", "1"); !errors.Is(err, ErrTooManyKeys) {
			t.Fatalf("the 101st server key: %v, want ErrTooManyKeys", err)
		}
		// A request key that the server sends an event becomes a server
		// key, within the bound.
		if err := b.Enqueue(ctx, "stranger-0", "1"); !errors.Is(err, ErrTooManyKeys) {
			t.Fatalf("promoting a request key beyond the bound: %v, want ErrTooManyKeys", err)
		}
		must(t, b.Close(ctx, "job-0"))
		time.Sleep(time.Minute) // job-0 is forgotten: room for one more
		synctest.Wait()
		must(t, b.Enqueue(ctx, "stranger-0", "1"))
		for _, abandon := range open {
			abandon()
		}
		synctest.Wait()
		if s := b.Stats(); s.Keys != 100 {
			t.Fatalf("stats %+v: want the 100 server keys, the request keys forgotten", s)
		}
	})
}

func TestHandlerMaxStreams(t *testing.T) {
	b := newBroker[string](t)
	srv, h := serve(t, b, WithMaxStreams(3), WithRetry(2*time.Second))
	var held []*client
	for i := range 3 {
		held = append(held, open(t, srv.Client(), srv.URL, strconv.Itoa(i)))
	}
	h.waitActive(t, 3)
	enqueueSeq(t, b, "over", 1, 2)
	resp, err := srv.Client().Get(srv.URL + "?key=over")
	if err != nil {
		t.Fatal(err)
	}
	expectTryLater(t, resp, 2*time.Second)
	checkSeq(t, recv(t, b.Stream("over"), 2), 1) // its queue was not touched

	// A stream that ends frees its place.
	held[0].close()
	h.waitActive(t, 2)
	c := open(t, srv.Client(), srv.URL, "again")
	enqueueSeq(t, b, "again", 1, 1)
	c.expectSeq(t, 1, 1)
}

// counting is a Source that records how many subscriptions are open at
// once.
type counting struct {
	Source[string]
	open, peak atomic.Int64
}

func (c *counting) Subscribe(ctx context.Context, key string, req SubscribeRequest) (Subscription, error) {
	sub, err := c.Source.Subscribe(ctx, key, req)
	if err != nil {
		return nil, err
	}
	n := c.open.Add(1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	return countedSub{sub, &c.open}, nil
}

type countedSub struct {
	Subscription
	open *atomic.Int64
}

func (s countedSub) Close() {
	s.open.Add(-1)
	s.Subscription.Close()
}

// TestHandlerMaxStreamsUnderLoad has 200 clients, each on its own key, ask
// at once a handler bounded to 20 streams. A client told to retry does so,
// as a browser would. Every client gets its event, and no more than 20
// streams ever run at once.
func TestHandlerMaxStreamsUnderLoad(t *testing.T) {
	b := newBroker[string](t)
	const limit, clients = 20, 200
	src := &counting{Source: b}
	h := &tracked{h: Handler[string](src, queryKey, WithMaxStreams(limit))}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	for i := range clients {
		must(t, b.Enqueue(context.Background(), strconv.Itoa(i), "1"))
	}

	var refused atomic.Int64
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for attempt := 0; ; attempt++ {
				if attempt > 1000 {
					t.Errorf("client %d: still refused after %d attempts", i, attempt)
					return
				}
				c, err := tryOpen(hc, srv.URL, strconv.Itoa(i))
				if err != nil {
					t.Error(err)
					return
				}
				ev, err := c.events.Next()
				c.close() // got it, or told to come back: leave either way
				if err == nil {
					if seqOf(ev.ID) != "1" || ev.Data != "1" {
						t.Errorf("client %d: got %+v", i, ev)
					}
					return
				}
				if _, ok := c.events.Retry(); !ok {
					t.Errorf("client %d: %v and no retry field", i, err)
					return
				}
				refused.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	h.waitIdle(t)
	t.Logf("peak %d streams, %d refusals", src.peak.Load(), refused.Load())
	if p := src.peak.Load(); p > limit {
		t.Fatalf("%d streams at once, bound %d", p, limit)
	}
	if refused.Load() == 0 {
		t.Fatal("nobody was refused: the bound was not exercised")
	}
}

// TestMaxStreamsLetsAClientReplaceItsConnection: at the WithMaxStreams
// bound, a client that comes back with Last-Event-ID while its old
// connection (kept alive by heartbeats) still holds a slot takes the key
// over and inherits the slot; a request with an ID for a key that has no
// stream is still told to come back later, and the count stays right.
func TestMaxStreamsLetsAClientReplaceItsConnection(t *testing.T) {
	b := newBroker[string](t)
	srv, h := serve(t, b, WithMaxStreams(1), WithHeartbeat(20*time.Millisecond))
	stale := open(t, srv.Client(), srv.URL, "k")
	enqueueSeq(t, b, "k", 1, 3)
	stale.expectSeq(t, 1, 1) // the client saw 1; 2 and 3 may be in flight

	stranger := func(key string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key="+key, nil)
		req.Header.Set("Last-Event-ID", "1")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		expectTryLater(t, resp, DefaultBusyRetry)
	}
	stranger("other")
	for range 3 { // as often as a browser would try
		c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", stale.wireID(1))
		c.expectSeq(t, 2, 3) // replayed: the old connection took them
		stale.expectCut(t)
		stranger("other") // the slot is c's now
		stale = c         // and c goes stale in turn
	}
	stale.close()
	h.waitIdle(t)
	c := open(t, srv.Client(), srv.URL, "third") // the slot was given back
	c.close()
}

// TestHandlerMaxStreamsChecksKeysFirst: under WithMaxStreams, a key no map
// can hold gets 400 before the handler counts it: a NaN used to leak an
// entry per request, and a slice in an interface used to panic.
func TestHandlerMaxStreamsChecksKeysFirst(t *testing.T) {
	t.Run("NaN", func(t *testing.T) {
		b := newBroker[float64](t)
		h := Handler(b, func(*http.Request) (float64, error) { return math.NaN(), nil }, WithMaxStreams(10))
		for range 50 {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			if rec.Code != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", rec.Code)
			}
		}
		if n := len(h.(*handler[float64]).streams.keys); n != 0 {
			t.Fatalf("the handler holds %d entries for refused keys", n)
		}
	})
	t.Run("Unhashable", func(t *testing.T) {
		b := newBroker[any](t)
		h := Handler(b, func(*http.Request) (any, error) { return []int{1}, nil }, WithMaxStreams(10))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
		if rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", rec.Code)
		}
	})
}

// TestMaxStreamsFanOutSpares: in FanOut mode nothing is taken over, so a
// client reconnecting at the bound (a Last-Event-ID header of the key's
// current life) may have one of n/8 + 1 spare places while its stale
// connection lives on; a request without the header, or with an ID of
// another life, still gets retry later, and so does one past the spares.
func TestMaxStreamsFanOutSpares(t *testing.T) {
	b := newBroker[string](t, WithMode(FanOut))
	srv, h := serve(t, b, WithMaxStreams(2))
	stale := open(t, srv.Client(), srv.URL, "k")
	other := open(t, srv.Client(), srv.URL, "other")
	enqueueSeq(t, b, "k", 1, 3)
	stale.expectSeq(t, 1, 1)
	h.waitActive(t, 2)

	refused := func(header ...string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		expectTryLater(t, resp, DefaultBusyRetry)
	}
	refused()                                                                  // a new client
	refused("Last-Event-ID", "0")                                              // no ID of this life
	refused("Last-Event-ID", "zzzz-1")                                         // another life
	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", stale.wireID(1)) // the spare
	c.expectSeq(t, 2, 3)
	h.waitActive(t, 3)
	refused("Last-Event-ID", stale.wireID(2)) // 2/8 + 1 = 1 spare, taken

	stale.close() // the places come back as streams end
	other.close()
	h.waitActive(t, 1)
	again := open(t, srv.Client(), srv.URL, "k")
	again.expectSeq(t, 1, 3)
	c.close()
	again.close()
	h.waitIdle(t)
}

// subscribeCount counts Source.Subscribe calls.
type subscribeCount struct {
	Source[string]
	calls atomic.Int64
}

func (c *subscribeCount) Subscribe(ctx context.Context, key string, req SubscribeRequest) (Subscription, error) {
	c.calls.Add(1)
	return c.Source.Subscribe(ctx, key, req)
}

// TestMaxStreamsFanOutSparesOnlyStreamedKeys: in FanOut mode a request over
// WithMaxStreams with a Last-Event-ID header is subscribed, to see if it
// may have a spare place, only for a key the handler already streams:
// otherwise it cannot be a client replacing its own stale connection, and
// the bound must keep it from costing the source anything.
func TestMaxStreamsFanOutSparesOnlyStreamedKeys(t *testing.T) {
	b := newBroker[string](t, WithMode(FanOut))
	src := &subscribeCount{Source: b}
	h := &tracked{h: Handler[string](src, queryKey, WithMaxStreams(1))}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	held := open(t, srv.Client(), srv.URL, "a")
	h.waitActive(t, 1)
	before := src.calls.Load()
	for i := range 20 {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=x"+strconv.Itoa(i), nil)
		req.Header.Set("Last-Event-ID", "zzzz-1") // no life of any key here
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		expectTryLater(t, resp, DefaultBusyRetry)
	}
	held.close()
	h.waitIdle(t)
	if n := src.calls.Load() - before; n != 0 {
		t.Fatalf("20 requests over the bound, each told to retry later, made %d Subscribe calls", n)
	}
}
