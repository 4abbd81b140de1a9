package sse

import (
	"fmt"
	"log/slog"
	"time"
)

// An Option configures a [Broker]; pass options to [New]. [Handler]'s
// options are of another type, [HandlerOption], since a handler serves any
// [Source], a Broker or another backend's: an option passed where it means
// nothing does not compile. [WithLogger], which both take, is both (a
// [LoggerOption]). Another backend has options of its own, which take the
// same arguments in the same units when they share a name with these (see
// the README's table of options).
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is a Broker's configuration, fixed by New.
type config struct {
	buffer        int           // capacity of each key's channel
	maxPending    int           // bound on each key's overflow; negative: unbounded
	policy        Overflow      // what happens beyond maxPending
	retention     time.Duration // how long a closed key is remembered
	idle          time.Duration // close keys untouched for this long; 0: never
	inbox         int           // commands, and events, the inbox holds before producers wait
	replayEvents  int           // events each key's replay window holds
	replayBytes   int           // bytes (see Event.Size) each key's replay window holds
	replayBudget  int64         // bytes all replay windows and histories hold together
	mode          Mode          // Queue or FanOut
	historyEvents int           // FanOut: events each key's history holds
	historyBytes  int           // FanOut: bytes (see Event.Size) each key's history holds
	historyAge    time.Duration // FanOut: how long an event stays in a history; 0: no bound
	maxKeys       int           // bound on keys, open and closed; 0: none
	maxEventSize  int           // bound on an event's Name and Data together, in bytes
	checkKeys     bool          // the key type can hold values that fail checkKey; set by New
	logger        *slog.Logger  // nil: silent
	onWake        func()        // tests only: called by the loop before it takes the inbox
}

// DefaultBuffer is the capacity of each key's channel unless [WithBuffer]
// says otherwise. It is small so that an idle key costs under 1 KiB; events
// beyond it wait in the key's overflow, which costs nothing while empty.
const DefaultBuffer = 16

// DefaultRetention is how long a closed key is remembered unless
// [WithRetention] says otherwise.
const DefaultRetention = 5 * time.Minute

// dropping reports whether a policy drops events beyond the bound.
func (c *config) dropping() bool {
	return c.maxPending >= 0 && (c.policy == DropOldest || c.policy == DropNewest)
}

// low is the count of pending events at which producers waiting under the
// Block policy are woken.
func (c *config) low() int64 { return int64(c.maxPending / 2) }

func defaults() config {
	return config{
		buffer:        DefaultBuffer,
		maxPending:    -1,
		retention:     DefaultRetention,
		maxEventSize:  DefaultMaxEventSize,
		inbox:         1024,
		replayEvents:  DefaultReplayEvents,
		replayBytes:   DefaultReplayBytes,
		replayBudget:  DefaultReplayBudget,
		historyEvents: DefaultReplayEvents,
		historyBytes:  DefaultReplayBytes,
		historyAge:    DefaultHistoryAge,
	}
}

// WithBuffer sets the capacity of each key's channel: how many events a key
// holds ready for its reader before the rest wait in its overflow. The
// default is [DefaultBuffer]. n must be ≥ 0. A request key (one that a
// connection's request created, see [Broker.Subscribe]) gets a channel of
// at most 1 event, whatever n: most such keys only hold an idle
// connection, which takes events in batches anyway, though a burst then
// reaches it in more, smaller writes. A key opened with [Broker.Open]
// before its client comes keeps n.
func WithBuffer(n int) Option {
	if n < 0 {
		panic("sse: WithBuffer: negative buffer")
	}
	return optionFunc(func(c *config) { c.buffer = n })
}

