package sse

import (
	"context"
	"io"
	"math"
	"sync/atomic"
	"time"
)

// subscription is the Broker's Subscription, and its in-process FanOut
// reader. The loop attaches it to a key; then the connection's goroutine
// reads: in Queue mode from the key's replay window, then its channel; in
// FanOut mode from the key's history.
type subscription[K comparable] struct {
	b     *Broker[K]       // immutable
	key   K                // immutable
	req   SubscribeRequest // immutable
	ready chan answer      // the loop's answers to Subscribe: capacity 2 in Queue mode, 1 in FanOut mode; nil once it succeeded
	done  chan struct{}    // Queue mode: closed by the loop on takeover; nil in FanOut mode

	// Set by the loop before it answers on ready, then read-only.
	t      *topic[K]
	gap    Gap    // the gap before the first events
	replay int    // Queue mode: how many of the window's events to send again
	pos    uint64 // the ID of the next event to hand over (FanOut), or the last one the client has (Queue)

	// Owned by the connection's goroutine. The small fields last, together,
	// so that with a string key the struct takes 192 bytes, not 208: it
	// lives as long as its stream.
	replayed int       // Queue mode: the window's events sent again so far
	carry    Event     // Queue mode: an event taken from the channel that did not fit in the last batch
	polled   *pollWake // its place in the key's wakeList, made by the first Poll that finds nothing
	carried  bool
	started  bool // Next or Poll has been called
	known    bool // Queue mode: pos is known; set by the loop first, as pos
	closed   bool // Close was called: it is idempotent

	start start // immutable
	local bool  // immutable: a reader in process, not a connection (see subscribe)
	ended bool  // loop-owned: done is closed
}

func (s *subscription[K]) Epoch() string { return formatEpoch(s.t.epoch) }

func (s *subscription[K]) Next(ctx context.Context, buf []Event, tick <-chan time.Time, limit int) ([]Event, Gap, error) {
	return s.next(ctx, buf, tick, nil, limit)
}

func (s *subscription[K]) Poll(ctx context.Context, buf []Event, limit int, wake func()) ([]Event, Gap, error) {
	return s.next(ctx, buf, nil, wake, limit)
}

// next is Next, or Poll if wake is set: where Next would wait, Poll
// registers wake on the key's wakeList and returns nothing.
func (s *subscription[K]) next(ctx context.Context, buf []Event, tick <-chan time.Time, wake func(), limit int) ([]Event, Gap, error) {
	buf = buf[:0]
	var gap Gap
	if !s.started {
		s.started = true
		gap = s.gap
	}
	if s.b.cfg.mode == FanOut {
		return s.nextHeld(ctx, buf, gap, tick, wake, limit)
	}
	return s.nextQueued(ctx, buf, gap, tick, wake, limit)
}

// await registers wake on the wakeList at p: the key's.
func (s *subscription[K]) await(p *atomic.Pointer[wakeList], wake func()) {
	if s.polled == nil {
		s.polled = &pollWake{list: wakeListAt(p)}
	}
	s.polled.list.add(s.polled, wake)
}

// nextQueued is Next in Queue mode: the replay, then the live channel.
func (s *subscription[K]) nextQueued(ctx context.Context, buf []Event, gap Gap, tick <-chan time.Time, wake func(), limit int) ([]Event, Gap, error) {
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
		if len(buf) > 0 && size+ev.Size() > limit {
			break
		}
		buf = append(buf, ev)
		size += ev.Size()
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
	} else if wake != nil {
		var got bool
		var err error
		if ev, ok, got, err = s.pollQueued(ctx, wake); !got {
			return buf, Gap{}, err
		}
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
		if n > 0 && (n == maxEvents || size+ev.Size() > limit || jump) {
			s.carry, s.carried = ev, true
			break
		}
		if jump {
			gap = Gap{From: s.pos + 1, To: ev.ID - 1}
		}
		w.add(ev, &s.b.cfg, &s.b.replayed)
		buf = append(buf, ev)
		size += ev.Size()
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

// pollQueued takes the next event from the key's channel without waiting,
// as nextQueued's select would: got reports whether it took one or found
// the channel closed (ok is then false). Otherwise it returns ErrReplaced
// after a takeover, ctx's error, or, with nothing ready, nil with wake
// registered: what sends to the channel, closes it or takes the key over
// calls it after.
func (s *subscription[K]) pollQueued(ctx context.Context, wake func()) (ev Event, ok, got bool, err error) {
	for registered := false; ; registered = true {
		select {
		case ev, ok = <-s.t.ch:
			if registered {
				s.polled.list.remove(s.polled) // Poll keeps no wake when it returns something
			}
			return ev, ok, true, nil
		case <-s.done:
			if registered {
				s.polled.list.remove(s.polled)
			}
			return Event{}, false, false, ErrReplaced
		default:
		}
		if registered {
			return Event{}, false, false, nil
		}
		if err := ctx.Err(); err != nil {
			return Event{}, false, false, err
		}
		// Look again once wake is registered: a send or close between the
		// first look and the registration fires the list before wake is
		// in it.
		s.await(&s.t.polls, wake)
	}
}

// nextHeld is Next in FanOut mode: the history from the reader's position.
func (s *subscription[K]) nextHeld(ctx context.Context, buf []Event, gap Gap, tick <-chan time.Time, poll func(), limit int) ([]Event, Gap, error) {
	h := s.t.history
	registered := false
	for {
		var g Gap
		buf, g, s.pos = h.read(s.pos, buf, limit)
		if g != (Gap{}) {
			gap = g
		}
		ended := h.closed.Load() && s.pos >= h.next.Load()
		if len(buf) > 0 || gap != (Gap{}) || ended {
			if registered {
				s.polled.list.remove(s.polled) // Poll keeps no wake when it returns something
			}
			if ended {
				return buf, gap, io.EOF
			}
			return buf, gap, nil
		}
		if poll != nil {
			if registered {
				return buf, Gap{}, nil
			}
			if err := ctx.Err(); err != nil {
				return buf, Gap{}, err
			}
			// Read again once poll is registered: the loop stores next, or
			// closed, before it fires the list.
			s.await(&h.polls, poll)
			registered = true
			continue
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
	if s.closed {
		return
	}
	s.closed = true
	if s.carried {
		w := &s.t.session.window
		w.add(s.carry, &s.b.cfg, &s.b.replayed)
		if w.events.len() > 0 {
			w.unsent = s.carry.ID
		}
		s.carried = false
	}
	if w := s.polled; w != nil {
		w.list.remove(w) // a fire that took it may still call its wake
	}
	s.b.post(command[K]{op: opUnsubscribe, key: s.key, arg: s})
}
