package sse

import (
	"context"
	"io"
	"math"
	"strconv"
	"sync"
	"time"
)

// Subscribe attaches an SSE connection to key; it implements [Source] for
// [Handler].
//
// In [Queue] mode a key has at most one attached connection. Each event
// the connection takes enters the key's replay window ([WithReplay]) until
// a later request's LastID shows that the client has it, so a client that
// reconnects and resumes from the last ID it received gets every event
// exactly once, in order, as long as what its dead connection took and never
// delivered fits in the window. In-process readers ([Broker.Stream]) of the
// same key compete with the connection for events; the window only covers
// what connections took. In [FanOut] mode every connection reads the key's
// history from its own position: the start of what is held, or the event
// after LastID.
//
// A key the server created (with Enqueue, Publish, Stream, Events or Close)
// is a server key. For any other key, unless req.Known is set (then the
// answer is [ErrUnknownKey]), Subscribe creates a request key: it does not
// count against [WithMaxKeys], so that clients naming random keys cannot
// lock the server's producers out (bound them with [WithMaxStreams]
// instead), and it is forgotten when its last connection leaves, unless the
// server's first event or Close for it has made it a server key.
func (b *Broker[K]) Subscribe(ctx context.Context, key K, req SubscribeRequest) (Subscription, error) {
	return b.subscribe(ctx, key, req, startHeld, false)
}

// A start is where a FanOut reader without a usable ID begins.
type start uint8

const (
	startHeld start = iota // the oldest event the history holds
	startLive              // the next event appended
)

// subscribe is Subscribe, and a FanOut reader's start in process (inProcess
// is true: it makes key a server key, and its IDs are of the current life).
func (b *Broker[K]) subscribe(ctx context.Context, key K, req SubscribeRequest, from start, inProcess bool) (*subscription[K], error) {
	if err := b.checkKey(key); err != nil {
		return nil, err
	}
	s := &subscription[K]{b: b, key: key, req: req, start: from, local: inProcess}
	if b.cfg.mode == Queue {
		// A takeover tells a waiting Subscribe the abort function, then the
		// outcome; and it closes done.
		s.ready, s.done = make(chan answer, 2), make(chan struct{})
	} else {
		s.ready = make(chan answer, 1) // the outcome only; no takeover
	}
	select {
	case <-b.done:
		return nil, ErrShutdown
	default:
	}
	b.post(command[K]{op: opSubscribe, key: key, arg: s})
	for {
		select {
		case a := <-s.ready:
			if a.abort != nil {
				// Waiting for a takeover: end the older connection's
				// writes now, from this goroutine, never the loop's.
				a.abort()
				continue
			}
			if a.err != nil {
				return nil, a.err
			}
			return s, nil
		case <-ctx.Done():
			s.Close()
			return nil, ctx.Err()
		case <-b.done:
			return nil, ErrShutdown
		}
	}
}

// An answer is the loop's word to a waiting Subscribe: the older
// connection's abort function to call while waiting for a takeover, or the
// outcome.
type answer struct {
	abort func()
	err   error
}

// subscription is the Broker's Subscription, and its in-process FanOut
// reader. The loop attaches it to a key; then the connection's goroutine
// reads: in Queue mode from the key's replay window, then its channel; in
// FanOut mode from the key's history.
type subscription[K comparable] struct {
	b     *Broker[K]       // immutable
	key   K                // immutable
	req   SubscribeRequest // immutable
	start start            // immutable
	local bool             // immutable: a reader in process, not a connection (see subscribe)
	ready chan answer      // the loop's answers to Subscribe: capacity 2 in Queue mode, 1 in FanOut mode
	done  chan struct{}    // Queue mode: closed by the loop on takeover; nil in FanOut mode

	// Set by the loop before it answers on ready, then read-only.
	t      *topic[K]
	gap    Gap    // the gap before the first events
	replay int    // Queue mode: how many of the window's events to send again
	pos    uint64 // the ID of the next event to hand over (FanOut), or the last one the client has (Queue)
	known  bool   // Queue mode: pos is known

	// Owned by the connection's goroutine.
	started  bool  // Next has been called
	replayed int   // Queue mode: the window's events sent again so far
	carry    Event // Queue mode: an event taken from the channel that did not fit in the last batch
	carried  bool

	ended     bool      // loop-owned: done is closed
	closeOnce sync.Once // Close is idempotent
}

