package sse_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/workload"
)

// The benchmarks run each workload of internal/workload through the Broker
// and through lock-based baselines, as sub-benchmarks "design=NAME":
//
//	broker-block    the Broker with WithMaxPending(1024, Block): channel buffer 16, then 1,024 not yet in the channel (inbox, overflow, feeder) before Publish waits
//	broker-default  the Broker at its defaults: channel buffer 16, unbounded overflow, so producers never wait
//	broker-bigbuf   the Broker with the bounded designs' capacity in the channel: WithBuffer(1024), WithMaxPending(16, Block), so producers run at most 16 events ahead of the loop
//	chan            the floor: one buffered channel per key, indexed by key, no registry, blocking sends
//	rwmap           a map of buffered channels guarded by a sync.RWMutex; Send holds the read lock while it sends
//	condqueue       the same map, of queues made of a mutex, a slice and two sync.Conds
//	naiveloop       one goroutine owning a map of buffered channels, fed by a channel inbox, one message per command, blocking sends
//
// Every bounded baseline lets workload.Capacity (16+1024 = 1,040) messages
// wait per key before a producer blocks, as broker-block does. Peer libraries
// run the same workloads in the nested module ./bench.
var designs = []workload.Named{
	{Name: "broker-block", New: func(int) workload.Design {
		return &brokerDesign{b: sse.New[int](sse.WithMaxPending(workload.MaxPending, sse.Block))}
	}},
	{Name: "broker-default", New: func(int) workload.Design { return &brokerDesign{b: sse.New[int]()} }},
	{Name: "broker-bigbuf", New: func(int) workload.Design {
		return &brokerDesign{b: sse.New[int](sse.WithBuffer(workload.MaxPending), sse.WithMaxPending(sse.DefaultBuffer, sse.Block))}
	}},
	{Name: "chan", New: newChanDesign},
	{Name: "rwmap", New: newRWMapDesign},
	{Name: "condqueue", New: newCondDesign},
	{Name: "naiveloop", New: newLoopDesign},
}

// BenchmarkW1 to BenchmarkW7 run workload.W1 to workload.W7 through the Broker and the baselines,
// one sub-benchmark per design: see internal/workload for what each
// measures and reports.
func BenchmarkW1(b *testing.B) { workload.Each(b, workload.W1, designs) }
func BenchmarkW2(b *testing.B) { workload.Each(b, workload.W2, designs) }
func BenchmarkW3(b *testing.B) { workload.Each(b, workload.W3, designs) }
func BenchmarkW4(b *testing.B) { workload.Each(b, workload.W4, designs) }
func BenchmarkW5(b *testing.B) { workload.Each(b, workload.W5, designs) }
func BenchmarkW6(b *testing.B) { workload.Each(b, workload.W6, designs) }
func BenchmarkW7(b *testing.B) { workload.Each(b, workload.W7, designs) }

// The fan-out benchmarks run workload.F1 to workload.F3 through the Broker in
// FanOut mode and a hand-written hub, as sub-benchmarks
// "subs=N/design=NAME":
//
//	broker-fanout  the Broker with WithMode(FanOut) at its defaults: one history per key, appended once by the loop, read by every subscriber from its own position (Events from the key's first event)
//	hub            a map of keys guarded by a sync.RWMutex, held only for the lookup; per key, a mutex and a slice of buffered channels of workload.Capacity (1,040) events, one per subscriber; Publish does a blocking send into each channel under the key's lock
//	hub-evict      F3 only: the same hub, but a send that finds a channel full waits at most 100 ms, then evicts the subscriber (closes its channel, whose reader loop then ends with an error, and forgets it), so that a stalled subscriber holds the key up once, for 100 ms, not for ever
//
// The plain drop-on-full hub (a select with default) is not among them: it
// fails every workload, F3 included, because a subscriber that is merely
// slower than the producer, not stalled, loses events once it is 1,040
// behind, as a run of F1 or F3 shows at any subscriber count. Nor does
// broker-fanout always pass at GOMAXPROCS=1: its producer never waits, and
// the lone subscriber of F1 subs=1, at times starved for tens of
// milliseconds, falls further behind than the default history holds (16 MiB,
// about 180,000 of these events) and gets a GapError; bench/run.sh runs the
// fan-out workloads at GOMAXPROCS=2. Peer libraries run the same workloads
// in the nested module ./bench.
var fanOutDesigns = []workload.FanOutNamed{
	{Name: "broker-fanout", New: func(int) workload.FanOutDesign {
		return &brokerFanOut{b: sse.New[int](sse.WithMode(sse.FanOut))}
	}},
	{Name: "hub", New: func(int) workload.FanOutDesign { return newHub(0) }},
}

