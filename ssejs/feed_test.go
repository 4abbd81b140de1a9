package ssejs_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestFeedEndsWithoutItsStream: when the stream is deleted under a
// running feed, its ordered consumer retries for ever; the feed notices
// that the stream is gone, and its readers end with an error wrapping
// ErrUnavailable, rather than waiting until Shutdown.
func TestFeedEndsWithoutItsStream(t *testing.T) {
	testFeedEnds(t, false)
}

// TestFeedEndsWhenItsStreamIsMadeAnew: a stream deleted and made anew
// (another replica starting makes a missing stream) numbers its messages
// from 1 again, where the feed's consumer, recovered on it, waits for the
// old stream's next sequence: the feed ends, and its readers with it.
func TestFeedEndsWhenItsStreamIsMadeAnew(t *testing.T) {
	testFeedEnds(t, true)
}

func testFeedEnds(t *testing.T, anew bool) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		name := uniqueName()
		ctx := within(t, 60*time.Second)
		_, sub := readingFeed(t, ctx, js, name, mode, time.Second)
		if err := js.DeleteStream(ctx, "SSE_"+name); err != nil {
			t.Fatal(err)
		}
		if anew {
			newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode)) // makes the stream
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		for {
			evs, _, err := sub.Next(wctx, nil, nil, 1<<20)
			if len(evs) > 0 {
				t.Fatalf("events after the stream was deleted: %v", evs)
			}
			if err == nil {
				continue
			}
			if !errors.Is(err, ssejs.ErrUnavailable) {
				t.Fatalf("Next: %v, want an error wrapping ErrUnavailable", err)
			}
			return
		}
	})
}

// readingFeed returns a broker named name and a reader of its key "a" of a broker named name, whose
// feed gives its consumer giveUp, once it has read the key's first event.
func readingFeed(t *testing.T, ctx context.Context, js jetstream.JetStream, name string, mode sse.Mode, giveUp time.Duration) (*ssejs.Broker[string], sse.Subscription) {
	t.Helper()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
	ssejs.FeedGiveUp(b, giveUp)
	sub, err := b.Subscribe(ctx, "a", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sub.Close)
	if err := b.Enqueue(ctx, "a", "1"); err != nil {
		t.Fatal(err)
	}
	if ids := readIDs(t, ctx, sub, 1); len(ids) != 1 {
		t.Fatalf("read %v, want [1]", ids)
	}
	return b, sub
}

// TestFeedRecoversItsConsumer: a feed whose consumer is deleted (by an
// operator, or a node that lost it) recovers it, and goes on past the
// time it gives a troubled consumer, since its stream answers: its
// readers get every event, and no error.
func TestFeedRecoversItsConsumer(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		name := uniqueName()
		ctx := within(t, 60*time.Second)
		b, sub := readingFeed(t, ctx, js, name, mode, 500*time.Millisecond)
		stream, err := js.Stream(ctx, "SSE_"+name)
		if err != nil {
			t.Fatal(err)
		}
		deleted := 0
		for c := range stream.ListConsumers(ctx).Info() {
			if err := stream.DeleteConsumer(ctx, c.Name); err != nil {
				t.Fatal(err)
			}
			deleted++
		}
		if deleted == 0 {
			t.Fatal("the feed has no consumer on the stream")
		}
		// Well past the time it gives its consumer: it recovers within the
		// ordered consumer's first retry (1 s).
		time.Sleep(3 * time.Second)
		for i := 2; i <= 6; i++ {
			if err := b.Enqueue(ctx, "a", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
		ids := readIDs(t, ctx, sub, 6)
		if ids[0] != 2 || ids[len(ids)-1] != 6 || !consecutive(ids) {
			t.Fatalf("read %v, want 2 to 6", ids)
		}
	})
}
