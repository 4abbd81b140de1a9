package sse

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

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

// publish numbers evs and appends them to key's queue: into its channel
// while it has room and nothing waits before them, else into its overflow.
// f is the key's flow under the Block policy, else nil.
func (l *loop[K]) publish(key K, evs []Event, f *flow) {
	low := l.b.cfg.low()
	t := l.open(key, true)
	if t == nil || t.closed { // refused by the key limit, or closed
		l.stats.Discarded += uint64(len(evs))
		if f != nil {
			f.release(len(evs), low)
			if f.pending.Load() == 0 {
				l.endFlow(key, f)
			}
		}
		return
	}
	if f != nil && f != t.flow {
		f = l.adopt(t, f, len(evs)) // before the key's first feeder starts: it reads t.flow
	}
	t.used = true
	l.stats.Enqueued += uint64(len(evs))
	for i := range evs {
		t.seq++
		evs[i].ID = t.seq
	}
	if t.history != nil {
		l.record(t, evs)
		return
	}
	bl := t.backlog
	if bl == nil {
		sent := sendReady(t.ch, evs)
		f.release(sent, low)
		if sent > 0 {
			t.polls.Load().fire()
		}
		if evs = evs[sent:]; len(evs) == 0 {
			return
		}
		bl = l.newBacklog()
		t.backlog = bl
		l.backlogged[t] = struct{}{}
	}
	bl.mu.Lock()
	sent := 0
	if !bl.feeding && bl.queue.len() == 0 {
		// The last feeder sent everything before it stopped feeding, so
		// these events may go straight into the channel again.
		sent = sendReady(t.ch, evs)
	}
	bl.queue.push(l.admit(t, bl, evs[sent:])...)
	start := !bl.feeding && bl.queue.len() > 0
	bl.feeding = bl.feeding || start
	feeding := bl.feeding
	bl.mu.Unlock()
	f.release(sent, low)
	if sent > 0 {
		t.polls.Load().fire()
	}
	if start {
		l.b.feeders.Add(1)
		bl.owner = t
		go bl.run()
	}
	if !feeding { // everything went into the channel after all
		l.endBacklog(t)
	}
}

// sendReady sends evs into ch, in order, while it has room, and returns how
// many it sent.
func sendReady(ch chan Event, evs []Event) int {
	n := 0
	for n < len(evs) && trySend(ch, evs[n]) {
		n++
	}
	return n
}

func trySend(ch chan Event, ev Event) bool {
	select {
	case ch <- ev:
		return true
	default:
		return false
	}
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
