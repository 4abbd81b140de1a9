package sse

import (
	"context"
	"errors"
	"iter"
	"sync"
)

// A Source holds keyed queues that [Handler] streams to clients. [*Broker]
// is one; a source shared by several servers can be another.
type Source[K comparable] interface {
	// Subscribe attaches one client connection to key's queue. It fails with
	// [ErrBusy] if another connection is attached and req.Takeover is false;
	// with Takeover, it ends that connection first ([Subscription.Done],
	// and req.Abort of the older request, called from this call's
	// goroutine) and waits for it to stop taking events, failing with
	// ErrBusy if a newer takeover comes meanwhile. It fails with
	// [ErrFinished] if the key is closed and the client has had every event,
	// with [ErrUnknownKey] for a key the server did not create when
	// req.Known is set, with [ErrTooManyKeys] when it cannot take a new key,
	// with [ErrInvalidKey] for a key it cannot hold, and with [ErrShutdown]
	// once it is shut down; [Handler] answers each with its own status. ctx
	// bounds the wait.
	Subscribe(ctx context.Context, key K, req SubscribeRequest) (Subscription, error)
}

// SubscribeRequest says how a connection attaches to a key.
type SubscribeRequest struct {
	// Resume is set when the client said which event it received last.
	Resume bool
	// LastID is that event's ID, when Resume is set; 0 means none yet. An ID
	// the key has not reached yet is treated as no ID.
	LastID uint64
	// Takeover ends the key's attached connection instead of failing with
	// ErrBusy.
	Takeover bool
	// Known fails the request with ErrUnknownKey unless the server created
	// the key (see [Broker.Subscribe]).
	Known bool
	// Abort, if set, makes this connection's pending and later writes fail
	// at once. A later request that takes the key over calls it, from its
	// own goroutine, so that it does not wait for a write blocked on a
	// client that stopped reading. It must be safe to call concurrently with
	// the connection's writes, more than once, and after the connection has
	// ended.
	Abort func()
}

// A Subscription is one connection's hold on a key: first the retained
// events the client missed, then the live queue. Its methods are called by
// the one goroutine that serves the connection.
type Subscription interface {
	// Missed returns the events after the request's LastID that an earlier
	// connection took but the client may not have received, in order. If
	// some of the events after LastID are no longer retained, gap holds the
	// first and last of their IDs; otherwise it is zero. The events must be
	// read before the first call to Taken.
	Missed() (gap Gap, events iter.Seq[Event])
	// Events is the key's live queue. It is closed after the key's last
	// event, or when the stream is cut short (see Err).
	Events() <-chan Event
	// Err tells, once Events is closed, why: nil if the key ended and every
	// event was handed over, [ErrTruncated] if the stream was cut short.
	Err() error
	// Taken records that the connection took ev from Events, so that a later
	// connection can send it again if the client did not receive it.
	Taken(ev Event)
	// Window is how many events, and how many bytes of them (as [Handler]
	// counts them: 48 plus the Name and Data), the source keeps to send
	// again; 0 if it keeps none. A connection takes no more than that
	// between two writes, so that a write that fails loses nothing.
	Window() (events, bytes int)
	// Done is closed when another connection takes the key over: the
	// connection must stop taking events and end.
	Done() <-chan struct{}
	// Close ends the subscription. Events it did not take stay queued.
	Close()
}

// Gap is a range of event IDs, From to To inclusive, that a client missed
// and that can no longer be sent to it. The zero Gap means none.
type Gap struct{ From, To uint64 }

var (
	// ErrBusy is returned by [Broker.Subscribe] when another connection is
	// attached to the key and the request does not take it over.
	ErrBusy = errors.New("sse: another stream is attached to the key")
	// ErrFinished is returned by [Broker.Subscribe] when the key is closed
	// and the client has received every event.
	ErrFinished = errors.New("sse: the key is closed and fully read")
	// ErrUnknownKey is returned by [Broker.Subscribe] for a key that the
	// server did not create when the request asks for a known one.
	ErrUnknownKey = errors.New("sse: unknown key")
)

