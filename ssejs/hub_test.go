package ssejs_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestHubCatchUp: FanOut readers of one key in one process share its
// live feed; a reader that starts before it, or falls behind what it
// keeps, reads through a consumer of its own until it is back, and every
// reader gets every event once, in order.
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
