package sse

import (
	"log/slog"
	"sync"
	"sync/atomic"
)

// A backlog is the part of a key's queue beyond its channel buffer, and the
// feeder goroutine that moves it into the channel as the reader drains it.
// The loop appends to queue; the feeder takes the whole queue at once,
// leaving its own emptied buffer in its place, so events move in batches
// with no round trip to the loop and no allocation in steady state. A key
// has a backlog only while it is backlogged.
type backlog struct {
	mu      sync.Mutex
	queue   fifo // guarded by mu: events waiting for the feeder, oldest first
	spare   fifo // guarded by mu: an empty buffer for the next feeder
	feeding bool // guarded by mu: a feeder runs and will take what queue holds

	// unsent is how many events of its batch the feeder has not sent: set
	// when it takes a batch, when it waits for the reader and when it
	// returns. The loop reads it for Stats and, after the feeder returned
	// early, to count what was dropped.
	unsent atomic.Int64

	stop     chan struct{} // closed by the loop: the feeder must return at once
	stopping bool          // loop-owned: stop is closed

	// owner is the key's *topic[K], set by the loop before it starts a
	// feeder; run starts the feeder on it. run is made once per backlog,
	// which the pool recycles: a go statement with arguments would
	// allocate a closure for each feeder.
	owner any
	run   func()
}

// newBacklog returns a backlog from the broker's pool, or a new one.
func (l *loop[K]) newBacklog() *backlog {
	if bl, ok := l.b.backlogs.Get().(*backlog); ok {
		return bl
	}
	bl := &backlog{stop: make(chan struct{})}
	b := l.b
	bl.run = func() { b.feed(bl.owner.(*topic[K]), bl) }
	return bl
}

// recycle returns bl to the broker's pool, so that keys backlogged again and
// again do not allocate. Its feeder must have returned or be past its last
// use of bl, and its queue must be empty.
func (l *loop[K]) recycle(bl *backlog) {
	const keep = 4096 // events: larger buffers go back to the heap
	if bl.queue.cap() > keep {
		bl.queue = fifo{}
	}
	if bl.spare.cap() > keep {
		bl.spare = fifo{}
	}
	if bl.stopping {
		bl.stop, bl.stopping = make(chan struct{}), false
	}
	bl.unsent.Store(0)
	bl.owner = nil
	l.b.backlogs.Put(bl)
}

// admit applies a dropping overflow policy to events bound for bl's queue
// and returns those that may enter it. Under DropOldest the queue keeps at
// most the bound, and the feeder holds at most one more event, on its way
// into the channel; under DropNewest that one counts against the bound. The
// caller holds bl.mu.
func (l *loop[K]) admit(t *topic[K], bl *backlog, evs []Event) []Event {
	cfg := l.b.cfg
	if !cfg.dropping() {
		return evs
	}
	held := bl.queue.len()
	if cfg.policy == DropNewest {
		held += int(bl.unsent.Load())
	}
	excess := held + len(evs) - cfg.maxPending
	if excess <= 0 {
		return evs
	}
	switch cfg.policy {
	case DropNewest:
		excess = min(excess, len(evs))
		l.noteDropped(t, excess)
		return evs[:len(evs)-excess]
	default: // DropOldest
		l.noteDropped(t, excess)
		if len(evs) > cfg.maxPending {
			excess -= len(evs) - cfg.maxPending
			evs = evs[len(evs)-cfg.maxPending:]
		}
		for ; excess > 0; excess-- {
			bl.queue.dropOldest()
		}
		return evs
	}
}

// fed handles opFed: t's feeder returned. If it returned with nothing left
// to send, the backlog ends; if it was stopped, what it had not sent is
// dropped.
func (l *loop[K]) fed(t *topic[K]) {
	bl := t.backlog
	if bl == nil {
		return // a late word from a feeder whose backlog has ended
	}
	bl.mu.Lock()
	feeding, waiting := bl.feeding, bl.queue.len()
	bl.mu.Unlock()
	if feeding {
		return // a new feeder took over
	}
	// Unless it was stopped, the feeder left the queue empty: publish
	// starts a feeder whenever it queues events.
	if bl.stopping {
		dropped := int(bl.unsent.Load()) + waiting
		l.stats.Dropped += uint64(dropped)
		t.truncated = dropped > 0
		if dropped > 0 {
			l.b.log.emit("sse: key forgotten with events its readers never took", slog.Any("key", t.key), slog.Int("dropped", dropped))
		}
		t.flow.release(dropped, l.b.cfg.low())
		bl.mu.Lock()
		bl.queue.clear()
		bl.mu.Unlock()
	}
	l.endBacklog(t)
}

// endBacklog ends t's backlog once its feeder has returned. A closed key's
// channel closes here, after its last event.
func (l *loop[K]) endBacklog(t *topic[K]) {
	bl := t.backlog
	t.backlog = nil
	delete(l.backlogged, t)
	l.endDropping(t)
	if t.closed {
		close(t.ch)
		t.polls.Load().fire()
	}
	l.recycle(bl)
}

// stopFeeder stops the feeder of a key being forgotten: what it has not
// sent is dropped, and its channel closes when it has returned.
func (l *loop[K]) stopFeeder(t *topic[K]) {
	if bl := t.backlog; !bl.stopping {
		bl.stopping = true
		close(bl.stop)
	}
}

// abandon ends every backlog at once when Shutdown's deadline has passed:
// it stops the feeders, waits for them, counts what they did not send as
// dropped, and closes the channels. It returns how many events it dropped.
func (l *loop[K]) abandon() uint64 {
	for t := range l.backlogged {
		l.stopFeeder(t)
	}
	l.b.feeders.Wait()
	var dropped uint64
	for t := range l.backlogged {
		bl := t.backlog
		n := uint64(bl.unsent.Load()) + uint64(bl.queue.len())
		dropped += n
		t.truncated = n > 0
		bl.queue.clear()
		t.backlog = nil
		close(t.ch)
		t.polls.Load().fire()
	}
	clear(l.backlogged)
	l.stats.Dropped += dropped
	return dropped
}
