package sse

import (
	"context"
	"errors"
	"io"
	"iter"
)

// Stream returns key's channel, creating the key's queue if it is new: the
// reader side of [Queue] mode. Every call for a key returns the same
// channel: readers compete, and each event is received once. The loop
// closes the channel after the last event of a closed key, so ranging over
// it ends; a key that was closed before it held anything gets a closed
// channel at once, and so does every key after [Broker.Shutdown], or a key
// the broker cannot hold (see [ErrInvalidKey]). A channel is also closed
// when its stream is cut short (see [ErrTruncated]): a reader that must
// tell the two apart uses [Broker.Events].
//
// Stream counts as activity for [WithIdleTimeout]. At the [WithMaxKeys]
// bound, Stream of a new key returns a closed channel. It waits for the
// loop's answer, so it costs a round trip: call it once per reader, not per
// event. In [FanOut] mode, where every reader has its own position, Stream
// panics: use Events.
func (b *Broker[K]) Stream(key K) <-chan Event {
	if b.cfg.mode == FanOut {
		panic("sse: Stream reads a key in Queue mode; in FanOut mode, use Events")
	}
	t, err := b.stream(key)
	if err != nil {
		return closedChan
	}
	return t.ch
}

// A ReadOption says where a reader of [Broker.Events] starts in a [FanOut]
// key's history. Queue mode ignores it: there each event is read once.
type ReadOption struct {
	after    uint64
	hasAfter bool
	live     bool
}

// After starts a FanOut reader after the event with ID id: at the next one,
// if the history still holds it, or else at a [GapError], then the oldest
// event held. After(0) starts at the key's first event.
func After(id uint64) ReadOption { return ReadOption{after: id, hasAfter: true} }

// Live starts a FanOut reader at the next event the key receives.
func Live() ReadOption { return ReadOption{live: true} }

// Start tells where o starts a [FanOut] reader: after the event with ID
// after (hasAfter), at the next event appended (live), or, for the zero
// ReadOption, at the oldest event held. Other implementations of [Reader]
// call it.
func (o ReadOption) Start() (after uint64, hasAfter, live bool) {
	return o.after, o.hasAfter, o.live
}

// Events returns key's events as an iterator; it creates the key if it is
// new.
//
// In [Queue] mode it ranges over the channel [Broker.Stream] returns,
// competing with the key's other readers. In [FanOut] mode it reads the
// key's history from its own position: by default from the oldest event
// held, or as from says ([After], [Live]), and yields a [*GapError] (then
// goes on) if it falls behind what the history holds. Either way it ends:
//   - after the last event of a closed key, with no error;
//   - with [ErrTruncated], in Queue mode, after the events that reached the
//     channel, if the stream was cut short;
//   - with ctx's error when ctx ends;
//   - at once with an error wrapping [ErrInvalidKey], or with
//     [ErrTooManyKeys] or [ErrShutdown], if there is no stream to read.
//
// An error other than a GapError comes once, last, with a zero Event. Events
// costs no goroutine. A FanOut reader costs a few hundred bytes and a
// buffer of up to 4 KiB of events while it ranges, and nothing once the
// range ends; it counts as activity for [WithIdleTimeout], and a closed key
// is not forgotten while it reads. The range waits for the loop's answer
// when it begins.
func (b *Broker[K]) Events(ctx context.Context, key K, from ...ReadOption) iter.Seq2[Event, error] {
	if b.cfg.mode == FanOut {
		var o ReadOption
		if len(from) > 0 {
			o = from[len(from)-1]
		}
		return b.readHistory(ctx, key, o)
	}
	return func(yield func(Event, error) bool) {
		t, err := b.stream(key)
		if err != nil {
			yield(Event{}, err)
			return
		}
		for {
			select {
			case ev, ok := <-t.ch:
				if !ok {
					if t.truncated { // written before the channel closed
						yield(Event{}, ErrTruncated)
					}
					return
				}
				if !yield(ev, nil) {
					return
				}
			case <-ctx.Done():
				yield(Event{}, ctx.Err())
				return
			}
		}
	}
}

// readHistory is Events in FanOut mode: a subscription of the broker's own,
// which makes key a server key.
func (b *Broker[K]) readHistory(ctx context.Context, key K, o ReadOption) iter.Seq2[Event, error] {
	req := SubscribeRequest{Resume: o.hasAfter, LastID: o.after}
	from := startHeld
	if o.live {
		from = startLive
	}
	return SubscriptionEvents(ctx, func() (Subscription, error) {
		s, err := b.subscribe(ctx, key, req, from, true)
		if err != nil {
			return nil, err
		}
		return s, nil
	}, nil)
}

// readBytes bounds what [SubscriptionEvents] asks Next for at once, as
// [Event.Size] counts.
const readBytes = 4 << 10

