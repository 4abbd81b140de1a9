package sse

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// Event is one message in a key's queue.
type Event struct {
	// ID is set by the broker: 1, 2, 3, ... per key, in queue order. It is
	// ignored on input.
	ID uint64
	// Name is the optional event type (the SSE "event" field). It must be
	// valid UTF-8 without CR, LF or NUL.
	Name string
	// Data is the payload: valid UTF-8 text, line breaks allowed.
	Data string
}

var (
	// ErrShutdown is returned by Enqueue, Publish and Close once
	// [Broker.Shutdown] has been called.
	ErrShutdown = errors.New("sse: broker shut down")
	// ErrInvalidEvent is returned (wrapped, with the reason) for an event that
	// cannot be sent: a Name with CR, LF or NUL, or a Name or Data that is not
	// valid UTF-8. Nothing of the call that carried it is enqueued.
	ErrInvalidEvent = errors.New("sse: invalid event")
	// ErrTooManyKeys is returned by Enqueue and Publish for a new key when
	// the broker holds as many keys as [WithMaxKeys] allows.
	ErrTooManyKeys = errors.New("sse: too many keys")
)

// A Broker keeps one FIFO queue per key and hands each event to one reader.
// Create one with [New]; the zero value is not usable. A Broker runs one
// goroutine, and one more for each key whose reader is behind, until
// [Broker.Shutdown] returns. All methods are safe for
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

	// congested is the set of keys whose overflow reached WithMaxPending under
	// the Block policy, each with a channel the loop closes when the key has
	// room again. The loop replaces the map (copy on write); producers read it.
	congested atomic.Pointer[map[K]chan struct{}]

	keys atomic.Int64 // written by the loop with WithMaxKeys: how many keys it holds

	feeders sync.WaitGroup // the backlogged keys' feeder goroutines
	final   Stats          // written by the loop before done is closed

	// backlogs recycles backlogs and their buffers between backlog episodes,
	// across keys. It is the broker's own, so that its channels belong to
	// the broker's synctest bubble, if any.
	backlogs sync.Pool

	loop loop[K] // owned by the loop goroutine
}

// New returns a Broker configured by opts and starts its loop goroutine.
// Call [Broker.Shutdown] to stop it. New panics if an option is out of range,
// as make does for a negative size.
func New[K comparable](opts ...Option) *Broker[K] {
	cfg := defaults()
	for _, o := range opts {
		o.apply(&cfg)
	}
	b := &Broker[K]{
		cfg:   cfg,
		wake:  make(chan struct{}, 1),
		quit:  make(chan struct{}),
		abort: make(chan struct{}),
		done:  make(chan struct{}),
	}
	b.loop.init(b)
	go b.loop.run()
	return b
}

// Enqueue appends data to key's queue as one batch of unnamed events, in
// order and contiguous. It creates the queue if the key is new; if the key is
// closed, the events are discarded and counted in [Stats].Discarded.
//
// Enqueue returns once the broker's loop has accepted the command, before the
// events reach the queue. It waits only when the loop's inbox is full or, with
// the [Block] policy, while key is congested; ctx ends that wait. Data must be
// valid UTF-8, or Enqueue returns an error wrapping [ErrInvalidEvent] and
// enqueues nothing.
func (b *Broker[K]) Enqueue(ctx context.Context, key K, data ...string) error {
	for i, s := range data {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%w: data of message %d is not valid UTF-8", ErrInvalidEvent, i)
		}
	}
	if err := b.admit(ctx, key, len(data)); err != nil {
		return err
	}
	return b.send(ctx, command[K]{op: opPublish, key: key, n: int32(len(data))}, data, nil)
}

// Publish is Enqueue for events with names. Each event's ID is ignored; the
// broker numbers the events. Every event is checked first: a Name with CR,
// LF or NUL, or a Name or Data that is not valid UTF-8, makes Publish return
// an error wrapping [ErrInvalidEvent] and enqueue nothing.
func (b *Broker[K]) Publish(ctx context.Context, key K, events ...Event) error {
	for i := range events {
		if err := validate(&events[i]); err != nil {
			return fmt.Errorf("%w: event %d: %s", ErrInvalidEvent, i, err)
		}
	}
	if err := b.admit(ctx, key, len(events)); err != nil {
		return err
	}
	return b.send(ctx, command[K]{op: opPublish, key: key, n: int32(len(events))}, nil, events)
}

// Close marks key as finished: readers receive every event enqueued before
// the Close, then the key's channel is closed. Events enqueued after it are
// discarded. Closing a key that does not exist records it as closed, so that
// a late reader's range ends at once; closing a closed key does nothing.
// Close is asynchronous like Enqueue, and it never waits for a congested key.
func (b *Broker[K]) Close(ctx context.Context, key K) error {
	return b.send(ctx, command[K]{op: opClose, key: key}, nil, nil)
}

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
}

