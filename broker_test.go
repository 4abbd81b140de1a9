package sse

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newBroker returns a broker that is shut down when the test ends.
func newBroker[K comparable](t testing.TB, opts ...Option) *Broker[K] {
	t.Helper()
	b := New[K](opts...)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return b
}

// withTest returns an option that changes the unexported configuration.
func withTest(f func(*config)) Option { return optionFunc(f) }

const patience = 10 * time.Second // bound on waits in real-time tests

// recv receives n events from ch, failing the test if they do not come.
func recv(t testing.TB, ch <-chan Event, n int) []Event {
	t.Helper()
	out := make([]Event, 0, n)
	timeout := time.After(patience)
	for len(out) < n {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed after %d of %d events", len(out), n)
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("received %d of %d events in %v", len(out), n, patience)
		}
	}
	return out
}

// recvAll receives from ch until it is closed.
func recvAll(t testing.TB, ch <-chan Event) []Event {
	t.Helper()
	var out []Event
	timeout := time.After(patience)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return out
			}
			out = append(out, ev)
		case <-timeout:
			t.Fatalf("channel not closed after %v (%d events)", patience, len(out))
		}
	}
}

// expectEnd fails unless ch is closed and empty.
func expectEnd(t testing.TB, ch <-chan Event) {
	t.Helper()
	if evs := recvAll(t, ch); len(evs) != 0 {
		t.Fatalf("got %d more events, want the end: %v", len(evs), evs)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// checkSeq fails unless evs carry IDs from..from+len-1 and data "<ID>".
func checkSeq(t testing.TB, evs []Event, from uint64) {
	t.Helper()
	for i, ev := range evs {
		id := from + uint64(i)
		if ev.ID != id || ev.Data != strconv.FormatUint(id, 10) {
			t.Fatalf("event %d is %+v, want ID %d, Data %q", i, ev, id, strconv.FormatUint(id, 10))
		}
	}
}

// seq returns the data of events from..to, as checkSeq expects.
func seq(from, to int) []string {
	var s []string
	for i := from; i <= to; i++ {
		s = append(s, strconv.Itoa(i))
	}
	return s
}

// enqueueSeq enqueues events whose data is their expected ID, from..to.
func enqueueSeq[K comparable](t testing.TB, b *Broker[K], key K, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		must(t, b.Enqueue(context.Background(), key, strconv.Itoa(i)))
	}
}

func TestFIFOAndIDs(t *testing.T) {
	b := newBroker[string](t)
	ctx := context.Background()
	must(t, b.Enqueue(ctx, "a", "1"))
	must(t, b.Enqueue(ctx, "a", "2", "3", "4"))
	must(t, b.Publish(ctx, "a", Event{ID: 99, Name: "n", Data: "5"}, Event{Data: "6"}))
	must(t, b.Enqueue(ctx, "b", "1"))
	must(t, b.Close(ctx, "a"))
	got := recvAll(t, b.Stream("a"))
	checkSeq(t, got, 1)
	if len(got) != 6 || got[4].Name != "n" {
		t.Fatalf("got %+v", got)
	}
	checkSeq(t, recv(t, b.Stream("b"), 1), 1)
}

func TestBatchesStayContiguous(t *testing.T) {
	b := newBroker[int](t, WithBuffer(1))
	const producers, batches, size = 4, 50, 7
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range batches {
				batch := make([]string, size)
				for j := range batch {
					batch[j] = fmt.Sprintf("%d/%d/%d", p, i, j)
				}
				must(t, b.Enqueue(context.Background(), 0, batch...))
			}
		})
	}
	got := recv(t, b.Stream(0), producers*batches*size)
	wg.Wait()
	next := make([]int, producers) // next batch expected from each producer
	for k := 0; k < len(got); k += size {
		var p, i, j int
		if _, err := fmt.Sscanf(got[k].Data, "%d/%d/%d", &p, &i, &j); err != nil {
			t.Fatal(err)
		}
		if i != next[p] || j != 0 {
			t.Fatalf("at %d: %q, want batch %d of producer %d to start", k, got[k].Data, next[p], p)
		}
		next[p]++
		for j := range size {
			if want := fmt.Sprintf("%d/%d/%d", p, i, j); got[k+j].Data != want {
				t.Fatalf("at %d: %q, want %q: batch interleaved", k+j, got[k+j].Data, want)
			}
			if got[k+j].ID != uint64(k+j+1) {
				t.Fatalf("at %d: ID %d", k+j, got[k+j].ID)
			}
		}
	}
}

func TestStreamReturnsOneChannelPerKey(t *testing.T) {
	b := newBroker[string](t)
	if first := b.Stream("a"); b.Stream("a") != first {
		t.Fatal("two channels for one key")
	}
	if b.Stream("a") == b.Stream("b") {
		t.Fatal("one channel for two keys")
	}
}

func TestCompetingReadersReceiveEachEventOnce(t *testing.T) {
	b := newBroker[string](t, WithBuffer(2))
	const n = 5000
	var mu sync.Mutex
	seen := make(map[uint64]int)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			var last uint64
			for ev := range b.Stream("k") {
				if ev.ID <= last {
					t.Errorf("reader got ID %d after %d", ev.ID, last)
				}
				last = ev.ID
				mu.Lock()
				seen[ev.ID]++
				mu.Unlock()
			}
		})
	}
	enqueueSeq(t, b, "k", 1, n)
	must(t, b.Close(context.Background(), "k"))
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("received %d distinct events, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Fatalf("event %d received %d times", id, c)
		}
	}
}

func TestEventsWaitForFirstReader(t *testing.T) {
	b := newBroker[string](t)
	enqueueSeq(t, b, "k", 1, 1000) // far beyond the channel buffer
	must(t, b.Close(context.Background(), "k"))
	got := recvAll(t, b.Stream("k"))
	if len(got) != 1000 {
		t.Fatalf("got %d events, want 1000", len(got))
	}
	checkSeq(t, got, 1)
}