// SubscriptionEvents returns the events of the [Subscription] that
// subscribe makes when a range begins, as the iterator that a [Reader]'s
// Events returns: it is how [Broker.Events] reads a [FanOut] key, and how a
// backend whose [Source] makes subscriptions in process implements Reader.
// The range:
//   - ends at once with no error if subscribe fails with [ErrFinished] (the
//     key is closed and read to its end), and with subscribe's error, once,
//     if it fails otherwise;
//   - yields the events each Next returns, in order, after a [*GapError]
//     for the gap Next names before them, if any;
//   - ends after the last events with no error when Next returns [io.EOF],
//     and otherwise with Next's error, once, last (a zero Event with it);
//   - closes the subscription when it ends, however it ends.
//
// It asks Next for up to 4 KiB of events at a time (as [Event.Size] counts
// them), with no heartbeat tick. If the caller stops the range before it
// has every event a Next returned (it breaks out of its loop, or its loop
// body panics), unread, unless nil, is called with the subscription and
// the events the caller did not get, before the subscription is closed
// (a subscription that took them from a key for this reader alone may
// have to tell the key's next reader of them).
// SubscriptionEvents costs no goroutine.
func SubscriptionEvents(ctx context.Context, subscribe func() (Subscription, error), unread func(s Subscription, events []Event)) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		s, err := subscribe()
		switch {
		case errors.Is(err, ErrFinished):
			return // closed, and read to its end
		case err != nil:
			yield(Event{}, err)
			return
		}
		defer s.Close()
		// rest is what the caller has not been handed of the last Next's
		// events: given to unread however the range ends early, by a
		// break or by a panic in the caller's loop body.
		var rest []Event
		if unread != nil {
			defer func() {
				if len(rest) > 0 {
					unread(s, rest)
				}
			}()
		}
		var buf []Event
		for {
			evs, gap, err := s.Next(ctx, buf, nil, readBytes)
			rest = evs
			if gap != (Gap{}) && !yield(Event{}, &GapError{gap}) {
				return
			}
			for i, ev := range evs {
				rest = evs[i+1:]
				if !yield(ev, nil) {
					return
				}
			}
			switch {
			case err == io.EOF:
				return
			case err != nil:
				yield(Event{}, err)
				return
			}
			buf = evs
		}
	}
}

// stream asks the loop for key's topic. Only its channel, and once that is
// closed its truncated flag, may be read.
func (b *Broker[K]) stream(key K) (*topic[K], error) {
	if err := b.checkKey(key); err != nil {
		return nil, err
	}
	select {
	case <-b.done:
		return nil, ErrShutdown
	default:
	}
	reply := make(chan streamAnswer[K], 1)
	b.post(command[K]{op: opStream, key: key, arg: reply})
	select {
	case a := <-reply:
		return a.t, a.err
	case <-b.done:
		select {
		case a := <-reply:
			return a.t, a.err
		default:
			return nil, ErrShutdown
		}
	}
}

// A streamAnswer is the loop's answer to opStream.
type streamAnswer[K comparable] struct {
	t   *topic[K]
	err error
}

// stream handles opStream. During Shutdown it creates no key.
func (l *loop[K]) stream(key K) streamAnswer[K] {
	if l.quitting {
		if t := l.topics[key]; t != nil {
			return streamAnswer[K]{t: t}
		}
		return streamAnswer[K]{err: ErrShutdown}
	}
	t := l.open(key, true)
	if t == nil {
		return streamAnswer[K]{err: ErrTooManyKeys}
	}
	t.used = true // a reader holds its channel
	return streamAnswer[K]{t: t}
}

// feed is a backlogged key's feeder goroutine. It takes events from the
// key's overflow and sends them into the channel, blocking as the loop must
// not, until it finds the overflow empty; then it returns. Unless a
// dropping policy bounds the overflow, it takes the whole overflow at once,
// so that events move in batches without a lock per event; under a
// dropping policy it takes one event at a time, so that the policy can drop
// any other. It returns early when the loop closes stop: the key was
// forgotten, or Shutdown's deadline passed. Its last act is to tell the
// loop, which then ends the backlog or, if it started another feeder
// meanwhile, lets that one go on.
func (b *Broker[K]) feed(t *topic[K], bl *backlog) {
	defer b.feeders.Done()
	ch, f, low, whole := t.ch, t.flow, b.cfg.low(), !b.cfg.dropping()
	// Under Block, what it sent goes back to the key's flow in chunks of an
	// eighth of the bound, and at the end of each batch: producers may wait
	// a little longer, never on a count below the truth.
	chunk := max(1, b.cfg.maxPending/8)
	bl.mu.Lock()
	batch := bl.spare
	bl.spare = fifo{}
	for bl.queue.len() > 0 {
		if whole {
			batch, bl.queue = bl.queue, batch
		} else {
			batch.push(bl.queue.front())
			bl.queue.dropOldest()
		}
		bl.unsent.Store(int64(batch.len()))
		bl.mu.Unlock()
		sent := 0
		for batch.len() > 0 {
			// A full channel is seen without its lock: go straight to waiting.
			if len(ch) == cap(ch) || !trySend(ch, batch.front()) {
				bl.unsent.Store(int64(batch.len()))
				if sent >= chunk {
					f.release(sent, low)
					sent = 0
				}
				select {
				case ch <- batch.front():
				case <-bl.stop:
					f.release(sent, low)
					bl.mu.Lock()
					batch.clear()
					bl.feeding, bl.spare = false, batch
					bl.mu.Unlock()
					b.post(command[K]{op: opFed, arg: t})
					return
				}
			}
			batch.dropOldest()
			sent++
			t.polls.Load().fire()
		}
		bl.unsent.Store(0)
		f.release(sent, low)
		bl.mu.Lock()
	}
	bl.feeding, bl.spare = false, batch
	bl.mu.Unlock()
	b.post(command[K]{op: opFed, arg: t})
}
