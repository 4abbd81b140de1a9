package ssejs

import (
	"context"
	"sync"
	"time"

	"github.com/rocketqueue/sse"
)

// queueSub is a subscription in Queue mode: first the replay of what
// earlier connections took and the client did not confirm, read by direct
// gets, then the key's events, taken in turn with the process's other
// readers of the key.
type queueSub[K comparable] struct {
	qk       *qkey[K]             // immutable
	req      sse.SubscribeRequest // immutable
	local    bool                 // immutable: an in-process reader, not a connection
	epoch    string               // immutable
	down     <-chan struct{}      // immutable: closed when NATS becomes unreachable
	done     chan struct{}        // closed when a newer connection of this process took the key over
	doneOnce sync.Once

	// Owned by the goroutine that calls Next and Close.
	started bool
	gap     sse.Gap // the gap before the replay
	rpos    uint64  // the next event ID to replay
	rend    uint64  // the last event ID to replay
	rseq    uint64  // the stream sequence to read the replay from
	// A connection's position: the last event ID it was sent or told of
	// by a gap, once it has one (known). The events others took since
	// (in-process readers of this process) are named by a gap before its
	// next events, or before the end. In-process readers have none.
	pos    uint64
	known  bool
	closed sync.Once
}

func (b *Broker[K]) subscribeQueue(ctx context.Context, key K, token, subject string, req sse.SubscribeRequest, local bool) (subscription, error) {
	qk := b.qkeyFor(token, subject)
	s, err := qk.attach(ctx, key, req, local)
	if err != nil {
		b.unref(qk)
		return nil, err
	}
	return s, nil
}

func (qk *qkey[K]) attach(ctx context.Context, key K, req sse.SubscribeRequest, local bool) (*queueSub[K], error) {
	b := qk.b
	if err := qk.lock(ctx); err != nil {
		return nil, err
	}
	defer func() { <-qk.sem }()
	if qk.isLost() {
		return nil, sse.ErrBusy
	}
	last, err := b.life(ctx, key, qk.subject, req.Known)
	if err == nil {
		last, err = b.settled(ctx, qk.subject, req, last, local)
	}
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	old := qk.conn
	b.mu.Unlock()
	if !local && old != nil && !req.Takeover {
		return nil, sse.ErrBusy
	}
	qk.lmu.Lock()
	owned, l := qk.owned, qk.lease
	qk.lmu.Unlock()
	switch {
	case !owned:
		if err := qk.acquire(ctx, req.Takeover || local, last); err != nil {
			return nil, err
		}
	case l.Epoch != last.epoch || qk.stale:
		// The key's life ended and another began since this process took it.
		err := qk.write(ctx, false, func(l *lease) { *l = lease{Owner: l.Owner, Until: l.Until, Nonce: l.Nonce, Epoch: last.epoch} })
		if err != nil {
			return nil, err
		}
		if qk.hub != nil {
			qk.hub.close()
		}
		qk.hub, qk.batches, qk.spans, qk.ended, qk.stale = nil, nil, nil, false, false
		qk.lmu.Lock()
		qk.owed = sse.Gap{} // of the life that ended
		qk.lmu.Unlock()
	}
	qk.lmu.Lock()
	l = qk.lease
	qk.lmu.Unlock()
	if qk.hub == nil || qk.hub.failed() {
		// The key's messages from its floor's on: those before the hub's
		// start read by direct gets. A hub that ended (NATS was
		// unreachable) is replaced, and reading starts again from the
		// floor.
		if qk.hub != nil {
			qk.hub.close()
			qk.hub = nil
		}
		h := b.newHub(qk.token, qk.subject, &qk.polls)
		err := h.open(ctx)
		close(h.ready)
		if err != nil {
			return nil, err
		}
		qk.hub, qk.rseq, qk.off, qk.batches = h, max(l.FloorSeq, 1), l.Floor+1, nil
	}
	s := &queueSub[K]{qk: qk, req: req, local: local, epoch: l.Epoch, down: b.downChan(), done: make(chan struct{})}
	s.rpos, s.rend = 1, 0
	if id, ok := resumeAt(req, last, local); ok && id < l.Floor {
		from := max(id, l.Local) + 1
		if w := b.cfg.replay; l.Floor >= w {
			from = max(from, l.Floor-w+1)
		}
		if from > id+1 {
			s.gap = sse.Gap{From: id + 1, To: from - 1}
		}
		if from <= l.Floor {
			s.rpos, s.rend = from, l.Floor
			if s.rseq, err = b.locate(ctx, qk.subject, last, from); err != nil {
				return nil, err
			}
		}
	}
	if id, ok := resumeAt(req, last, local); ok {
		qk.lmu.Lock()
		if qk.owed != (sse.Gap{}) && id < qk.owed.From {
			qk.owed = sse.Gap{} // the replay, or its gap, covers them
		}
		qk.lmu.Unlock()
		if !local {
			s.pos, s.known = max(id, l.Floor), true
		}
	}
	qk.lmu.Lock()
	owes := qk.owed != (sse.Gap{}) || qk.heldElse(nil, l.Epoch) != nil
	qk.lmu.Unlock()
	if last.closed && l.Floor+1 == last.next() && s.rpos > s.rend && s.gap == (sse.Gap{}) && !owes {
		return nil, sse.ErrFinished
	}
	if !local {
		b.mu.Lock()
		qk.conn = s
		b.mu.Unlock()
		if old != nil {
			old.replace()
			if old.req.Abort != nil {
				old.req.Abort()
			}
		}
	}
	return s, nil
}