// stallDesigns are F3's: the fan-out designs, and the hub that evicts.
var stallDesigns = append(fanOutDesigns[:len(fanOutDesigns):len(fanOutDesigns)],
	workload.FanOutNamed{Name: "hub-evict", New: func(int) workload.FanOutDesign { return newHub(hubPatience) }})

// hubPatience is how long hub-evict waits for a full subscriber channel
// before it evicts the subscriber: long enough that a subscriber that is
// only slow, or waiting for a core, is never evicted; shorter than the half
// second after which F3 deems a design blocked.
const hubPatience = 100 * time.Millisecond

// BenchmarkF1 to BenchmarkF3 run workload.F1 to workload.F3 through the
// Broker in FanOut mode and the hubs, one sub-benchmark per subscriber count
// and design: see internal/workload for what each measures and reports.
func BenchmarkF1(b *testing.B) { workload.EachFanOut(b, workload.F1, fanOutDesigns) }
func BenchmarkF2(b *testing.B) { workload.EachFanOut(b, workload.F2, fanOutDesigns) }
func BenchmarkF3(b *testing.B) { workload.EachFanOut(b, workload.F3, stallDesigns) }

// errUnknownKey is returned by baselines for a key that was never opened or
// is already closed.
var errUnknownKey = errors.New("unknown key")

// brokerDesign is the Broker: Open is Stream, Send and SendBatch are
// Publish, Close is Close.
type brokerDesign struct {
	b *sse.Broker[int]
}

func (d *brokerDesign) Open(key int) iter.Seq[sse.Event] { return workload.FromChan(d.b.Stream(key)) }

func (d *brokerDesign) Send(key int, ev sse.Event) error {
	return d.b.Publish(context.Background(), key, ev)
}

func (d *brokerDesign) SendBatch(key int, evs []sse.Event) error {
	return d.b.Publish(context.Background(), key, evs...)
}

func (d *brokerDesign) Close(key int) error { return d.b.Close(context.Background(), key) }

func (d *brokerDesign) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.b.Shutdown(ctx)
}

// chanDesign is the floor: a buffered channel per key in a slice indexed by
// the key, so there is no lookup and no lock. Open makes the key's channel
// (outside the timed part except in W5); Send blocks while it is full.
type chanDesign struct {
	chans []chan sse.Event // chans[key] is written by Open, before any Send to key
}

func newChanDesign(keys int) workload.Design {
	return &chanDesign{chans: make([]chan sse.Event, keys)}
}

func (d *chanDesign) Open(key int) iter.Seq[sse.Event] {
	d.chans[key] = make(chan sse.Event, workload.Capacity)
	return workload.FromChan(d.chans[key])
}

func (d *chanDesign) Send(key int, ev sse.Event) error {
	d.chans[key] <- ev
	return nil
}

func (d *chanDesign) SendBatch(key int, evs []sse.Event) error {
	ch := d.chans[key]
	for _, ev := range evs {
		ch <- ev
	}
	return nil
}

func (d *chanDesign) Close(key int) error {
	close(d.chans[key])
	return nil
}

