package ssejs_test

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"iter"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestIdleReaders: several in-process readers of a Queue key that has no
// event yet all attach, and all take events once they come, each event
// once: a reader waiting for the key's next message does not keep the
// others from attaching.
func TestIdleReaders(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	const timeout = 2 * time.Second
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithTimeout(timeout))
	// No deadline: the readers' subscriptions are bounded by the broker's
	// timeout.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const readers = 3
	var (
		mu   sync.Mutex
		got  [readers][]uint64
		errs []error
		wg   sync.WaitGroup
	)
	for r := range readers {
		wg.Go(func() {
			for ev, err := range b.Events(ctx, "jobs") {
				mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						errs = append(errs, err)
					}
				} else {
					got[r] = append(got[r], ev.ID)
				}
				mu.Unlock()
			}
		})
		time.Sleep(300 * time.Millisecond) // the readers before wait for events
	}
	// Longer than a subscription's timeout: the readers that did not get
	// the key's sem at once would have failed by now.
	time.Sleep(timeout + time.Second)
	published := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		all, n, failed := true, 0, len(errs) > 0
		for r := range readers {
			all = all && len(got[r]) > 0
			n += len(got[r])
		}
		mu.Unlock()
		if failed || all && n == published || time.Now().After(deadline) {
			break
		}
		if n == published { // one at a time, so that each reader gets a turn
			published++
			if err := b.Enqueue(ctx, "jobs", strconv.Itoa(published)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("readers failed: %v", errs)
	}
	seen := make(map[uint64]int)
	for r := range readers {
		if len(got[r]) == 0 {
			t.Errorf("reader %d got no event of %d", r, published)
		}
		for _, id := range got[r] {
			seen[id]++
		}
	}
	for id := uint64(1); id <= uint64(published); id++ {
		if seen[id] != 1 {
			t.Errorf("event %d read %d times", id, seen[id])
		}
	}
}

// TestIdleTakeover: a connection that takes over, in the same process, a
// key whose connection waits for events gets it promptly, not after the
// older connection's heartbeat, and the older one ends with ErrReplaced.
func TestIdleTakeover(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 60*time.Second)
	if err := b.Enqueue(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	old, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	evs, _, err := old.Next(ctx, nil, nil, 1<<20)
	if err != nil || len(evs) != 1 {
		t.Fatalf("old: %v, %v", evs, err)
	}
	heartbeat := time.NewTimer(time.Minute)
	defer heartbeat.Stop()
	ended := make(chan error, 1)
	go func() {
		for {
			evs, _, err := old.Next(ctx, nil, heartbeat.C, 1<<20)
			if err != nil || len(evs) > 0 {
				ended <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // old waits for events
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sub, err := b.Subscribe(sctx, "k", sse.SubscribeRequest{Resume: true, Epoch: old.Epoch(), LastID: 1, Takeover: true})
	if err != nil {
		t.Fatalf("takeover after %v: %v", time.Since(start), err)
	}
	defer sub.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, sse.ErrReplaced) {
			t.Fatalf("old after the takeover: %v, want ErrReplaced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("old did not end")
	}
	if err := b.Enqueue(ctx, "k", "2"); err != nil {
		t.Fatal(err)
	}
	evs, _, err = sub.Next(ctx, nil, nil, 1<<20)
	if err != nil || len(evs) != 1 || evs[0].ID != 2 {
		t.Fatalf("new: %v %v, want 2", evs, err)
	}
}

// TestNewLifeUnderReader: when every message of a Queue key expires under
// a reader and the key's next event starts a new life (IDs from 1), the
// reader's range ends with ErrTruncated rather than dropping the new
// life's events or handing them out under the old life's floor, and the
// next reader reads the new life from its start.
func TestNewLifeUnderReader(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name))
	ctx := within(t, 60*time.Second)
	if err := b.Enqueue(ctx, "k", "a", "b", "c"); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	next, stop := iter.Pull2(b.Events(rctx, "k"))
	defer stop()
	for want := uint64(1); want <= 3; want++ {
		ev, err, ok := next()
		if !ok || err != nil || ev.ID != want {
			t.Fatalf("old life: %v %v %v, want event %d", ev, err, ok, want)
		}
	}
	// The key's messages expire. WithMaxAge cannot be shorter than the
	// duplicate window's 10 minutes, so the test removes them as MaxAge
	// would: all of them.
	stream, err := js.Stream(ctx, "SSE_"+name)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("sse."+name+".e.k"+base64.RawURLEncoding.EncodeToString([]byte("k")))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Known: true}); !errors.Is(err, sse.ErrUnknownKey) {
		t.Fatalf("the key after its messages expired: %v, want ErrUnknownKey", err)
	}
	if err := b.Enqueue(ctx, "k", "x", "y"); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		ev, err, ok := next()
		switch {
		case !ok:
			got <- errors.New("the range ended with no error")
		case err == nil:
			got <- fmt.Errorf("event %v", ev)
		default:
			got <- err
		}
	}()
	select {
	case err := <-got:
		if !errors.Is(err, sse.ErrTruncated) {
			t.Fatalf("the old life's reader got %v, want ErrTruncated", err)
		}
	case <-time.After(10 * time.Second):
		rcancel()
		t.Fatalf("the old life's reader got nothing, then %v", <-got)
	}
	stop()
	var ids []uint64
	for ev, err := range b.Events(ctx, "k") {
		if err != nil {
			t.Fatalf("new life: %v", err)
		}
		if ids = append(ids, ev.ID); len(ids) == 2 {
			break
		}
	}
	if ids[0] != 1 || ids[1] != 2 {
		t.Fatalf("new life: %v, want 1 and 2", ids)
	}
}