func TestCloseDrainsThenEnds(t *testing.T) {
	b := newBroker[string](t)
	ch := b.Stream("k")
	enqueueSeq(t, b, "k", 1, 3)
	must(t, b.Close(context.Background(), "k"))
	must(t, b.Close(context.Background(), "k")) // idempotent
	checkSeq(t, recvAll(t, ch), 1)
	if b.Stream("k") != ch {
		t.Fatal("a closed key's Stream returned a new channel")
	}
	must(t, b.Enqueue(context.Background(), "k", "late"))
	must(t, b.Publish(context.Background(), "k", Event{Data: "late"}, Event{Data: "later"}))
	expectEnd(t, ch)
	if s := b.Stats(); s.Discarded != 3 || s.Enqueued != 3 || s.Closed != 1 || s.Keys != 0 {
		t.Fatalf("stats %+v, want 3 enqueued, 3 discarded, 1 closed key", s)
	}
}

func TestCloseUnknownKeyEndsLateReader(t *testing.T) {
	b := newBroker[string](t)
	must(t, b.Close(context.Background(), "never"))
	expectEnd(t, b.Stream("never"))
	must(t, b.Enqueue(context.Background(), "never", "x"))
	expectEnd(t, b.Stream("never"))
	if s := b.Stats(); s.Discarded != 1 || s.Closed != 1 {
		t.Fatalf("stats %+v", s)
	}
}

func TestRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithRetention(time.Minute))
		ctx := context.Background()
		enqueueSeq(t, b, "k", 1, 2)
		ch := b.Stream("k")
		checkSeq(t, recv(t, ch, 2), 1)
		must(t, b.Close(ctx, "k")) // read before the Close: the clock starts now
		expectEnd(t, ch)

		time.Sleep(time.Minute - time.Second)
		synctest.Wait()
		expectEnd(t, b.Stream("k")) // still remembered: the late reader sees the end
		must(t, b.Enqueue(ctx, "k", "discarded"))

		time.Sleep(time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Closed != 0 || s.Keys != 0 || s.Discarded != 1 {
			t.Fatalf("after retention: %+v", s)
		}
		enqueueSeq(t, b, "k", 1, 1) // a fresh queue, IDs from 1
		checkSeq(t, recv(t, b.Stream("k"), 1), 1)
	})
}

func TestRetentionForgetsUndrainedKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(4), WithRetention(time.Minute))
		ch := b.Stream("k")
		enqueueSeq(t, b, "k", 1, 100) // 4 in the channel, 96 backlogged with a feeder
		must(t, b.Close(context.Background(), "k"))
		time.Sleep(time.Minute)
		synctest.Wait()
		got := recvAll(t, ch) // the old channel still closes
		if s := b.Stats(); s.Dropped+uint64(len(got)) != 100 || s.Pending != 0 || s.Closed != 0 {
			t.Fatalf("received %d, stats %+v: want the rest dropped", len(got), s)
		}
		checkSeq(t, got, 1)
	})
}

// TestForgottenBacklogDoesNotLeak: a key forgotten with events still in its
// overflow must not hand them to the next key that reuses its backlog.
func TestForgottenBacklogDoesNotLeak(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		b := newBroker[string](t, WithBuffer(1), WithRetention(time.Minute))
		must(t, b.Enqueue(ctx, "a", "a1")) // in the channel
		must(t, b.Enqueue(ctx, "a", "a2")) // taken by the feeder, which waits
		synctest.Wait()
		must(t, b.Enqueue(ctx, "a", "a3")) // in the overflow
		must(t, b.Close(ctx, "a"))
		time.Sleep(time.Minute) // forgotten: the feeder stops, a2 and a3 are dropped
		synctest.Wait()
		if s := b.Stats(); s.Dropped != 2 {
			t.Fatalf("stats %+v, want 2 dropped", s)
		}
		must(t, b.Enqueue(ctx, "b", "1", "2", "3")) // backlogged again, from the pool
		checkSeq(t, recv(t, b.Stream("b"), 3), 1)
	})
}

// TestShutdownKeepsClosedKeysWhileDraining: retention does not cut the
// drain short.
func TestShutdownKeepsClosedKeysWhileDraining(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New[string](WithBuffer(1), WithRetention(10*time.Millisecond))
		ch := b.Stream("k")
		enqueueSeq(t, b, "k", 1, 10)
		done := make(chan error)
		go func() { done <- b.Shutdown(context.Background()) }()
		var got []Event
		for ev := range ch { // a slow reader: far slower than the retention
			got = append(got, ev)
			time.Sleep(time.Second)
		}
		must(t, <-done)
		checkSeq(t, got, 1)
		if len(got) != 10 {
			t.Fatalf("got %d of 10 events", len(got))
		}
	})
}

func TestSlowKeyDoesNotDelayOthers(t *testing.T) {
	b := newBroker[string](t)
	enqueueSeq(t, b, "stalled", 1, 10000) // nobody reads this key
	ch := b.Stream("live")
	for i := 1; i <= 1000; i++ {
		must(t, b.Enqueue(context.Background(), "live", strconv.Itoa(i)))
		checkSeq(t, recv(t, ch, 1), uint64(i)) // delivered while "stalled" is full
	}
	if s := b.Stats(); s.Pending != 10000-DefaultBuffer {
		t.Fatalf("pending %d, want %d", s.Pending, 10000-DefaultBuffer)
	}
	checkSeq(t, recv(t, b.Stream("stalled"), 10000), 1) // else Shutdown waits for a reader
}

func TestOverflowReachesReaderWithoutTimers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t)
		enqueueSeq(t, b, "k", 1, 10000)
		synctest.Wait()
		start := time.Now()
		checkSeq(t, recv(t, b.Stream("k"), 10000), 1)
		if d := time.Since(start); d != 0 {
			t.Fatalf("draining took %v of fake time: something polls", d)
		}
		synctest.Wait()
		if s := b.Stats(); s.Pending != 0 {
			t.Fatalf("pending %d after drain", s.Pending)
		}
	})
}

// feeders counts the goroutines that run Broker.feed.
func feeders() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), ").feed(")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestDefaultRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t) // default settings
		must(t, b.Close(context.Background(), "k"))
		time.Sleep(DefaultRetention - time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Closed != 1 {
			t.Fatalf("closed key forgotten before %v: %+v", DefaultRetention, s)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Closed != 0 || s.Keys != 0 {
			t.Fatalf("closed key still remembered after %v: %+v", DefaultRetention, s)
		}
		if DefaultRetention != 5*time.Minute { // the figure the README gives
			t.Fatalf("DefaultRetention is %v, documented as 5m", DefaultRetention)
		}
	})
}

func TestNoGoroutinePerIdleKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[int](t)
		before := runtime.NumGoroutine()
		for k := range 1000 {
			must(t, b.Enqueue(context.Background(), k, "x")) // fits in the channel
		}
		synctest.Wait() // the loop has handled every Enqueue
		if n := runtime.NumGoroutine() - before; n > 0 {
			t.Fatalf("%d goroutines more for 1000 idle keys", n)
		}
		enqueueSeq(t, b, 0, 1, 100) // backlogged: one feeder
		synctest.Wait()
		if n := feeders(); n != 1 {
			t.Errorf("%d feeders with one backlogged key, want 1", n)
		}
		recv(t, b.Stream(0), 101)
		synctest.Wait()
		if n := feeders(); n != 0 {
			t.Errorf("%d feeders outlived their backlog", n)
		}
	})
}

func TestDropOldest(t *testing.T) {
	b := newBroker[string](t, WithBuffer(2), WithMaxPending(3, DropOldest))
	enqueueSeq(t, b, "k", 1, 10)
	must(t, b.Close(context.Background(), "k"))
	got := recvAll(t, b.Stream("k"))
	// 1, 2 fill the channel; some of the next ones may be on their way into
	// it; the overflow keeps the newest 3 of the rest.
	if s := b.Stats(); s.Dropped != uint64(10-len(got)) || len(got) < 5 {
		t.Fatalf("received %d, stats %+v", len(got), s)
	}
	if got[len(got)-1].ID != 10 || got[len(got)-2].ID != 9 || got[len(got)-3].ID != 8 {
		t.Fatalf("the newest events were not kept: %v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID <= got[i-1].ID {
			t.Fatalf("out of order: %v", got)
		}
	}
}

func TestDropOldestWithBacklog(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(1), WithMaxPending(3, DropOldest))
		enqueueSeq(t, b, "k", 1, 2) // 1 in the channel, 2 on its way
		synctest.Wait()             // the feeder holds 2 and waits for the reader
		enqueueSeq(t, b, "k", 3, 9) // the overflow keeps 7, 8, 9
		must(t, b.Close(context.Background(), "k"))
		got := recvAll(t, b.Stream("k"))
		want := []uint64{1, 2, 7, 8, 9}
		if len(got) != len(want) {
			t.Fatalf("got %v, want IDs %v", got, want)
		}
		for i := range want {
			if got[i].ID != want[i] {
				t.Fatalf("got %v, want IDs %v", got, want)
			}
		}
		if s := b.Stats(); s.Dropped != 4 {
			t.Fatalf("dropped %d, want 4", s.Dropped)
		}
	})
}

// TestDropNewest: the event the feeder holds on its way into the channel
// counts against the bound, so the overflow never holds more than n.
func TestDropNewest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(1), WithMaxPending(3, DropNewest))
		enqueueSeq(t, b, "k", 1, 2) // 1 in the channel, 2 on its way
		synctest.Wait()             // the feeder holds 2 and waits for the reader
		must(t, b.Enqueue(context.Background(), "k", "3", "4", "5", "6", "7"))
		if s := b.Stats(); s.Pending != 3 {
			t.Fatalf("pending %d beyond the buffer, want the bound, 3", s.Pending)
		}
		must(t, b.Close(context.Background(), "k"))
		got := recvAll(t, b.Stream("k"))
		checkSeq(t, got, 1)
		if len(got) != 4 {
			t.Fatalf("got %v, want IDs 1-4", got)
		}
		if s := b.Stats(); s.Dropped != 3 || s.Enqueued != 7 {
			t.Fatalf("stats %+v, want 3 dropped of 7", s)
		}
	})
}

// TestBlockWaitsForThatKeyOnly: a key with n events accepted and not in its
// channel makes its producers wait, and only its producers, until its
// reader has brought them down to n/2.
func TestBlockWaitsForThatKeyOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(1), WithMaxPending(4, Block))
		ctx := context.Background()
		// 1 fills the channel; 2-5 are pending: the bound.
		must(t, b.Enqueue(ctx, "k", seq(1, 5)...))
		synctest.Wait()
		if s := b.Stats(); s.Pending != 4 {
			t.Fatalf("pending %d, want 4", s.Pending)
		}

		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if err := b.Enqueue(short, "k", "6"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Enqueue on a full key: %v, want DeadlineExceeded", err)
		}
		// Other keys flow.
		must(t, b.Enqueue(ctx, "other", seq(1, 100)...))
		checkSeq(t, recv(t, b.Stream("other"), 100), 1)

		done := make(chan error, 1)
		go func() { done <- b.Enqueue(ctx, "k", "6") }()
		blocked := func() bool {
			synctest.Wait() // everything that can run has run
			select {
			case err := <-done:
				must(t, err)
				return false
			default:
				return true
			}
		}
		if !blocked() {
			t.Fatal("Enqueue returned while the key was full")
		}
		ch := b.Stream("k")
		checkSeq(t, recv(t, ch, 1), 1) // 2 enters the channel: 3 pending
		if !blocked() {
			t.Fatal("Enqueue returned with 3 pending: producers wait for n/2")
		}
		checkSeq(t, recv(t, ch, 1), 2) // 3 enters the channel: 2 pending, n/2
		if blocked() {
			t.Fatal("Enqueue still blocked with n/2 pending")
		}
		must(t, b.Close(ctx, "k"))
		checkSeq(t, recvAll(t, ch), 3)
		if s := b.Stats(); s.Dropped != 0 || s.Enqueued != 106 {
			t.Fatalf("stats %+v, want 106 enqueued, none dropped", s)
		}
	})
}

func TestBlockAdmitsBatchLargerThanBound(t *testing.T) {
	b := newBroker[string](t, WithBuffer(1), WithMaxPending(2, Block))
	must(t, b.Enqueue(context.Background(), "k", seq(1, 200)...)) // not congested: enters whole
	must(t, b.Close(context.Background(), "k"))                   // never waits
	got := recvAll(t, b.Stream("k"))
	if len(got) != 200 {
		t.Fatalf("got %d events, want 200", len(got))
	}
	checkSeq(t, got, 1)
}

