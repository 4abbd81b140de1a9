package sse

import (
	"sync"
	"time"
)

// beatSlots is how many slots a heartbeat interval has in [beats]: a stream
// beats up to an eighth of the interval early.
const beatSlots = 8

// beats is a [Handler]'s heartbeat clock, shared by its streams, so that an
// idle stream holds no timer of its own (a time.Timer and its channel cost
// about 250 bytes a stream). Time is cut into slots of an eighth of the
// heartbeat interval; a stream waiting for its next heartbeat waits on the
// channel of a slot, which is closed when that slot begins. A stream due
// for a heartbeat at time t waits for the slot that begins at or before t,
// so its heartbeat comes up to an eighth of the interval early, never late.
// Only slots that a stream waits for have a channel, and one timer fires at
// the earliest of them.
type beats struct {
	slot  time.Duration // immutable: the interval over beatSlots
	ahead int64         // immutable: slots in an interval
	epoch time.Time     // immutable: slot 0 begins here

	mu    sync.Mutex
	due   map[int64]chan time.Time // guarded by mu: the channel of each slot a stream waits for, by number
	timer *time.Timer              // guarded by mu: fires at the earliest slot of due; made at the first wait
	next  int64                    // guarded by mu: the slot the timer is set for, while armed
	armed bool                     // guarded by mu
}

// newBeats returns the clock for heartbeats every interval, or nil for
// none.
func newBeats(interval time.Duration) *beats {
	if interval <= 0 {
		return nil
	}
	slot := max(interval/beatSlots, 1)
	return &beats{slot: slot, ahead: int64(interval / slot), epoch: time.Now(), due: make(map[int64]chan time.Time)}
}

// A beat is one stream's wait for its next heartbeat: the slot it waits for
// and its channel. Owned by the stream's goroutine.
type beat struct {
	slot int64
	ch   chan time.Time
}

// now returns the number of the slot under way.
func (c *beats) now() int64 {
	d := int64(time.Since(c.epoch))
	k := d / int64(c.slot)
	if d < 0 && d%int64(c.slot) != 0 {
		k-- // floor, for a clock before the epoch (a synctest bubble's)
	}
	return k
}

// wait returns the channel that is closed when the heartbeat after a write
// now is due, and records it in b. A stream that wrote again within the
// same slot keeps its channel without taking the lock.
func (c *beats) wait(b *beat) <-chan time.Time {
	k := c.now() + c.ahead
	if b.ch != nil && b.slot == k {
		return b.ch
	}
	c.mu.Lock()
	ch := c.due[k]
	if ch == nil {
		ch = make(chan time.Time)
		c.due[k] = ch
		c.arm(k)
	}
	c.mu.Unlock()
	b.slot, b.ch = k, ch
	return ch
}

// arm sets the timer for slot k if it is earlier than the one set. The
// caller holds mu.
func (c *beats) arm(k int64) {
	if c.armed && c.next <= k {
		return
	}
	c.next, c.armed = k, true
	d := time.Until(c.epoch.Add(time.Duration(k) * c.slot))
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.fire)
		return
	}
	c.timer.Reset(d)
}

// fire closes the channels of every slot that has begun, and sets the
// timer for the earliest slot left.
func (c *beats) fire() {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	for k, ch := range c.due {
		if k <= now {
			close(ch)
			delete(c.due, k)
		}
	}
	first, ok := int64(0), false
	for k := range c.due {
		if !ok || k < first {
			first, ok = k, true
		}
	}
	if ok {
		c.arm(first)
	}
}
