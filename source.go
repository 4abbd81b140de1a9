package sse

import (
	"context"
	"iter"
	"time"
)

// A Publisher sends events to keys: what producers call. [*Broker]
// implements it in process; a broker shared by several servers can too, so
// that application code written against Publisher works with either. Over a
// network a call can fail after the events were stored: an error other than
// [ErrInvalidEvent], [ErrInvalidKey] or [ErrShutdown] means the outcome is
// not known.
type Publisher[K comparable] interface {
	// Enqueue appends unnamed events with the given data to key, as one
	// batch.
	Enqueue(ctx context.Context, key K, data ...string) error
	// Publish appends events to key, as one batch.
	Publish(ctx context.Context, key K, events ...Event) error
	// Close marks key as finished: its readers end after its last event.
	Close(ctx context.Context, key K) error
}

// A Reader reads keys' events: what in-process consumers call.
// [*Broker] implements it; so can a broker shared by several servers, whose
// reads can fail: the range then ends with the error.
type Reader[K comparable] interface {
	// Events ranges over key's events, as [Broker.Events] does.
	Events(ctx context.Context, key K, from ...ReadOption) iter.Seq2[Event, error]
}

// A Source holds keyed streams that [Handler] serves to clients. [*Broker]
// is one; a source shared by several servers can be another.
type Source[K comparable] interface {
	// Subscribe attaches one client connection to key. In [Queue] mode a
	// key has one attached connection: Subscribe fails with [ErrBusy] if
	// another is attached and req.Takeover is false; with Takeover, it ends
	// that connection first (its Next returns [ErrReplaced], and req.Abort
	// of the older request is called from this call's goroutine) and waits
	// for it to stop taking events, failing with ErrBusy if a newer takeover
	// comes meanwhile. In [FanOut] mode a key has any number of connections.
	// Subscribe fails with [ErrFinished] if the key is closed and the client
	// has had every event, with [ErrUnknownKey] for a key the server did not
	// create when req.Known is set, with [ErrTooManyKeys] when it cannot take
	// a new key, with [ErrInvalidKey] for a key it cannot hold, and with
	// [ErrShutdown] once it is shut down; [Handler] answers each with its own
	// status. ctx bounds the wait.
	Subscribe(ctx context.Context, key K, req SubscribeRequest) (Subscription, error)
	// Mode tells whether a key is read once ([Queue]) or by every reader
	// ([FanOut]).
	Mode() Mode
}

// SubscribeRequest says how a connection attaches to a key.
type SubscribeRequest struct {
	// Resume is set when the client said which event it received last.
	Resume bool
	// Epoch and LastID are that event's wire ID, "<Epoch>-<LastID>" (see
	// [Subscription].Epoch); Epoch is empty for a plain decimal ID such as
	// "0". An ID from another life of the key (another epoch, or a plain ID
	// other than 0) counts as 0: the client is sent the key's current life
	// from its start, with a gap for what can no longer be sent. An ID the
	// key has not reached yet is treated as no ID.
	Epoch  string
	LastID uint64
	// Takeover ends the key's attached connection instead of failing with
	// ErrBusy (Queue mode).
	Takeover bool
	// Known fails the request with ErrUnknownKey unless the server created
	// the key (see [Broker.Subscribe]).
	Known bool
	// Abort, if set, makes this connection's pending and later writes fail
	// at once. A later request that takes the key over calls it, from its
	// own goroutine, so that it does not wait for a write blocked on a
	// client that stopped reading. It must be safe to call concurrently with
	// the connection's writes, more than once, and after the connection has
	// ended.
	Abort func()
}

// A Subscription is one connection's hold on a key. Its methods are called
// by the one goroutine that serves the connection.
type Subscription interface {
	// Epoch names the life of the key the subscription reads: the part
	// before the dash in the IDs [Handler] sends. A key forgotten and
	// created again, or held by a restarted server, has another epoch.
	Epoch() string
	// Next waits for the next events and appends them to buf[:0], in order:
	// in Queue mode first those an earlier connection took and the client
	// may not have received, then the live queue; in FanOut mode the
	// history from the client's position on. It returns at most limit bytes
	// of them, as [Event.Size] counts them, but at least one. A nonzero gap
	// names events the client missed, just before the returned ones, that
	// can no longer be sent to it.
	//
	// Next returns with no events, a zero gap and a nil error when tick is
	// ready (a heartbeat is due). It returns [io.EOF], with the last events,
	// when the key is closed and every event was handed over;
	// [ErrTruncated] when the stream was cut short; [ErrReplaced] when
	// another connection took the key over (what this one took stays
	// retained for it); ctx's error when ctx ends.
	Next(ctx context.Context, buf []Event, tick <-chan time.Time, limit int) (events []Event, gap Gap, err error)
	// Poll is Next without the wait: it returns at once what Next would return
	// without waiting for an event to be published: events, a gap, io.EOF with
	// the last events, or an error ([ErrReplaced], [ErrTruncated], ctx's...).
	// When nothing is ready it returns no events, a zero Gap and a nil error,
	// and arranges for wake to be called once, later, from another goroutine,
	// when something may be ready (a new event, the key's close, a takeover,
	// the source's shutdown or failure); a wake may be spurious, and Poll is
	// then called again. wake runs on the source's own goroutine (the
	// [Broker]'s event loop, or the goroutine of the publish that made the
	// change), so it must not block, call back into the source, or panic: a
	// wake sets a flag and signals a channel without blocking, as
	// [MultiHandler]'s does. A Poll that returns anything
	// else does not keep wake. ctx bounds any I/O Poll does (a read from a
	// store); Poll never waits for a publish. limit is as for Next. A
	// subscription is read by Next or by Poll, one call at a time.
	Poll(ctx context.Context, buf []Event, limit int, wake func()) (events []Event, gap Gap, err error)
	// Close ends the subscription. In Queue mode, events it did not hand
	// over stay queued; an event it took from the queue and did not hand
	// over (one a batch's bounds left for the next call) goes first to the
	// key's next connection, as the replay of what it missed.
	Close()
}

// Gap is a range of event IDs, From to To inclusive, that a client missed
// and that can no longer be sent to it. The zero Gap means none.
type Gap struct{ From, To uint64 }

// A Stopper is what [Graceful] shuts down after the server: a [*Broker], or
// any source with a Shutdown.
type Stopper interface {
	Shutdown(ctx context.Context) error
}

// The Broker is a Publisher, a Reader and a Source.
var (
	_ Publisher[int] = (*Broker[int])(nil)
	_ Reader[int]    = (*Broker[int])(nil)
	_ Source[int]    = (*Broker[int])(nil)
)
