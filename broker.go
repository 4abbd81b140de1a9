package sse

// Where the code is: one concept a file. The Broker's one loop goroutine owns
// every key's state; producers reach it through the inbox, readers through
// channels, histories and subscriptions. An event in Queue mode goes
// Publish (broker.go) → send, push, run, drain, publish into the key's
// channel or its backlog (loop.go) → feed, and Stream or Events (stream.go)
// or, for a connection, Next (subscription.go); in FanOut mode publish
// records it in the key's history (history.go), which readers read. drain
// hands each command to its handler: publish (loop.go), close and openKey
// (topic.go), stream (stream.go), fed (backlog.go), subscribe and
// unsubscribe (subscribe.go).
//
// The broker and its loop:
//
//	broker.go          the Broker, New and its API (Enqueue, Publish, Open, Close, Stats, Shutdown); key checks
//	loop.go            the inbox (commands; send, post, push) and the loop goroutine (run, drain, publish, shutdown)
//	topic.go           one key's state (topic) and its life: open, close, forget; idle timeout and retention (expire, arm)
//	backlog.go         a Queue key's events beyond its channel buffer, and the loop's side of its feeder
//	fifo.go            the ring buffer of events that backlogs and replay windows hold
//	list.go            the intrusive lists of topics that the timers walk
//	flow.go            the Block policy's count of a key's pending events; shrunk, for the loop's maps
//	history.go         a FanOut key's history, appended by the loop, read without locks
//	replay.go          a Queue key's replay window
//
// Reading:
//
//	stream.go          reading in process (Stream, Events, ReadOption, SubscriptionEvents), and the feeder goroutine
//	eventsof.go        reading several FanOut keys in one range (EventsOf, KeyEvent)
//	subscribe.go       attaching a connection or reader to a key (Subscribe) and the loop's side: attach, takeover, detach
//	subscription.go    the Broker's Subscription: Next reads the replay window then the channel, or the history
//	source.go          the interfaces a backend implements: Publisher, Reader, Source, Subscription, Stopper
//
// Serving SSE:
//
//	sse.go             Handler and the stream it writes
//	multikey.go        MultiHandler: several FanOut keys on one connection, its request and its keys
//	multistream.go     a multi-key stream: a goroutine per key feeding the request's writer
//	wire.go            the wire encoding: IDs and epochs (NewEpoch), events, gaps, the retry field
//	multiwire.go       a multi-key stream's wire: its IDs (every key's position, or a cursor and the keys moved since), sse.gap, sse.close
//	cursor.go          CursorStore: the cursors multi-key IDs name; the Broker's, in memory
//	refuse.go          the answers without a stream: retry later, error statuses, PublicError
//	writer.go          conn, the writer of one response: a deadline per write, aborted by a takeover
//	writebuf.go        the write buffers and event slices streams borrow while they write
//	maxstreams.go      the WithMaxStreams bound
//	handleroptions.go  the handler's options
//	graceful.go        Graceful: the streams end, then the server, then the brokers
//	script.go          ScriptHandler: serves js/sse.js, the browser module that follows a MultiHandler's keys
//
// For both sides: event.go (Event and what it counts, Event.Size; the
// library's own event names, CheckEvent), errors.go (every error value, and
// GapError), options.go (the Broker's options, Mode, Overflow), logging.go
// (WithLogger, and the loop's log goroutine), metrics.go (the handler's
// counters). doc.go is the package documentation, for users.

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
)