func TestInboxFullWaitsForRoom(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	entered := make(chan struct{})
	b := newBroker[string](t,
		withTest(func(c *config) {
			c.inbox = 4
			c.onWake = func() {
				once.Do(func() { close(entered) })
				<-release
			}
		}))
	ctx := context.Background()
	must(t, b.Enqueue(ctx, "k", "1"))
	<-entered // the loop is held before it takes the inbox
	for i := 2; i <= 4; i++ {
		// No round trip: these return while the loop is held.
		must(t, b.Enqueue(ctx, "k", strconv.Itoa(i)))
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.Enqueue(short, "k", "x"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Enqueue into a full inbox: %v, want DeadlineExceeded", err)
	}
	if err := b.Close(short, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close into a full inbox: %v, want DeadlineExceeded", err)
	}
	done := make(chan error, 1)
	go func() { done <- b.Enqueue(ctx, "k", "5") }()
	close(release)
	must(t, <-done)
	checkSeq(t, recv(t, b.Stream("k"), 5), 1)
}

func TestInboxBoundsEvents(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	entered := make(chan struct{})
	b := newBroker[string](t, withTest(func(c *config) {
		c.inbox = 4
		c.onWake = func() {
			once.Do(func() { close(entered) })
			<-release
		}
	}))
	<-entered // the loop is held before it takes the inbox
	ctx := context.Background()
	must(t, b.Enqueue(ctx, "k", seq(1, 6)...)) // larger than the inbox: enters it empty
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := b.Enqueue(short, "k", "7"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Enqueue with the inbox full of events: %v, want DeadlineExceeded", err)
	}
	close(release)
	must(t, b.Enqueue(ctx, "k", seq(7, 9)...))
	checkSeq(t, recv(t, b.Stream("k"), 9), 1)
}

func TestInvalidEventsAreRefusedWhole(t *testing.T) {
	b := newBroker[string](t)
	ctx := context.Background()
	bad := []struct {
		name string
		call func() error
	}{
		{"name with LF", func() error { return b.Publish(ctx, "k", Event{Data: "ok"}, Event{Name: "a\nb"}) }},
		{"name with CR", func() error { return b.Publish(ctx, "k", Event{Data: "ok"}, Event{Name: "a\rb"}) }},
		{"name with NUL", func() error { return b.Publish(ctx, "k", Event{Name: "a\x00b"}) }},
		{"name not UTF-8", func() error { return b.Publish(ctx, "k", Event{Name: "\xff"}) }},
		{"data not UTF-8", func() error { return b.Publish(ctx, "k", Event{Data: "ok"}, Event{Data: "a\xc3"}) }},
		{"enqueued data not UTF-8", func() error { return b.Enqueue(ctx, "k", "ok", "\xed\xa0\x80") }},
	}
	for _, c := range bad {
		if err := c.call(); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("%s: %v, want ErrInvalidEvent", c.name, err)
		}
	}
	must(t, b.Publish(ctx, "k", Event{Name: "ok", Data: "line 1\nline 2\r\n\x00"}))
	got := recv(t, b.Stream("k"), 1)
	if got[0].ID != 1 {
		t.Fatalf("first valid event got ID %d: something of a refused call was enqueued", got[0].ID)
	}
	if s := b.Stats(); s.Enqueued != 1 {
		t.Fatalf("enqueued %d, want 1", s.Enqueued)
	}
}

func TestIdleTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithIdleTimeout(time.Minute), WithRetention(time.Hour))
		ctx := context.Background()
		enqueueSeq(t, b, "unread", 1, 3) // undelivered events do not keep it open
		enqueueSeq(t, b, "busy", 1, 1)
		streamed := b.Stream("streamed")
		for range 3 {
			time.Sleep(40 * time.Second)
			must(t, b.Enqueue(ctx, "busy", "x")) // keeps "busy" open
			b.Stream("streamed")                 // and Stream keeps "streamed" open
		}
		synctest.Wait()
		if s := b.Stats(); s.Keys != 2 || s.Closed != 1 {
			t.Fatalf("after 2 minutes: %+v, want busy and streamed open, unread closed", s)
		}
		checkSeq(t, recvAll(t, b.Stream("unread")), 1) // still readable, then ends
		time.Sleep(time.Minute)
		synctest.Wait()
		expectEnd(t, streamed)
		if s := b.Stats(); s.Keys != 0 || s.Closed != 3 {
			t.Fatalf("after 3 idle minutes: %+v, want all closed", s)
		}
	})
}

// TestIdleTimeoutStartsWhenTheStreamLeaves: a key an SSE connection held
// stays open for the idle time after the connection goes, so that its client
// can come back.
func TestIdleTimeoutStartsWhenTheStreamLeaves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithIdleTimeout(time.Minute))
		b.Stream("k") // a server key: a request key would be forgotten when its stream left
		sub, err := b.Subscribe(context.Background(), "k", SubscribeRequest{})
		must(t, err)
		time.Sleep(5 * time.Minute) // held: not idle
		synctest.Wait()
		sub.Close()
		time.Sleep(59 * time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Keys != 1 {
			t.Fatalf("%+v: closed before its idle time after the stream left", s)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if s := b.Stats(); s.Keys != 0 || s.Closed != 1 {
			t.Fatalf("%+v: still open after its idle time", s)
		}
	})
}

func TestIdleTimeoutManyKeysInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[int](t, WithIdleTimeout(time.Minute), WithRetention(time.Hour))
		for k := range 100 {
			must(t, b.Enqueue(context.Background(), k, "x"))
			time.Sleep(time.Second)
		}
		// Key k was last touched at k seconds; it closes at 60+k.
		for now := 100; now < 160; now++ {
			synctest.Wait()
			want := now - 60 + 1 // keys 0..now-60 are closed
			if s := b.Stats(); s.Closed != want {
				t.Fatalf("at %ds: %d closed, want %d", now, s.Closed, want)
			}
			time.Sleep(time.Second)
		}
	})
}

