package ssejs_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestHubCatchUp: FanOut readers of one key in one process share its
// hub; a reader that starts before it, or falls behind what it keeps,
// catches up by direct gets until it is back, and every reader gets every
// event once, in order.
func TestHubCatchUp(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 120*time.Second)
	const half = 1500 // more messages than the hub keeps
	publish := func(from, to int) {
		for i := from; i <= to; i++ { // one call, one message
			if err := b.Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}
	publish(1, half)
	live, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, LastID: half, Epoch: epochOf(t, b, "k")})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	slow, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{}) // from the oldest held
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	go func() {
		publish(half+1, 2*half)
		b.Close(ctx, "k")
	}()
	read := func(sub sse.Subscription, pause bool) []uint64 {
		var ids []uint64
		for {
			evs, gap, err := sub.Next(ctx, nil, nil, 1<<10)
			if gap != (sse.Gap{}) {
				t.Fatalf("gap %+v", gap)
			}
			for _, ev := range evs {
				ids = append(ids, ev.ID)
			}
			if pause && len(ids)%50 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
			if err != nil {
				return ids
			}
		}
	}
	done := make(chan []uint64, 1)
	go func() { done <- read(live, false) }()
	slowIDs := read(slow, true)
	liveIDs := <-done
	check := func(who string, ids []uint64, from uint64) {
		t.Helper()
		if want := 2*half - int(from) + 1; len(ids) != want {
			t.Fatalf("%s read %d events, want %d", who, len(ids), want)
		}
		for i, id := range ids {
			if id != from+uint64(i) {
				t.Fatalf("%s: event %d has ID %d", who, i, id)
			}
		}
	}
	check("the live reader", liveIDs, half+1)
	check("the slow reader", slowIDs, 1)
}

// epochOf returns key's epoch, read by a probe subscription.
func epochOf(t *testing.T, b *ssejs.Broker[string], key string) string {
	t.Helper()
	sub, err := b.Subscribe(within(t, 10*time.Second), key, sse.SubscribeRequest{Resume: true, Epoch: "probe"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	return sub.Epoch()
}

// TestHubOnRunningFeed: a key whose first reader here attaches while the
// process's feed already runs, far past the key's last message (other
// keys' traffic), starts its hub right after that message: a live reader
// gets the key's next events, and readers that resume from each of its
// earlier IDs catch up by direct gets, then read the hub, each event once,
// in order, with no gap. In both modes.
func TestHubOnRunningFeed(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		name := uniqueName()
		b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
		ctx := within(t, 60*time.Second)
		for i := 1; i <= 5; i++ {
			if err := b.Enqueue(ctx, "a", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
		other, err := b.Subscribe(ctx, "b", sse.SubscribeRequest{}) // starts the feed
		if err != nil {
			t.Fatal(err)
		}
		defer other.Close()
		for i := range 200 {
			if err := b.Enqueue(ctx, "b", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
		epoch := epochOf(t, b, "a")
		if mode == sse.Queue {
			// One connection at a time: each resumes (a takeover) after
			// the one before took the key's events to its end.
			for from := uint64(0); from <= 5; from++ {
				r := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
				sub, err := r.Subscribe(ctx, "a", sse.SubscribeRequest{Resume: from > 0, Epoch: epoch, LastID: from, Takeover: true})
				if err != nil {
					t.Fatal(err)
				}
				want := uint64(6 + from)
				if err := b.Enqueue(ctx, "a", strconv.Itoa(int(want))); err != nil {
					t.Fatal(err)
				}
				ids := readIDs(t, ctx, sub, want)
				sub.Close()
				if ids[len(ids)-1] != want || !consecutive(ids) {
					t.Fatalf("from %d: %v, want consecutive IDs up to %d", from, ids, want)
				}
			}
			return
		}
		subs := make([]sse.Subscription, 6) // resuming after 0 (all), 1, ... 5 (live)
		for from := range subs {
			req := sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: uint64(from)}
			if subs[from], err = b.Subscribe(ctx, "a", req); err != nil {
				t.Fatal(err)
			}
			defer subs[from].Close()
		}
		for i := 6; i <= 8; i++ {
			if err := b.Enqueue(ctx, "a", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
		for from, sub := range subs {
			ids := readIDs(t, ctx, sub, 8)
			want := make([]uint64, 0, 8)
			for id := uint64(from + 1); id <= 8; id++ {
				want = append(want, id)
			}
			if !slices.Equal(ids, want) {
				t.Fatalf("resuming after %d: %v, want %v", from, ids, want)
			}
		}
	})
}

// TestHubCatchUpLaggingReplica: a reader behind the hub whose direct gets
// a lagging replica answers (it finds nothing) asks the stream's leader
// before it takes the stream for read: it gets every event, with no gap.
func TestHubCatchUpLaggingReplica(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 60*time.Second)
	for i := 1; i <= 5; i++ {
		if err := b.Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{}) // from the oldest held
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ssejs.StaleGets(b, 1000)
	ids := readIDs(t, ctx, sub, 5)
	if !slices.Equal(ids, []uint64{1, 2, 3, 4, 5}) {
		t.Fatalf("got %v, want 1 to 5", ids)
	}
}

// readIDs reads sub until it has the event last, failing at a gap or an
// error.
func readIDs(t *testing.T, ctx context.Context, sub sse.Subscription, last uint64) []uint64 {
	t.Helper()
	var ids []uint64
	for len(ids) == 0 || ids[len(ids)-1] < last {
		evs, gap, err := sub.Next(ctx, nil, nil, 1<<20)
		if gap != (sse.Gap{}) || err != nil {
			t.Fatalf("after %v: gap %v, %v", ids, gap, err)
		}
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
	}
	return ids
}

func consecutive(ids []uint64) bool {
	for i := 1; i < len(ids); i++ {
		if ids[i] != ids[i-1]+1 {
			return false
		}
	}
	return true
}
