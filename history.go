package sse

import (
	"sync/atomic"
	"time"
)

// chunkSize is how many events a history chunk holds: small, so that a key
// with few events holds little, and large enough that the chunk's own cost
// is about a byte an event. With 14, a chunk (624 bytes) fills a size class
// of Go's allocator (640): an event costs 46 bytes with its share of the
// chunk and of the ring.
const chunkSize = 14

// A chunk holds chunkSize consecutive events of a FanOut key's history. The
// loop writes each event once, before it publishes it by advancing
// history.next, and never writes it again, so readers copy events out of a
// chunk without a lock. A chunk is never reused.
type chunk struct {
	base   uint64 // immutable: the ID of events[0], a multiple of chunkSize
	events [chunkSize]Event
	// added holds when each event was appended, in whole seconds on the
	// loop's clock, rounded up; loop-owned, and set only with an age bound.
	added [chunkSize]uint32
}

// A ring holds the chunks of a history by their number, base/chunkSize,
// modulo its length, a power of two. The loop replaces it with a larger one
// when the history outgrows it; readers that hold the old one still find
// every chunk that was held when it was replaced.
type ring struct{ slots []atomic.Pointer[chunk] }

func (r *ring) slot(id uint64) *atomic.Pointer[chunk] {
	return &r.slots[(id/chunkSize)&uint64(len(r.slots)-1)]
}

// A history is a FanOut key's events: one copy, shared by the loop, its
// only writer, and any number of readers, each with its own position.
// Readers use atomics alone, so the loop never waits for them; and a
// reader holds no chunk between two reads, so a stalled reader pins
// nothing. The loop appends each event once, O(1) whatever the number of
// readers, and wakes the readers that wait by closing one channel.
type history struct {
	next   atomic.Uint64            // the ID after the newest event: every event below it is written
	first  atomic.Uint64            // the ID of the oldest event held
	ring   atomic.Pointer[ring]     // stored before next covers its new chunks; nil until the first event
	closed atomic.Bool              // set when the key closes, before the last wake: no event will follow next-1
	wake   atomic.Pointer[waker]    // the channel readers wait on, made by the first of them; closed by the loop
	polls  atomic.Pointer[wakeList] // the wakes of readers' Polls (see Subscription.Poll), made by the first; fired by the loop

	// Owned by the loop.
	tail  *chunk // the chunk that takes the next event, if it has room
	bytes int    // Event.Size of the events held
}

// A waker is the channel the readers of a key wait on for its next
// events.
type waker struct{ ch chan struct{} }

func newHistory() *history {
	h := new(history)
	h.first.Store(1)
	h.next.Store(1)
	return h
}

// waiter returns the channel to wait on for events after those the caller
// has seen: the loop closes it when it appends or closes the key. The
// caller must look at next and closed again after it, before it waits.
func (h *history) waiter() <-chan struct{} {
	for {
		if w := h.wake.Load(); w != nil {
			return w.ch
		}
		w := &waker{ch: make(chan struct{})}
		if h.wake.CompareAndSwap(nil, w) {
			return w.ch
		}
	}
}

// notify wakes the readers that wait, in Next or after a Poll. The loop
// calls it after it has stored next, or closed.
func (h *history) notify() {
	if w := h.wake.Swap(nil); w != nil {
		close(w.ch)
	}
	h.polls.Load().fire()
}

// read appends to buf the events from pos on that are ready, at most limit
// bytes of them (as Event.Size counts) but at least one, and returns them
// with the position after them. If the events from pos on are no longer
// held, gap names them and the events start at the oldest held one. A gap
// ends what a read returns: the events after it wait for the next read.
func (h *history) read(pos uint64, buf []Event, limit int) ([]Event, Gap, uint64) {
	next := h.next.Load()
	r := h.ring.Load() // after next: it holds every chunk below next
	size := 0
	for pos < next {
		if first := h.first.Load(); pos < first {
			if len(buf) > 0 {
				break // report the gap next time, before its events
			}
			return buf, Gap{From: pos, To: first - 1}, first
		}
		c := r.slot(pos).Load()
		if c == nil || c.base != pos-pos%chunkSize {
			// Trimmed since first was read, and its slot emptied or
			// reused: first has moved past pos.
			continue
		}
		for end := min(next, c.base+chunkSize); pos < end; pos++ {
			ev := c.events[pos-c.base]
			if len(buf) > 0 && size+ev.Size() > limit {
				return buf, Gap{}, pos
			}
			buf = append(buf, ev)
			size += ev.Size()
		}
	}
	return buf, Gap{}, pos
}

