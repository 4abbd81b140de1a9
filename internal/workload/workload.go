// Package workload is the harness shared by the benchmarks that compare
// [sse.Broker] with lock-based baselines (bench_test.go in the root module)
// and with peer libraries (the nested module github.com/rocketqueue/sse/bench).
//
// A [Design] is one way to keep a FIFO queue per key. Each workload, [W1] to
// [W7], drives fresh Designs from a [Factory] through the same producers and
// readers, then checks that every message arrived exactly once and in
// per-producer order, and fails the benchmark otherwise, so that no design
// wins by dropping. [Each] runs a workload as one sub-benchmark per design,
// named "design=NAME", so that benchstat can project on /design.
//
// Every message is an [sse.Event] whose Name is a tag naming its producer and
// whose Data is one of 1,024 precomputed strings: the harness allocates
// nothing per message. The workloads report, besides ns/op:
//
//   - ns/msg and msgs/s: wall time from the first send until every reader
//     has seen its key end, per message;
//   - B/msg and allocs/msg: the runtime.MemStats deltas (TotalAlloc,
//     Mallocs) over that time divided by the messages, as fractions (unlike
//     B/op and allocs/op, which round). They count every goroutine:
//     producers, readers and the design's own;
//   - cpu-ns/msg: the process's CPU time (user and system) over that time,
//     per message, where the platform tells it: on a machine that other
//     work loads it varies far less than ns/msg, so that an A/B
//     comparison of one design shows what ns/msg drowns in noise.
//
// A [FanOutDesign] is one way to hand every event of a key to every one of
// its subscribers. The fan-out workloads, [F1] to [F3], drive fresh
// FanOutDesigns from a [FanOutFactory] and check that every subscriber got
// every event of its key, in order; [EachFanOut] runs one as the
// sub-benchmarks "subs=N/design=NAME", so that benchstat can project on
// /subs and /design. They report the same metrics per delivery: an event
// received by one subscriber (see [FanOutWorkload]).
package workload

import (
	"flag"
	"iter"
	"testing"

	"github.com/rocketqueue/sse"
)

// MaxPending is the bound the benchmarks give the Broker's overflow, with
// sse.WithMaxPending(MaxPending, sse.Block), so that it has backpressure
// like a channel.
const MaxPending = 1024

// Capacity is how many messages a bounded design lets wait per key before a
// producer blocks: the Broker's channel buffer plus MaxPending, so that
// channel-based designs hold what the bounded Broker holds. (The Broker may
// hold a batch of one call beyond it: its bound is n - 1 + b events not yet
// in the channel, b being the largest batch.)
const Capacity = sse.DefaultBuffer + MaxPending

// A Design is one implementation of per-key FIFO queues under test, for keys
// numbered from 0. The harness calls Open for a key before any Send to it
// (subscribing before publishing), and Close once per key, after every Send
// to it has returned; Send, SendBatch and Close for different keys, and Send
// for one key, may be called concurrently.
type Design interface {
	// Open creates key's queue and returns its reader loop: ranging over it
	// yields the key's messages in queue order, and ends once Close(key) has
	// been called and every message sent before it has been yielded. The
	// harness ranges over it at most once, from one goroutine; W6 never does.
	Open(key int) iter.Seq[sse.Event]
	// Send appends ev to key's queue. It may block for backpressure.
	Send(key int, ev sse.Event) error
	// SendBatch appends evs to key's queue, in order. A design with a batch
	// API uses it; others send one message at a time. It must not keep evs
	// after it returns.
	SendBatch(key int, evs []sse.Event) error
	// Close ends key's queue, so that its reader loop ends after the last
	// message.
	Close(key int) error
	// Shutdown releases everything the design holds: when it returns, every
	// goroutine the design started has ended or is about to. The harness
	// calls it once, last.
	Shutdown() error
}

// A Factory returns a new Design for keys 0 to keys-1. What it allocates
// before returning is not counted by W6, so it should allocate nothing per
// key that a key's queue itself needs.
type Factory func(keys int) Design