func (d *chanDesign) Shutdown() error { return nil }

// rwMapDesign is the common hand-rolled registry: a map from key to buffered
// channel, guarded by a sync.RWMutex. Send holds the read lock while it
// sends, so that Close, which takes the write lock, never closes a channel
// under a sender; a send blocked on a full channel therefore holds off every
// Open and Close.
type rwMapDesign struct {
	mu sync.RWMutex
	m  map[int]chan sse.Event // guarded by mu
}

func newRWMapDesign(int) workload.Design {
	return &rwMapDesign{m: make(map[int]chan sse.Event)}
}

func (d *rwMapDesign) Open(key int) iter.Seq[sse.Event] {
	ch := make(chan sse.Event, workload.Capacity)
	d.mu.Lock()
	d.m[key] = ch
	d.mu.Unlock()
	return workload.FromChan(ch)
}

func (d *rwMapDesign) Send(key int, ev sse.Event) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ch, ok := d.m[key]
	if !ok {
		return errUnknownKey
	}
	ch <- ev
	return nil
}

func (d *rwMapDesign) SendBatch(key int, evs []sse.Event) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	ch, ok := d.m[key]
	if !ok {
		return errUnknownKey
	}
	for _, ev := range evs {
		ch <- ev
	}
	return nil
}

func (d *rwMapDesign) Close(key int) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ch, ok := d.m[key]
	if !ok {
		return errUnknownKey
	}
	close(ch)
	delete(d.m, key)
	return nil
}

func (d *rwMapDesign) Shutdown() error { return nil }

// condDesign is a map of condQueues guarded by a sync.RWMutex, which is held
// only for the lookup.
type condDesign struct {
	mu sync.RWMutex
	m  map[int]*condQueue // guarded by mu
}

// A condQueue is one key's queue: a slice guarded by a mutex, with one
// sync.Cond the reader waits on while it is empty and one producers wait on
// while it holds workload.Capacity messages. The reader takes the whole
// slice at once and hands back the one it has drained, so that, once both
// have grown, nothing is allocated.
type condQueue struct {
	mu       sync.Mutex
	nonEmpty sync.Cond   // L is &mu
	nonFull  sync.Cond   // L is &mu
	buf      []sse.Event // guarded by mu: waiting messages, oldest first
	closed   bool        // guarded by mu
}

func newCondDesign(int) workload.Design {
	return &condDesign{m: make(map[int]*condQueue)}
}

func (d *condDesign) Open(key int) iter.Seq[sse.Event] {
	q := &condQueue{}
	q.nonEmpty.L, q.nonFull.L = &q.mu, &q.mu
	d.mu.Lock()
	d.m[key] = q
	d.mu.Unlock()
	return q.all
}

func (d *condDesign) queue(key int) (*condQueue, error) {
	d.mu.RLock()
	q, ok := d.m[key]
	d.mu.RUnlock()
	if !ok {
		return nil, errUnknownKey
	}
	return q, nil
}

func (d *condDesign) Send(key int, ev sse.Event) error {
	q, err := d.queue(key)
	if err != nil {
		return err
	}
	q.mu.Lock()
	for len(q.buf) >= workload.Capacity && !q.closed {
		q.nonFull.Wait()
	}
	if q.closed {
		q.mu.Unlock()
		return errUnknownKey
	}
	wasEmpty := len(q.buf) == 0
	q.buf = append(q.buf, ev)
	q.mu.Unlock()
	if wasEmpty {
		q.nonEmpty.Signal()
	}
	return nil
}