// A Broker keeps one stream of events per key, in the [Mode] chosen with
// [WithMode]: in [Queue] mode, the default, a FIFO queue that hands each
// event to one reader; in [FanOut] mode, a bounded history that every reader
// reads whole, each from its own position. Create one with [New]; the zero
// value is not usable. A Broker runs one goroutine (and one more with
// [WithLogger]), and in Queue mode one more for each key whose reader is
// behind, until [Broker.Shutdown] returns. All methods are safe for
// concurrent use.
type Broker[K comparable] struct {
	cfg config // immutable after New

	mu       sync.Mutex
	cmds     []command[K]  // guarded by mu: commands waiting for the loop, in arrival order
	events   []Event       // guarded by mu: the events of the publish commands in cmds, in order
	room     chan struct{} // guarded by mu: closed when the loop empties the inbox; nil while nobody waits for room
	stopped  bool          // guarded by mu: Shutdown has begun, producers' commands are refused
	sleeping bool          // guarded by mu: the loop found the inbox empty and waits on wake

	wake  chan struct{} // capacity 1: a command arrived while the loop slept
	quit  chan struct{} // closed when Shutdown begins
	abort chan struct{} // closed when Shutdown's context ends before the queues drained
	done  chan struct{} // closed when the loop goroutine has returned

	stopOnce, abortOnce sync.Once
	abortCause          error // written before abort is closed: the first expired context's error
	shutdownErr         error // written by the loop before done is closed: what Shutdown returns

	// flows holds, under the Block policy, each key's count of events
	// accepted and not yet in its channel (see flow.go). Producers look a key
	// up and add to its count in send; the loop removes a key when it
	// closes.
	flows     map[K]*flow // guarded by mu; nil unless the policy is Block
	flowsPeak int         // guarded by mu: the most entries flows held since it was made

	keys     atomic.Int64 // written by the loop with WithMaxKeys: how many server keys it holds
	replayed atomic.Int64 // bytes held by every key's replay window, against WithReplayBudget

	feeders sync.WaitGroup // the backlogged keys' feeder goroutines
	log     *brokerLog     // with WithLogger: the goroutine that writes the loop's log records
	final   Stats          // written by the loop before done is closed

	// backlogs recycles backlogs and their buffers between backlog episodes,
	// across keys. It is the broker's own, so that its channels belong to
	// the broker's synctest bubble, if any.
	backlogs sync.Pool

	loop loop[K] // owned by the loop goroutine

	cursors cursors[K] // the multi-key streams' cursors (cursor.go); its own lock
}

// New returns a Broker configured by opts and starts its loop goroutine.
// Call [Broker.Shutdown] to stop it. New panics if an option is out of range,
// as make does for a negative size, or if options contradict each other
// ([WithMaxPending] in [FanOut] mode).
func New[K comparable](opts ...Option) *Broker[K] {
	b := build[K](opts...)
	go b.loop.run()
	return b
}

// build is New without the loop goroutine, which tests may then drive by
// hand.
func build[K comparable](opts ...Option) *Broker[K] {
	cfg := defaults()
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("sse: New: option %d is nil", i))
		}
		o.apply(&cfg)
	}
	cfg.checkKeys = keysNeedCheck(reflect.TypeFor[K]())
	if cfg.mode == FanOut && cfg.maxPending >= 0 {
		panic("sse: New: WithMaxPending has no meaning in FanOut mode, where producers never wait for readers")
	}
	b := &Broker[K]{
		cfg:   cfg,
		wake:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
		abort: make(chan struct{}),
		done:  make(chan struct{}),
	}
	if cfg.policy == Block {
		b.flows = make(map[K]*flow)
	}
	if cfg.logger != nil {
		b.log = newBrokerLog(cfg.logger)
	}
	b.loop.init(b)
	return b
}

// Enqueue appends data to key's queue as one batch of unnamed events, in
// order and contiguous. It creates the queue if the key is new; if the key is
// closed, the events are discarded and counted in [Stats].Discarded.
//
// Enqueue returns once the broker's loop has accepted the command, before the
// events reach the queue. It waits only when the loop's inbox is full or, with
// the [Block] policy, while key is congested; ctx ends that wait. Data must be
// valid UTF-8 and not [TerminateData], or Enqueue returns an error wrapping
// [ErrInvalidEvent] and enqueues nothing; a key the broker cannot hold gets
// an error wrapping [ErrInvalidKey]. A call with no data does nothing and
// returns nil (or ErrInvalidKey, or [ErrShutdown]): it neither creates the
// key nor counts as activity, in both modes.
func (b *Broker[K]) Enqueue(ctx context.Context, key K, data ...string) error {
	for i, s := range data {
		if err := validateData("", s, b.cfg.maxEventSize); err != nil {
			return fmt.Errorf("%w: message %d: %s", ErrInvalidEvent, i, err)
		}
	}
	if len(data) == 0 {
		return b.nothing(key)
	}
	if err := b.admit(ctx, key, len(data)); err != nil {
		return err
	}
	return b.send(ctx, command[K]{op: opPublish, key: key, n: int32(len(data))}, data, nil)
}

