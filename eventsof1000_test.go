package sse

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"
)

// TestEventsOf1000Keys: a reader ranges over 1,000 keys of a FanOut broker
// with EventsOf while a producer publishes into them; it stops the range
// after a random number of events, as a cut, and ranges again from each
// key's last event (After, one option per key); every key's events arrive
// once, in order, then the range ends when every key is closed.
func TestEventsOf1000Keys(t *testing.T) {
	b := fanOut(t)
	const nkeys, total = 1000, 8
	keys := make([]string, nkeys)
	index := make(map[string]int, nkeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		index[keys[i]] = i
		publish(t, b, keys[i], 1, total/2) // half before, half while it reads
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := total/2 + 1; n <= total; n++ {
			for _, k := range keys {
				if err := b.Publish(ctx, k, Event{Data: k + "/" + strconv.Itoa(n)}); err != nil {
					t.Error(err)
					return
				}
			}
		}
		for _, k := range keys {
			if err := b.Close(ctx, k); err != nil {
				t.Error(err)
			}
		}
	}()
	defer func() { <-done }()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	last := make([]uint64, nkeys) // per key: the last event received
	ranges := 0
	for ended := false; !ended; ranges++ {
		if ranges > 10*total*nkeys {
			t.Fatal("no end")
		}
		from := make([]ReadOption, nkeys)
		for i, id := range last {
			from[i] = After(id)
		}
		cut := 1 + rng.IntN(2*nkeys) // stop after this many events
		ended = true
		for ke, err := range b.EventsOf(ctx, keys, from...) {
			if err != nil {
				var g *GapError
				if errors.As(err, &g) {
					t.Fatalf("key %q: %v", ke.Key, err)
				}
				t.Fatal(err)
			}
			i := index[ke.Key]
			if ke.ID != last[i]+1 || ke.Data != ke.Key+"/"+strconv.FormatUint(ke.ID, 10) {
				t.Fatalf("key %q: event %d %q after %d: each once, in order", ke.Key, ke.ID, ke.Data, last[i])
			}
			last[i] = ke.ID
			if cut--; cut == 0 {
				ended = false
				break
			}
		}
	}
	for i, id := range last {
		if id != total {
			t.Fatalf("key %d: %d events", i, id)
		}
	}
	t.Logf("%d keys × %d events over %d ranges", nkeys, total, ranges)
	if ranges < 3 {
		t.Fatalf("%d ranges: hardly cut", ranges)
	}
}
