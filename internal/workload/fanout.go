package workload

import (
	"errors"
	"fmt"
	"iter"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

// A FanOutDesign is one implementation of fan-out under test, for keys
// numbered from 0: every subscriber of a key gets every event published to
// it, in order. The harness calls Subscribe for every subscriber, from one
// goroutine, before the first Publish; Close once per key, after every
// Publish to it has returned; and Shutdown once, last. Publish for different
// keys may be called concurrently; one key has one producer, so Publish for
// one key is never called concurrently.
type FanOutDesign interface {
	// Subscribe adds a subscriber to key and returns its reader loop:
	// ranging over it yields every event published to key after Subscribe
	// returned, in order, and ends once Close(key) has been called and every
	// event published before it has been yielded. Where the subscriber lost
	// events, the loop yields a non-nil error with a zero Event, and may go
	// on. A design whose subscribers read a history that holds the key's
	// events from its first (the Broker in FanOut mode) may attach a
	// subscriber only when its range begins, provided the range starts at
	// the key's first event. The harness ranges over each loop once, from
	// one goroutine.
	Subscribe(key int) iter.Seq2[sse.Event, error]
	// Publish delivers ev to every subscriber of key. It may block for
	// backpressure; a design may also drop ev for a subscriber that does
	// not keep up, which fails F1 and F2, and F3 unless that subscriber is
	// the stalled one.
	Publish(key int, ev sse.Event) error
	// Close ends key: each of its reader loops ends after the last event.
	Close(key int) error
	// Shutdown releases everything the design holds: when it returns, every
	// goroutine the design started has ended or is about to. The harness
	// calls it once, last.
	Shutdown() error
}

// A FanOutFactory returns a new FanOutDesign for keys 0 to keys-1.
type FanOutFactory func(keys int) FanOutDesign

// A FanOutNamed is a fan-out design with the name its benchmarks report.
type FanOutNamed struct {
	Name string        // the sub-benchmark's name ends in "design=" + Name
	New  FanOutFactory // makes a fresh instance for each run
}

// A FanOutWorkload is one of the fan-out workloads, [F1] to [F3]: a shape of
// keys, producers and subscribers, run at one or more numbers of
// subscribers per key. Each run checks that every subscriber, but for F3's
// stalled one, got every event of its key exactly once and in order, and
// fails the benchmark otherwise.
//
// b.N is the number of deliveries (an event received by one subscriber):
// each key gets b.N/(keys × subscribers per key) events, rounded up, so that
// one -benchtime such as 1000000x delivers about as many events at every
// subscriber count. Before the clock starts, each key gets 16 events more
// (F3: 4,096), which every subscriber checks but which are not counted, so
// that the clock counts no subscriber's start. A fan-out workload reports,
// besides ns/op:
//
//   - ns/msg and msgs/s: wall time from the first publish until every
//     subscriber has seen its key end, per delivery;
//   - ns/event: the same time per published event, i.e. ns/msg times the
//     subscribers per key;
//   - B/msg and allocs/msg: the runtime.MemStats deltas (TotalAlloc,
//     Mallocs) over that time divided by the deliveries, as fractions. They
//     count every goroutine: producers, subscribers and the design's own.
type FanOutWorkload struct {
	shape fanOut
	subs  []int // subscribers per key: one sub-benchmark each
}

// fanOutSubs are the numbers of subscribers per key F1 and F3 run at.
var fanOutSubs = []int{1, 10, 100, 1000}

// The fan-out workloads.
var (
	// F1 is one key, one producer, and 1, 10, 100 or 1,000 subscribers,
	// each with its own goroutine. Compare the designs at one count:
	//
	//	benchstat -filter '.name:F1 /subs:100' -col /design
	F1 = FanOutWorkload{fanOut{keys: 1, producers: 1}, fanOutSubs}

	// F2 is 1,000 keys with 10 subscribers each (10,000 subscriber
	// goroutines), fed by 8 producers as in W3: producer p publishes to the
	// 125 keys k with k%8 == p, round robin.
	F2 = FanOutWorkload{fanOut{keys: manyKeys, producers: producers}, []int{10}}

	// F3 is isolation: F1 plus one stalled subscriber, which subscribes
	// first, takes the key's first event and then stops reading; it is left
	// out of the check. Before the clock starts, the producer publishes
	// 4,096 events (more than any design's per-subscriber buffer), which
	// the other subscribers check but which are not counted, until they
	// have all been delivered or no subscriber has moved for half a second;
	// a design that blocks on a full subscriber stops there, and one that
	// gives up on it after a while has done so. The stalled subscriber reads
	// on, to its key's end, once the others have all finished, or once they
	// have made no progress for half a second: then the design let one
	// stalled subscriber block the others, and the run reports
	// hol-blocked=1 (ns/msg then includes that half second, and the rest of
	// the warm-up, which such a design delivers only then: a lower bound on
	// a slowdown that would otherwise be unbounded). A design that drops
	// events for the stalled subscriber, or tells it of a gap, passes.
	// Compare F3 with F1 for each design:
	//
	//	benchstat -filter '.name:(F1 OR F3) /subs:100' -col .name -row /design
	F3 = FanOutWorkload{fanOut{keys: 1, producers: 1, stall: true}, fanOutSubs}
)

// EachFanOut runs w through every design at each of w's subscriber counts,
// as the sub-benchmarks "subs=N/design=NAME", so that benchstat can project
// on /subs and /design.
func EachFanOut(b *testing.B, w FanOutWorkload, designs []FanOutNamed) {
	for _, n := range w.subs {
		b.Run("subs="+strconv.Itoa(n), func(b *testing.B) {
			for _, d := range designs {
				b.Run("design="+d.Name, func(b *testing.B) { w.shape.run(b, d.New, n) })
			}
		})
	}
}

// FromChanFanOut returns the reader loop of a subscriber whose reader side
// is a channel: it yields what ch delivers until ch is closed, never an
// error.
func FromChanFanOut(ch <-chan sse.Event) iter.Seq2[sse.Event, error] {
	return func(yield func(sse.Event, error) bool) {
		for ev := range ch {
			if !yield(ev, nil) {
				return
			}
		}
	}
}

// warmEvents is how many events F1 and F2 publish to each key before the
// clock starts, and wait for every subscriber to get, so that the clock
// counts no subscriber's start: a design may attach a subscriber only when
// its range begins (see FanOutDesign.Subscribe). It is a multiple of 16, as
// a reader tells its progress every 16 messages.
const warmEvents = 16

// A fanOut is the shape of F1 to F3: producers publish to keys, each key
// has its subscribers, each with its own goroutine, and the keys are closed
// once every producer is done.
type fanOut struct {
	keys      int  // keys 0 to keys-1
	producers int  // producer goroutines: producer p publishes to the keys k with k%producers == p
	stall     bool // add a stalled subscriber to each key, and warm up with stallEvents (F3)
}

// run runs the shape with subs counted subscribers per key and b.N
// deliveries, rounded up to whole events per key, after the warm-up.
func (fo fanOut) run(b *testing.B, f FanOutFactory, subs int) {
	nsubs := fo.keys * subs
	events := (b.N + nsubs - 1) / nsubs // timed events per key
	deliveries := events * nsubs
	warm := warmEvents // untimed events per key, published first
	if fo.stall {
		warm = stallEvents
	}
	d := f(fo.keys)

	// rs[k*subs+s] is key k's s-th subscriber, which gets every event of
	// the key's producer.
	rs := make([]reader, nsubs)
	for i := range rs {
		rs[i].want[(i/subs)%fo.producers] = warm + events
	}

	// F3: the stalled subscribers subscribe first. Each takes its first
	// event, waits for release, then reads to its key's end, events and
	// errors alike.
	release := make(chan struct{})
	var stalled sync.WaitGroup
	if fo.stall {
		for k := range fo.keys {
			seq := d.Subscribe(k)
			stalled.Go(func() {
				waited := false
				for range seq {
					if !waited {
						<-release
						waited = true
					}
				}
			})
		}
	}

	// Every subscriber subscribes before anyone publishes.
	seqs := make([]iter.Seq2[sse.Event, error], nsubs)
	for i := range seqs {
		seqs[i] = d.Subscribe(i / subs)
	}
	readersDone := startReaders(len(rs), func(i int) { drainSub(&rs[i], seqs[i]) })

	start := make(chan struct{})
	errs := make([]error, fo.producers) // errs[p] is written by producer p, read after it ended
	var producing sync.WaitGroup
	for p := range fo.producers {
		var keys []int
		for k := p; k < fo.keys; k += fo.producers {
			keys = append(keys, k)
		}
		producing.Go(func() { errs[p] = publishAll(d, p, keys, warm, events, start) })
	}
	var closeErr error // written by the closer goroutine, read after closed
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		producing.Wait()
		for k := range fo.keys {
			if err := d.Close(k); err != nil && closeErr == nil {
				closeErr = err
			}
		}
	}()
	settle(rs, int64(warm))

	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	t0 := time.Now()
	close(start)
	blocked := false
	if fo.stall {
		blocked = watch(readersDone, rs, release)
	} else {
		<-readersDone
	}
	elapsed := time.Since(t0)
	b.StopTimer()
	runtime.ReadMemStats(&ms1)

	if !blocked {
		close(release)
	}
	<-closed
	stalled.Wait()
	errs = append(errs, closeErr)
	for i := range rs {
		if err := rs[i].verify(i / subs); err != nil {
			errs = append(errs, fmt.Errorf("subscriber %d of %w", i%subs, err))
		}
	}
	errs = append(errs, d.Shutdown())
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}

	report(b, deliveries, elapsed, &ms0, &ms1)
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(events*fo.keys), "ns/event")
	if fo.stall {
		hol := 0.0
		if blocked {
			hol = 1
		}
		b.ReportMetric(hol, "hol-blocked")
	}
}