func (s *queueSub[K]) replace() {
	s.doneOnce.Do(func() { close(s.done) })
	s.qk.polls.fire()
}

func (s *queueSub[K]) Epoch() string { return s.epoch }

func (s *queueSub[K]) Next(ctx context.Context, buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	evs, gap, err, done := s.before(ctx, buf, limit)
	if done {
		return evs, gap, err
	}
	return s.qk.take(ctx, s, buf[:0], tick, limit)
}

// Poll is Next without the wait; it implements [sse.Subscription]. When
// nothing is ready it registers wake in qk.polls, which the key's next
// message, a takeover, the lease's loss, an in-process reader's yield at
// the key's end, the hub's end (NATS unreachable, Shutdown) and whoever
// locks the key (an attach, a reader's end, a forfeit) fire. It waits for
// sem, which no one holds for long while a Poll wants it (see lock), but
// never for a publish.
func (s *queueSub[K]) Poll(ctx context.Context, buf []sse.Event, limit int, wake func()) ([]sse.Event, sse.Gap, error) {
	evs, gap, err, done := s.before(ctx, buf, limit)
	if done {
		return evs, gap, err
	}
	if err := s.qk.enter(ctx); err != nil {
		return nil, sse.Gap{}, err
	}
	defer func() { <-s.qk.sem }()
	return s.qk.takeHeld(ctx, s, buf[:0], nil, limit, wake)
}

// before is what Next and Poll do before taking: the end at Shutdown, the
// release of what an in-process reader yielded, the replay and its gap.
// done says that it returns the call's result.
func (s *queueSub[K]) before(ctx context.Context, buf []sse.Event, limit int) ([]sse.Event, sse.Gap, error, bool) {
	buf = buf[:0]
	select {
	case <-s.qk.b.quit: // the replay too stops
		return buf, sse.Gap{}, sse.ErrShutdown, true
	default:
	}
	if s.local {
		s.release() // it yielded what it took before
	}
	var gap sse.Gap
	if !s.started {
		s.started = true
		gap = s.gap
	}
	if s.rpos <= s.rend {
		evs, gap, err := s.replay(ctx, buf, gap, limit)
		return evs, gap, err, true
	}
	if gap != (sse.Gap{}) {
		return buf, gap, nil, true
	}
	return nil, sse.Gap{}, nil, false
}

// release records that the in-process reader s yielded, or forfeit, what
// it held, and wakes the polling connection that may wait for it at the
// key's end.
func (s *queueSub[K]) release() {
	qk := s.qk
	qk.lmu.Lock()
	_, held := qk.held[s]
	qk.unhold(s)
	qk.lmu.Unlock()
	if held {
		qk.polls.fire()
	}
}

// replay reads the next events to send again out of the stream.
func (s *queueSub[K]) replay(ctx context.Context, buf []sse.Event, gap sse.Gap, limit int) ([]sse.Event, sse.Gap, error) {
	b := s.qk.b
	size := 0
	for s.rpos <= s.rend {
		bctx, cancel := b.bounded(ctx, s.down)
		bt, err := b.nextFrom(bctx, s.qk.subject, s.rseq)
		if err == nil && (bt == nil || bt.epoch != s.epoch) {
			// The floor says events up to rend are stored: a direct get
			// that finds none may have been answered by a lagging
			// replica. Ask the leader.
			bt, err = b.nextFromAtLeader(bctx, s.qk.subject, s.rseq)
		}
		cancel()
		if err != nil {
			return buf, gap, unavailable{err}
		}
		if bt == nil || bt.epoch != s.epoch {
			// Gone (expired, or the life ended): named, not skipped.
			if len(buf) > 0 || gap != (sse.Gap{}) {
				return buf, gap, nil
			}
			gap = sse.Gap{From: s.rpos, To: s.rend}
			s.rpos = s.rend + 1
			break
		}
		if bt.first > s.rpos {
			if len(buf) > 0 || gap != (sse.Gap{}) {
				return buf, gap, nil
			}
			gap = sse.Gap{From: s.rpos, To: min(bt.first-1, s.rend)}
			s.rpos = bt.first
			continue
		}
		evs, err := bt.events(nil, s.rpos)
		if err != nil {
			return buf, gap, err
		}
		for _, ev := range evs {
			if ev.ID > s.rend {
				break
			}
			if len(buf) > 0 && size+ev.Size() > limit {
				return buf, gap, nil
			}
			buf = append(buf, ev)
			size += ev.Size()
			s.rpos = ev.ID + 1
		}
		if s.rpos >= bt.next() {
			s.rseq = bt.seq + 1
		}
	}
	return buf, gap, nil
}

// saw records that s was sent events, or told of a gap, up to id. Only a
// connection is told of what others took since (see takeHeld); an
// in-process reader's position only keeps it from being given an owed
// gap behind it.
func (s *queueSub[K]) saw(id uint64) { s.pos, s.known = id, true }

func (s *queueSub[K]) Close() {
	s.closed.Do(func() {
		b := s.qk.b
		b.mu.Lock()
		if s.qk.conn == s {
			s.qk.conn = nil
		}
		b.mu.Unlock()
		s.qk.polls.drop(s)
		if s.local {
			s.release() // what it did not yield was forfeit (see forfeit)
		}
		b.unref(s.qk)
		b.untrack()
	})
}
