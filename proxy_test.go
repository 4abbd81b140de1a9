package sse

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse/internal/cutproxy"
	"github.com/rocketqueue/sse/ssetest"
)

// payload is the data of event id in the proxy tests: 10 to 310 bytes of a
// fixed random text, cut out without allocating, and checked on arrival.
func payload(id int) string {
	n := 10 + int(uint64(id)*2654435761%301)
	at := int(uint64(id) * 40503 % uint64(len(text)-310))
	return text[at : at+n]
}

var text = func() string {
	rng := rand.New(rand.NewPCG(7, 7))
	b := make([]byte, 1<<16)
	for i := range b {
		b[i] = 'a' + byte(rng.IntN(26))
	}
	return string(b)
}()

// followThrough reads key's stream from base as a browser does, through
// whatever cuts its connections: it opens with lastEventId=0, reconnects
// with the Last-Event-ID of the last event it received, and returns every
// event in order (gap events included) once the stream ends with close.
func followThrough(t *testing.T, hc *http.Client, base, key string) (events []ssetest.Event, conns int) {
	t.Helper()
	last := ""
	deadline := time.Now().Add(2 * time.Minute)
	for ; ; conns++ {
		if time.Now().After(deadline) {
			t.Fatalf("the stream did not end after %d connections and %d events", conns, len(events))
		}
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"?key="+key+"&lastEventId=0", nil)
		if last != "" {
			req.Header.Set("Last-Event-ID", last)
		}
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			continue // cut before the headers: try again
		}
		if resp.StatusCode == http.StatusNoContent {
			resp.Body.Close()
			cancel()
			t.Fatalf("204 after %d events: the client has every event, yet never got close", len(events))
		}
		if err := ssetest.CheckResponse(resp); err != nil {
			resp.Body.Close()
			cancel()
			t.Fatal(err)
		}
		r := ssetest.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				break // cut, mid-event or not
			}
			if ev.Type == EventClose {
				resp.Body.Close()
				cancel()
				return events, conns + 1
			}
			events = append(events, ev)
			last = ev.ID
		}
		resp.Body.Close()
		cancel()
	}
}

