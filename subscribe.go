package sse

import (
	"context"
	"errors"
	"sync"
)

// A Source holds keyed queues that [Handler] streams to clients. [*Broker]
// is one; a source shared by several servers can be another.
type Source[K comparable] interface {
	// Subscribe attaches one client connection to key's queue. It fails with
	// [ErrBusy] if another connection is attached and req.Takeover is false;
	// with Takeover, it ends that connection first ([Subscription.Done]) and
	// waits for it to stop taking events, failing with ErrBusy if a newer
	// takeover comes meanwhile. It fails with [ErrFinished] if the
	// key is closed and the client has had every event, with [ErrUnknownKey]
	// for an unknown key when req.Known is set, with [ErrTooManyKeys] when it
	// cannot take a new key, and with [ErrShutdown] once it is shut down;
	// [Handler] answers each with its own status. ctx bounds the wait.
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
	// Known fails the request with ErrUnknownKey unless the key exists.
	Known bool
}

// A Subscription is one connection's hold on a key: first the retained
// events the client missed, then the live queue. Its methods are called by
// the one goroutine that serves the connection.
type Subscription interface {
	// Missed returns, in order, the events after the request's LastID that
	// an earlier connection took but the client may not have received. If
	// some of the events after LastID are no longer retained, gap holds the
	// first and last of their IDs; otherwise it is zero.
	Missed() (gap Gap, events []Event)
	// Events is the key's live queue. It is closed after the key's last
	// event.
	Events() <-chan Event
	// Taken records that the connection took ev from Events, so that a later
	// connection can send it again if the client did not receive it.
	Taken(ev Event)
	// Window is how many of the events taken the source keeps to send
	// again, or 0 if it keeps none. A connection takes no more than that
	// between two writes, so that a write that fails loses nothing.
	Window() int
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
	// ErrUnknownKey is returned by [Broker.Subscribe] for a key that does not
	// exist when the request asks for a known one.
	ErrUnknownKey = errors.New("sse: unknown key")
)

// Subscribe attaches an SSE connection to key's queue, creating the key if
// it is new (unless req.Known is set, or the [WithMaxKeys] bound refuses it
// with [ErrTooManyKeys]); it implements [Source] for [Handler]. A key has at most one
// attached connection. Each event the connection takes enters the key's
// replay window ([WithReplay]) until a later request's LastID shows that the
// client has it, so a client that reconnects and resumes from the last ID it
// received gets every event exactly once, in order.
//
// In-process readers ([Broker.Stream]) of the same key compete with the
// connection for events; the window only covers what connections took.
func (b *Broker[K]) Subscribe(ctx context.Context, key K, req SubscribeRequest) (Subscription, error) {
	s := &subscription[K]{
		b:     b,
		key:   key,
		req:   req,
		done:  make(chan struct{}),
		ready: make(chan error, 1),
	}
	select {
	case <-b.done:
		return nil, ErrShutdown
	default:
	}
	b.post(command[K]{op: opSubscribe, key: key, arg: s})
	select {
	case err := <-s.ready:
		if err != nil {
			return nil, err
		}
		return s, nil
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	case <-b.done:
		return nil, ErrShutdown
	}
}

// subscription is the Broker's Subscription.
type subscription[K comparable] struct {
	b     *Broker[K]       // immutable
	key   K                // immutable
	req   SubscribeRequest // immutable
	ready chan error       // capacity 1: the loop's answer to Subscribe
	done  chan struct{}    // closed by the loop on takeover

	// Set by the loop before it answers on ready, then read-only.
	t      *topic[K]
	gap    Gap
	missed []Event

	ended     bool      // loop-owned: done is closed
	closeOnce sync.Once // Close is idempotent
}

func (s *subscription[K]) Missed() (Gap, []Event) { return s.gap, s.missed }
func (s *subscription[K]) Events() <-chan Event   { return s.t.ch }
func (s *subscription[K]) Done() <-chan struct{}  { return s.done }
func (s *subscription[K]) Window() int            { return s.b.cfg.replay }

// Taken adds ev to the key's replay window. While a subscription is
// attached, its goroutine owns the window; the loop owns it otherwise.
// Attaching and detaching go through the inbox, which orders the two.
func (s *subscription[K]) Taken(ev Event) {
	w := s.t.session
	if limit := s.b.cfg.replay; limit > 0 {
		if w.window.len() >= limit {
			w.window.dropOldest()
		}
		w.window.push(ev)
	}
	w.taken = ev.ID
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

	// window holds the events connections took, oldest first, until a
	// request's LastID shows the client has them; taken is the ID of the last
	// event taken. Owned as Taken says.
	window fifo
	taken  uint64
}

// subscribe handles opSubscribe: it attaches s to its key, or makes it wait
// for the attached connection to end, or refuses it.
func (l *loop[K]) subscribe(key K, s *subscription[K]) {
	switch t := l.topics[key]; {
	case t != nil:
	case l.quitting:
		s.ready <- ErrShutdown
		return
	case s.req.Known:
		s.ready <- ErrUnknownKey
		return
	}
	t := l.open(key)
	if t == nil {
		s.ready <- ErrTooManyKeys
		return
	}
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
		s.ready <- ErrBusy
		return
	}
	if ss.waiting != nil {
		ss.waiting.ready <- ErrBusy // superseded by a newer takeover
	}
	ss.waiting = s
	if a := ss.attached; !a.ended {
		a.ended = true
		close(a.done)
	}
}

// attach makes s the key's connection, with the retained events its client
// missed.
func (l *loop[K]) attach(s *subscription[K]) {
	t, ss := s.t, s.t.session
	if last := s.req.LastID; s.req.Resume && last <= t.seq {
		for ss.window.len() > 0 && ss.window.front().ID <= last {
			ss.window.dropOldest() // the client has it
		}
		first := ss.taken + 1 // the first ID that can still be sent
		if ss.window.len() > 0 {
			first = ss.window.front().ID
		}
		if last+1 < first {
			s.gap = Gap{From: last + 1, To: first - 1}
		}
		// They stay in the window until a later LastID covers them.
		s.missed = ss.window.appendTo(nil)
	}
	if t.chanClosed() && len(t.ch) == 0 && len(s.missed) == 0 && s.gap == (Gap{}) {
		s.ready <- ErrFinished
		return
	}
	ss.attached = s
	s.ready <- nil
}

// unsubscribe handles opUnsubscribe: s stops waiting, or detaches and lets a
// waiting takeover attach.
func (l *loop[K]) unsubscribe(s *subscription[K]) {
	if s.t == nil {
		return // refused before it reached a key
	}
	ss := s.t.session
	switch s {
	case ss.waiting:
		ss.waiting = nil
	case ss.attached:
		ss.attached = nil
		if w := ss.waiting; w != nil {
			ss.waiting = nil
			l.attach(w)
		} else {
			// The idle time starts now, so that a client that lost its
			// connection can come back to an open key.
			l.touch(s.t)
		}
	}
}
