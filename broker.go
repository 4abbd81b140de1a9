package sse

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"time"
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

// Stats is a snapshot of a [Broker]'s state and counters.
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

// send puts a producer's command into the inbox, with its events (data for
// Enqueue, events for Publish), waiting while the inbox is full or, under
// the Block policy, while the key has no room.
func (b *Broker[K]) send(ctx context.Context, c command[K], data []string, events []Event) error {
	n := len(data) + len(events)
	var woken *flow // the flow this call waited on, if any
	for {
		b.mu.Lock()
		if b.stopped {
			b.mu.Unlock()
			return ErrShutdown
		}
		var f *flow
		var wait chan struct{}
		if c.op == opPublish && b.flows != nil {
			f, wait = b.reserve(c.key)
		}
		// The inbox holds cfg.inbox commands and as many events, so that a
		// producer of large batches waits for the loop rather than piling
		// them up; a larger batch enters an empty inbox alone.
		if wait == nil && (len(b.cmds) == 0 || len(b.cmds) < b.cfg.inbox && len(b.events)+n <= b.cfg.inbox) {
			for _, s := range data {
				b.events = append(b.events, Event{Data: s})
			}
			for _, ev := range events {
				ev.ID = 0
				b.events = append(b.events, ev)
			}
			if f != nil {
				f.pending.Add(int64(n))
				c.arg = f
			}
			b.push(c)
			if woken != nil && woken == f {
				f.passOn(b.cfg.maxPending)
			}
			return nil
		}
		var waitingOn *flow // the key has no room; else the inbox is full
		if wait != nil {
			waitingOn = f
		} else {
			if b.room == nil {
				b.room = make(chan struct{})
			}
			wait = b.room
		}
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			waitingOn.stopWaiting()
			return ctx.Err()
		case <-b.quit:
			waitingOn.stopWaiting()
			return ErrShutdown
		}
		if waitingOn != nil {
			waitingOn.stopWaiting()
			woken = waitingOn
		}
	}
}

