package sse_test

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"sync"
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
