package ssejs

import (
	"context"
	"iter"

	"github.com/rocketqueue/sse"
)

// Events ranges over key's events, in process; it implements [sse.Reader].
//
// In [sse.Queue] mode it takes events in turn with the process's other
// readers and SSE connection of the key, each event once across every
// process: it takes the key's lease over from another process, whose
// readers then end with [sse.ErrReplaced]. In [sse.FanOut] mode it reads the
// key's history from its own position: the oldest message held, or as from
// says ([sse.After], [sse.Live]), and yields a [*sse.GapError], then goes
// on, for events the history no longer holds.
//
// In Queue mode a range takes events in batches, the key's floor past
// them: if the caller stops it early, what it took and did not yield is
// forfeit, named in a gap to the key's next reader (not read again, which
// could be a duplicate); a panic in the loop body forfeits it too. Until
// the range asks for more, or stops, an SSE connection of the key in this
// process does not end (close, 204): it sends heartbeats, and learns of
// the forfeit, if any, first.
//
// The range ends after the last event of a closed key, with no error; or
// with an error, once, last: ctx's, [sse.ErrReplaced], an error wrapping
// [ErrUnavailable] when NATS became unreachable, [sse.ErrShutdown], or
// [sse.ErrTruncated] when the key's life ended and another began.
func (b *Broker[K]) Events(ctx context.Context, key K, from ...sse.ReadOption) iter.Seq2[sse.Event, error] {
	var req sse.SubscribeRequest
	live := false
	if len(from) > 0 && b.cfg.mode == sse.FanOut {
		req.LastID, req.Resume, live = from[len(from)-1].Start()
	}
	return sse.SubscriptionEvents(ctx, func() (sse.Subscription, error) {
		s, err := b.subscribe(ctx, key, req, true, live)
		if err != nil {
			return nil, err
		}
		return s, nil
	}, forfeit[K])
}

// forfeit tells a Queue subscription that its reader stopped before it
// took evs, which the subscription had taken from the key (its floor is
// past them): the key's next reader is told of them by a gap (see
// qkey.owed), since no other reader can be given them without risking a
// duplicate.
func forfeit[K comparable](s sse.Subscription, evs []sse.Event) {
	if q, ok := s.(*queueSub[K]); ok && len(evs) > 0 {
		q.qk.forfeit(q, evs[0].ID, evs[len(evs)-1].ID)
	}
}