// Publish is Enqueue for events with names. Each event's ID is ignored; the
// broker numbers the events. Every event is checked first: a Name with CR,
// LF or NUL, a Name or Data that is not valid UTF-8, or an event a client
// would take for one the library sends (see [ErrInvalidEvent]) makes Publish
// return an error wrapping [ErrInvalidEvent] and enqueue nothing. Like
// Enqueue, a call with no events does nothing.
func (b *Broker[K]) Publish(ctx context.Context, key K, events ...Event) error {
	for i := range events {
		if err := validate(&events[i], b.cfg.maxEventSize); err != nil {
			return fmt.Errorf("%w: event %d: %s", ErrInvalidEvent, i, err)
		}
	}
	if len(events) == 0 {
		return b.nothing(key)
	}
	if err := b.admit(ctx, key, len(events)); err != nil {
		return err
	}
	return b.send(ctx, command[K]{op: opPublish, key: key, n: int32(len(events))}, nil, events)
}

// Open creates key, if it is new, before its first event: a server key, so
// that a request for it is served at once (with [WithKnownKeysOnly], 200
// rather than 404) and a job can be registered as soon as it is accepted.
// It returns [ErrTooManyKeys] at the [WithMaxKeys] bound, [ErrClosed] if
// the key is closed and still remembered, an error wrapping
// [ErrInvalidKey] for a key the broker cannot hold, and [ErrShutdown]
// after Shutdown; on an open key it does nothing but count as activity.
// Unlike Enqueue, it waits for the loop's answer.
//
// Under [WithIdleTimeout], a key that was opened and then neither received
// an event nor was read before its idle time passed is forgotten, not
// closed: a browser's first request for it finds no key (404 with
// WithKnownKeysOnly) rather than a finished one (204).
func (b *Broker[K]) Open(ctx context.Context, key K) error {
	if err := b.checkKey(key); err != nil {
		return err
	}
	select {
	case <-b.done:
		return ErrShutdown
	default:
	}
	reply := make(chan error, 1)
	b.post(command[K]{op: opOpen, key: key, arg: reply})
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-b.done:
		return ErrShutdown
	}
}

// Close marks key as finished: readers receive every event enqueued before
// the Close, then the key's channel is closed. Events enqueued after it are
// discarded. Closing a key that does not exist records it as closed, so that
// a late reader's range ends at once; closing a closed key does nothing.
// Close is asynchronous like Enqueue, and it never waits for a congested key.
func (b *Broker[K]) Close(ctx context.Context, key K) error {
	if err := b.checkKey(key); err != nil {
		return err
	}
	return b.send(ctx, command[K]{op: opClose, key: key}, nil, nil)
}

// Mode returns the broker's [Mode]; it implements [Source].
func (b *Broker[K]) Mode() Mode { return b.cfg.mode }

// Stats returns a consistent snapshot of the broker's counters, taken by its
// loop. After Shutdown it returns the final counters.
func (b *Broker[K]) Stats() Stats {
	reply := make(chan Stats, 1)
	b.post(command[K]{op: opStats, arg: reply})
	select {
	case s := <-reply:
		return s
	case <-b.done:
		return b.final
	}
}