// TestResumeThroughProxy is item (a) of the guarantee: at the default
// settings, through a proxy whose sockets are pinned to 256 KiB buffers,
// a stream of more than five times the replay window, cut at random
// points, reaches the client whole: every event once, in order, no gap.
func TestResumeThroughProxy(t *testing.T) {
	b := newBroker[string](t) // default settings
	srv, h := serve(t, b)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	p, err := cutproxy.Start(srv.Listener.Addr().String(), cutproxy.Options{
		Buffers: 256 << 10,
		Cut: func(n int) int64 { // anywhere from 1 KiB to 4 MiB
			return 1<<10 + rand.New(rand.NewPCG(seed, uint64(n))).Int64N(4<<20)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// Five windows' worth, as the window counts events.
	total, size := 0, 0
	for size < 5*DefaultReplayBytes {
		total++
		size += Event{Data: payload(total)}.Size()
	}
	go func() {
		for i := 1; i <= total; i++ {
			if err := b.Enqueue(context.Background(), "k", payload(i)); err != nil {
				t.Error(err)
				return
			}
		}
		if err := b.Close(context.Background(), "k"); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	events, conns := followThrough(t, srv.Client(), "http://"+p.Addr(), "k")
	t.Logf("%d events (%d MiB as the window counts) in %v over %d connections", total, size>>20, time.Since(start).Round(time.Millisecond), conns)
	if conns < 5 {
		t.Fatalf("%d connections: the proxy hardly cut the stream", conns)
	}
	for i, ev := range events {
		if ev.Type == EventGap {
			t.Fatalf("gap %s after event %d", ev.Data, i)
		}
		if want := strconv.Itoa(i + 1); seqOf(ev.ID) != want || ev.Data != payload(i+1) {
			t.Fatalf("event %d has ID %s and %d bytes of data, want ID %s and its %d bytes", i, ev.ID, len(ev.Data), want, len(payload(i+1)))
		}
	}
	if len(events) != total {
		t.Fatalf("got %d events, want %d", len(events), total)
	}
	h.waitIdle(t)
}

// TestResumeGapThroughProxy is item (b): a path that swallows more than the
// window loses what the window could not keep, and the client is told
// exactly that: one gap, naming the IDs it never got, and every other event
// once, in order.
func TestResumeGapThroughProxy(t *testing.T) {
	const window = 256 << 10
	b := newBroker[string](t, WithReplay(1<<20, window))
	srv, h := serve(t, b)
	p, err := cutproxy.Start(srv.Listener.Addr().String(), cutproxy.Options{
		Cut: func(n int) int64 {
			if n == 0 {
				return 64 << 10 // then it swallows 4 windows, and cuts
			}
			return -1
		},
		Swallow: 4 * window,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const total = 20_000 // about 4 MiB
	for i := 1; i <= total; i++ {
		must(t, b.Enqueue(context.Background(), "k", payload(i)))
	}
	must(t, b.Close(context.Background(), "k"))

	events, conns := followThrough(t, srv.Client(), "http://"+p.Addr(), "k")
	next, gaps := 1, 0
	for _, ev := range events {
		if ev.Type == EventGap {
			gaps++
			want := `{"from":` + strconv.Itoa(next) + `,"to":` + seqOf(ev.ID) + `}`
			if ev.Data != want {
				t.Fatalf("gap %s (id %s), want it to start at %d, the first ID the client lacks", ev.Data, ev.ID, next)
			}
			to, _ := strconv.Atoi(seqOf(ev.ID))
			t.Logf("gap of %d events (%d to %d) after %d connections", to-next+1, next, to, conns)
			next = to + 1
			continue
		}
		if want := strconv.Itoa(next); seqOf(ev.ID) != want || ev.Data != payload(next) {
			t.Fatalf("got event %s, want %d: nothing beyond the gap may be lost or repeated", ev.ID, next)
		}
		next++
	}
	if gaps != 1 || next != total+1 {
		t.Fatalf("%d gaps, events up to %d: want one gap and every event to %d", gaps, next-1, total)
	}
	h.waitIdle(t)
}

// TestReplayBudget: when the broker's budget is used up, windows stop
// growing (each keeps its newest events, at least 32 KiB) until others give
// bytes back; Stats.Replay tells what they hold.
func TestReplayBudget(t *testing.T) {
	const budget = 200_000
	b := newBroker[string](t, WithReplayBudget(budget), WithRetention(0))
	data := strings.Repeat("x", 1000) // 1,048 bytes a window
	for _, k := range []string{"a", "b"} {
		for range 150 {
			must(t, b.Enqueue(context.Background(), k, data))
		}
	}
	epochA := take(t, b, "a", SubscribeRequest{}, 150) // 157,200 bytes: within the budget
	if got := b.Stats().Replay; got != 150*1048 {
		t.Fatalf("Replay %d, want %d", got, 150*1048)
	}
	epochB := take(t, b, "b", SubscribeRequest{}, 150) // grows to the budget, then slides
	if got := b.Stats().Replay; got > budget {
		t.Fatalf("Replay %d, over the budget of %d", got, budget)
	}
	kept := func(key, epoch string, last uint64) int {
		sub, err := b.Subscribe(context.Background(), key, SubscribeRequest{Resume: true, Epoch: epoch, LastID: last})
		must(t, err)
		defer sub.Close()
		gap, evs := missed(t, sub)
		if n := len(evs); n > 0 && gap.To != 150-uint64(n) {
			t.Fatalf("%s: gap %+v with %d events kept, want the newest kept", key, gap, n)
		}
		return len(evs)
	}
	nb := kept("b", epochB, 0)
	if nb*1048 < windowFloor || nb == 150 {
		t.Fatalf("b kept %d events: want at least 32 KiB, and fewer than all", nb)
	}
	// The client of a confirms all: its bytes go back to the budget, and b
	// may grow again.
	if n := kept("a", epochA, 150); n != 0 {
		t.Fatalf("a kept %d events after the client confirmed all", n)
	}
	for range 100 {
		must(t, b.Enqueue(context.Background(), "b", data))
	}
	take(t, b, "b", SubscribeRequest{}, 100)
	if got, want := b.Stats().Replay, int64(nb+100)*1048; got != want {
		t.Fatalf("Replay %d after a gave its bytes back, want b to keep all its %d events: %d", got, nb+100, want)
	}
	// Forgotten keys give everything back.
	must(t, b.Close(context.Background(), "a"))
	must(t, b.Close(context.Background(), "b"))
	deadline := time.Now().Add(patience)
	for b.Stats().Replay != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("Replay %d after the keys were forgotten", b.Stats().Replay)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestReplayBudgetBound: with events far larger than 32 KiB, windows and
// histories together hold at most the budget plus, for each key holding
// events, the larger of 32 KiB and its newest event: the bound
// WithReplayBudget states.
func TestReplayBudgetBound(t *testing.T) {
	const budget, keys, maxEvent = 1 << 20, 16, 1 << 20
	bound := int64(budget + keys*max(windowFloor, maxEvent+eventOverhead))
	data := strings.Repeat("x", maxEvent)
	for _, mode := range []Mode{Queue, FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			b := newBroker[string](t, WithMode(mode), WithReplayBudget(budget), WithMaxEventSize(maxEvent))
			rng := rand.New(rand.NewPCG(1, 2))
			var peak int64
			for range 300 {
				k := strconv.Itoa(rng.IntN(keys))
				size := 1 + rng.IntN(64<<10) // mostly small, now and then as large as allowed
				if rng.IntN(4) == 0 {
					size = maxEvent - rng.IntN(1024)
				}
				must(t, b.Enqueue(context.Background(), k, data[:size]))
				if mode == Queue {
					take(t, b, k, SubscribeRequest{}, 1)
				}
				got := b.Stats().Replay
				if got > bound {
					t.Fatalf("Replay %d, over the stated bound of %d", got, bound)
				}
				peak = max(peak, got)
			}
			if peak <= budget+keys*windowFloor {
				t.Fatalf("Replay peaked at %d: the test never went past 32 KiB a key over the budget", peak)
			}
		})
	}
}
