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

// TestBlockBoundAcrossLives: events counted in a flow that the key's Close
// ended, and that reach the loop after the key was forgotten, join the new
// life's flow on top of what that life's producers were admitted against:
// the new life holds up to twice the bound, as WithMaxPending says, and no
// more. (Driven by hand as in TestBlockNewLifeWithAnEndedFlow.)
func TestBlockBoundAcrossLives(t *testing.T) {
	const n, batch = 2, 1
	b := build[string](WithBuffer(1), WithMaxPending(n, Block), WithRetention(0))
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	l := &b.loop
	must(t, b.Enqueue(ctx, "k", "1"))
	l.drain()                         // the first life; "1" is in its channel
	must(t, b.Enqueue(ctx, "k", "2")) // counted in the first life's flow
	must(t, b.Enqueue(ctx, "k", "3")) // likewise: the flow is at its bound
	l.close("k")                      // the Close came in the batch before
	l.expire()                        // forgotten at once
	must(t, b.Enqueue(ctx, "k", "4")) // a fresh flow: admitted
	must(t, b.Enqueue(ctx, "k", "5")) // admitted: the fresh flow has 1 < n
	l.drain()                         // a new life: "2" in its channel, 3 4 5 beyond
	pending := l.snapshot().Pending
	go l.run()
	t.Cleanup(func() {
		ch := b.Stream("k")
		go func() {
			for range ch {
			}
		}()
		must(t, b.Shutdown(context.Background()))
	})
	if pending <= n-1+batch || pending > 2*(n-1+batch) {
		t.Fatalf("the key holds %d events accepted and not in its channel, want more than n-1+b = %d (the case) and at most twice that", pending, n-1+batch)
	}
}