func (s *subscription[K]) Epoch() string { return formatEpoch(s.t.epoch) }

// formatEpoch is the text of an epoch on the wire.
func formatEpoch(e uint64) string { return strconv.FormatUint(e, 36) }

func (s *subscription[K]) Next(ctx context.Context, buf []Event, tick <-chan time.Time, limit int) ([]Event, Gap, error) {
	buf = buf[:0]
	var gap Gap
	if !s.started {
		s.started = true
		gap = s.gap
	}
	if s.b.cfg.mode == FanOut {
		return s.nextHeld(ctx, buf, gap, tick, limit)
	}
	return s.nextQueued(ctx, buf, gap, tick, limit)
}

// nextQueued is Next in Queue mode: the replay, then the live channel.
func (s *subscription[K]) nextQueued(ctx context.Context, buf []Event, gap Gap, tick <-chan time.Time, limit int) ([]Event, Gap, error) {
	w := &s.t.session.window
	size := 0
	for ; s.replayed < s.replay; s.replayed++ {
		ev := w.events.at(s.replayed)
		if ev.ID > s.pos+1 {
			// Events between two that connections took were read in
			// process or dropped: a gap names them, first in a batch.
			if len(buf) > 0 || gap != (Gap{}) {
				break
			}
			gap = Gap{From: s.pos + 1, To: ev.ID - 1}
		}
		if len(buf) > 0 && size+eventSize(ev) > limit {
			break
		}
		buf = append(buf, ev)
		size += eventSize(ev)
		s.pos, s.known = ev.ID, true
		if ev.ID == w.unsent {
			w.unsent = 0 // sent now, as the window's others were
		}
	}
	if len(buf) > 0 || gap != (Gap{}) {
		return buf, gap, nil
	}

	ev, ok := s.carry, true
	if s.carried {
		s.carried = false
	} else {
		select {
		case ev, ok = <-s.t.ch:
		case <-tick:
			return nil, Gap{}, nil
		case <-s.done:
			return nil, Gap{}, ErrReplaced
		case <-ctx.Done():
			return nil, Gap{}, ctx.Err()
		}
	}
	// A connection takes no more than the replay window between two writes,
	// so that a write that fails loses nothing; an event beyond it, or after
	// a jump in IDs, waits for the next call.
	maxEvents, maxBytes := s.b.cfg.replayEvents, s.b.cfg.replayBytes
	if maxEvents == 0 || maxBytes == 0 {
		maxEvents, maxBytes = math.MaxInt, math.MaxInt
	}
	limit = min(limit, maxBytes)
	for n := 0; ok; n++ {
		jump := s.known && ev.ID > s.pos+1
		if n > 0 && (n == maxEvents || size+eventSize(ev) > limit || jump) {
			s.carry, s.carried = ev, true
			break
		}
		if jump {
			gap = Gap{From: s.pos + 1, To: ev.ID - 1}
		}
		w.add(ev, &s.b.cfg, &s.b.replayed)
		buf = append(buf, ev)
		size += eventSize(ev)
		s.pos, s.known = ev.ID, true
		select {
		case ev, ok = <-s.t.ch:
			continue
		default:
		}
		break
	}
	select {
	case <-s.done: // taken over: what it took is in the replay window
		return nil, Gap{}, ErrReplaced
	default:
	}
	if !ok {
		if s.t.truncated { // written before the channel closed
			return buf, gap, ErrTruncated
		}
		// The events after the last this connection saw, up to the key's
		// last, were read by others or dropped: their gap comes before the
		// end, in a call of its own. The loop wrote seq before it closed
		// the channel.
		if last := s.t.seq; s.known && s.pos < last {
			if len(buf) > 0 || gap != (Gap{}) {
				return buf, gap, nil
			}
			gap, s.pos = Gap{From: s.pos + 1, To: last}, last
		}
		return buf, gap, io.EOF
	}
	return buf, gap, nil
}