var idleKeys = flag.Int("ssejs.idle", 10000, "BenchmarkIdleKeys: how many keys, each with a reader (the issue's figure is 100000)")

// idleCost is what keys with a reader each cost the reading process,
// measured against the process before they attached.
type idleCost struct {
	goroutines     float64 // per key
	heap, stack    float64 // bytes in use per key: heap, and goroutine stacks
	attach, wakeup time.Duration
}

// measureIdle opens keys keys on the server at natsURL, attaches a reader
// to each in a new broker of its own (by Next, a goroutine each, or by
// Poll, none), and measures the broker's cost per key once they idle;
// then it publishes one event to each key and waits until every reader
// has it (wakeup).
func measureIdle(t testing.TB, natsURL string, mode sse.Mode, keys int, poll bool) idleCost {
	name := uniqueName()
	opts := []ssejs.Option{ssejs.WithName(name), ssejs.WithMode(mode), ssejs.WithStorage(jetstream.MemoryStorage), ssejs.WithTimeout(time.Minute)}
	_, jsP := connect(t, natsURL)
	producer := newBroker[int](t, jsP, opts...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	parallel := func(n int, f func(k int) error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range min(n, 64) {
			wg.Go(func() {
				for k := int(next.Add(1) - 1); k < n; k = int(next.Add(1) - 1) {
					if err := f(k); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
	}
	parallel(keys, func(k int) error { return producer.Open(ctx, k) })

	_, jsR := connect(t, natsURL)
	reader := newBroker[int](t, jsR, opts...)
	before := snapshot()
	subs := make([]sse.Subscription, keys)
	var got atomic.Int64
	var readers sync.WaitGroup
	woken := make(chan int, keys)
	start := time.Now()
	parallel(keys, func(k int) error {
		sub, err := reader.Subscribe(ctx, k, sse.SubscribeRequest{})
		if err != nil {
			return err
		}
		subs[k] = sub
		if !poll {
			readers.Go(func() {
				for {
					evs, _, err := sub.Next(ctx, nil, nil, 1<<20)
					got.Add(int64(len(evs)))
					if err != nil {
						return
					}
				}
			})
			return nil
		}
		evs, gap, err := sub.(poller).Poll(ctx, nil, 1<<20, func() { woken <- k })
		if len(evs) > 0 || gap != (sse.Gap{}) || err != nil {
			return fmt.Errorf("Poll of idle key %d: %v %v %v", k, evs, gap, err)
		}
		return nil
	})
	attach := time.Since(start)
	time.Sleep(time.Second) // let what attaching started settle
	after := snapshot()
	cost := idleCost{
		goroutines: float64(after.goroutines-before.goroutines) / float64(keys),
		heap:       float64(after.heap-before.heap) / float64(keys),
		stack:      float64(after.stack-before.stack) / float64(keys),
		attach:     attach,
	}
	start = time.Now()
	parallel(keys, func(k int) error { return producer.Enqueue(ctx, k, "x") })
	deadline := time.After(5 * time.Minute)
	if poll {
		for n := 0; n < keys; n++ {
			select {
			case k := <-woken:
				evs, _, err := subs[k].(poller).Poll(ctx, nil, 1<<20, func() {})
				if err != nil || len(evs) != 1 {
					t.Fatalf("key %d after its wake: %v %v", k, evs, err)
				}
			case <-deadline:
				t.Fatalf("%d of %d readers woken", n, keys)
			}
		}
	} else {
		for got.Load() < int64(keys) {
			select {
			case <-deadline:
				t.Fatalf("%d of %d readers got their event", got.Load(), keys)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	cost.wakeup = time.Since(start)
	cancel()
	readers.Wait()
	for _, sub := range subs {
		sub.Close()
	}
	return cost
}

// A memSnapshot is the process's goroutines and memory in use, after a
// collection.
type memSnapshot struct {
	goroutines  int
	heap, stack uint64
}

func snapshot() memSnapshot {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSnapshot{goroutines: runtime.NumGoroutine(), heap: ms.HeapInuse, stack: ms.StackInuse}
}

// BenchmarkIdleKeys measures, in the reading process, what a key with a
// reader costs while it idles: goroutines, heap and stack bytes per key,
// with each reader waiting in Next (one goroutine each: the reader's own)
// or registered by Poll (none), for -ssejs.idle keys, on a NATS server in
// a child process (so that its memory is not counted). It reports the time
// to attach the readers, and the time until one event published to each
// key has reached its reader; it fails if any reader ended meanwhile (in
// Queue mode, a spurious takeover would end it with ErrReplaced).
func BenchmarkIdleKeys(b *testing.B) {
	for _, mode := range []sse.Mode{sse.FanOut, sse.Queue} {
		for _, read := range []string{"Next", "Poll"} {
			b.Run(fmt.Sprintf("mode=%s/read=%s/keys=%d", mode, read, *idleKeys), func(b *testing.B) {
				for range b.N {
					dir, port := b.TempDir(), freePortB(b)
					cmd, err := child(dir, port)
					if err != nil {
						b.Fatal(err)
					}
					c := measureIdle(b, "nats://127.0.0.1:"+strconv.Itoa(port), mode, *idleKeys, read == "Poll")
					cmd.Process.Kill()
					cmd.Wait()
					b.ReportMetric(c.goroutines, "goroutines/key")
					b.ReportMetric(c.heap, "heap-B/key")
					b.ReportMetric(c.stack, "stack-B/key")
					b.ReportMetric(c.attach.Seconds(), "attach-s")
					b.ReportMetric(c.wakeup.Seconds(), "burst-s")
					b.ReportMetric(0, "ns/op")
				}
			})
		}
	}
}

// TestIdleKeyCost: keys with a reader each that polls cost the reading
// process no goroutine per key (a feed of one consumer for them all, and
// a hub without a goroutine per key), and readers waiting in Next one
// each, their own; every reader then gets its key's next event.
func TestIdleKeyCost(t *testing.T) {
	srv := startServer(t)
	const keys = 300
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		for _, poll := range []bool{false, true} {
			c := measureIdle(t, srv.ClientURL(), mode, keys, poll)
			t.Logf("%s poll=%v: %.2f goroutines, %.0f B heap, %.0f B stack per key", mode, poll, c.goroutines, c.heap, c.stack)
			max := 0.1 // the feed's few goroutines, shared by every key
			if !poll {
				max += 1 // the reader's own
			}
			if c.goroutines > max {
				t.Errorf("%s poll=%v: %.2f goroutines per key, want at most %.1f", mode, poll, c.goroutines, max)
			}
		}
	})
}
