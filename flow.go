package sse

import (
	"sync"
	"sync/atomic"
)

// A flow is one key's count, under the [Block] policy, of the events
// producers have had accepted and that have not yet reached the key's
// channel: in the inbox, in the overflow, or in its feeder's hands.
// Producers add to it in send, under the Broker's mu, only while it is below
// the bound; the loop and the key's feeder take from it as events enter the
// channel or are discarded. So the bound holds exactly, whatever the number
// of producers, and no producer waits for the loop to see its command. A
// flow allocates nothing per wait: waiting producers share one channel
// with a single token, passed from one to the next.
type flow struct {
	// pending is the count. It may run ahead of the truth while a feeder
	// sends (it gives back what it sent in chunks), which only makes
	// producers wait longer.
	pending atomic.Int64

	mu      sync.Mutex
	waiters int           // guarded by mu: producers waiting for room
	room    chan struct{} // set under mu at the first wait: capacity 1, a token in it wakes one waiter; closed when the key closes
	ended   bool          // guarded by mu: room is closed
}

// reserve returns key's flow, creating it if the key has none, and, if the
// key has as many events pending as the bound allows (any, for a bound of
// 0), the channel to wait on for room. The caller holds mu; it adds its
// events to the flow only if the channel is nil, and otherwise waits, then
// calls stopWaiting.
func (b *Broker[K]) reserve(key K) (*flow, chan struct{}) {
	f := b.flows[key]
	if f == nil {
		f = new(flow)
		b.flows[key] = f
		b.flowsPeak = max(b.flowsPeak, len(b.flows))
		return f, nil
	}
	if f.hasRoom(b.cfg.maxPending) {
		return f, nil
	}
	f.mu.Lock()
	if f.room == nil {
		f.room = make(chan struct{}, 1)
	}
	f.waiters++
	room := f.room
	f.mu.Unlock()
	// The events may have left between the check and the count of waiters:
	// release signals only waiters it sees, so check again now.
	if f.hasRoom(b.cfg.maxPending) {
		f.stopWaiting()
		return f, nil
	}
	return f, room
}

func (f *flow) hasRoom(bound int) bool {
	p := f.pending.Load()
	return p == 0 || p < int64(bound)
}

// stopWaiting records that a producer stopped waiting. A nil flow does
// nothing.
func (f *flow) stopWaiting() {
	if f == nil {
		return
	}
	f.mu.Lock()
	f.waiters--
	f.mu.Unlock()
}

// release takes n events from the count: they reached the key's channel or
// were dropped or discarded. When the count falls to low, half the bound,
// one waiting producer is woken, and passes the token on (see passOn), so
// that each wake-up lets a batch through rather than a single event. A nil
// flow (not under Block) does nothing.
func (f *flow) release(n int, low int64) {
	if f == nil || n == 0 {
		return
	}
	p := f.pending.Add(-int64(n))
	if p <= low && p+int64(n) > low {
		f.signal()
	}
}

// passOn wakes the next waiting producer if there is room: a producer that
// was woken calls it once it has added its events.
func (f *flow) passOn(bound int) {
	if f.hasRoom(bound) {
		f.signal()
	}
}

// signal puts the token in room if a producer waits. A woken producer looks
// again, so a token left for one that gave up meanwhile does no harm.
func (f *flow) signal() {
	f.mu.Lock()
	if f.waiters > 0 && !f.ended {
		select {
		case f.room <- struct{}{}:
		default: // a token is there already
		}
	}
	f.mu.Unlock()
}

// end wakes every waiting producer for good: the key closed.
func (f *flow) end() {
	f.mu.Lock()
	if !f.ended {
		f.ended = true
		if f.room != nil {
			close(f.room)
		}
	}
	f.mu.Unlock()
}

// endFlow removes f, key's flow, from the broker when the key closes or when
// f only counted discarded events, so that producers of a closed key do not
// wait for its readers (their events are discarded at once) and a key that
// starts afresh starts with a fresh count. Producers waiting on f are woken
// to look again. The feeder of a closed key still gives back to f what it
// sends.
func (l *loop[K]) endFlow(key K, f *flow) {
	b := l.b
	b.mu.Lock()
	if b.flows[key] == f {
		delete(b.flows, key)
		b.flows = shrunk(b.flows, &b.flowsPeak)
	}
	b.mu.Unlock()
	f.end()
}

// adopt makes the n events of a publish command to t, counted in f, count
// in t's flow, and returns that flow. A key's first publish gives it its
// flow. But a producer counts its events in the flow the key has when it
// sends them: if the key's Close ended that flow before the loop saw them,
// and the key was then forgotten, the events start a new life of the key,
// which must not keep the ended flow (its feeder would give back to it what
// later producers counted in the key's new flow, and they would wait
// forever). The events move to t's flow, or to the key's current one, or a
// new one.
func (l *loop[K]) adopt(t *topic[K], f *flow, n int) *flow {
	if t.flow == nil && !f.hasEnded() {
		t.flow = f
		return f
	}
	b := l.b
	b.mu.Lock()
	g := t.flow
	if g == nil {
		if g = b.flows[t.key]; g == nil {
			g = new(flow)
			b.flows[t.key] = g
			b.flowsPeak = max(b.flowsPeak, len(b.flows))
		}
		t.flow = g
	}
	g.pending.Add(int64(n))
	b.mu.Unlock()
	f.release(n, b.cfg.low())
	return g
}

// hasEnded reports whether the key's Close ended f.
func (f *flow) hasEnded() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ended
}

// shrinkFrom is the size from which a map is rebuilt once it has emptied
// (see shrunk).
const shrinkFrom = 1024

// shrunk returns m, or, if m has fallen to a quarter of peak entries, a copy
// of it sized for what it holds, setting peak to that. A Go map never gives
// back the room of its deleted entries: without this, a burst of keys would
// keep its memory for the broker's life. The copy costs amortised O(1) per
// deleted entry.
func shrunk[K comparable, V any](m map[K]V, peak *int) map[K]V {
	if n := len(m); *peak >= shrinkFrom && n <= *peak/4 {
		c := make(map[K]V, n) // not maps.Clone, which keeps the old size
		for k, v := range m {
			c[k] = v
		}
		m, *peak = c, n
	}
	return m
}