// post puts an internal command into the inbox. It never waits: internal
// commands are few, and the loop needs them to make progress.
func (b *Broker[K]) post(c command[K]) {
	select {
	case <-b.done:
		return // nobody would read it
	default:
	}
	b.mu.Lock()
	b.push(c)
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

// push appends c to the inbox, unlocks mu and wakes the loop if it sleeps.
// The caller holds mu.
func (b *Broker[K]) push(c command[K]) {
	b.cmds = append(b.cmds, c)
	wake := b.sleeping
	b.sleeping = false
	b.mu.Unlock()
	if wake {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
}

// An op is the kind of a command to the loop.
type op uint8

const (
	opPublish     op = iota // append the next n events of the inbox to key's queue
	opClose                 // close key
	opStream                // reply with key's channel
	opStats                 // reply with a snapshot
	opFed                   // a feeder took a batch, or returned
	opSubscribe             // attach an SSE connection to key
	opUnsubscribe           // detach it
	opHolds                 // reply whether key exists
	opOpen                  // create key, and reply
)

// A command is one request to the loop. It is small: the inbox copies it.
type command[K comparable] struct {
	key K
	op  op
	n   int32 // opPublish: number of events
	// arg is the key's *flow for opPublish under the Block policy, chan
	// streamAnswer[K] for opStream, chan Stats for opStats, chan bool for
	// opHolds, chan error for opOpen, *topic[K] for opFed, *subscription[K] for opSubscribe and
	// opUnsubscribe.
	arg any
}

// loop is the state of the broker's goroutine. Every field is owned by it.
type loop[K comparable] struct {
	b        *Broker[K]
	topics   map[K]*topic[K]
	peak     int     // the most keys topics has held since it was made (see forget)
	idle     list[K] // open keys, least recently touched first (only with WithIdleTimeout)
	retained list[K] // closed keys, earliest closed first

	backlogged map[*topic[K]]struct{} // keys with a feeder, including forgotten ones still stopping
	spareCmds  []command[K]           // the inbox's previous slices, swapped back in for reuse
	spareEvs   []Event

	timer   *time.Timer
	armedAt int64 // the timer's deadline on the loop's clock, if armed
	armed   bool
	epoch   time.Time
	now     int64 // the loop's clock at this wake-up, if nowRead
	nowRead bool

	serverKeys int // keys the server created or touched (see Broker.Subscribe): what WithMaxKeys bounds

	quitting bool
	stats    Stats // Keys, Closed and Pending are filled in by snapshot
}

func (l *loop[K]) init(b *Broker[K]) {
	l.b = b
	l.topics = make(map[K]*topic[K])
	l.backlogged = make(map[*topic[K]]struct{})
	l.epoch = time.Now()
	l.timer = time.NewTimer(time.Hour)
	l.timer.Stop()
}

// run is the loop goroutine.
func (l *loop[K]) run() {
	b := l.b
	defer close(b.done)
	defer b.log.stop()
	defer b.feeders.Wait()
	quit := b.quit
	for {
		l.nowRead = false
		// While there is work, wake is a closed channel: the select below
		// does not wait, yet gives the timer and Shutdown their turn.
		wake := b.wake
		if l.drain() {
			wake = closedSignal
		}
		select {
		case <-wake:
		case <-l.timer.C:
			l.armed = false
			l.expire()
		case <-quit:
			quit = nil
			l.shutdown()
		case <-b.abort:
			l.shutdown()
			if n := l.abandon(); n > 0 {
				b.shutdownErr = fmt.Errorf("%w: %d events: %w", ErrDropped, n, b.abortCause)
				b.log.emit("sse: Shutdown's deadline passed, events dropped", slog.Uint64("dropped", n))
			}
			b.final = l.snapshot()
			return
		}
		if l.quitting && len(l.backlogged) == 0 {
			b.final = l.snapshot()
			return
		}
		l.arm()
	}
}

// drain takes the whole inbox and carries out its commands in order. It
// reports whether there were any; if not, the loop is about to sleep, and
// the next command will wake it.
func (l *loop[K]) drain() bool {
	b := l.b
	if b.cfg.onWake != nil {
		b.cfg.onWake()
	}
	b.mu.Lock()
	if len(b.cmds) == 0 {
		b.sleeping = true
		b.mu.Unlock()
		return false
	}
	cmds, all := b.cmds, b.events
	b.cmds, b.events = l.spareCmds[:0], l.spareEvs[:0]
	if b.room != nil {
		close(b.room)
		b.room = nil
	}
	b.mu.Unlock()
	evs := all
	for i := 0; i < len(cmds); i++ {
		c := &cmds[i]
		switch c.op {
		case opPublish:
			// Publishes to one key in a row are one batch: their events are
			// contiguous in the inbox.
			n := int(c.n)
			f, _ := c.arg.(*flow)
			for i+1 < len(cmds) && cmds[i+1].op == opPublish && cmds[i+1].key == c.key {
				if g, _ := cmds[i+1].arg.(*flow); g != f {
					break
				}
				i++
				n += int(cmds[i].n)
			}
			l.publish(c.key, evs[:n], f)
			evs = evs[n:]
		case opClose:
			l.close(c.key)
		case opStream:
			c.arg.(chan streamAnswer[K]) <- l.stream(c.key)
		case opStats:
			c.arg.(chan Stats) <- l.snapshot()
		case opFed:
			l.fed(c.arg.(*topic[K]))
		case opSubscribe:
			l.subscribe(c.key, c.arg.(*subscription[K]))
		case opUnsubscribe:
			l.unsubscribe(c.arg.(*subscription[K]))
		case opHolds:
			t := l.topics[c.key]
			c.arg.(chan bool) <- t != nil && t.server
		case opOpen:
			c.arg.(chan error) <- l.openKey(c.key)
		}
	}
	// Keep the slices for the next swap, unless a large batch grew them:
	// they would pin its memory for the broker's life.
	clear(cmds)
	clear(all)
	keep := 2 * b.cfg.inbox
	l.spareCmds, l.spareEvs = nil, nil
	if cap(cmds) <= keep {
		l.spareCmds = cmds[:0]
	}
	if cap(all) <= keep {
		l.spareEvs = all[:0]
	}
	return true
}

// clock returns the loop's time, read once per wake-up.
func (l *loop[K]) clock() int64 {
	if !l.nowRead {
		l.now, l.nowRead = int64(time.Since(l.epoch)), true
	}
	return l.now
}

// shutdown carries out the commands accepted before Shutdown and closes
// every key. Readers then drain; the loop returns once no key is backlogged.
func (l *loop[K]) shutdown() {
	if l.quitting {
		return
	}
	l.quitting = true
	l.drain()
	for _, t := range l.topics {
		l.closeTopic(t)
	}
}

// snapshot returns the counters with the loop's current state.
func (l *loop[K]) snapshot() Stats {
	s := l.stats
	s.Replay = l.b.replayed.Load()
	s.Closed = l.retained.n
	s.Keys = len(l.topics) - s.Closed
	for t := range l.backlogged {
		if bl := t.backlog; !bl.stopping {
			bl.mu.Lock()
			s.Pending += bl.queue.len()
			bl.mu.Unlock()
			s.Pending += int(bl.unsent.Load())
		}
	}
	return s
}

// closedSignal is always ready to receive from.
var closedSignal = func() chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}()

// closedChan is returned for keys that are closed before they held anything.
var closedChan = func() chan Event {
	ch := make(chan Event)
	close(ch)
	return ch
}()