// WithMaxPending bounds each key's overflow, the events waiting beyond its
// channel buffer, to n, and chooses what happens beyond it: see [Overflow].
// Without this option overflow is unbounded and nothing is dropped.
//
// Under [DropOldest] and [DropNewest], the key's feeder goroutine takes one
// event at a time from the overflow on its way into the channel, so that
// the policy can drop any other: a key holds at most its buffer, n events
// in overflow and, under DropOldest only, the one event in the feeder's
// hands. Over SSE, the IDs a policy dropped reach the client as a "gap"
// event.
//
// Under [Block], n bounds the events accepted for the key that have not yet
// reached its channel: in the broker's inbox, in overflow, or in the
// feeder's hands. Enqueue and Publish to the key wait while it has n of
// them (any, for n = 0), until it has no more than n/2; a call's batch
// enters whole. So a key never has more than n − 1 + b such events, b being
// the largest batch of one call (b for n = 0), however many goroutines
// produce at once; with a retention so short that a closed key is
// forgotten while calls that raced its Close are on their way, the next
// life of the key counts those calls too, and may hold up to twice that.
// n must be ≥ 0.
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
// arriving late sees an ended stream rather than a fresh queue, and a client
// resuming over SSE finds its replay window. The time runs from the later of
// the Close and the last event a reader took, so a reader that keeps
// reading is never cut short, however slow it is, while an abandoned key
// does not stay forever. The loop checks for reads when the time is up, so
// a key whose readers were behind at its Close is forgotten between one and
// two retention times after their last read; a key read to its end before
// the Close, exactly one retention time after it.
//
// When the key is forgotten, events its readers never took are dropped
// (counted in [Stats].Dropped) and its channel is closed after those it
// holds; readers learn that their stream was cut short ([ErrTruncated]).
// The key may then start afresh, with IDs from 1. The default is
// [DefaultRetention]. d must be ≥ 0; a d of 2⁶² ns (about 146 years) or
// more, such as math.MaxInt64, means never.
func WithRetention(d time.Duration) Option {
	if d < 0 {
		panic("sse: WithRetention: negative duration")
	}
	return optionFunc(func(c *config) { c.retention = min(d, never) })
}

// never is the longest duration the broker keeps as it is: longer ones mean
// never, since added to a time on the loop's clock they would overflow.
// It is about 146 years.
const never = time.Duration(1 << 62)

// orNever returns d, or 0 (which means never to the options that call it)
// for a duration so long that it means never.
func orNever(d time.Duration) time.Duration {
	if d >= never {
		return 0
	}
	return d
}

// DefaultReplayEvents, DefaultReplayBytes and DefaultReplayBudget bound the
// replay windows unless [WithReplay] and [WithReplayBudget] say otherwise.
//
// DefaultReplayBytes covers what a connection can swallow before it dies on
// a Linux host at its default TCP settings, with one proxy on the way: the
// server's socket send buffer (up to 4 MiB), the proxy's buffers and the
// client's receive buffer. Measured on loopback, a connection cut while its
// client read held at most 4.4 MB, and one whose client stopped reading at
// most 14.5 MB, unless a proxy's own sockets grew buffers of tens of
// megabytes (see the README's section on resuming). DefaultReplayEvents is
// as many events of 48 bytes, the least an event counts ([Event.Size]), so
// that by default the bound in bytes is the one that holds. DefaultReplayBudget lets 32 keys
// hold full windows at once.
const (
	DefaultReplayEvents = DefaultReplayBytes / eventOverhead
	DefaultReplayBytes  = 16 << 20
	DefaultReplayBudget = 32 * DefaultReplayBytes
)

