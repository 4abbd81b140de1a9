package sse

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
)

// TestBlockBound: under Block the events accepted for a key and not yet in
// its channel never exceed n - 1 + b (b the largest batch), within the
// n + P·b the documentation promises, with P producers at once. The test
// counts for itself: accepted (after Enqueue returns) - len(ch) - received
// (after each receive), read in that order, is at most the pending count at
// the first read plus the one event the reader holds.
func TestBlockBound(t *testing.T) {
	for _, p := range []int{1, 8} {
		t.Run(fmt.Sprintf("producers=%d", p), func(t *testing.T) {
			const n, batch, calls = 4, 3, 600
			b := newBroker[string](t, WithBuffer(1), WithMaxPending(n, Block))
			ch := b.Stream("k")
			var accepted, received atomic.Int64
			var wg sync.WaitGroup
			for i := range p {
				wg.Go(func() {
					for c := range calls {
						size := 1 + (i+c)%batch // batches of 1 to 3
						data := make([]string, size)
						for j := range data {
							data[j] = "x"
						}
						if err := b.Enqueue(context.Background(), "k", data...); err != nil {
							t.Error(err)
							return
						}
						accepted.Add(int64(size))
					}
				})
			}
			stop := make(chan struct{})
			peak := make(chan int64)
			go func() {
				var max int64
				for {
					select {
					case <-stop:
						peak <- max
						return
					default:
					}
					a := accepted.Load()
					c := int64(len(ch))
					r := received.Load()
					if v := a - c - r; v > max {
						max = v
					}
					runtime.Gosched()
				}
			}()
			go func() {
				wg.Wait()
				b.Close(context.Background(), "k")
			}()
			for range ch {
				received.Add(1)
			}
			close(stop)
			got := <-peak
			if want := int64(n + p*batch); got > want {
				t.Fatalf("%d events accepted and not in the channel at once, want at most n + P·b = %d", got, want)
			}
			if want := int64(n - 1 + batch + 1); got > want {
				t.Fatalf("%d events accepted and not in the channel at once, want at most n - 1 + b, plus the reader's, = %d", got, want)
			}
			if r, a := received.Load(), accepted.Load(); r != a || a != int64(p*calls*2) {
				t.Fatalf("received %d of %d accepted events, want %d", r, a, p*calls*2)
			}
			t.Logf("peak %d pending with n=%d, b=%d, P=%d", got, n, batch, p)
		})
	}
}

// TestBlockWakesEveryWaiter: producers waiting on a full key are woken one
// after another as it drains, a producer that gives up does not hold the
// others back, and Close releases those still waiting (their events are
// discarded).
func TestBlockWakesEveryWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(1), WithMaxPending(2, Block))
		ctx := context.Background()
		must(t, b.Enqueue(ctx, "k", "1", "2", "3")) // 1 in the channel, 2 pending: full
		done := make(chan error, 8)
		quitter, quit := context.WithCancel(ctx)
		go func() { done <- b.Enqueue(quitter, "k", "x") }()
		for range 5 {
			go func() { done <- b.Enqueue(ctx, "k", "x") }()
		}
		synctest.Wait()
		if len(done) != 0 {
			t.Fatal("a producer did not wait for room")
		}
		quit()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("the producer that gave up: %v", err)
		}
		ch := b.Stream("k")
		for len(done) < 5 {
			<-ch // the reader drains: each wake-up lets producers through
			synctest.Wait()
		}
		for range 5 {
			must(t, <-done)
		}
		// Fill the key again, with producers waiting, then close it.
		for len(ch) < cap(ch) || b.Stats().Pending < 2 {
			must(t, b.Enqueue(ctx, "k", "y"))
		}
		for range 3 {
			go func() { done <- b.Enqueue(ctx, "k", "late") }()
		}
		synctest.Wait()
		must(t, b.Close(ctx, "k"))
		for range 3 {
			must(t, <-done)
		}
		if s := b.Stats(); s.Discarded != 3 {
			t.Fatalf("stats %+v: want the 3 late events discarded", s)
		}
		for range ch { // drain, so that Shutdown drops nothing
		}
	})
}