// Subscribe attaches an SSE connection to key's queue; it implements
// [Source] for [Handler]. A key has at most one attached connection. Each
// event the connection takes enters the key's replay window ([WithReplay])
// until a later request's LastID shows that the client has it, so a client
// that reconnects and resumes from the last ID it received gets every event
// exactly once, in order, as long as what its dead connection took and never
// delivered fits in the window.
//
// A key the server created (with Enqueue, Publish, Stream or Close) is a
// server key. For any other key, unless req.Known is set (then the answer is
// [ErrUnknownKey]), Subscribe creates a request key: it does not count
// against [WithMaxKeys], so that clients naming random keys cannot lock the
// server's producers out (bound them with [WithMaxStreams] instead), and it
// is forgotten when its last connection leaves, unless the server's first
// event or Close for it has made it a server key.
//
// In-process readers ([Broker.Stream]) of the same key compete with the
// connection for events; the window only covers what connections took.
func (b *Broker[K]) Subscribe(ctx context.Context, key K, req SubscribeRequest) (Subscription, error) {
	if err := b.checkKey(key); err != nil {
		return nil, err
	}
	s := &subscription[K]{
		b:     b,
		key:   key,
		req:   req,
		done:  make(chan struct{}),
		ready: make(chan answer, 2),
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

// subscription is the Broker's Subscription.
type subscription[K comparable] struct {
	b     *Broker[K]       // immutable
	key   K                // immutable
	req   SubscribeRequest // immutable
	ready chan answer      // capacity 2: the loop's answers to Subscribe
	done  chan struct{}    // closed by the loop on takeover

	// Set by the loop before it answers on ready, then read-only.
	t    *topic[K]
	gap  Gap
	from uint64 // the missed events are the window's events after from

	ended     bool      // loop-owned: done is closed
	closeOnce sync.Once // Close is idempotent
}

func (s *subscription[K]) Events() <-chan Event  { return s.t.ch }
func (s *subscription[K]) Done() <-chan struct{} { return s.done }

func (s *subscription[K]) Window() (events, bytes int) {
	if c := &s.b.cfg; c.replayEvents > 0 && c.replayBytes > 0 {
		return c.replayEvents, c.replayBytes
	}
	return 0, 0
}

// Err reads what the loop wrote before it closed the channel.
func (s *subscription[K]) Err() error {
	if s.t.truncated {
		return ErrTruncated
	}
	return nil
}

// Missed yields the window in place: the connection's goroutine owns it
// until its first Taken.
func (s *subscription[K]) Missed() (Gap, iter.Seq[Event]) {
	return s.gap, func(yield func(Event) bool) {
		if !s.req.Resume {
			return
		}
		for ev := range s.t.session.window.events.all() {
			if ev.ID > s.from && !yield(ev) {
				return
			}
		}
	}
}

// Taken adds ev to the key's replay window. While a subscription is
// attached, its goroutine owns the window; the loop owns it otherwise.
// Attaching and detaching go through the inbox, which orders the two.
func (s *subscription[K]) Taken(ev Event) {
	s.t.session.window.add(ev, &s.b.cfg, &s.b.replayed)
}

func (s *subscription[K]) Close() {
	s.closeOnce.Do(func() {
		s.b.post(command[K]{op: opUnsubscribe, key: s.key, arg: s})
	})
}

// A session is a key's SSE state: who is attached, and the replay window.
// The first Subscribe of a key allocates it, so other keys pay one pointer.
type session[K comparable] struct {
	attached *subscription[K] // loop-owned: the connection taking events
	waiting  *subscription[K] // loop-owned: a takeover waiting for attached to close
	window   window           // owned as Taken says
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
	case t == nil:
		t = l.open(key, false)
	}
	l.touch(t)
	s.t = t
	if t.session == nil {
		t.session = &session[K]{}
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

// attach makes s the key's connection, with the retained events its client
// missed.
func (l *loop[K]) attach(s *subscription[K]) {
	t, w := s.t, &s.t.session.window
	if last := s.req.LastID; s.req.Resume && last <= t.seq {
		w.confirm(last, &l.b.replayed) // the client has them
		first := w.taken + 1           // the first ID that can still be sent
		if w.events.len() > 0 {
			first = w.events.front().ID
		}
		if last+1 < first {
			s.gap = Gap{From: last + 1, To: first - 1}
		}
		// They stay in the window until a later LastID covers them.
		s.from = last
	} else {
		s.from = w.taken // nothing to send again
	}
	if t.chanClosed() && len(t.ch) == 0 && w.taken <= s.from && s.gap == (Gap{}) && !t.truncated {
		s.ready <- answer{err: ErrFinished}
		l.leave(t)
		return
	}
	t.session.attached = s
	s.ready <- answer{}
}

// unsubscribe handles opUnsubscribe: s stops waiting, or detaches and lets a
// waiting takeover attach.
func (l *loop[K]) unsubscribe(s *subscription[K]) {
	t := s.t
	if t == nil {
		return // refused before it reached a key
	}
	ss := t.session
	switch s {
	case ss.waiting:
		ss.waiting = nil
	case ss.attached:
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
	ss := t.session
	if ss.attached != nil || ss.waiting != nil {
		return
	}
	if !t.server && !t.forgotten {
		if l.b.cfg.idle > 0 {
			l.idle.remove(t)
		}
		l.forget(t)
	}
	if t.forgotten {
		ss.window.release(&l.b.replayed)
	}
}
