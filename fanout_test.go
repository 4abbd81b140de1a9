package sse

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// newFanOut returns a FanOut broker that is shut down when the test ends.
func newFanOut[K comparable](t testing.TB, opts ...Option) *Broker[K] {
	t.Helper()
	return newBroker[K](t, append([]Option{WithMode(FanOut)}, opts...)...)
}

// readAll ranges over seq until it ends, and returns the events and the
// error it ended with; a GapError is returned in place, as an event with
// Name "gap" and the range in Data.
func readAll(t testing.TB, seq iter.Seq2[Event, error]) ([]Event, error) {
	t.Helper()
	var evs []Event
	for ev, err := range seq {
		var gap *GapError
		switch {
		case errors.As(err, &gap):
			evs = append(evs, Event{Name: "gap", Data: fmt.Sprintf("%d-%d", gap.From, gap.To)})
		case err != nil:
			return evs, err
		default:
			evs = append(evs, ev)
		}
	}
	return evs, nil
}

// TestFanOutEveryReaderGetsEveryEvent: readers of one key, reading while
// producers publish, each get every event (they start at the oldest held),
// in the same order, with IDs 1, 2, 3, …, each producer's events in its own
// order, then the end.
func TestFanOutEveryReaderGetsEveryEvent(t *testing.T) {
	b := newFanOut[string](t)
	ctx := context.Background()
	const readers, producers, each = 5, 4, 500
	var ready, wg sync.WaitGroup
	got := make([][]Event, readers)
	errs := make([]error, readers)
	for r := range readers {
		ready.Add(1)
		wg.Go(func() {
			next, stop := iter.Pull2(b.Events(ctx, "k"))
			defer stop()
			ready.Done()
			for {
				ev, err, ok := next()
				if !ok || err != nil {
					errs[r] = err
					return
				}
				got[r] = append(got[r], ev)
			}
		})
	}
	ready.Wait()
	var pw sync.WaitGroup
	for p := range producers {
		pw.Go(func() {
			for i := range each {
				must(t, b.Publish(ctx, "k", Event{Name: strconv.Itoa(p), Data: strconv.Itoa(i)}))
			}
		})
	}
	pw.Wait()
	must(t, b.Close(ctx, "k"))
	wg.Wait()
	for r := range readers {
		if errs[r] != nil {
			t.Fatalf("reader %d: %v", r, errs[r])
		}
		if len(got[r]) != producers*each {
			t.Fatalf("reader %d got %d events, want %d", r, len(got[r]), producers*each)
		}
		next := make([]int, producers)
		for i, ev := range got[r] {
			if ev.ID != uint64(i+1) || ev != got[0][i] {
				t.Fatalf("reader %d, event %d: %+v; reader 0 had %+v", r, i, ev, got[0][i])
			}
			p, _ := strconv.Atoi(ev.Name)
			if ev.Data != strconv.Itoa(next[p]) {
				t.Fatalf("reader %d: producer %d's event %s after %d", r, p, ev.Data, next[p]-1)
			}
			next[p]++
		}
	}
}

// TestFanOutStartingPoints: a reader starts at the oldest event held, after
// an ID, or live; a closed key read to its end gives nothing.
func TestFanOutStartingPoints(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newFanOut[string](t)
		ctx := context.Background()
		enqueueSeq(t, b, "k", 1, 10)
		live := make(chan []Event)
		go func() {
			evs, err := readAll(t, b.Events(ctx, "k", Live()))
			must(t, err)
			live <- evs
		}()
		synctest.Wait() // the live reader waits for the next event
		enqueueSeq(t, b, "k", 11, 12)
		must(t, b.Close(ctx, "k"))
		if evs := <-live; len(evs) != 2 || evs[0].ID != 11 || evs[1].ID != 12 {
			t.Fatalf("live reader: %v, want 11 and 12", evs)
		}
		all, err := readAll(t, b.Events(ctx, "k"))
		must(t, err)
		checkSeq(t, all, 1)
		if len(all) != 12 {
			t.Fatalf("from the start: %d events", len(all))
		}
		after, err := readAll(t, b.Events(ctx, "k", After(7)))
		must(t, err)
		checkSeq(t, after, 8)
		if len(after) != 5 {
			t.Fatalf("after 7: %v", after)
		}
		if evs, err := readAll(t, b.Events(ctx, "k", After(12))); err != nil || len(evs) != 0 {
			t.Fatalf("after the last ID of a closed key: %v, %v", evs, err)
		}
	})
}