func (d *condDesign) SendBatch(key int, evs []sse.Event) error {
	q, err := d.queue(key)
	if err != nil {
		return err
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(evs) > 0 {
		for len(q.buf) >= workload.Capacity && !q.closed {
			q.nonFull.Wait()
		}
		if q.closed {
			return errUnknownKey
		}
		n := min(len(evs), workload.Capacity-len(q.buf))
		if len(q.buf) == 0 {
			q.nonEmpty.Signal()
		}
		q.buf = append(q.buf, evs[:n]...)
		evs = evs[n:]
	}
	return nil
}

func (d *condDesign) Close(key int) error {
	d.mu.Lock()
	q, ok := d.m[key]
	delete(d.m, key)
	d.mu.Unlock()
	if !ok {
		return errUnknownKey
	}
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.nonEmpty.Broadcast()
	q.nonFull.Broadcast()
	return nil
}

func (d *condDesign) Shutdown() error { return nil }

// all is the reader loop: it swaps out the whole waiting slice, then yields
// its messages without holding the lock.
func (q *condQueue) all(yield func(sse.Event) bool) {
	var batch []sse.Event // owned by the reader
	for {
		q.mu.Lock()
		for len(q.buf) == 0 && !q.closed {
			q.nonEmpty.Wait()
		}
		if len(q.buf) == 0 {
			q.mu.Unlock()
			return
		}
		batch, q.buf = q.buf, batch[:0]
		q.mu.Unlock()
		q.nonFull.Broadcast()
		for _, ev := range batch {
			if !yield(ev) {
				return
			}
		}
		clear(batch)
	}
}

// loopDesign is the naive event loop: one goroutine owns a map from key to
// buffered channel and carries out commands from an inbox channel of 1,024
// commands (the Broker's inbox size), one message per command. It delivers
// with a blocking send into the key's channel, so a full channel stops the
// loop, and every key with it. Open is a round trip, as the Broker's Stream.
type loopDesign struct {
	inbox chan loopCmd
	done  chan struct{} // closed when the loop has returned
}

// A loopCmd is one command to the loop.
type loopCmd struct {
	op    loopOp
	key   int
	ev    sse.Event           // loopSend
	reply chan chan sse.Event // loopOpen
}

type loopOp uint8

const (
	loopOpen loopOp = iota
	loopSend
	loopClose
)

func newLoopDesign(int) workload.Design {
	d := &loopDesign{inbox: make(chan loopCmd, 1024), done: make(chan struct{})}
	go d.run()
	return d
}

func (d *loopDesign) run() {
	defer close(d.done)
	keys := make(map[int]chan sse.Event) // owned by the loop
	for c := range d.inbox {
		switch c.op {
		case loopOpen:
			ch := make(chan sse.Event, workload.Capacity)
			keys[c.key] = ch
			c.reply <- ch
		case loopSend:
			if ch, ok := keys[c.key]; ok {
				ch <- c.ev
			}
		case loopClose:
			if ch, ok := keys[c.key]; ok {
				close(ch)
				delete(keys, c.key)
			}
		}
	}
}

func (d *loopDesign) Open(key int) iter.Seq[sse.Event] {
	reply := make(chan chan sse.Event, 1)
	d.inbox <- loopCmd{op: loopOpen, key: key, reply: reply}
	return workload.FromChan(<-reply)
}

func (d *loopDesign) Send(key int, ev sse.Event) error {
	d.inbox <- loopCmd{op: loopSend, key: key, ev: ev}
	return nil
}

func (d *loopDesign) SendBatch(key int, evs []sse.Event) error {
	for _, ev := range evs {
		d.inbox <- loopCmd{op: loopSend, key: key, ev: ev}
	}
	return nil
}

func (d *loopDesign) Close(key int) error {
	d.inbox <- loopCmd{op: loopClose, key: key}
	return nil
}

func (d *loopDesign) Shutdown() error {
	close(d.inbox)
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("naiveloop: loop still running 10s after Shutdown")
	}
}

// brokerFanOut is the Broker in FanOut mode: Subscribe is Events from the
// key's first event (sse.After(0)), Publish is Publish, Close is Close. Events
// attaches its reader when its range begins, which the harness allows: the
// key's history holds its events from the first, and if it no longer held
// them when the range began, Events would yield a GapError and the run
// would fail.
type brokerFanOut struct {
	b *sse.Broker[int]
}