// publishAll is producer p's goroutine: it publishes warm events to each of
// its keys, round robin, then waits for start and publishes events more
// to each (events is at least 1).
func publishAll(d FanOutDesign, p int, keys []int, warm, events int, start <-chan struct{}) error {
	for i := range warm + events {
		if i == warm {
			<-start
		}
		for _, k := range keys {
			if err := d.Publish(k, message(p, i)); err != nil {
				if i < warm {
					<-start // the run goes on: the check will fail
				}
				return err
			}
		}
	}
	return nil
}

// drainSub is a counted subscriber's goroutine.
func drainSub(r *reader, seq iter.Seq2[sse.Event, error]) {
	for ev, err := range seq {
		if err != nil {
			r.lose(err)
			continue
		}
		r.check(ev)
	}
	r.end()
}

// settle returns once every reader has seen want messages (it looks every
// 5 ms), or once none has moved for stallPatience: then the design is blocked by F3's stalled
// subscriber, which the watchdog will tell. It waits that long, rather than
// a tick, so that a design that gives up on a stalled subscriber after a
// while (in less than stallPatience) has done so before the clock starts.
func settle(rs []reader, want int64) {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	last, since := int64(-1), time.Now()
	for now := range tick.C {
		var sum int64
		all := true
		for i := range rs {
			n := rs[i].seen.Load()
			sum += n
			all = all && n >= want
		}
		switch {
		case all:
			return
		case sum != last:
			last, since = sum, now
		case now.Sub(since) >= stallPatience:
			return
		}
	}
}