// record appends evs, numbered, to t's history, trims it to its bounds and
// wakes its readers. It runs in the loop.
func (l *loop[K]) record(t *topic[K], evs []Event) {
	h, cfg := t.history, &l.b.cfg
	var now int64
	var stamp uint32
	if cfg.historyAge > 0 {
		now = l.clock()
		stamp = uint32((now + int64(time.Second) - 1) / int64(time.Second))
	}
	added := 0
	for _, ev := range evs {
		c := h.tail
		if c == nil || ev.ID >= c.base+chunkSize {
			c = &chunk{base: ev.ID - ev.ID%chunkSize}
			h.place(c)
			h.tail = c
		}
		c.events[ev.ID-c.base] = ev
		c.added[ev.ID-c.base] = stamp
		added += ev.Size()
	}
	h.bytes += added
	l.b.replayed.Add(int64(added))
	h.next.Store(evs[len(evs)-1].ID + 1)
	l.trim(h, now)
	h.notify()
}

// place puts a new chunk into h's ring, first growing the ring if the
// chunk's slot still holds a chunk with events held.
func (h *history) place(c *chunk) {
	r := h.ring.Load()
	if r == nil {
		r = &ring{slots: make([]atomic.Pointer[chunk], 2)}
		h.ring.Store(r)
	}
	if old := r.slot(c.base).Load(); old != nil && old.base+chunkSize > h.first.Load() {
		// Double the ring until every held chunk, and c, has a slot of
		// its own, and publish it before any of c's events.
		first := h.first.Load()
		n := len(r.slots)
		for uint64(2*n*chunkSize) <= c.base-(first-first%chunkSize)+chunkSize {
			n *= 2
		}
		bigger := &ring{slots: make([]atomic.Pointer[chunk], 2*n)}
		for id := first - first%chunkSize; id < c.base; id += chunkSize {
			bigger.slot(id).Store(r.slot(id).Load())
		}
		r = bigger
		h.ring.Store(r)
	}
	r.slot(c.base).Store(c)
}

// trim drops h's oldest events while it holds more than its bounds allow:
// events, bytes, age (checked here, when events arrive, so that a key costs
// no timer; never early, up to a second late) and the broker's budget,
// beyond which a history keeps at least its newest 32 KiB. It keeps the
// newest event whatever the bounds.
func (l *loop[K]) trim(h *history, now int64) {
	cfg := &l.b.cfg
	first, next := h.first.Load(), h.next.Load()
	r := h.ring.Load()
	maxAge := int64(cfg.historyAge)
	for first+1 < next {
		c := r.slot(first).Load()
		over := next-first > uint64(cfg.historyEvents) || h.bytes > cfg.historyBytes ||
			maxAge > 0 && int64(c.added[first-c.base])*int64(time.Second)+maxAge <= now ||
			l.b.replayed.Load() > cfg.replayBudget && h.bytes > windowFloor
		if !over {
			break
		}
		size := c.events[first-c.base].Size()
		h.bytes -= size
		l.b.replayed.Add(-int64(size))
		first++
		h.first.Store(first)
		if first%chunkSize == 0 {
			r.slot(c.base).Store(nil) // after first: a reader that finds it empty looks at first again
		}
	}
}

// release gives h's bytes back to the budget when its key is forgotten.
// Readers that hold h may go on reading it.
func (h *history) release(used *atomic.Int64) {
	used.Add(-int64(h.bytes))
	h.bytes = 0
}
