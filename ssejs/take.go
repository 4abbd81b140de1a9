package ssejs

import (
	"context"
	"errors"
	"io"
	"runtime"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
)

// take hands s the next events of the key: it waits for them, advances
// the key's floor past them in the bucket, and only then returns them.
func (qk *qkey[K]) take(ctx context.Context, s *queueSub[K], buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	b := qk.b
	for {
		select {
		case qk.sem <- struct{}{}:
		case <-tick:
			return nil, sse.Gap{}, nil
		case <-ctx.Done():
			return nil, sse.Gap{}, ctx.Err()
		case <-s.done:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-qk.lost:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-s.down:
			return nil, sse.Gap{}, ErrUnavailable
		case <-b.quit:
			return nil, sse.Gap{}, sse.ErrShutdown
		}
		evs, gap, err := qk.takeHeld(ctx, s, buf, tick, limit, nil)
		<-qk.sem
		if err != errYield {
			return evs, gap, err
		}
		// An attach or an unref waits for sem, and is next in line for it
		// (sends on a channel are served in order).
		runtime.Gosched()
	}
}

// takeHeld is take with sem held; it returns errYield, and nothing else,
// when an attach or an unref wants sem while it waits. With wake (a Poll)
// it does not wait: when nothing is ready it registers wake in qk.polls
// and returns nothing.
func (qk *qkey[K]) takeHeld(ctx context.Context, s *queueSub[K], buf []sse.Event, tick <-chan time.Time, limit int, wake func()) ([]sse.Event, sse.Gap, error) {
	b := qk.b
	for {
		select {
		case <-s.done:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-qk.lost:
			return nil, sse.Gap{}, sse.ErrReplaced
		default:
		}
		qk.lmu.Lock()
		epoch := qk.lease.Epoch
		qk.lmu.Unlock()
		if epoch != s.epoch || qk.stale {
			return nil, sse.Gap{}, sse.ErrTruncated
		}
		qk.lmu.Lock()
		g := qk.owed
		if g != (sse.Gap{}) && s.known && s.pos >= g.From {
			g = sse.Gap{} // this reader is past them: it keeps them for another
		}
		if g != (sse.Gap{}) {
			qk.owed = sse.Gap{}
		}
		qk.lmu.Unlock()
		if g != (sse.Gap{}) {
			// What the previous owner may not have handed out, or a
			// reader here stopped before it took; a connection is told
			// too of what others took before it.
			if !s.local && s.known && s.pos < g.From {
				g.From = s.pos + 1
			}
			s.saw(g.To)
			return nil, g, nil
		}
		// Wait for the key's next message; at the key's end, a connection
		// waits instead for the readers here that hold events to yield or
		// forfeit them (a forfeit is named to it), then ends.
		var msgs, unheld <-chan struct{}
		waiting := false
		switch {
		case qk.ended:
			if !s.local {
				qk.lmu.Lock()
				unheld = qk.heldElse(s, s.epoch)
				qk.lmu.Unlock()
			}
			waiting = unheld != nil
			if unheld == nil {
				// Before the end, a connection is told of the key's
				// last events that others took.
				var gap sse.Gap
				if !s.local && s.known && s.pos+1 < qk.off {
					gap = sse.Gap{From: s.pos + 1, To: qk.off - 1}
					s.saw(gap.To)
				}
				return nil, gap, io.EOF
			}
		case len(qk.batches) == 0:
			var err error
			if msgs, waiting, err = qk.fill(ctx, s, wake); err != nil {
				return nil, sse.Gap{}, err
			}
			if !waiting && len(qk.batches) == 0 {
				continue // a message with nothing to take
			}
		}
		if !waiting {
			break // messages to take
		}
		if wake != nil {
			// Registered first, then checked: what makes any of these
			// ready fires qk.polls after.
			qk.polls.add(s, wake)
			if !closed(unheld) && !closed(s.done) && !closed(qk.lost) && !closed(s.down) && !closed(b.quit) {
				return nil, sse.Gap{}, nil
			}
			qk.polls.drop(s)
			switch {
			case closed(s.done), closed(qk.lost):
				return nil, sse.Gap{}, sse.ErrReplaced
			case closed(s.down):
				return nil, sse.Gap{}, ErrUnavailable
			case closed(b.quit):
				return nil, sse.Gap{}, sse.ErrShutdown
			}
			continue // unheld
		}
		select {
		case <-unheld:
		case <-msgs:
		case <-qk.wanted():
			return nil, sse.Gap{}, errYield
		case <-tick:
			return nil, sse.Gap{}, nil
		case <-ctx.Done():
			return nil, sse.Gap{}, ctx.Err()
		case <-s.done:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-qk.lost:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-s.down:
			return nil, sse.Gap{}, ErrUnavailable
		case <-b.quit:
			return nil, sse.Gap{}, sse.ErrShutdown
		}
	}
	// A connection takes no more than the replay window at once, so that a
	// write that fails loses nothing the window does not hold.
	maxEvents := uint64(1<<63 - 1)
	if !s.local && b.cfg.replay > 0 {
		maxEvents = b.cfg.replay
	}
	var gap sse.Gap
	if !s.local && s.known && s.pos+1 < qk.off {
		gap = sse.Gap{From: s.pos + 1, To: qk.off - 1} // taken by others since this connection's last
	}
	off, size, used, ended := qk.off, 0, 0, false
	var floorSeq uint64
	for i, bt := range qk.batches {
		if bt.epoch != s.epoch {
			// The key's life ended (its messages expired) and another
			// began: this one's readers are cut short, and the next
			// attach starts the new life afresh.
			if len(buf) > 0 || gap != (sse.Gap{}) {
				break
			}
			qk.stale = true
			return nil, sse.Gap{}, sse.ErrTruncated
		}
		if bt.first > off && (bt.count > 0 || bt.closed) {
			if len(buf) > 0 {
				break
			}
			if gap == (sse.Gap{}) {
				gap.From = off
			}
			gap.To = bt.first - 1 // expired before anyone took them
			off, floorSeq = bt.first, bt.seq
		}
		evs, err := bt.events(nil, off)
		if err != nil {
			return nil, sse.Gap{}, err
		}
		full := false
		for _, ev := range evs {
			if len(buf) > 0 && (size+ev.Size() > limit || uint64(len(buf)) >= maxEvents) {
				full = true
				break
			}
			buf = append(buf, ev)
			size += ev.Size()
			off, floorSeq = ev.ID+1, bt.seq
		}
		if full {
			break
		}
		used = i + 1
		if bt.closed {
			ended = true
			break
		}
	}
	if off > qk.off {
		floor := off - 1
		wctx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
		err := qk.write(wctx, false, func(l *lease) {
			l.Pend, l.PrevSeq, l.PrevLocal, l.Floor, l.FloorSeq = floor-l.Floor, l.FloorSeq, l.Local, floor, floorSeq
			if s.local {
				l.Local = floor
				if len(buf) > 0 { // under lmu, as the write: no renewal between
					qk.hold(s, buf[0].ID, buf[len(buf)-1].ID)
				}
			}
		})
		cancel()
		if err != nil && s.local {
			qk.lmu.Lock()
			qk.unhold(s) // not handed out
			qk.lmu.Unlock()
		}
		switch {
		case errors.Is(err, errLost):
			return nil, sse.Gap{}, sse.ErrReplaced
		case err != nil:
			return nil, sse.Gap{}, unavailable{err}
		}
	}
	for _, bt := range qk.batches[:used] {
		qk.spans = append(qk.spans, span{bt.seq, bt.next() - 1})
	}
	qk.batches = qk.batches[used:]
	qk.off, qk.ended = off, ended
	if len(qk.spans) >= 32 {
		qk.purge(context.Background(), true, 16)
	}
	if gap != (sse.Gap{}) {
		s.saw(gap.To)
	}
	if len(buf) > 0 {
		s.saw(buf[len(buf)-1].ID)
	}
	if ended && len(buf) == 0 && gap == (sse.Gap{}) {
		return nil, sse.Gap{}, io.EOF
	}
	return buf, gap, nil
}