// nextHeld is Next in FanOut mode: the history from the reader's position.
func (s *subscription[K]) nextHeld(ctx context.Context, buf []Event, gap Gap, tick <-chan time.Time, limit int) ([]Event, Gap, error) {
	h := s.t.history
	for {
		var g Gap
		buf, g, s.pos = h.read(s.pos, buf, limit)
		if g != (Gap{}) {
			gap = g
		}
		ended := h.closed.Load() && s.pos >= h.next.Load()
		if len(buf) > 0 || gap != (Gap{}) || ended {
			if ended {
				return buf, gap, io.EOF
			}
			return buf, gap, nil
		}
		wake := h.waiter()
		if s.pos < h.next.Load() || h.closed.Load() {
			continue // events, or the end, came meanwhile
		}
		select {
		case <-wake:
		case <-tick:
			return nil, Gap{}, nil
		case <-ctx.Done():
			return nil, Gap{}, ctx.Err()
		}
	}
}

// Close records, in Queue mode, the event the connection took and did not
// hand over, so that the next connection gets it, then detaches.
func (s *subscription[K]) Close() {
	s.closeOnce.Do(func() {
		if s.carried {
			w := &s.t.session.window
			w.add(s.carry, &s.b.cfg, &s.b.replayed)
			if w.events.len() > 0 {
				w.unsent = s.carry.ID
			}
			s.carried = false
		}
		s.b.post(command[K]{op: opUnsubscribe, key: s.key, arg: s})
	})
}

// A session is a key's SSE state: who is attached, and the replay window
// (Queue mode), or how many readers it has (FanOut mode). The first
// Subscribe of a key allocates it, so other keys pay one pointer.
type session[K comparable] struct {
	attached *subscription[K] // loop-owned: the connection taking events (Queue)
	waiting  *subscription[K] // loop-owned: a takeover waiting for attached to close (Queue)
	readers  int              // loop-owned: attached readers (FanOut)
	// window is owned by the attached connection's goroutine while it is
	// attached, and by the loop otherwise; attaching and detaching go
	// through the inbox, which orders the two.
	window window
}

// held reports whether a connection or reader holds the key.
func (ss *session[K]) held() bool {
	return ss != nil && (ss.attached != nil || ss.waiting != nil || ss.readers > 0)
}

// subscribe handles opSubscribe: it attaches s to its key, or makes it wait
// for the attached connection to end, or refuses it.
func (l *loop[K]) subscribe(key K, s *subscription[K]) {
	t := l.topics[key]
	switch {
	case t == nil && l.quitting:
		s.ready <- answer{err: ErrShutdown}
		return
	case s.req.Known && (t == nil || !t.server):
		s.ready <- answer{err: ErrUnknownKey}
		return
	case t == nil || s.local && !t.server:
		if t = l.open(key, s.local); t == nil {
			s.ready <- answer{err: ErrTooManyKeys}
			return
		}
	}
	l.touch(t)
	t.used = true
	s.t = t
	if t.session == nil {
		t.session = &session[K]{}
	}
	if l.b.cfg.mode == FanOut {
		l.attachReader(s)
		return
	}
	ss := t.session
	if ss.attached == nil {
		l.attach(s)
		return
	}
	if !s.req.Takeover {
		s.ready <- answer{err: ErrBusy}
		l.leave(t)
		return
	}
	if w := ss.waiting; w != nil {
		w.ready <- answer{err: ErrBusy} // superseded by a newer takeover
	}
	ss.waiting = s
	if a := ss.attached; !a.ended {
		a.ended = true
		close(a.done)
		if a.req.Abort != nil {
			s.ready <- answer{abort: a.req.Abort}
		}
	}
}