// WithReplay bounds each key's replay window: the events SSE connections
// took from the key (see [Broker.Subscribe]) that their clients have not
// yet confirmed by resuming after them. The window holds at most events
// events and bytes bytes, each event counting its [Event.Size], 48 bytes
// plus its Name and Data (about its size on the wire, which is larger by 6
// bytes for each line of Data after the first); it drops its oldest beyond
// that. It
// allocates as it fills, only for keys that SSE connections read, and is
// freed when the key is forgotten.
//
// A client whose connection dies with more in flight than the window (in
// the server's socket, each proxy's buffers and its own receive buffer) is
// told of the gap when it resumes. [Handler] takes no more than the window
// between two writes, so a small window means smaller writes. The defaults
// are [DefaultReplayEvents] and [DefaultReplayBytes]; 0 for either turns
// replay off. Both must be ≥ 0. (ssejs's window, in the stream, counts
// events only: its option is ssejs.WithReplayEvents.)
func WithReplay(events, bytes int) Option {
	if events < 0 || bytes < 0 {
		panic("sse: WithReplay: negative bound")
	}
	return optionFunc(func(c *config) { c.replayEvents, c.replayBytes = events, bytes })
}

// Mode is how a [Broker]'s keys hand out their events, chosen with
// [WithMode] when it is made: [Queue], the default, where each event is
// read once, or [FanOut], where every reader gets every event. Producers
// call Enqueue, Publish and Close the same way in both.
type Mode int

// Queue, the default, makes each key a FIFO queue whose events are each
// read once: readers of a key compete ([Broker.Stream]), and a key has one
// SSE connection at a time.
const Queue Mode = 0

// FanOut makes each key a history that every reader reads from its own
// position: in process ([Broker.Events]) and over SSE, any number of readers
// and connections per key each get every event, and resume from an ID the
// history still holds. A reader that falls further behind than the history
// is told of the gap, never silently skipped; producers never wait for
// readers.
const FanOut Mode = 1