// fill reads the key's next messages into batches: every one the hub
// holds from rseq on, or, while rseq is behind the hub, one by a direct
// get. When none is ready it returns idle, and the hub's wake channel, or
// registers wake (a Poll's) in qk.polls, as hub.next does. A message read
// may have nothing to take (see add): then batches stay empty.
func (qk *qkey[K]) fill(ctx context.Context, s *queueSub[K], wake func()) (wch <-chan struct{}, idle bool, err error) {
	for {
		bt, covered, from, wch, err := qk.hub.next(qk.rseq, wake == nil, s, wake)
		switch {
		case err != nil:
			return nil, false, err
		case bt != nil:
			for bt != nil {
				qk.add(bt)
				qk.rseq = bt.seq + 1
				bt, _, _, _, _ = qk.hub.next(qk.rseq, false, nil, nil)
			}
			qk.hub.trim(qk.rseq)
			return nil, false, nil
		case covered:
			return wch, true, nil
		}
		if bt, qk.rseq, err = qk.b.catchUp(ctx, s.down, qk.subject, qk.rseq, from); err != nil {
			return nil, false, err
		}
		if bt != nil {
			qk.add(bt)
			return nil, false, nil
		}
	}
}

// closed reports whether c is closed; a nil c is not.
func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// add keeps a message read from the hub if it has events not yet taken,
// or the key's Close, or is of another life than the lease's.
func (qk *qkey[K]) add(bt *batch) {
	qk.lmu.Lock()
	epoch := qk.lease.Epoch
	qk.lmu.Unlock()
	if bt.next() <= qk.off && !bt.closed && bt.epoch == epoch {
		return
	}
	qk.batches = append(qk.batches, bt)
}

// purge deletes the messages whose events are all older than the replay
// window below the floor, if at least min of them are, keeping the
// subject's last message (its metadata), in a goroutine of its own if
// background is set. It is called with sem held.
func (qk *qkey[K]) purge(ctx context.Context, background bool, min int) {
	b := qk.b
	qk.lmu.Lock()
	floor := qk.lease.Floor
	qk.lmu.Unlock()
	if floor < b.cfg.replay || len(qk.spans) < 2 {
		return
	}
	keep := floor - b.cfg.replay // events up to keep may go
	cut := 0
	for cut < len(qk.spans)-1 && qk.spans[cut].last <= keep {
		cut++
	}
	if cut < min {
		return
	}
	seq := qk.spans[cut].seq // purge below it
	if !background {
		b.stream.Purge(ctx, jetstream.WithPurgeSubject(qk.subject), jetstream.WithPurgeSequence(seq))
		qk.spans = qk.spans[cut:]
		return
	}
	if !qk.purging.CompareAndSwap(false, true) {
		return
	}
	qk.spans = append([]span(nil), qk.spans[cut:]...)
	b.calls.Add(1)
	go func() {
		defer b.calls.Done()
		defer qk.purging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.stream.Purge(ctx, jetstream.WithPurgeSubject(qk.subject), jetstream.WithPurgeSequence(seq))
	}()
}
