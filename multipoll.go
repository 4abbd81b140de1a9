package sse

import (
	"context"
	"sync"
)

// A multiPoll reads several subscriptions from one goroutine, with no
// goroutine per key: it calls [Subscription.Poll] on each key that may
// have something, in turn, and a key whose Poll finds nothing waits, with
// no cost but its registered wake, until that wake puts it back in turn.
// A key that returned something is polled again after every other key in
// turn, so that a busy key does not starve the others. [MultiHandler]'s
// streams and [Broker.EventsOf] read their keys with it.
type multiPoll struct {
	subs  []Subscription // owned by the reading goroutine: the open keys, nil for the others
	wakes []func()       // immutable: key i's wake, which puts i into woken

	// turn holds the keys to poll, in order, each at most once (queued);
	// owned by the reading goroutine.
	turn   keyRing
	queued []bool

	mu     sync.Mutex
	woken  []int         // guarded by mu: the keys woken since the reading goroutine last took them
	spare  []int         // owned by the reading goroutine: woken's previous array, for the next swap
	signal chan struct{} // capacity 1: woken went from empty to not
}

// newMultiPoll returns a multiPoll of subs (nil for keys not open), every
// open key in turn.
func newMultiPoll(subs []Subscription) *multiPoll {
	n := len(subs)
	p := &multiPoll{
		subs:   subs,
		wakes:  make([]func(), n),
		turn:   keyRing{keys: make([]int, n)},
		queued: make([]bool, n),
		signal: make(chan struct{}, 1),
	}
	for i, sub := range subs {
		p.wakes[i] = func() { p.wake(i) }
		if sub != nil {
			p.turn.push(i)
			p.queued[i] = true
		}
	}
	return p
}

// wake puts key i back in turn: what its Poll registered. It never blocks.
func (p *multiPoll) wake(i int) {
	p.mu.Lock()
	p.woken = append(p.woken, i)
	first := len(p.woken) == 1
	p.mu.Unlock()
	if first {
		select {
		case p.signal <- struct{}{}:
		default: // a signal is pending already
		}
	}
}

// takeWoken puts the keys woken since the last call in turn.
func (p *multiPoll) takeWoken() {
	p.mu.Lock()
	woken := p.woken
	p.woken = p.spare[:0]
	p.mu.Unlock()
	for _, i := range woken {
		if !p.queued[i] && p.subs[i] != nil { // a spurious wake, or one of a closed key
			p.queued[i] = true
			p.turn.push(i)
		}
	}
	p.spare = woken
}

// next polls the keys in turn until one returns something: its position,
// and what its Poll returned. ok is false when no key has anything: a key
// woken after that signals p.signal. buf is as for Poll.
func (p *multiPoll) next(ctx context.Context, buf []Event, limit int) (i int, events []Event, gap Gap, err error, ok bool) {
	p.takeWoken()
	for p.turn.n > 0 {
		i = p.turn.pop()
		p.queued[i] = false
		events, gap, err = p.subs[i].Poll(ctx, buf, limit, p.wakes[i])
		if len(events) == 0 && gap == (Gap{}) && err == nil {
			continue // its wake puts it back in turn
		}
		if err == nil { // it may have more: after the others
			p.queued[i] = true
			p.turn.push(i)
		}
		return i, events, gap, err, true
	}
	return 0, nil, Gap{}, nil, false
}

// close closes key i's subscription, at once: a closed key is detached.
func (p *multiPoll) close(i int) {
	if sub := p.subs[i]; sub != nil {
		p.subs[i] = nil
		sub.Close()
	}
}

// A keyRing is a queue of key positions, each at most once, in a fixed
// array; owned by the reading goroutine.
type keyRing struct {
	keys    []int
	head, n int
}

func (r *keyRing) push(i int) {
	r.keys[(r.head+r.n)%len(r.keys)] = i
	r.n++
}

func (r *keyRing) pop() int {
	i := r.keys[r.head]
	r.head = (r.head + 1) % len(r.keys)
	r.n--
	return i
}
