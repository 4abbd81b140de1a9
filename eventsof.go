package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"sync"
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
// concerns, if any. While it ranges, EventsOf runs one goroutine per key
// that reads the key's history for it, and ends them before the range
// ends, however it ends.
func (b *Broker[K]) EventsOf(ctx context.Context, keys []K, from ...ReadOption) iter.Seq2[KeyEvent[K], error] {
	return func(yield func(KeyEvent[K], error) bool) {
		var none KeyEvent[K]
		if err := b.checkEventsOf(keys, from); err != nil {
			yield(none, err)
			return
		}
		ctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		defer func() {
			cancel()
			wg.Wait() // every reader has closed its subscription
		}()
		out := make(chan *keyBatch, len(keys))
		open := 0
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
			open++
			wg.Add(1)
			go pump(ctx, s, &keyBatch{key: i, back: make(chan struct{}, 1)}, out, readBytes, &wg)
		}
		for open > 0 {
			var kb *keyBatch
			select {
			case kb = <-out:
			case <-ctx.Done():
				yield(none, ctx.Err())
				return
			}
			key := keys[kb.key]
			if kb.gap != (Gap{}) && !yield(KeyEvent[K]{Key: key}, &GapError{kb.gap}) {
				return
			}
			for _, ev := range kb.events {
				if !yield(KeyEvent[K]{key, ev}, nil) {
					return
				}
			}
			switch {
			case kb.err == nil:
				clear(kb.events)
				kb.back <- struct{}{}
			case errors.Is(kb.err, io.EOF):
				open--
			case ctx.Err() != nil:
				yield(none, ctx.Err())
				return
			default:
				yield(KeyEvent[K]{Key: key}, kb.err)
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