// checkTimerLists checks what lets the loop's timer look at two list
// heads only, never at every key: each list is well linked and ordered by
// stamp, so its head has its earliest deadline; every key is in the list
// for its state; and the timer is armed no later than the earlier head's
// deadline. It runs on the loop goroutine, between two wake-ups, of a
// broker with an idle timeout (without one, open keys are in no list).
func checkTimerLists[K comparable](l *loop[K]) error {
	if l.quitting {
		return nil
	}
	in := make(map[*topic[K]]*list[K])
	for _, lst := range []*list[K]{&l.idle, &l.retained} {
		n := 0
		var prev *topic[K]
		for t := lst.head; t != nil; prev, t = t, t.next {
			if t.prev != prev {
				return fmt.Errorf("key %v: broken back link", t.key)
			}
			if prev != nil && t.stamp < prev.stamp {
				return fmt.Errorf("key %v: stamp %d after %d", t.key, t.stamp, prev.stamp)
			}
			if l.topics[t.key] != t {
				return fmt.Errorf("key %v: listed but forgotten", t.key)
			}
			in[t] = lst
			n++
		}
		if lst.tail != prev || lst.n != n {
			return fmt.Errorf("list of %d with %d linked, or a wrong tail", lst.n, n)
		}
	}
	for k, t := range l.topics {
		want := &l.retained
		if !t.closed {
			want = &l.idle
		}
		if in[t] != want {
			return fmt.Errorf("key %v (closed %v) is not in its list", k, t.closed)
		}
	}
	var heads []int64
	if t := l.idle.head; t != nil {
		heads = append(heads, t.stamp+int64(l.b.cfg.idle))
	}
	if t := l.retained.head; t != nil {
		heads = append(heads, t.stamp+int64(l.b.cfg.retention))
	}
	for _, due := range heads {
		if !l.armed || l.armedAt > due {
			return fmt.Errorf("timer armed %v at %d, a key is due at %d", l.armed, l.armedAt, due)
		}
	}
	return nil
}

// TestTimerListsUnderRandomOperations checks checkTimerLists at every wake-up
// of the loop while keys are created, touched, read, attached, closed,
// closed again and left to expire, with time moving in random steps. Then,
// with nothing attached, every key must be gone after both durations.
func TestTimerListsUnderRandomOperations(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rng := rand.New(rand.NewPCG(seed, 0))
				// Either duration may be the shorter, so that a new key can
				// bring either list's head before the armed deadline.
				idle := time.Duration(10+rng.IntN(170)) * time.Second
				retention := time.Duration(10+rng.IntN(170)) * time.Second
				keys := 5 + rng.IntN(50)
				var built atomic.Pointer[Broker[int]] // nil at the loop's first wake-up
				var failed sync.Once
				b := newBroker[int](t, WithIdleTimeout(idle), WithRetention(retention),
					withTest(func(c *config) {
						c.onWake = func() {
							if b := built.Load(); b != nil {
								if err := checkTimerLists(&b.loop); err != nil {
									failed.Do(func() { t.Error(err) })
								}
							}
						}
					}))
				built.Store(b)
				ctx := context.Background()
				var subs []Subscription
				for range 2000 {
					k := rng.IntN(keys)
					switch op := rng.IntN(10); {
					case op < 4:
						must(t, b.Enqueue(ctx, k, "x"))
					case op < 5:
						must(t, b.Close(ctx, k))
					case op < 7: // read what is there, without waiting
						for ch := b.Stream(k); len(ch) > 0; {
							<-ch
						}
					case op < 8: // attach an SSE connection for a while
						sub, err := b.Subscribe(ctx, k, SubscribeRequest{})
						if err == nil {
							subs = append(subs, sub)
						} else if !errors.Is(err, ErrBusy) && !errors.Is(err, ErrFinished) {
							t.Fatal(err)
						}
					case op < 9 && len(subs) > 0:
						i := rng.IntN(len(subs))
						subs[i].Close()
						subs = append(subs[:i], subs[i+1:]...)
					default:
						time.Sleep(time.Duration(rng.IntN(20_000)) * time.Millisecond)
					}
				}
				for _, sub := range subs {
					sub.Close()
				}
				time.Sleep(idle + retention)
				synctest.Wait()
				if s := b.Stats(); s.Keys != 0 {
					t.Fatalf("%+v after idle timeout and retention with nothing attached", s)
				}
			})
		})
	}
}

func TestShutdownDrainsReaders(t *testing.T) {
	b := New[string](WithBuffer(2))
	ctx := context.Background()
	ch := b.Stream("k")
	enqueueSeq(t, b, "k", 1, 500)
	got := make(chan []Event)
	go func() { got <- recvAll(t, ch) }()
	must(t, b.Shutdown(ctx))
	checkSeq(t, <-got, 1)

	for name, err := range map[string]error{
		"Enqueue": b.Enqueue(ctx, "k", "x"),
		"Publish": b.Publish(ctx, "k", Event{}),
		"Close":   b.Close(ctx, "k"),
	} {
		if !errors.Is(err, ErrShutdown) {
			t.Errorf("%s after Shutdown: %v", name, err)
		}
	}
	expectEnd(t, b.Stream("k"))
	expectEnd(t, b.Stream("new"))
	if s := b.Stats(); s.Enqueued != 500 || s.Dropped != 0 || s.Closed != 1 {
		t.Fatalf("final stats %+v", s)
	}
	must(t, b.Shutdown(ctx)) // again
}

func TestShutdownDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New[string]()
		ch := b.Stream("stalled")
		enqueueSeq(t, b, "stalled", 1, 100) // nobody reads: the drain cannot finish
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want DeadlineExceeded", err)
		}
		got := recvAll(t, ch)
		checkSeq(t, got, 1) // what was in the channel stays readable
		if s := b.Stats(); len(got) != DefaultBuffer || s.Dropped != uint64(100-DefaultBuffer) {
			t.Fatalf("received %d, stats %+v", len(got), s)
		}
	})
}

func TestShutdownReleasesBlockedProducer(t *testing.T) {
	b := New[string](WithBuffer(1), WithMaxPending(0, Block))
	enqueueSeq(t, b, "k", 1, 2) // 1 in the channel, 2 waiting: congested
	b.Stats()
	done := make(chan error, 1)
	go func() { done <- b.Enqueue(context.Background(), "k", "3") }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want DeadlineExceeded (nobody reads k)", err)
	}
	if err := <-done; !errors.Is(err, ErrShutdown) {
		t.Fatalf("blocked Enqueue: %v, want ErrShutdown", err)
	}
}