// TestFanOutGap: a reader that falls further behind than the history is told
// which events it lost, then goes on with the oldest held. Producers never
// wait for it.
func TestFanOutGap(t *testing.T) {
	b := newFanOut[string](t, WithHistory(10, 1<<20, 0))
	ctx := context.Background()
	slow, stop := iter.Pull2(b.Events(ctx, "k"))
	defer stop()
	enqueueSeq(t, b, "k", 1, 3)
	for want := uint64(1); want <= 3; want++ { // it copies 1-3 at once
		if ev, err, _ := slow(); err != nil || ev.ID != want {
			t.Fatalf("%+v %v, want %d", ev, err, want)
		}
	}
	enqueueSeq(t, b, "k", 4, 100) // the reader holds still: the history keeps 91-100
	must(t, b.Close(ctx, "k"))
	b.Stats() // the loop has carried them out
	_, err, _ := slow()
	var gap *GapError
	if !errors.As(err, &gap) || gap.Gap != (Gap{From: 4, To: 90}) {
		t.Fatalf("got %v, want a gap 4-90", err)
	}
	var rest []Event
	for {
		ev, err, ok := slow()
		if !ok {
			break
		}
		must(t, err)
		rest = append(rest, ev)
	}
	checkSeq(t, rest, 91)
	if len(rest) != 10 {
		t.Fatalf("after the gap: %v", rest)
	}
	// A reader after an ID no longer held starts with the gap too.
	evs, err := readAll(t, b.Events(ctx, "k", After(50)))
	must(t, err)
	if evs[0].Name != "gap" || evs[0].Data != "51-90" || len(evs) != 11 {
		t.Fatalf("after 50: %v", evs)
	}
}

// TestFanOutBounds: the history keeps to its bounds in events, bytes and
// age, keeps its newest event whatever they say, and gives its bytes back
// when the key is forgotten.
func TestFanOutBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newFanOut[string](t, WithHistory(100, 10*(48+2), time.Minute), WithRetention(time.Second))
		ctx := context.Background()
		held := func(key string) (first uint64, n int) {
			t.Helper()
			evs, err := readAll(t, b.Events(ctx, key))
			must(t, err)
			return evs[0].ID, len(evs)
		}
		enqueueSeq(t, b, "bytes", 10, 99) // 2 bytes of data each: 10 fit
		must(t, b.Close(ctx, "bytes"))
		if first, n := held("bytes"); first != 81 || n != 10 {
			t.Fatalf("bytes: held %d from %d, want the newest 10", n, first)
		}
		must(t, b.Publish(ctx, "big", Event{Data: string(make([]byte, 1000))}))
		must(t, b.Close(ctx, "big"))
		if _, n := held("big"); n != 1 {
			t.Fatalf("an event larger than the bound: held %d, want it kept", n)
		}
		enqueueSeq(t, b, "age", 1, 5)
		time.Sleep(2 * time.Minute)
		enqueueSeq(t, b, "age", 6, 6) // events arriving trim the old ones
		must(t, b.Close(ctx, "age"))
		if first, n := held("age"); first != 6 || n != 1 {
			t.Fatalf("age: held %d from %d, want the newest only", n, first)
		}
		if s := b.Stats(); s.Replay == 0 {
			t.Fatalf("stats %+v: the histories hold nothing?", s)
		}
		time.Sleep(2 * time.Second) // the closed keys are forgotten
		synctest.Wait()
		if s := b.Stats(); s.Replay != 0 || s.Closed != 0 {
			t.Fatalf("stats %+v: want the histories given back", s)
		}
	})
}

// TestFanOutCloseAndShutdown: Close ends every reader once it has read the
// history; Shutdown ends readers that wait, after what they have not read.
func TestFanOutCloseAndShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New[int](WithMode(FanOut))
		ctx := context.Background()
		type result struct {
			n   int
			err error
		}
		results := make(chan result, 6)
		for k := range 3 {
			for range 2 {
				go func() {
					evs, err := readAll(t, b.Events(ctx, k))
					results <- result{len(evs), err}
				}()
			}
			enqueueSeq(t, b, k, 1, 5)
		}
		synctest.Wait()
		must(t, b.Close(ctx, 0))
		synctest.Wait()
		for range 2 {
			if r := <-results; r.err != nil || r.n != 5 {
				t.Fatalf("a reader of the closed key: %+v", r)
			}
		}
		must(t, b.Shutdown(ctx))
		for range 4 {
			if r := <-results; r.err != nil || r.n != 5 {
				t.Fatalf("a reader at Shutdown: %+v", r)
			}
		}
		if _, err := readAll(t, b.Events(ctx, 9)); !errors.Is(err, ErrShutdown) {
			t.Fatalf("a reader after Shutdown: %v", err)
		}
	})
}

