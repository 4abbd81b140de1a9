package sse

import "context"

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
			// The loop sends nothing more once it has answered: the
			// channel goes now, not with the subscription.
			s.ready = nil
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
		t.polls.Load().fire() // a's Poll, if it waits
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
