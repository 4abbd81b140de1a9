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
// of producers, and no producer waits for the loop to see its command.
type flow struct {
	// pending is the count. It may run ahead of the truth while a feeder
	// sends (it gives back what it sent when it waits and when it finishes
	// a batch), which only makes producers wait sooner.
	pending atomic.Int64

	mu   sync.Mutex
	room chan struct{} // guarded by mu: closed when pending falls to the low mark or the key closes; nil while nobody waits
}

// reserve returns key's flow, creating it if the key has none, and, if the
// key has as many events pending as the bound allows (any, for a bound of
// 0), a channel that is closed when it has room again. The caller holds mu
// and adds its events to the flow only if the channel is nil.
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
		f.room = make(chan struct{})
	}
	room := f.room
	f.mu.Unlock()
	// The events may have left between the check and the wait: release
	// closes room only if it sees it, so check again now that it is there.
	if f.hasRoom(b.cfg.maxPending) {
		return f, nil
	}
	return f, room
}

func (f *flow) hasRoom(bound int) bool {
	p := f.pending.Load()
	return p == 0 || p < int64(bound)
}

// release takes n events from the count: they reached the key's channel or
// were dropped or discarded. Waiting producers are woken when the count
// falls to low, half the bound, so that each wake-up lets through a batch
// rather than a single event. A nil flow (not under Block) does nothing.
func (f *flow) release(n int, low int64) {
	if f == nil || n == 0 {
		return
	}
	p := f.pending.Add(-int64(n))
	if p <= low && p+int64(n) > low {
		f.wake()
	}
}

// wake releases the producers waiting for room.
func (f *flow) wake() {
	f.mu.Lock()
	if f.room != nil {
		close(f.room)
		f.room = nil
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
	f.wake()
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