// TestFanOutReadersComeAndGo: readers join, leave early and start over
// while events are published and the key closes; each gets the events in
// order from where it started, and nothing is left behind (goleak, and the
// key's reader count).
func TestFanOutReadersComeAndGo(t *testing.T) {
	b := newFanOut[int](t)
	ctx := context.Background()
	const total = 2000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= total; i++ {
			must(t, b.Enqueue(ctx, 1, strconv.Itoa(i)))
		}
		must(t, b.Close(ctx, 1))
	}()
	var wg sync.WaitGroup
	for r := range 8 {
		wg.Go(func() {
			for round := 0; ; round++ {
				var last uint64
				n := 0
				rctx, cancel := context.WithCancel(ctx)
				for ev, err := range b.Events(rctx, 1) {
					if err != nil {
						if !errors.Is(err, context.Canceled) {
							t.Errorf("reader %d: %v", r, err)
						}
						break
					}
					if last != 0 && ev.ID != last+1 || ev.Data != strconv.FormatUint(ev.ID, 10) {
						t.Errorf("reader %d: %+v after %d", r, ev, last)
					}
					last = ev.ID
					if n++; n == 10*(r+1) && round < 3 {
						break // leave early, then start again
					}
					if r == 7 && n == 5 {
						cancel() // or end by the context
					}
				}
				cancel()
				if last == total {
					return
				}
			}
		})
	}
	wg.Wait()
	<-done
	if s := b.Stats(); s.Keys != 0 || s.Closed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestFanOutRefusals: Stream has no meaning in FanOut mode, nor has
// WithMaxPending.
func TestFanOutRefusals(t *testing.T) {
	b := newFanOut[string](t)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Stream in FanOut mode did not panic")
			}
		}()
		b.Stream("k")
	}()
	defer func() {
		if recover() == nil {
			t.Error("New with FanOut and WithMaxPending did not panic")
		}
	}()
	New[string](WithMode(FanOut), WithMaxPending(10, Block))
}

// TestFanOutOverSSE: any number of connections per key on one Handler, each
// with every event; each resumes from its Last-Event-ID out of the
// history; a request with no ID on a closed key gets the history, then
// close; 204 only for a client with the key's last ID.
func TestFanOutOverSSE(t *testing.T) {
	b := newFanOut[string](t)
	srv, h := serve(t, b)
	ctx := context.Background()
	var tabs []*client
	for range 5 {
		tabs = append(tabs, open(t, srv.Client(), srv.URL, "k"))
	}
	enqueueSeq(t, b, "k", 1, 10)
	for _, c := range tabs {
		c.expectSeq(t, 1, 10)
	}
	// One tab loses its connection after 4 and comes back: the history
	// sends it 5-10 again; the others carry on undisturbed.
	lost := tabs[0]
	lost.close()
	back := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", lost.wireID(4))
	back.expectSeq(t, 5, 10)
	query := open(t, srv.Client(), srv.URL, "k&lastEventId="+lost.wireID(8)) // as a page's first request
	query.expectSeq(t, 9, 10)
	enqueueSeq(t, b, "k", 11, 12)
	must(t, b.Close(ctx, "k"))
	for _, c := range append(tabs[1:], back, query) {
		c.expectSeq(t, 11, 12)
		c.expectClose(t)
	}
	late := open(t, srv.Client(), srv.URL, "k") // after the end: the history, then close
	late.expectSeq(t, 1, 12)
	late.expectClose(t)
	for id, want := range map[string]int{back.wireID(11): http.StatusOK, back.wireID(12): http.StatusNoContent} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
		req.Header.Set("Last-Event-ID", id)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("Last-Event-ID %s on the closed key: %d, want %d", id, resp.StatusCode, want)
		}
	}
	h.waitIdle(t)
}

// TestFanOutGapOverSSE: a client that resumes after an ID the history no
// longer holds gets a gap naming exactly what it lost, then the rest.
func TestFanOutGapOverSSE(t *testing.T) {
	b := newFanOut[string](t, WithHistory(5, 1<<20, 0))
	srv, _ := serve(t, b)
	first := open(t, srv.Client(), srv.URL, "k")
	enqueueSeq(t, b, "k", 1, 2)
	first.expectSeq(t, 1, 2)
	first.close()
	enqueueSeq(t, b, "k", 3, 20) // the history keeps 16-20
	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", first.wireID(2))
	if ev := c.next(t); ev.Type != EventGap || ev.Data != `{"from":3,"to":15}` || ev.ID != "15" {
		t.Fatalf("got %+v, want the gap 3-15", ev)
	}
	c.expectSeq(t, 16, 20)
}