// Shutdown closes every key, lets readers drain what was queued, then stops
// the broker's goroutines. New calls to Enqueue, Publish and Close return
// [ErrShutdown] at once; commands they had already handed to the loop are
// carried out first.
//
// If ctx ends before every queue has been handed to its channel, Shutdown
// closes every channel at once (events already in a channel stay readable),
// counts the rest in [Stats].Dropped, and returns ctx.Err(). Shutdown may be
// called more than once; every call returns when the loop has stopped.
func (b *Broker[K]) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.mu.Unlock()
		close(b.quit)
	})
	select {
	case <-b.done:
		return nil
	case <-ctx.Done():
	}
	b.abortOnce.Do(func() { close(b.abort) })
	<-b.done
	return ctx.Err()
}

// admit checks, before a publish command is sent, what the caller's
// goroutine can check: the batch size, the key limit, and congestion.
func (b *Broker[K]) admit(ctx context.Context, key K, n int) error {
	if n > math.MaxInt32 {
		return fmt.Errorf("%w: %d events in one call", ErrInvalidEvent, n)
	}
	if max := b.cfg.maxKeys; max > 0 && b.keys.Load() >= int64(max) && !b.holds(key) {
		select {
		case <-b.quit:
			return ErrShutdown
		default:
			return ErrTooManyKeys
		}
	}
	return b.waitRoom(ctx, key)
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

// waitRoom waits, under the Block policy, until key is not congested.
func (b *Broker[K]) waitRoom(ctx context.Context, key K) error {
	for {
		set := b.congested.Load()
		if set == nil {
			return nil
		}
		drained, ok := (*set)[key]
		if !ok {
			return nil
		}
		select {
		case <-drained:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.quit:
			return ErrShutdown
		}
	}
}

// send puts a producer's command into the inbox, with its events (data for
// Enqueue, events for Publish), waiting while the inbox is full.
func (b *Broker[K]) send(ctx context.Context, c command[K], data []string, events []Event) error {
	for {
		b.mu.Lock()
		if b.stopped {
			b.mu.Unlock()
			return ErrShutdown
		}
		// The inbox holds cfg.inbox commands and as many events, so that a
		// producer of large batches waits for the loop rather than piling
		// them up; a larger batch enters an empty inbox alone.
		if len(b.cmds) == 0 || len(b.cmds) < b.cfg.inbox && len(b.events)+len(data)+len(events) <= b.cfg.inbox {
			for _, s := range data {
				b.events = append(b.events, Event{Data: s})
			}
			for _, ev := range events {
				ev.ID = 0
				b.events = append(b.events, ev)
			}
			b.push(c)
			return nil
		}
		if b.room == nil {
			b.room = make(chan struct{})
		}
		room := b.room
		b.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.quit:
			return ErrShutdown
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

// validate checks an event before it enters the inbox.
func validate(ev *Event) error {
	ascii := true
	for i := 0; i < len(ev.Name); i++ {
		switch c := ev.Name[i]; {
		case c == '\r' || c == '\n' || c == 0:
			return fmt.Errorf("name %q contains CR, LF or NUL", ev.Name)
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(ev.Name) {
		return errors.New("name is not valid UTF-8")
	}
	if !utf8.ValidString(ev.Data) {
		return errors.New("data is not valid UTF-8")
	}
	return nil
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
)

// A command is one request to the loop. It is small: the inbox copies it.
type command[K comparable] struct {
	key K
	op  op
	n   int32 // opPublish: number of events
	// arg is chan (<-chan Event) for opStream, chan Stats for opStats, chan
	// bool for opHolds, *topic[K] for opFed, *subscription[K] for
	// opSubscribe and opUnsubscribe.
	arg any
}

// loop is the state of the broker's goroutine. Every field is owned by it.
type loop[K comparable] struct {
	b        *Broker[K]
	topics   map[K]*topic[K]
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
			l.abandon()
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
			for i+1 < len(cmds) && cmds[i+1].op == opPublish && cmds[i+1].key == c.key {
				i++
				n += int(cmds[i].n)
			}
			l.publish(c.key, evs[:n])
			evs = evs[n:]
		case opClose:
			l.close(c.key)
		case opStream:
			c.arg.(chan (<-chan Event)) <- l.stream(c.key)
		case opStats:
			c.arg.(chan Stats) <- l.snapshot()
		case opFed:
			l.fed(c.arg.(*topic[K]))
		case opSubscribe:
			l.subscribe(c.key, c.arg.(*subscription[K]))
		case opUnsubscribe:
			l.unsubscribe(c.arg.(*subscription[K]))
		case opHolds:
			c.arg.(chan bool) <- l.topics[c.key] != nil
		}
	}
	clear(cmds)
	clear(all)
	l.spareCmds, l.spareEvs = cmds[:0], all[:0]
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

// setCongested adds key to, or removes it from, the congested set that
// producers consult under the Block policy.
func (l *loop[K]) setCongested(key K, on bool) {
	if l.b.cfg.policy != Block {
		return
	}
	var old map[K]chan struct{}
	if p := l.b.congested.Load(); p != nil {
		old = *p
	}
	drained, was := old[key]
	if was == on {
		return
	}
	set := make(map[K]chan struct{}, len(old)+1)
	for k, c := range old {
		set[k] = c
	}
	if on {
		set[key] = make(chan struct{})
	} else {
		delete(set, key)
		close(drained)
	}
	if len(set) == 0 {
		l.b.congested.Store(nil)
	} else {
		l.b.congested.Store(&set)
	}
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