func (d *brokerFanOut) Subscribe(key int) iter.Seq2[sse.Event, error] {
	return d.b.Events(context.Background(), key, sse.After(0))
}

func (d *brokerFanOut) Publish(key int, ev sse.Event) error {
	return d.b.Publish(context.Background(), key, ev)
}

func (d *brokerFanOut) Close(key int) error { return d.b.Close(context.Background(), key) }

func (d *brokerFanOut) Shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return d.b.Shutdown(ctx)
}

// hubDesign is the hand-written fan-out hub: a map from key to hubKey,
// guarded by a sync.RWMutex that is held only for the lookup. Publish sends
// the event into each subscriber's channel under the key's lock, with a
// blocking send, so that a full channel holds the key's producer up; or,
// with a patience, a send that waits at most that long for a full channel
// and then evicts the subscriber. Close closes the channels, after what was
// sent before.
type hubDesign struct {
	patience time.Duration // immutable: 0 blocks, more evicts
	mu       sync.RWMutex
	m        map[int]*hubKey // guarded by mu
}

// A hubKey is one key of the hub: its subscribers.
type hubKey struct {
	mu    sync.Mutex
	subs  []*hubSub   // guarded by mu
	timer *time.Timer // guarded by mu: hub-evict's wait for a full channel, stopped between waits
}

// A hubSub is one subscriber of the hub: a channel of workload.Capacity
// events.
type hubSub struct {
	ch      chan sse.Event
	evicted atomic.Bool // set before ch is closed by an eviction
}

// errEvicted is what the reader loop of an evicted subscriber of hub-evict
// yields after the events it got.
var errEvicted = errors.New("hub-evict: evicted, its channel full for too long")

func newHub(patience time.Duration) *hubDesign {
	return &hubDesign{patience: patience, m: make(map[int]*hubKey)}
}

func (d *hubDesign) Subscribe(key int) iter.Seq2[sse.Event, error] {
	s := &hubSub{ch: make(chan sse.Event, workload.Capacity)}
	d.mu.Lock()
	k, ok := d.m[key]
	if !ok {
		k = &hubKey{}
		if d.patience > 0 {
			k.timer = time.NewTimer(time.Hour)
			k.timer.Stop()
		}
		d.m[key] = k
	}
	d.mu.Unlock()
	k.mu.Lock()
	k.subs = append(k.subs, s)
	k.mu.Unlock()
	return func(yield func(sse.Event, error) bool) {
		for ev := range s.ch {
			if !yield(ev, nil) {
				return
			}
		}
		if s.evicted.Load() {
			yield(sse.Event{}, errEvicted)
		}
	}
}

func (d *hubDesign) Publish(key int, ev sse.Event) error {
	d.mu.RLock()
	k, ok := d.m[key]
	d.mu.RUnlock()
	if !ok {
		return errUnknownKey
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if d.patience == 0 {
		for _, s := range k.subs {
			s.ch <- ev
		}
		return nil
	}
	for i := 0; i < len(k.subs); i++ {
		s := k.subs[i]
		select {
		case s.ch <- ev:
			continue
		default:
		}
		k.timer.Reset(d.patience)
		select {
		case s.ch <- ev:
			k.timer.Stop()
		case <-k.timer.C:
			s.evicted.Store(true)
			close(s.ch)
			k.subs = slices.Delete(k.subs, i, i+1)
			i--
		}
	}
	return nil
}

func (d *hubDesign) Close(key int) error {
	d.mu.Lock()
	k, ok := d.m[key]
	delete(d.m, key)
	d.mu.Unlock()
	if !ok {
		return errUnknownKey
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.subs {
		close(s.ch)
	}
	k.subs = nil
	return nil
}

func (d *hubDesign) Shutdown() error { return nil }
