package sse

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestBeatsNeverLate: a stream's heartbeat comes at most an interval after
// its last write, and at most an eighth of it sooner, whenever it wrote.
func TestBeatsNeverLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const interval = 80 * time.Millisecond
		c := newBeats(interval)
		for _, offset := range []time.Duration{0, 1, 3 * time.Millisecond, 9999 * time.Microsecond, 10 * time.Millisecond, 77 * time.Millisecond} {
			time.Sleep(offset)
			var b beat
			start := time.Now()
			<-c.wait(&b)
			if waited := time.Since(start); waited > interval || waited <= interval-interval/beatSlots {
				t.Fatalf("after a sleep of %v, the heartbeat came %v after the write: want (%v, %v]", offset, waited, interval-interval/beatSlots, interval)
			}
		}
	})
}

// TestBeatsShared: streams that wrote within one slot wait on one channel,
// and the clock holds no channel and no armed timer once every slot it
// was asked for has come.
func TestBeatsShared(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newBeats(80 * time.Millisecond)
		var a, b, d beat
		ca, cb := c.wait(&a), c.wait(&b)
		if ca != cb {
			t.Fatal("two streams that wrote at the same time wait on different channels")
		}
		time.Sleep(time.Millisecond)
		if c.wait(&a) != ca {
			t.Fatal("a stream that wrote again within its slot got another channel")
		}
		time.Sleep(20 * time.Millisecond)
		cd := c.wait(&d)
		if cd == ca {
			t.Fatal("a stream that wrote two slots later waits on the same channel")
		}
		c.mu.Lock()
		n := len(c.due)
		c.mu.Unlock()
		if n != 2 {
			t.Fatalf("%d slots waited for, want 2", n)
		}
		<-ca
		select {
		case <-cd:
			t.Fatal("the later slot's channel closed with the earlier one")
		default:
		}
		<-cd
		synctest.Wait()
		c.mu.Lock()
		n, armed := len(c.due), c.armed
		c.mu.Unlock()
		if n != 0 || armed {
			t.Fatalf("%d slots waited for, timer armed %v, once all came: want none", n, armed)
		}
	})
}

// TestHandlerStreamsShareHeartbeat: idle streams of one Handler hold no
// timer of their own: they wait on the handler's shared heartbeat clock.
func TestHandlerStreamsShareHeartbeat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t)
		h := Handler(b, queryKey)
		for _, k := range []string{"a", "b", "c"} {
			serveBubble(t, h, k)
		}
		synctest.Wait()
		c := h.(*handler[string]).beats
		c.mu.Lock()
		n := len(c.due)
		c.mu.Unlock()
		if n != 1 {
			t.Fatalf("3 streams started together wait on %d heartbeat channels, want 1", n)
		}
	})
}
