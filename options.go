package sse

import (
	"fmt"
	"time"
)

// An Option configures a [Broker]; pass options to [New].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is a Broker's configuration, fixed by New.
type config struct {
	buffer     int           // capacity of each key's channel
	maxPending int           // bound on each key's overflow; negative: unbounded
	policy     Overflow      // what happens beyond maxPending
	retention  time.Duration // how long a closed key is remembered
	idle       time.Duration // close keys untouched for this long; 0: never
	inbox      int           // commands, and events, the inbox holds before producers wait
	replay     int           // events each key's replay window holds
	maxKeys    int           // bound on keys, open and closed; 0: none
	onWake     func()        // tests only: called by the loop before it takes the inbox
}

// DefaultBuffer is the capacity of each key's channel unless [WithBuffer]
// says otherwise. It is small so that an idle key costs under 1 KiB; events
// beyond it wait in the key's overflow, which costs nothing while empty.
const DefaultBuffer = 16

// DefaultRetention is how long a closed key is remembered unless
// [WithRetention] says otherwise.
const DefaultRetention = 5 * time.Minute

func defaults() config {
	return config{
		buffer:     DefaultBuffer,
		maxPending: -1,
		retention:  DefaultRetention,
		inbox:      1024,
		replay:     DefaultReplay,
	}
}

// WithBuffer sets the capacity of each key's channel: how many events a key
// holds ready for its reader before the rest wait in its overflow. The
// default is [DefaultBuffer]. n must be ≥ 0.
func WithBuffer(n int) Option {
	if n < 0 {
		panic("sse: WithBuffer: negative buffer")
	}
	return optionFunc(func(c *config) { c.buffer = n })
}

// WithMaxPending bounds each key's overflow, the events waiting beyond its
// channel buffer, to n, and chooses what happens beyond it: see [Overflow].
// Without this option overflow is unbounded and nothing is dropped. The
// key's feeder goroutine takes the whole overflow at once and moves it into
// the channel as the reader drains; the events it holds do not count
// against n. So a key holds at most its buffer, n events in overflow, and
// what the overflow held when the feeder last took it. n must be ≥ 0.
func WithMaxPending(n int, p Overflow) Option {
	if n < 0 {
		panic("sse: WithMaxPending: negative bound")
	}
	if p < DropOldest || p > Block {
		panic("sse: WithMaxPending: unknown Overflow policy")
	}
	return optionFunc(func(c *config) { c.maxPending, c.policy = n, p })
}

// WithRetention sets how long a closed key is remembered, so that a reader
// arriving late sees an ended stream rather than a fresh queue. When it has
// passed, the key is forgotten: events its readers never took are dropped
// (counted in [Stats].Dropped) and the key may start afresh, with IDs from 1.
// The default is [DefaultRetention]. d must be ≥ 0.
func WithRetention(d time.Duration) Option {
	if d < 0 {
		panic("sse: WithRetention: negative duration")
	}
	return optionFunc(func(c *config) { c.retention = d })
}

// DefaultReplay is how many events each key's replay window holds unless
// [WithReplay] says otherwise.
const DefaultReplay = 1024

// WithReplay sets how many events each key's replay window holds: the
// events SSE connections took from the key (see [Broker.Subscribe]) that
// their clients have not yet confirmed by resuming. A client that comes back
// after more than n events were taken and never confirmed is told of the gap.
// The window is allocated only for keys that SSE connections read. The
// default is [DefaultReplay]; 0 turns replay off. [Handler] takes no more
// than n events between two writes, so a small window means smaller writes.
// n must be ≥ 0.
func WithReplay(n int) Option {
	if n < 0 {
		panic("sse: WithReplay: negative size")
	}
	return optionFunc(func(c *config) { c.replay = n })
}

// WithIdleTimeout closes, as [Broker.Close] does, every key that has seen no
// Enqueue, Publish or Stream for d and has no SSE connection attached; the
// time starts again when a connection leaves, so that its client can come
// back. Events not yet read do not keep a key open. By default keys never
// time out. d must be ≥ 0; 0 means never.
func WithIdleTimeout(d time.Duration) Option {
	if d < 0 {
		panic("sse: WithIdleTimeout: negative duration")
	}
	return optionFunc(func(c *config) { c.idle = d })
}

// WithMaxKeys bounds how many keys the broker holds, open and closed ones
// together, so that whoever can name keys (a client choosing a URL, say)
// cannot make it hold more. At the bound, Enqueue and Publish to a new key
// return [ErrTooManyKeys], Stream of a new key returns a closed channel,
// and [Handler] answers a request for a new key as it does when it has too
// many streams. Keys already held are not affected, and Close records an
// unknown key as closed even beyond the bound. Near the bound the check
// costs Enqueue and Publish a round trip to the loop; if producers race past
// it, the loop refuses the surplus and counts its events in
// [Stats].Discarded. By default there is no bound. n must be ≥ 0; 0 means
// none.
func WithMaxKeys(n int) Option {
	if n < 0 {
		panic("sse: WithMaxKeys: negative bound")
	}
	return optionFunc(func(c *config) { c.maxKeys = n })
}

// Overflow is what a key does when its overflow holds the number of events
// set by [WithMaxPending].
type Overflow int

const (
	// DropOldest drops the oldest waiting event for each new one, so the
	// reader sees the newest. Dropped events keep their IDs, so a reader sees
	// the gap.
	DropOldest Overflow = iota + 1
	// DropNewest drops new events, so the reader sees the oldest.
	DropNewest
	// Block makes Enqueue and Publish to that key wait until its overflow is
	// below the bound again, or their context ends. Other keys are not
	// affected. The bound is soft: commands already in the inbox are admitted,
	// and one call's batch enters whole when the key is not congested.
	Block
)

// String returns the policy's name, as in the constant.
func (p Overflow) String() string {
	switch p {
	case DropOldest:
		return "DropOldest"
	case DropNewest:
		return "DropNewest"
	case Block:
		return "Block"
	}
	return fmt.Sprintf("Overflow(%d)", int(p))
}