// String returns the mode's name, as in the constant.
func (m Mode) String() string {
	switch m {
	case Queue:
		return "Queue"
	case FanOut:
		return "FanOut"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// WithMode chooses how the broker's keys hand out their events: [Queue],
// the default, or [FanOut]. In FanOut mode [WithMaxPending] is refused, as
// producers never wait for readers, and [WithBuffer] and [WithReplay] have
// no use; [WithHistory] bounds what each key holds.
func WithMode(m Mode) Option {
	if m != Queue && m != FanOut {
		panic("sse: WithMode: unknown Mode")
	}
	return optionFunc(func(c *config) { c.mode = m })
}

// DefaultHistoryAge is how long a FanOut key holds an event unless
// [WithHistory] says otherwise; its bounds in events and bytes are
// [DefaultReplayEvents] and [DefaultReplayBytes].
const DefaultHistoryAge = time.Hour

// WithHistory bounds each [FanOut] key's history: the events it holds so
// that its readers read them from their own positions, resume from an ID,
// and a late reader catches up. A history holds at most events events and
// bytes bytes, each event counting its [Event.Size], and events no older
// than age; it drops its oldest beyond that, but always
// keeps its newest event. Age is applied when the key receives events, so
// that no timer runs per key: an event older than age may stay until the
// next one arrives, or the key is forgotten. A reader behind the oldest
// event held is told of the gap ([GapError], or a "gap" event over SSE). A
// history costs its events' memory, 48 bytes an event plus its strings, and
// counts against [WithReplayBudget]; it is freed when the key is forgotten.
// The defaults are [DefaultReplayEvents], [DefaultReplayBytes] and
// [DefaultHistoryAge]; age 0, or 2⁶² ns (about 146 years) or more, such as
// math.MaxInt64, means no bound in time. events and bytes must be ≥ 1, and
// age ≥ 0. (ssejs keeps a history in the stream, which JetStream bounds per
// key in messages, not events: its options are ssejs.WithHistoryMessages
// and ssejs.WithMaxAge.)
func WithHistory(events, bytes int, age time.Duration) Option {
	if events < 1 || bytes < 1 || age < 0 {
		panic("sse: WithHistory: bound out of range")
	}
	return optionFunc(func(c *config) { c.historyEvents, c.historyBytes, c.historyAge = events, bytes, orNever(age) })
}

// WithReplayBudget bounds the bytes that all keys' replay windows (and, in
// [FanOut] mode, histories) hold together, so that many streaming keys
// cannot exhaust memory. When the budget is used up, windows stop growing:
// a window (or history) then drops its own oldest event for each new one,
// keeping its newest events up to 32 KiB (the most [Handler] writes at
// once), or its newest event alone if that is larger, so that a write that
// fails loses nothing and a FanOut key's readers still get its newest
// event. The bound that holds, whatever the order of events and keys:
//
//	Stats.Replay ≤ n + K × max(32 KiB, 48 + MaxEventSize)
//
// for K keys holding events, MaxEventSize being [WithMaxEventSize]'s bound
// (1 MiB by default): bound K with [WithMaxKeys], and lower MaxEventSize
// if events that large are not needed. Clients of keys whose windows
// shrank that way get a gap when more was in flight than their window
// kept; FanOut readers further behind than their key's history get a gap.
// [Stats].Replay tells how much the windows hold. The default is
// [DefaultReplayBudget]. n must be ≥ 0.
func WithReplayBudget(n int64) Option {
	if n < 0 {
		panic("sse: WithReplayBudget: negative budget")
	}
	return optionFunc(func(c *config) { c.replayBudget = n })
}

// DefaultMaxEventSize is the most bytes an event's Name and Data may hold
// together unless [WithMaxEventSize] says otherwise.
const DefaultMaxEventSize = 1 << 20

// WithMaxEventSize bounds an event's Name and Data, together, to n bytes:
// Enqueue and Publish refuse a larger event with [ErrInvalidEvent] before
// it enters the broker, so that one call cannot fill a replay window, a
// history or the memory of every client. The default is
// [DefaultMaxEventSize]. n must be ≥ 1.
func WithMaxEventSize(n int) Option {
	if n < 1 {
		panic("sse: WithMaxEventSize: bound below 1")
	}
	return optionFunc(func(c *config) { c.maxEventSize = n })
}

// WithIdleTimeout closes, as [Broker.Close] does, every key that has seen no
// Enqueue, Publish or Stream for d and has no SSE connection attached; the
// time starts again when a connection leaves, so that its client can come
// back. Events not yet read do not keep a key open. By default keys never
// time out. d must be ≥ 0; 0, or 2⁶² ns (about 146 years) or
// more, such as math.MaxInt64, means never.
func WithIdleTimeout(d time.Duration) Option {
	if d < 0 {
		panic("sse: WithIdleTimeout: negative duration")
	}
	return optionFunc(func(c *config) { c.idle = orNever(d) })
}

// WithMaxKeys bounds how many server keys the broker holds, open and closed
// ones together: keys the server created or touched with Enqueue, Publish,
// Stream or Close. At the bound, Enqueue and Publish to a new key return
// [ErrTooManyKeys] and Stream of a new key returns a closed channel. Keys
// already held are not affected, and Close records an unknown key as
// closed even beyond the bound. Keys that only SSE requests created do not
// count (see [Broker.Subscribe]): clients naming random keys cannot lock
// the server's producers out; bound them with [WithMaxStreams] and
// [WithKnownKeysOnly]. Near the bound the check costs Enqueue and Publish a
// round trip to the loop; if producers race past it, the loop refuses the
// surplus and counts its events in [Stats].Discarded. By default there is
// no bound. n must be ≥ 0; 0 means none.
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
	// reader sees the newest. Dropped events keep their IDs: over SSE a
	// "gap" event names them before the next event sent.
	DropOldest Overflow = iota + 1
	// DropNewest drops new events, so the reader sees the oldest. Dropped
	// events keep their IDs too: over SSE a "gap" event names them before
	// the next event kept or, when they were the key's last, before
	// "close".
	DropNewest
	// Block makes Enqueue and Publish to that key wait until it has room
	// again, or their context ends; see [WithMaxPending] for the exact
	// bound. Other keys are not affected, and Close never waits.
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