func TestShutdownReleasesProducerWaitingForInbox(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	var once sync.Once
	b := New[string](withTest(func(c *config) {
		c.inbox = 1
		c.onWake = func() {
			once.Do(func() { close(entered) })
			<-release
		}
	}))
	must(t, b.Enqueue(context.Background(), "k", "1"))
	<-entered // the loop is held; the inbox is full
	done := make(chan error, 1)
	go func() { done <- b.Enqueue(context.Background(), "k", "2") }()
	shut := make(chan error, 1)
	go func() { shut <- b.Shutdown(context.Background()) }()
	if err := <-done; !errors.Is(err, ErrShutdown) {
		t.Fatalf("Enqueue waiting for the inbox: %v, want ErrShutdown", err)
	}
	close(release)
	must(t, <-shut)
	checkSeq(t, recvAll(t, b.Stream("k")), 1) // accepted before Shutdown: delivered
}

// TestStatsIsASnapshot checks every counter against a known history.
func TestStatsIsASnapshot(t *testing.T) {
	b := newBroker[string](t, WithBuffer(1))
	ctx := context.Background()
	enqueueSeq(t, b, "a", 1, 10) // 1 buffered, 9 pending
	enqueueSeq(t, b, "b", 1, 1)
	must(t, b.Close(ctx, "b"))
	must(t, b.Close(ctx, "c"))
	must(t, b.Enqueue(ctx, "c", "x", "y"))
	want := Stats{Keys: 1, Closed: 2, Pending: 9, Enqueued: 11, Discarded: 2}
	if s := b.Stats(); s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	recv(t, b.Stream("a"), 10) // else Shutdown waits for a reader
}

func TestEnqueueReceiveAllocs(t *testing.T) {
	b := newBroker[int](t)
	ch := b.Stream(1)
	ctx := context.Background()
	for range 100 { // warm up: the inbox's slices reach their size
		must(t, b.Enqueue(ctx, 1, "x"))
		<-ch
	}
	// testing.AllocsPerRun rounds down, so it would pass 0.9 allocations a
	// message. Count them all instead: a few stray ones from the runtime
	// are allowed, one in a hundred messages is not.
	const n = 10_000
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if err := b.Enqueue(ctx, 1, "x"); err != nil {
			t.Fatal(err)
		}
		<-ch
	}
	runtime.ReadMemStats(&after)
	if allocs := after.Mallocs - before.Mallocs; allocs >= n/100 {
		t.Fatalf("%d allocations for %d Enqueue and receive, want 0", allocs, n)
	}
}

func TestIdleKeyCost(t *testing.T) {
	if testing.Short() {
		t.Skip("measures memory over 100,000 keys")
	}
	b := newBroker[int](t)
	const n = 100_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for k := range n {
		must(t, b.Enqueue(context.Background(), k, "x"))
	}
	b.Stats()
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per idle key", per)
	if per > 1024 {
		t.Fatalf("%.0f bytes per idle key, want ≤ 1024", per)
	}
}

// TestCloseAfterShutdownPostsNothing: a subscription closed after Shutdown
// leaves nothing in an inbox that nobody reads.
func TestCloseAfterShutdownPostsNothing(t *testing.T) {
	b := New[string]()
	sub, err := b.Subscribe(context.Background(), "k", SubscribeRequest{})
	must(t, err)
	must(t, b.Shutdown(context.Background()))
	sub.Close()
	b.mu.Lock()
	n := len(b.cmds)
	b.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d commands left in the inbox after Shutdown", n)
	}
}

// TestInvalidKeys: a key the loop's map cannot hold is refused in the
// caller's goroutine, with ErrInvalidKey, and the broker carries on.
func TestInvalidKeys(t *testing.T) {
	type pair struct{ a, b any }
	ctx := context.Background()
	nan := math.NaN()
	check := func(t *testing.T, b *Broker[any], key any) {
		t.Helper()
		if err := b.Enqueue(ctx, key, "x"); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Enqueue: %v, want ErrInvalidKey", err)
		}
		if err := b.Publish(ctx, key, Event{Data: "x"}); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Publish: %v, want ErrInvalidKey", err)
		}
		if err := b.Close(ctx, key); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Close: %v, want ErrInvalidKey", err)
		}
		if _, err := b.Subscribe(ctx, key, SubscribeRequest{}); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("Subscribe: %v, want ErrInvalidKey", err)
		}
		expectEnd(t, b.Stream(key))
	}
	for _, c := range []struct {
		name string
		key  any
	}{
		{"slice", []int{1}},
		{"map", map[string]int{}},
		{"func", func() {}},
		{"NaN", nan},
		{"struct holding a slice", pair{1, []int{1}}},
		{"struct holding a NaN", pair{1, nan}},
		{"array holding a NaN", [2]any{1, nan}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, opts := range [][]Option{nil, {WithMaxKeys(1)}, {WithMaxPending(1, Block)}} {
				b := newBroker[any](t, opts...)
				check(t, b, c.key)
				// The loop is alive and its keys work.
				must(t, b.Enqueue(ctx, "fine", "1"))
				checkSeq(t, recv(t, b.Stream("fine"), 1), 1)
			}
		})
	}
	t.Run("float keys", func(t *testing.T) {
		b := newBroker[float64](t, WithMaxKeys(2))
		for range 3 { // a NaN would fill the bound for good
			if err := b.Enqueue(ctx, nan, "x"); !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("Enqueue(NaN): %v, want ErrInvalidKey", err)
			}
		}
		must(t, b.Enqueue(ctx, 1.5, "1"))
		must(t, b.Enqueue(ctx, math.Inf(1), "1"))
		checkSeq(t, recv(t, b.Stream(1.5), 1), 1)
	})
	if keysNeedCheck(reflect.TypeFor[string]()) || keysNeedCheck(reflect.TypeFor[struct {
		a int
		b [2]string
	}]()) {
		t.Error("keys that cannot fail the check are checked")
	}
}