// TestFanOutStreamLimit: in FanOut mode a request with Last-Event-ID takes
// nothing over, so at WithMaxStreams it inherits no place: it may have one
// of the n/8 + 1 spare places, and the stream it may replace goes on; past
// the spares it is told to come back later.
func TestFanOutStreamLimit(t *testing.T) {
	b := newFanOut[string](t)
	srv, h := serve(t, b, WithMaxStreams(1))
	c := open(t, srv.Client(), srv.URL, "k")
	enqueueSeq(t, b, "k", 1, 1)
	c.expectSeq(t, 1, 1)
	spare := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", c.wireID(1))
	h.waitActive(t, 2)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
	req.Header.Set("Last-Event-ID", c.wireID(1))
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	expectTryLater(t, resp, DefaultBusyRetry)
	enqueueSeq(t, b, "k", 2, 2)
	c.expectSeq(t, 2, 2)
	spare.expectSeq(t, 2, 2)
}

// TestFanOutReadersKeepTheirKey: a FanOut key with a reader is not closed
// as idle, and a closed one is not forgotten while a reader reads it; both
// times count again from when the last reader leaves.
func TestFanOutReadersKeepTheirKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newFanOut[string](t, WithIdleTimeout(time.Minute), WithRetention(time.Minute))
		ctx := context.Background()
		enqueueSeq(t, b, "k", 1, 1)
		// A reader that takes the first event, then holds on until it
		// leaves.
		hold := func(rctx context.Context) {
			for range b.Events(rctx, "k") {
				<-rctx.Done()
			}
		}
		rctx, leave := context.WithCancel(ctx)
		go hold(rctx)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if s := b.Stats(); s.Keys != 1 {
			t.Fatalf("stats %+v: a key with a reader was closed as idle", s)
		}
		leave()
		synctest.Wait()
		time.Sleep(time.Minute) // idle since the reader left
		synctest.Wait()
		if s := b.Stats(); s.Keys != 0 || s.Closed != 1 {
			t.Fatalf("stats %+v: want the key closed as idle", s)
		}
		rctx, leave = context.WithCancel(ctx)
		go hold(rctx)
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		if s := b.Stats(); s.Closed != 1 {
			t.Fatalf("stats %+v: a closed key with a reader was forgotten", s)
		}
		leave()
		synctest.Wait()
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Closed != 1 {
			t.Fatalf("stats %+v: forgotten before the retention time after its last reader", s)
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Closed != 0 {
			t.Fatalf("stats %+v: want the key forgotten", s)
		}
	})
}

// TestFanOutCosts measures what FanOut keys cost and holds them to their
// targets: a key with one small event and no reader under 1 KiB, a held
// event at most 48 bytes plus its strings, a waiting reader under 1 KiB
// plus its buffer. It logs the figures the README gives.
func TestFanOutCosts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		heap := func() float64 {
			var ms runtime.MemStats
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&ms)
			return float64(ms.HeapAlloc)
		}
		ctx := context.Background()
		b := newFanOut[int](t)
		must(t, b.Enqueue(ctx, -1, "warm up"))
		b.Stats()

		const keys = 10_000
		before := heap()
		for k := range keys {
			must(t, b.Enqueue(ctx, k, "x"))
		}
		b.Stats()
		perKey := (heap() - before) / keys

		const events = 140_000 // 10,000 chunks
		data := seq(1, 100)    // strings made before, shared by the events
		before = heap()
		for range events / 100 {
			must(t, b.Enqueue(ctx, -2, data...))
		}
		b.Stats()
		perEvent := (heap() - before) / events

		// A reader's cost, less that of the goroutine it runs in, which is
		// its caller's: measured first, blocked on a channel.
		const readers = 1000
		rctx, stop := context.WithCancel(ctx)
		before = heap()
		for range readers {
			go func() { <-rctx.Done() }()
		}
		synctest.Wait()
		goroutine := (heap() - before) / readers
		before = heap()
		for k := range readers {
			go func() {
				for range b.Events(rctx, k, Live()) {
				}
			}()
		}
		synctest.Wait() // every reader waits for its key's next event
		perReader := (heap()-before)/readers - goroutine
		stop()
		synctest.Wait()

		t.Logf("a key with one event and no reader: %.0f B; a held event: %.1f B plus its strings; a waiting reader: %.0f B (it has no buffer yet; one holds up to 4 KiB of events)", perKey, perEvent, perReader)
		if perKey >= 1024 || perEvent > 48 || perReader >= 1024 {
			t.Fatalf("over the targets: key %.0f B (< 1024), event %.1f B (≤ 48), reader %.0f B (< 1024)", perKey, perEvent, perReader)
		}
	})
}