// Stats is a snapshot of a [Broker]'s state and counters. Other backends
// return theirs in the same type, with the same method, so that one
// exporter reads any of them (github.com/rocketqueue/sse/sseprom); each
// documents the fields it fills and what they mean there (ssejs counts a
// process's part of keys that every process shares, and leaves Closed,
// Pending, Dropped and Replay at 0).
type Stats struct {
	Keys    int // open keys
	Closed  int // closed keys still remembered (see [WithRetention])
	Pending int // events beyond the channel buffers: in overflow or on their way into a channel (exact while the feeders wait for their readers; while one sends, it may include events it has just sent)

	Enqueued  uint64 // events accepted into a queue
	Discarded uint64 // events sent to a closed key
	Dropped   uint64 // accepted events never handed to a channel: overflow policy, Shutdown's deadline, or a key forgotten undrained

	Replay int64 // bytes held by every key's replay window or, in FanOut mode, history (see WithReplayBudget)
}

// Shutdown closes every key, lets readers drain what was queued, then stops
// the broker's goroutines. New calls to Enqueue, Publish and Close return
// [ErrShutdown] at once; commands they had already handed to the loop are
// carried out first.
//
// If ctx ends before every queue has been handed to its channel, Shutdown
// closes every channel at once (events already in a channel stay readable)
// and counts the rest in [Stats].Dropped; the readers of those keys learn
// that their stream was cut short ([ErrTruncated]). Shutdown returns nil if
// nothing was dropped, and otherwise an error that wraps both [ErrDropped]
// and the error of the context that ended first. It may be called more than
// once, concurrently too: every call returns when the loop has stopped, with
// the same result.
func (b *Broker[K]) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		close(b.quit)
	})
	select {
	case <-b.done:
	case <-ctx.Done():
		b.abortOnce.Do(func() {
			b.abortCause = ctx.Err()
			close(b.abort)
		})
		<-b.done
	}
	return b.shutdownErr
}

// nothing is Enqueue and Publish with no events: it checks the key and
// whether the broker is shut down, and sends the loop nothing.
func (b *Broker[K]) nothing(key K) error {
	if err := b.checkKey(key); err != nil {
		return err
	}
	b.mu.Lock()
	stopped := b.stopped
	b.mu.Unlock()
	if stopped {
		return ErrShutdown
	}
	return nil
}

// admit checks, before a publish command is sent, what the caller's
// goroutine can check: the batch size, the key, and the key limit.
func (b *Broker[K]) admit(ctx context.Context, key K, n int) error {
	if n > math.MaxInt32 {
		return fmt.Errorf("%w: %d events in one call", ErrInvalidEvent, n)
	}
	if err := b.checkKey(key); err != nil {
		return err
	}
	if max := b.cfg.maxKeys; max > 0 && b.keys.Load() >= int64(max) && !b.holds(key) {
		select {
		case <-b.quit:
			return ErrShutdown
		default:
			return ErrTooManyKeys
		}
	}
	return nil
}

// holds asks the loop whether it holds key.
func (b *Broker[K]) holds(key K) bool {
	reply := make(chan bool, 1)
	b.post(command[K]{op: opHolds, key: key, arg: reply})
	select {
	case ok := <-reply:
		return ok
	case <-b.done:
		return false
	}
}

// checkKey returns an error wrapping ErrInvalidKey for a key that the loop's
// map could not hold: comparing it with itself panics (an interface holding
// a slice, say) or reports false (a NaN). Key types that can hold neither
// are not checked, so the message path costs nothing for them.
func (b *Broker[K]) checkKey(key K) error {
	if !b.cfg.checkKeys {
		return nil
	}
	return checkKey(key)
}

// checkKey is [Broker.checkKey] for a key of a type that needs the check
// (see keysNeedCheck).
func checkKey[K comparable](key K) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: %v", ErrInvalidKey, p)
		}
	}()
	if !equal(key, key) {
		return fmt.Errorf("%w: %v is not equal to itself", ErrInvalidKey, key)
	}
	return nil
}

func equal[K comparable](a, b K) bool { return a == b }

// keysNeedCheck reports whether a key of type t may fail [Broker.checkKey]:
// whether it can hold a float, a complex number or an interface.
func keysNeedCheck(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Interface, reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return true
	case reflect.Array:
		return keysNeedCheck(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if keysNeedCheck(t.Field(i).Type) {
				return true
			}
		}
	}
	return false
}
