package ssejs

import (
	"errors"
	"sync/atomic"

	"github.com/rocketqueue/sse"
)

// counters are this process's figures that [Broker.Stats] reports and no
// other state holds.
type counters struct {
	enqueued  atomic.Uint64 // events of calls stored
	discarded atomic.Uint64 // events of calls refused because their key was closed
}

// count records what became of calls, stored together in one message
// (see flush), whose outcome is err.
func (c *counters) count(calls []*pubCall, err error) {
	var n uint64
	for _, call := range calls {
		n += call.n // 0 for a Close or an Open
	}
	switch {
	case err == nil:
		c.enqueued.Add(n)
	case errors.Is(err, sse.ErrClosed):
		c.discarded.Add(n)
	}
}

// Stats returns this process's figures, in the fields of [sse.Stats], so
// that what reads an [sse.Broker]'s (github.com/rocketqueue/sse/sseprom's
// Collector) reads a Broker's the same way. The keys and their events are
// in NATS, shared by every process: each process counts its own part.
//
//   - Keys: the keys this process reads now, those with a reader or an SSE
//     connection here (a key read on several processes counts in each).
//   - Enqueued: the events of this process's Enqueue and Publish calls that
//     returned nil (a call retried with the same idempotency key, and
//     stored once, counts each time it returns nil).
//   - Discarded: the events of its calls refused with [sse.ErrClosed],
//     sent to a closed key.
//   - Closed, Pending, Dropped and Replay are always 0. A closed key is a
//     message in the stream, which no process holds; producers wait for the
//     server, never in a backlog of the process; the broker drops no event
//     (an event that expires unread, after [WithMaxAge], reaches its readers
//     as a gap, which a handler's [sse.Metrics] counts); replay windows and
//     histories are in the stream, whose bytes NATS reports.
//
// It costs a lock and no call to NATS.
func (b *Broker[K]) Stats() sse.Stats {
	b.mu.Lock()
	keys := len(b.hubs) + len(b.qkeys)
	b.mu.Unlock()
	return sse.Stats{
		Keys:      keys,
		Enqueued:  b.stats.enqueued.Load(),
		Discarded: b.stats.discarded.Load(),
	}
}