// resumeAt returns the ID after which s resumes in its key's current life,
// and whether it does: an ID of another life counts as 0, an ID the key has
// not reached as none. A reader in process reads the current life.
func (s *subscription[K]) resumeAt() (uint64, bool) {
	if !s.req.Resume {
		return 0, false
	}
	last := s.req.LastID
	if !s.local && s.req.Epoch != formatEpoch(s.t.epoch) {
		last = 0
	}
	return last, last <= s.t.seq
}

// attach makes s the key's connection in Queue mode, with the retained
// events its client missed.
func (l *loop[K]) attach(s *subscription[K]) {
	t, w := s.t, &s.t.session.window
	if last, ok := s.resumeAt(); ok {
		w.confirm(last, &l.b.replayed) // the client has them
		first := w.taken + 1           // the first ID that can still be sent
		if w.events.len() > 0 {
			first = w.events.front().ID
		}
		if last+1 < first {
			s.gap = Gap{From: last + 1, To: first - 1}
			last = first - 1
		}
		// They stay in the window until a later LastID covers them.
		s.replay = w.events.len()
		s.pos, s.known = last, true
	} else if n := w.events.len(); w.unsent != 0 && n > 0 && w.events.at(n-1).ID == w.unsent {
		// What an earlier connection took and never wrote comes first.
		s.replay, s.replayed = n, n-1
		s.pos, s.known = w.unsent-1, true
	}
	// A closed key with nothing left to send is finished for this client
	// only if it has every event or its gap: one that resumes before
	// events that others took, or that were dropped, is sent their gap.
	if t.chanClosed() && len(t.ch) == 0 && s.replay == 0 && s.gap == (Gap{}) && !t.truncated && !(s.known && s.pos < t.seq) {
		s.ready <- answer{err: ErrFinished}
		l.leave(t)
		return
	}
	t.session.attached = s
	s.ready <- answer{}
}

// attachReader adds s to the key's readers in FanOut mode, at its start:
// after its ID, the oldest event held, or the next one.
func (l *loop[K]) attachReader(s *subscription[K]) {
	t, h := s.t, s.t.history
	next := h.next.Load()
	switch last, ok := s.resumeAt(); {
	case ok && t.closed && last+1 == next:
		s.ready <- answer{err: ErrFinished} // the client has every event
		l.leave(t)
		return
	case ok:
		s.pos = last + 1
	case s.start == startLive:
		s.pos = next
	default:
		s.pos = h.first.Load()
	}
	t.session.readers++
	s.ready <- answer{}
}

// unsubscribe handles opUnsubscribe: s stops waiting, or detaches and lets a
// waiting takeover attach, or stops reading.
func (l *loop[K]) unsubscribe(s *subscription[K]) {
	t := s.t
	if t == nil {
		return // refused before it reached a key
	}
	ss := t.session
	switch {
	case l.b.cfg.mode == FanOut:
		ss.readers--
		l.touch(t)
		if t.closed && !t.forgotten {
			// A closed key stays for the retention time after its last
			// reader, so that a client whose connection dropped finds it.
			l.retained.remove(t)
			l.retained.pushBack(t, l.clock())
		}
	case s == ss.waiting:
		ss.waiting = nil
	case s == ss.attached:
		ss.attached = nil
		if w := ss.waiting; w != nil {
			ss.waiting = nil
			l.attach(w)
			return
		}
		// The idle time starts now, so that a client that lost its
		// connection can come back to an open key.
		l.touch(t)
	default:
		return
	}
	l.leave(t)
}

// leave is called when a connection leaves t, or is refused: a request key
// that nobody holds any more is forgotten, and a forgotten key's window is
// freed once no connection owns it.
func (l *loop[K]) leave(t *topic[K]) {
	if t.session.held() {
		return
	}
	if t.forgotten {
		t.session.window.release(&l.b.replayed)
	} else if !t.server {
		if l.b.cfg.idle > 0 {
			l.idle.remove(t)
		}
		l.forget(t)
	}
}
