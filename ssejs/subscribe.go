package ssejs

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/rocketqueue/sse"
)

// Subscribe attaches one client connection to key; it implements
// [sse.Source], so that [sse.Handler] serves the broker.
//
// In [sse.FanOut] mode every connection, on every process, reads the key's
// history from its own position: the oldest message held, or the event
// after its Last-Event-ID if that is of the key's current life.
//
// In [sse.Queue] mode one process at a time owns a key (see the package
// documentation): the first subscription takes its lease, and keeps it
// while the process has connections or readers of the key. A request that
// takes over (a Last-Event-ID, [sse.WithTakeover]) takes the lease from
// another process, whose connection then ends with [sse.ErrReplaced]; a
// request that does not gets [sse.ErrBusy] while another process's lease is
// fresh or this process has a connection. The new connection first
// receives the events after its Last-Event-ID that earlier connections took
// (within [WithReplayEvents]), on whichever process, then the queue.
//
// A key with no life yet gets one (its epoch) unless req.Known is set,
// which fails with [sse.ErrUnknownKey] instead. While NATS is unreachable
// Subscribe fails with an error that wraps [ErrUnavailable] and matches
// [sse.ErrShutdown], so that the handler tells the client to come back.
func (b *Broker[K]) Subscribe(ctx context.Context, key K, req sse.SubscribeRequest) (sse.Subscription, error) {
	s, err := b.subscribe(ctx, key, req, false, false)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// subscribe is Subscribe, and an in-process reader's start (local is
// true: its LastID is of the current life; live starts FanOut readers at
// the next event).
func (b *Broker[K]) subscribe(ctx context.Context, key K, req sse.SubscribeRequest, local, live bool) (subscription, error) {
	token, subject, err := b.subject(key)
	if err != nil {
		return nil, err
	}
	if err := b.track(); err != nil {
		return nil, err
	}
	select {
	case <-b.downChan():
		b.untrack()
		return nil, unavailable{}
	default:
	}
	ctx, cancel := b.callCtx(ctx)
	defer cancel()
	var s subscription
	if b.cfg.mode == sse.FanOut {
		s, err = b.subscribeFanOut(ctx, key, token, subject, req, local, live)
	} else {
		s, err = b.subscribeQueue(ctx, key, token, subject, req, local)
	}
	if err != nil {
		b.untrack()
		return nil, b.netErr(err)
	}
	return s, nil
}

// netErr turns a failure to reach NATS into an error that the handler
// answers with "retry later".
func (b *Broker[K]) netErr(err error) error {
	for _, e := range []error{sse.ErrBusy, sse.ErrFinished, sse.ErrUnknownKey, sse.ErrInvalidKey, sse.ErrShutdown, context.Canceled} {
		if errors.Is(err, e) {
			return err
		}
	}
	return unavailable{err}
}

// subscription is what Subscribe returns in either mode.
type subscription interface {
	sse.Subscription
}

// fanSub is a subscription in FanOut mode: it reads the key's messages
// from its position, out of the key's hub or, while it is behind the hub,
// by direct gets.
type fanSub[K comparable] struct {
	b     *Broker[K]      // immutable
	epoch string          // immutable: the key's life
	down  <-chan struct{} // immutable: closed when NATS becomes unreachable

	hub *hub[K] // immutable

	// Owned by the goroutine that calls Next or Poll, and Close.
	rseq    uint64 // the stream sequence of the next message to read
	pos     uint64 // the ID of the next event to hand out; 0: the first held
	pending []sse.Event
	held    *batch // a message read and not yet handed out
	ended   bool   // the key's Close was read
	err     error  // the error to return once pending is empty
	closed  sync.Once
}

func (b *Broker[K]) subscribeFanOut(ctx context.Context, key K, token, subject string, req sse.SubscribeRequest, local, live bool) (subscription, error) {
	last, err := b.life(ctx, key, subject, req.Known)
	if err == nil {
		last, err = b.settled(ctx, subject, req, last, local)
	}
	if err != nil {
		return nil, err
	}
	s := &fanSub[K]{b: b, epoch: last.epoch, down: b.downChan(), rseq: 1}
	switch id, ok := resumeAt(req, last, local); {
	case ok && last.closed && id+1 == last.next():
		return nil, sse.ErrFinished // the client has every event
	case ok:
		s.pos = id + 1
		if s.rseq, err = b.locate(ctx, subject, last, s.pos); err != nil {
			return nil, err
		}
	case live:
		s.pos, s.rseq = last.next(), last.seq+1
		if last.closed {
			s.rseq = last.seq // its Close ends the reader at once
		}
	}
	if s.hub, err = b.hubFor(ctx, token, subject); err != nil {
		return nil, err
	}
	return s, nil
}

// life returns key's last message, starting the key's life first if it
// has none (unless known is set: then it fails with ErrUnknownKey).
func (b *Broker[K]) life(ctx context.Context, key K, subject string, known bool) (*batch, error) {
	for range 3 {
		last, err := b.last(ctx, subject)
		switch {
		case err != nil:
			return nil, err
		case last != nil:
			return last, nil
		case known:
			return nil, sse.ErrUnknownKey
		}
		if err := b.Open(ctx, key); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("ssejs: the key's life keeps ending")
}

// resumeAt returns the ID after which a request resumes in the life whose
// last message is last, and whether it does: an ID of another life counts
// as 0, an ID the key has not reached as none.
func resumeAt(req sse.SubscribeRequest, last *batch, local bool) (uint64, bool) {
	if !req.Resume {
		return 0, false
	}
	id := req.LastID
	if !local && req.Epoch != last.epoch {
		id = 0
	}
	return id, id < last.next()
}

func (s *fanSub[K]) Epoch() string { return s.epoch }

func (s *fanSub[K]) Next(ctx context.Context, buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	return s.read(ctx, buf, tick, limit, false, nil)
}

// Poll is Next without the wait; it implements [sse.Subscription]. When
// nothing is ready it registers wake in the key's hub, which its next
// message, or its end (NATS unreachable, Shutdown, a failure of the
// process's feed), calls.
func (s *fanSub[K]) Poll(ctx context.Context, buf []sse.Event, limit int, wake func()) ([]sse.Event, sse.Gap, error) {
	return s.read(ctx, buf, nil, limit, true, wake)
}

// read is Next, or Poll if poll is set.
func (s *fanSub[K]) read(ctx context.Context, buf []sse.Event, tick <-chan time.Time, limit int, poll bool, wake func()) ([]sse.Event, sse.Gap, error) {
	buf = buf[:0]
	var gap sse.Gap
	size := 0
	for {
		for len(s.pending) > 0 {
			ev := s.pending[0]
			if len(buf) > 0 && size+ev.Size() > limit {
				return buf, gap, nil
			}
			buf = append(buf, ev)
			size += ev.Size()
			s.pending = s.pending[1:]
		}
		if s.err != nil {
			return buf, gap, s.err
		}
		if s.ended {
			return buf, gap, io.EOF
		}
		bt := s.held
		s.held = nil
		if bt == nil {
			var err error
			wait := len(buf) == 0 && gap == (sse.Gap{})
			var w func()
			if poll && wait {
				w, wait = wake, false
			}
			if bt, err = s.fetch(ctx, tick, wait, w); err != nil {
				if len(buf) > 0 || gap != (sse.Gap{}) {
					s.err = err
					return buf, gap, nil
				}
				return nil, sse.Gap{}, err
			}
			if bt == nil {
				return buf, gap, nil
			}
		}
		if bt.epoch != s.epoch {
			// The key's life ended and another began: the client must
			// start it afresh, so the stream ends without "close".
			s.err = sse.ErrTruncated
			continue
		}
		if s.pos == 0 {
			s.pos = bt.first
		}
		if bt.next() <= s.pos && !bt.closed {
			continue // events before the reader's position
		}
		if bt.first > s.pos { // a message with no events too: the events before it are missed
			if len(buf) > 0 || gap != (sse.Gap{}) {
				s.held = bt // the gap goes just before its events, next time
				return buf, gap, nil
			}
			gap = sse.Gap{From: s.pos, To: bt.first - 1}
			s.pos = bt.first
		}
		var err error
		if s.pending, err = bt.events(s.pending[:0], s.pos); err != nil {
			s.err = err // after the events decoded before it; not a finish
		}
		s.pos = max(s.pos, bt.next())
		s.ended = bt.closed && err == nil
	}
}

func (s *fanSub[K]) Close() {
	s.closed.Do(func() {
		s.hub.wakes.drop(s)
		s.b.unrefHub(s.hub)
		s.b.untrack()
	})
}