// TestBurstLeavesNoMemory: neither one large batch nor many keys, once read
// and forgotten, keep memory for the broker's life.
func TestBurstLeavesNoMemory(t *testing.T) {
	heap := func() uint64 {
		var ms runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	ctx := context.Background()
	for _, c := range []struct {
		name string
		run  func(b *Broker[int])
	}{
		{"one batch of 1,000,000 events", func(b *Broker[int]) {
			data := make([]string, 1_000_000)
			for i := range data {
				data[i] = "x"
			}
			must(t, b.Enqueue(ctx, 1, data...))
			data = nil
			must(t, b.Close(ctx, 1))
			if got := len(recvAll(t, b.Stream(1))); got != 1_000_000 {
				t.Fatalf("received %d events", got)
			}
		}},
		{"200,000 keys", func(b *Broker[int]) {
			for k := range 200_000 {
				must(t, b.Enqueue(ctx, k, "x"))
				must(t, b.Close(ctx, k))
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := newBroker[int](t, WithRetention(time.Second))
				must(t, b.Enqueue(ctx, -1, "warm up"))
				before := heap()
				c.run(b)
				time.Sleep(2 * time.Second) // the keys are forgotten
				synctest.Wait()
				if s := b.Stats(); s.Keys != 1 || s.Closed != 0 {
					t.Fatalf("stats %+v: the keys were not forgotten", s)
				}
				if grown := int64(heap()) - int64(before); grown > 1<<20 {
					t.Fatalf("the heap grew by %d bytes, want under 1 MiB", grown)
				}
			})
		})
	}
}

// TestDropOldestKeepsTheNewest: what the feeder has taken counts against
// the bound, so a reader that comes late gets the buffer, at most one event
// in hand-off, then the newest n: whenever the feeder runs, and (in the
// bubble) when it has run halfway through.
func TestDropOldestKeepsTheNewest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(4), WithMaxPending(8, DropOldest))
		enqueueSeq(t, b, "k", 1, 50)
		synctest.Wait() // the feeder has taken what it takes, and waits for the reader
		enqueueSeq(t, b, "k", 51, 100)
		must(t, b.Close(context.Background(), "k"))
		got := recvAll(t, b.Stream("k"))
		if len(got) != 13 || got[4].ID <= 4 || got[4].ID >= 93 {
			t.Fatalf("got %v, want 1-4, one event in hand-off, and 93-100", got)
		}
		checkSeq(t, got[:4], 1)
		checkSeq(t, got[5:], 93)
	})
	for range 20 {
		b := newBroker[string](t, WithBuffer(4), WithMaxPending(8, DropOldest))
		enqueueSeq(t, b, "k", 1, 100)
		must(t, b.Close(context.Background(), "k"))
		got := recvAll(t, b.Stream("k"))
		checkSeq(t, got[:4], 1)
		if len(got) < 12 || len(got) > 13 {
			t.Fatalf("got %d events %v, want the 4 of the buffer, at most one in hand-off, and the newest 8", len(got), got)
		}
		checkSeq(t, got[len(got)-8:], 93)
		if s := b.Stats(); s.Dropped != uint64(100-len(got)) {
			t.Fatalf("dropped %d, received %d of 100", s.Dropped, len(got))
		}
	}
}

// TestShutdownResult: Shutdown returns nil when nothing was dropped, even
// past its deadline, and every caller gets the same result.
func TestShutdownResult(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := New[string]()
		enqueueSeq(t, b, "k", 1, 3) // in the channel: nothing to drop
		expired, cancel := context.WithCancel(context.Background())
		cancel()
		if err := b.Shutdown(expired); err != nil {
			t.Fatalf("Shutdown with an expired context, nothing dropped: %v, want nil", err)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		b := New[string]()
		b.Stream("stalled")
		enqueueSeq(t, b, "stalled", 1, 100)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		errs := make(chan error, 3)
		for _, c := range []context.Context{ctx, ctx, context.Background()} {
			go func() { errs <- b.Shutdown(c) }()
		}
		first := <-errs
		if !errors.Is(first, ErrDropped) || !errors.Is(first, context.DeadlineExceeded) {
			t.Fatalf("Shutdown: %v, want ErrDropped and DeadlineExceeded", first)
		}
		for range 2 {
			if err := <-errs; err != first {
				t.Fatalf("callers disagree: %v and %v", first, err)
			}
		}
	})
}

// TestRetentionWaitsForASlowReader: the retention time runs from the later
// of the Close and the last event a reader took, so a reader that keeps
// reading gets every event, however long it takes; the key is forgotten
// within two retention times of its last read.
func TestRetentionWaitsForASlowReader(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const retention = 200 * time.Millisecond
		b := newBroker[string](t, WithRetention(retention))
		ctx := context.Background()
		enqueueSeq(t, b, "k", 1, 1000)
		must(t, b.Close(ctx, "k"))
		var got []Event
		for ev, err := range b.Events(ctx, "k") {
			must(t, err)
			got = append(got, ev)
			time.Sleep(time.Millisecond) // a second for all: five retention times
		}
		if len(got) != 1000 {
			t.Fatalf("got %d of 1000 events", len(got))
		}
		checkSeq(t, got, 1)
		time.Sleep(2 * retention)
		synctest.Wait()
		if s := b.Stats(); s.Closed != 0 || s.Dropped != 0 {
			t.Fatalf("stats %+v: want the key forgotten, nothing dropped", s)
		}
	})
}

// TestAbandonedReaderIsTruncated: a closed key nobody reads from is
// forgotten after the retention time, and a reader that comes back learns
// that its stream was cut short.
func TestAbandonedReaderIsTruncated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(4), WithRetention(time.Minute))
		ctx := context.Background()
		enqueueSeq(t, b, "k", 1, 100)
		must(t, b.Close(ctx, "k"))
		next, stop := iter.Pull2(b.Events(ctx, "k"))
		defer stop()
		for i := 1; i <= 10; i++ { // then the reader goes away
			ev, err, _ := next()
			must(t, err)
			if ev.ID != uint64(i) {
				t.Fatalf("event %d has ID %d", i, ev.ID)
			}
		}
		time.Sleep(2 * time.Minute) // forgotten within two retention times of the last read
		synctest.Wait()
		if s := b.Stats(); s.Closed != 0 || s.Dropped == 0 {
			t.Fatalf("stats %+v: want the key forgotten, its overflow dropped", s)
		}
		n := 10
		for {
			ev, err, ok := next()
			if !ok {
				t.Fatal("the range ended without an error")
			}
			if err != nil {
				if !errors.Is(err, ErrTruncated) {
					t.Fatalf("after %d events: %v, want ErrTruncated", n, err)
				}
				break
			}
			n++
			if ev.ID != uint64(n) {
				t.Fatalf("event %d has ID %d", n, ev.ID)
			}
		}
		if s := b.Stats(); uint64(n)+s.Dropped != 100 {
			t.Fatalf("read %d, dropped %d, of 100", n, s.Dropped)
		}
		// A key closed and read to its end is not truncated.
		must(t, b.Close(ctx, "done"))
		for _, err := range b.Events(ctx, "done") {
			t.Fatalf("a closed key: %v", err)
		}
	})
}