// A Named is a design with the name its benchmarks report.
type Named struct {
	Name string  // the sub-benchmark's name is "design=" + Name
	New  Factory // makes a fresh instance for each run
}

// A Workload drives fresh designs from a factory and reports its metrics.
// W1 to W7 are workloads.
type Workload func(b *testing.B, f Factory)

// Each runs w for every design, as the sub-benchmark "design=NAME".
func Each(b *testing.B, w Workload, designs []Named) {
	for _, d := range designs {
		b.Run("design="+d.Name, func(b *testing.B) { w(b, d.New) })
	}
}

// FromChan returns the reader loop of a design whose reader side is a
// channel: it yields what ch delivers until ch is closed.
func FromChan(ch <-chan sse.Event) iter.Seq[sse.Event] {
	return func(yield func(sse.Event) bool) {
		for ev := range ch {
			if !yield(ev) {
				return
			}
		}
	}
}

// idleKeys is W6's key count. Only the test binaries that import this
// package know the flag, so name those packages, not ./...:
//
//	go test -run '^$' -bench W6 -benchtime 1x -idlekeys=100000 .
var idleKeys = flag.Int("idlekeys", 1_000_000, "number of idle keys W6 opens")

// lean makes the readers of every workload count messages rather than
// check each one's content and order (the counts are still checked at the
// end): the lean baselines of issue 22, against which a design's ratio
// is what a competent hand-written reader would see.
//
//	go test -run '^$' -bench 'W[1-4]' -lean .
var lean = flag.Bool("lean", false, "readers count messages instead of checking each")

// The workloads' shapes.
const (
	manyKeys    = 1000   // W3, W7: keys, each with its own reader
	producers   = 8      // W2, W3, W7: producer goroutines
	batchLen    = 64     // W4: messages per SendBatch
	churnKeys   = 10_000 // W5: keys per design instance
	churnEvents = 10     // W5: messages per key
	churnActive = 128    // W5: reader goroutines, so at most this many keys are being drained at once
	stallEvents = 4096   // W7: messages sent to the stalled key, more than any design's per-key buffer
)

// W1 is one key, one producer, one reader, one message per Send. b.N is
// the number of messages.
func W1(b *testing.B, f Factory) { flow{keys: 1, producers: 1, batch: 1}.run(b, f) }

// W2 is fan-in: one key, 8 producers, one reader. b.N is the number of
// messages, split evenly among the producers.
func W2(b *testing.B, f Factory) { flow{keys: 1, producers: producers, batch: 1}.run(b, f) }

// W3 is 1,000 keys, each with its own reader goroutine, fed by 8 producers:
// producer p sends to the 125 keys k with k%8 == p, round robin. b.N is the
// number of messages.
func W3(b *testing.B, f Factory) { flow{keys: manyKeys, producers: producers, batch: 1}.run(b, f) }

// W4 is batches: one key, one producer, SendBatch of 64 messages per call.
// b.N is the number of messages, rounded up to whole batches; it also
// reports allocs/batch.
func W4(b *testing.B, f Factory) { flow{keys: 1, producers: 1, batch: batchLen}.run(b, f) }

// W7 is isolation: W3 plus one extra key whose reader is stalled. Before
// the clock starts, an extra producer sends it 4,096 messages (more than any
// design's channel holds, and more than the bounded designs let wait), from
// its own goroutine, which may block; those
// messages are checked but not counted. The stalled reader starts reading
// once W3's readers have all finished, or once W3 has made no progress for
// half a second: then the design let one stalled key block the others, and
// the run reports hol-blocked=1 (ns/msg then includes that half second, a
// lower bound on a slowdown that would otherwise be unbounded). Compare W7
// with W3 for each design to see the slowdown:
//
//	benchstat -filter '.name:(W3 OR W7)' -col .name -row /design
func W7(b *testing.B, f Factory) {
	flow{keys: manyKeys, producers: producers, batch: 1, stall: true}.run(b, f)
}
