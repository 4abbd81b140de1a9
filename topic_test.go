package sse

import (
	"context"
	"testing"
)

// TestRequestKeyChannel: a key a connection's request creates gets a
// channel of one event, so that an idle stream's key costs little; a key
// the server creates gets the configured buffer. Both deliver every event,
// in order.
func TestRequestKeyChannel(t *testing.T) {
	b := newBroker[string](t)
	ctx := context.Background()
	sub, err := b.Subscribe(ctx, "req", SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if c := cap(b.Stream("req")); c != requestBuffer {
		t.Fatalf("a request key's channel holds %d events, want %d", c, requestBuffer)
	}
	if c := cap(b.Stream("server")); c != DefaultBuffer {
		t.Fatalf("a server key's channel holds %d events, want %d", c, DefaultBuffer)
	}
	for i := range 100 {
		if err := b.Enqueue(ctx, "req", "a", "b"); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := b.Close(ctx, "req"); err != nil {
		t.Fatal(err)
	}
	var next uint64 = 1
	for {
		evs, gap, err := sub.Next(ctx, nil, nil, 1<<20)
		if gap != (Gap{}) {
			t.Fatalf("gap %+v", gap)
		}
		for _, ev := range evs {
			if ev.ID != next {
				t.Fatalf("got ID %d, want %d", ev.ID, next)
			}
			next++
		}
		if err != nil {
			if next != 201 {
				t.Fatalf("ended with %v after %d events, want 200", err, next-1)
			}
			return
		}
	}
}
