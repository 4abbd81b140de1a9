package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
)

// A KeyEvent is an event of one of the keys [Broker.EventsOf] reads, with
// its key.
type KeyEvent[K comparable] struct {
	Key K
	Event
}

// errEventsOfQueue is EventsOf's error in Queue mode.
var errEventsOfQueue = errors.New("sse: EventsOf reads FanOut keys; in Queue mode, range over each key's Events")

// EventsOf returns the events of several keys of a [FanOut] broker as one
// iterator, each with its key: what [MultiHandler] serves over SSE, in
// process. It creates the keys that are new. Each key's events come in
// order, each once, as [Broker.Events] yields them; the keys' events are
// interleaved as they arrive. from says where the keys start: none (every
// key at the oldest event held), one for every key, or one per key, in
// keys' order.
//
// A key whose reader falls behind what its history holds yields a
// [*GapError] with that key, then goes on. The range ends:
//   - with no error once every key is closed and its last event yielded;
//   - with ctx's error when ctx ends;
//   - at once with an error if keys holds a key twice or one the broker
//     cannot hold, if from holds another number of options, if the broker
//     is in [Queue] mode, or with [ErrTooManyKeys] or [ErrShutdown].
//
// An error other than a GapError comes once, last, with the key it
// concerns, if any. EventsOf reads every key from the ranging goroutine and
// starts none: a key that has nothing costs no goroutine, only the wake
// its [Subscription.Poll] registered; keys that have events take turns, so
// that a busy key does not hold the others back.
func (b *Broker[K]) EventsOf(ctx context.Context, keys []K, from ...ReadOption) iter.Seq2[KeyEvent[K], error] {
	return func(yield func(KeyEvent[K], error) bool) {
		var none KeyEvent[K]
		if err := b.checkEventsOf(keys, from); err != nil {
			yield(none, err)
			return
		}
		subs := make([]Subscription, len(keys)) // nil for keys not open, or closed
		defer func() {
			for _, sub := range subs {
				if sub != nil {
					sub.Close()
				}
			}
		}()
		for i, key := range keys {
			var o ReadOption
			if len(from) > 0 {
				o = from[min(i, len(from)-1)]
			}
			start := startHeld
			if o.live {
				start = startLive
			}
			s, err := b.subscribe(ctx, key, SubscribeRequest{Resume: o.hasAfter, LastID: o.after}, start, true)
			switch {
			case errors.Is(err, ErrFinished):
				continue // closed, and read to its end
			case err != nil:
				yield(KeyEvent[K]{Key: key}, err)
				return
			}
			subs[i] = s
		}
		p := newMultiPoll(subs) // it closes a key in subs when the key ends
		open := p.turn.n
		var buf []Event
		for open > 0 {
			if err := ctx.Err(); err != nil {
				yield(none, err)
				return
			}
			i, evs, gap, err, ok := p.next(ctx, buf, readBytes)
			if !ok {
				select {
				case <-p.signal:
				case <-ctx.Done():
				}
				continue
			}
			key := keys[i]
			if gap != (Gap{}) && !yield(KeyEvent[K]{Key: key}, &GapError{gap}) {
				return
			}
			for _, ev := range evs {
				if !yield(KeyEvent[K]{key, ev}, nil) {
					return
				}
			}
			clear(evs) // hold no event's data while waiting
			buf = evs
			switch {
			case err == nil:
			case errors.Is(err, io.EOF):
				p.close(i) // detached at once
				open--
			case ctx.Err() != nil:
				yield(none, ctx.Err())
				return
			default:
				yield(KeyEvent[K]{Key: key}, err)
				return
			}
		}
	}
}

// checkEventsOf refuses what EventsOf cannot read.
func (b *Broker[K]) checkEventsOf(keys []K, from []ReadOption) error {
	if b.cfg.mode != FanOut {
		return errEventsOfQueue
	}
	if len(from) > 1 && len(from) != len(keys) {
		return fmt.Errorf("sse: EventsOf: %d read options for %d keys: give none, one, or one per key", len(from), len(keys))
	}
	i, err := duplicate(keys, b.checkKey)
	if err == nil && i >= 0 {
		err = fmt.Errorf("sse: EventsOf: key %d is listed twice", i)
	}
	return err
}