// TestEventsErrors: Events reports why there is nothing to read, and ends
// with the context.
func TestEventsErrors(t *testing.T) {
	b := New[any](WithMaxKeys(1))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	must(t, b.Enqueue(ctx, "held", "1"))
	b.Stats()
	first := func(seq iter.Seq2[Event, error]) error {
		for _, err := range seq {
			return err
		}
		return nil
	}
	if err := first(b.Events(ctx, []int{1})); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("invalid key: %v", err)
	}
	if err := first(b.Events(ctx, "new")); !errors.Is(err, ErrTooManyKeys) {
		t.Errorf("a new key at the bound: %v", err)
	}
	n := 0
	for ev, err := range b.Events(ctx, "held") {
		if n++; n == 1 {
			if ev.Data != "1" || err != nil {
				t.Fatalf("got %+v, %v", ev, err)
			}
			cancel()
			continue
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: %+v, %v", ev, err)
		}
	}
	must(t, b.Shutdown(context.Background()))
	if err := first(b.Events(context.Background(), "held")); !errors.Is(err, ErrShutdown) {
		t.Errorf("after Shutdown: %v", err)
	}
}

// TestOpen: a key opened before its first event is a server key at once;
// Open reports a closed key and the key bound; an opened key nobody used is
// forgotten, not closed, when its idle time passes, so that a browser's
// first request does not get 204.
func TestOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithMaxKeys(2), WithIdleTimeout(time.Minute))
		ctx := context.Background()
		h := Handler(b, queryKey, WithKnownKeysOnly(), WithHeartbeat(0))
		status := func(key string) int {
			rctx, cancel := context.WithCancel(ctx)
			defer cancel()
			rec := &flushRecorder{header: http.Header{}}
			code := make(chan int, 1)
			w := statusRecorder{rec, code}
			go h.ServeHTTP(w, httptest.NewRequestWithContext(rctx, http.MethodGet, "/?key="+key, nil))
			synctest.Wait()
			select {
			case c := <-code:
				return c
			default:
				return http.StatusOK // streaming: only the headers were flushed
			}
		}
		must(t, b.Open(ctx, "job"))
		if got := status("job"); got != http.StatusOK {
			t.Fatalf("an opened key: %d, want a stream", got)
		}
		must(t, b.Open(ctx, "job")) // open: nothing to do
		must(t, b.Open(ctx, "idle"))
		if err := b.Open(ctx, "third"); !errors.Is(err, ErrTooManyKeys) {
			t.Fatalf("a third key at WithMaxKeys(2): %v", err)
		}
		time.Sleep(2 * time.Minute) // "idle" was never used
		synctest.Wait()
		if got := status("idle"); got != http.StatusNotFound {
			t.Fatalf("an opened key never used, after its idle time: %d, want 404 (not 204)", got)
		}
		must(t, b.Close(ctx, "job"))
		if err := b.Open(ctx, "job"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Open of a closed key: %v, want ErrClosed", err)
		}
		if err := b.Open(ctx, "third"); err != nil { // "idle" was forgotten: room
			t.Fatal(err)
		}
	})
}

// statusRecorder sends the status a handler writes.
type statusRecorder struct {
	*flushRecorder
	code chan int
}

func (s statusRecorder) WriteHeader(code int) {
	if code != http.StatusOK {
		s.code <- code
	}
}
func (s statusRecorder) Flush() { s.flushRecorder.Flush() }

// TestBadArgumentsPanic: a handler with nothing to read, or options out of
// range, panic when they are made, as New's options do.
func TestBadArgumentsPanic(t *testing.T) {
	var nilBroker *Broker[string]
	for name, f := range map[string]func(){
		"nil key function":   func() { Handler[string](newBroker[string](t), nil) },
		"nil source":         func() { Handler[string](nil, queryKey) },
		"nil broker":         func() { Handler[string](nilBroker, queryKey) },
		"negative heartbeat": func() { WithHeartbeat(-1) },
		"negative retry":     func() { WithRetry(-time.Second) },
		"negative timeout":   func() { WithWriteTimeout(-1) },
		"negative streams":   func() { WithMaxStreams(-1) },
		"event size 0":       func() { WithMaxEventSize(0) },
		"history of 0":       func() { WithHistory(0, 1, 0) },
		"unknown takeover":   func() { WithTakeover(Takeover(2)) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// TestMaxEventSize: events larger than the bound are refused whole, before
// they enter the broker.
func TestMaxEventSize(t *testing.T) {
	b := newBroker[string](t, WithMaxEventSize(10))
	ctx := context.Background()
	if err := b.Enqueue(ctx, "k", "fine", "01234567890"); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("11 bytes of data: %v", err)
	}
	if err := b.Publish(ctx, "k", Event{Name: "named", Data: "123456"}); !errors.Is(err, ErrInvalidEvent) {
		t.Fatalf("11 bytes of name and data: %v", err)
	}
	must(t, b.Publish(ctx, "k", Event{Name: "named", Data: "12345"}))
	must(t, b.Enqueue(ctx, "k", "0123456789"))
	if s := b.Stats(); s.Enqueued != 2 {
		t.Fatalf("stats %+v", s)
	}
	if DefaultMaxEventSize != 1<<20 {
		t.Fatalf("DefaultMaxEventSize is %d, documented as 1 MiB", DefaultMaxEventSize)
	}
}
