package sse

import (
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// A topic is one key's queue. Every field is owned by the loop goroutine;
// readers only ever see ch (and, once it is closed, truncated), and the
// key's feeder goroutine (see stream.go) only sends on ch and uses the
// backlog as documented there.
type topic[K comparable] struct {
	key K          // the map key, so that timer lists can forget the topic
	ch  chan Event // Queue mode: what readers receive; closed by the loop only (see closeTopic)
	// polls holds, in Queue mode, the wake of the connection's Poll (see
	// Subscription.Poll): what sends to ch or closes it, and a takeover,
	// fire it after.
	polls atomic.Pointer[wakeList]
	seq   uint64 // the ID of the last event accepted for this key
	epoch uint64 // immutable: names this life of the key on the wire (see Subscription.Epoch)

	// history holds a FanOut key's events for its readers; nil in Queue
	// mode.
	history *history

	// backlog holds the events that did not fit into ch. It is nil while the
	// key is not backlogged, so an idle key pays one pointer for it.
	backlog *backlog

	// flow counts, under the Block policy, the key's events not yet in ch;
	// set by the key's first publish, and used by its feeder.
	flow *flow

	// session is the key's SSE state; nil until the key's first Subscribe.
	session *session[K]

	// prev and next link the topic into the loop's idle list while it is
	// open (only when an idle timeout is set) or into its retained list once
	// it is closed. stamp is when it entered that list's tail: the last
	// touch, or the later of the Close and the last event a reader took
	// (see expire).
	prev, next *topic[K]
	stamp      int64 // nanoseconds on the loop's clock

	// left is, for a closed key, how many events its readers had still to
	// take at stamp.
	left int

	// dropping is how many events an overflow policy has dropped since the
	// key last had none waiting, for WithLogger (see noteDropped).
	dropping int

	closed    bool // no more events are accepted
	used      bool // it received an event, or its channel or history was handed to a reader (see expire)
	server    bool // the server created the key, or sent it an event or a Close (see Broker.Subscribe)
	forgotten bool // the key is no longer in the map
	truncated bool // written before ch is closed: events were dropped rather than handed to ch
}

// chanClosed reports whether the loop has closed t.ch: the key is closed and
// nothing waits to be handed to the channel any more.
func (t *topic[K]) chanClosed() bool { return t.closed && t.backlog == nil }

// attached reports whether an SSE connection (Queue mode) or a reader
// (FanOut mode) holds the key.
func (t *topic[K]) attached() bool {
	return t.session != nil && (t.session.attached != nil || t.session.readers > 0)
}

// unread returns how many events readers have still to take from t, in
// Queue mode.
func (t *topic[K]) unread() int {
	n := len(t.ch)
	if bl := t.backlog; bl != nil {
		bl.mu.Lock()
		n += bl.queue.len()
		bl.mu.Unlock()
		n += int(bl.unsent.Load())
	}
	return n
}

// open returns key's topic, creating an open one if the key is unknown. A
// server key (server is true) is refused, with nil, beyond WithMaxKeys; a
// request key that the server touches becomes a server key if the bound
// allows.
func (l *loop[K]) open(key K, server bool) *topic[K] {
	t := l.topics[key]
	if t == nil {
		if server && !l.makeRoom() {
			return nil
		}
		t = l.newTopic(key, server)
		l.add(t, server)
		if l.b.cfg.idle > 0 {
			l.idle.pushBack(t, l.clock())
		}
		return t
	}
	if server && !t.server {
		if !l.makeRoom() {
			return nil
		}
		l.own(t)
	}
	l.touch(t)
	return t
}

// newTopic returns an open topic for a new life of key: a channel in Queue
// mode, a history in FanOut mode, and a random epoch. A request key (server
// is false: a connection's request created it, see [Broker.Subscribe]) gets
// a channel of at most requestBuffer events rather than the configured
// buffer: most such keys only ever hold an idle connection, and a buffer
// of 16 events would be most of what each costs (its connection takes
// events in batches anyway, and the rest wait in the key's overflow). The
// key keeps that channel for its life, even if the server's events make
// it a server key.
func (l *loop[K]) newTopic(key K, server bool) *topic[K] {
	t := &topic[K]{key: key, epoch: newEpoch()}
	if l.b.cfg.mode == FanOut {
		t.history = newHistory()
	} else {
		n := l.b.cfg.buffer
		if !server {
			n = min(n, requestBuffer)
		}
		t.ch = make(chan Event, n)
	}
	return t
}

// requestBuffer is the most events a request key's channel holds (see
// newTopic).
const requestBuffer = 1

// newEpoch returns a random epoch: 48 bits, so that a client's ID from
// another life of its key is taken for one of this life once in 2^48.
func newEpoch() uint64 { return rand.Uint64() >> 16 }

// touch starts an open key's idle time again.
func (l *loop[K]) touch(t *topic[K]) {
	if !t.closed && l.b.cfg.idle > 0 {
		l.idle.remove(t)
		l.idle.pushBack(t, l.clock())
	}
}

// openKey handles opOpen.
func (l *loop[K]) openKey(key K) error {
	t := l.topics[key]
	switch {
	case t != nil && t.closed:
		return ErrClosed
	case t == nil && l.quitting:
		return ErrShutdown
	}
	if l.open(key, true) == nil {
		return ErrTooManyKeys
	}
	return nil
}

func (l *loop[K]) close(key K) {
	t := l.topics[key]
	if t == nil {
		// Recorded even beyond WithMaxKeys: only the server closes keys, and
		// a closed key costs no channel.
		t = &topic[K]{key: key, ch: closedChan, closed: true, epoch: newEpoch()}
		if l.b.cfg.mode == FanOut {
			t.ch, t.history = nil, newHistory()
			t.history.closed.Store(true)
		}
		l.add(t, true)
		l.retained.pushBack(t, l.clock())
		return
	}
	if !t.server {
		l.own(t) // even beyond WithMaxKeys, as above
	}
	l.closeTopic(t)
}

// closedChan is returned for keys that are closed before they held anything.
var closedChan = func() chan Event {
	ch := make(chan Event)
	close(ch)
	return ch
}()

// closeTopic closes an open topic. Its channel closes now if nothing is
// backlogged, else when its feeder has handed over the last event.
func (l *loop[K]) closeTopic(t *topic[K]) {
	if t.closed {
		return
	}
	if l.b.cfg.idle > 0 {
		l.idle.remove(t)
	}
	t.closed = true
	l.retained.pushBack(t, l.clock())
	if h := t.history; h != nil {
		h.closed.Store(true)
		h.notify()
		return
	}
	t.left = t.unread()
	if t.backlog == nil {
		close(t.ch)
		t.polls.Load().fire()
	}
	if t.flow != nil {
		l.endFlow(t.key, t.flow)
	}
}

// makeRoom reports whether the key limit allows one more server key.
func (l *loop[K]) makeRoom() bool {
	max := l.b.cfg.maxKeys
	return max == 0 || l.serverKeys < max
}

// add makes t known under its key.
func (l *loop[K]) add(t *topic[K], server bool) {
	l.topics[t.key] = t
	l.peak = max(l.peak, len(l.topics))
	if server {
		l.own(t)
	}
}

// own makes t a server key.
func (l *loop[K]) own(t *topic[K]) {
	t.server = true
	l.serverKeys++
	if l.b.cfg.maxKeys > 0 {
		l.b.keys.Store(int64(l.serverKeys))
	}
}

// forget removes t from the keys: its feeder, if any, stops, and what it
// had not sent is dropped; its replay window is freed once no connection
// holds it.
func (l *loop[K]) forget(t *topic[K]) {
	delete(l.topics, t.key)
	l.topics = shrunk(l.topics, &l.peak)
	t.forgotten = true
	if t.server {
		l.serverKeys--
		if l.b.cfg.maxKeys > 0 {
			l.b.keys.Store(int64(l.serverKeys))
		}
	}
	if t.backlog != nil {
		l.stopFeeder(t)
	}
	l.endDropping(t)
	if ss := t.session; ss != nil && ss.attached == nil && ss.waiting == nil {
		ss.window.release(&l.b.replayed)
	}
	if h := t.history; h != nil {
		h.release(&l.b.replayed) // its readers may go on reading it
	}
}

// expire closes keys idle for too long and forgets closed keys that nobody
// has read from for longer than the retention time.
func (l *loop[K]) expire() {
	now := l.clock()
	if idle := int64(l.b.cfg.idle); idle > 0 {
		for t := l.idle.head; t != nil && t.stamp+idle <= now; t = l.idle.head {
			if t.attached() { // an SSE connection keeps its key open
				l.idle.remove(t)
				l.idle.pushBack(t, now)
				continue
			}
			if !t.used && !t.attached() {
				// Opened, and never used: closing it would make a first
				// request get 204 for a key that never started.
				l.idle.remove(t)
				l.forget(t)
				continue
			}
			l.closeTopic(t)
		}
	}
	if l.quitting {
		return // Shutdown lets readers drain until its context ends
	}
	keep := int64(l.b.cfg.retention)
	for t := l.retained.head; t != nil && t.stamp+keep <= now; t = l.retained.head {
		l.retained.remove(t)
		// A key whose readers took events since it was last looked at is
		// kept for another retention time: a reader that keeps reading is
		// never cut short. So a key is forgotten between one and two
		// retention times after the later of its Close and the last event a
		// reader took.
		if t.history != nil {
			if t.attached() { // a FanOut key's readers keep it
				l.retained.pushBack(t, now)
				continue
			}
		} else if left := t.unread(); left < t.left {
			t.left = left
			l.retained.pushBack(t, now)
			continue
		}
		l.forget(t)
	}
}

// arm sets the timer for the earliest deadline among the idle and retained
// lists' heads. It only moves the timer earlier: a timer that fires early
// finds nothing due and is armed again.
func (l *loop[K]) arm() {
	if l.quitting {
		return // every key is closed, and none is forgotten until the end
	}
	next, ok := int64(0), false
	if t := l.idle.head; t != nil {
		next, ok = t.stamp+int64(l.b.cfg.idle), true
	}
	if t := l.retained.head; t != nil {
		if d := t.stamp + int64(l.b.cfg.retention); !ok || d < next {
			next, ok = d, true
		}
	}
	if !ok || (l.armed && l.armedAt <= next) {
		return
	}
	l.armedAt, l.armed = next, true
	l.timer.Reset(time.Duration(next - int64(time.Since(l.epoch))))
}
