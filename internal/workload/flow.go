package workload

import (
	"errors"
	"iter"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

// stallPatience is how long W7 waits with no message delivered before it
// decides that the stalled key blocks the others, and unstalls it.
const stallPatience = 500 * time.Millisecond

// A flow is the shape of W1 to W4 and W7: producers send to keys, each key
// has one reader goroutine, and the keys are closed once every producer is
// done.
type flow struct {
	keys      int  // keys with a counted reader: 0 to keys-1
	producers int  // producer goroutines
	batch     int  // messages per call: 1 calls Send, more call SendBatch
	stall     bool // add key `keys`, with a stalled reader (W7)
}

// A producer is one producer goroutine's plan.
type producer struct {
	id    int   // its tag's index
	keys  []int // the keys it sends to, round robin
	calls int   // the Send or SendBatch calls it makes
	err   error // written by the producer goroutine, read after it ended
}

// run runs the flow with b.N messages, rounded up to whole batches.
func (fl flow) run(b *testing.B, f Factory) {
	calls := (b.N + fl.batch - 1) / fl.batch
	msgs := calls * fl.batch
	nkeys := fl.keys
	if fl.stall {
		nkeys++
	}
	d := f(nkeys)

	rs := make([]reader, nkeys)
	ps := fl.plan(calls, rs)

	// Readers subscribe before anyone publishes.
	seqs := make([]iter.Seq[sse.Event], nkeys)
	for k := range seqs {
		seqs[k] = d.Open(k)
	}
	readersDone := startReaders(fl.keys, func(k int) { drain(&rs[k], seqs[k]) })

	// W7: the stalled key fills up first.
	var st *stalled
	if fl.stall {
		st = startStall(d, fl.keys, fl.producers, &rs[fl.keys], seqs[fl.keys])
	}

	start := make(chan struct{})
	var producing sync.WaitGroup
	for p := range ps {
		producing.Go(func() {
			<-start
			ps[p].err = ps[p].send(d, fl.batch)
		})
	}
	var closeErr error // written by the closer goroutine, read after closed
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		producing.Wait()
		for k := range fl.keys {
			if err := d.Close(k); err != nil && closeErr == nil {
				closeErr = err
			}
		}
	}()

	runtime.GC()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	b.ResetTimer()
	t0 := time.Now()
	cpu0, _ := cpuTime()
	close(start)
	blocked := false
	if st == nil {
		<-readersDone
	} else {
		blocked = watch(readersDone, rs[:fl.keys], st.release)
	}
	elapsed := time.Since(t0)
	cpu1, cpuOK := cpuTime()
	b.StopTimer()
	runtime.ReadMemStats(&ms1)

	var errs []error
	if st != nil {
		errs = append(errs, st.finish(d))
	}
	<-closed
	errs = append(errs, closeErr)
	for p := range ps {
		errs = append(errs, ps[p].err)
	}
	for k := range rs {
		errs = append(errs, rs[k].verify(k))
	}
	errs = append(errs, d.Shutdown())
	if err := errors.Join(errs...); err != nil {
		b.Fatal(err)
	}

	report(b, msgs, elapsed, &ms0, &ms1)
	if cpuOK {
		// The CPU time of every goroutine, the harness's included, per
		// message: on a machine that other work loads, it varies much
		// less than the wall time, so that an A/B comparison of one design
		// shows a change that ns/msg drowns in noise.
		b.ReportMetric(float64((cpu1-cpu0).Nanoseconds())/float64(msgs), "cpu-ns/msg")
	}
	if fl.batch > 1 {
		b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/float64(calls), "allocs/batch")
	}
	if fl.stall {
		hol := 0.0
		if blocked {
			hol = 1
		}
		b.ReportMetric(hol, "hol-blocked")
	}
}

// plan returns the producers' plans for calls calls in all, and sets each
// key's reader's expected counts.
func (fl flow) plan(calls int, rs []reader) []producer {
	ps := make([]producer, fl.producers)
	for p := range ps {
		ps[p] = producer{id: p, calls: calls / fl.producers}
		if p < calls%fl.producers {
			ps[p].calls++
		}
		if fl.keys == 1 {
			ps[p].keys = []int{0}
		} else {
			for k := p; k < fl.keys; k += fl.producers {
				ps[p].keys = append(ps[p].keys, k)
			}
		}
		n := len(ps[p].keys)
		for i, k := range ps[p].keys {
			c := ps[p].calls / n
			if i < ps[p].calls%n {
				c++
			}
			rs[k].want[p] += c * fl.batch
		}
	}
	return ps
}

// send makes the producer's calls.
func (p *producer) send(d Design, batch int) error {
	n := len(p.keys)
	var buf []sse.Event
	if batch > 1 {
		buf = make([]sse.Event, batch)
	}
	i, round := 0, 0 // p.keys[i] gets its round-th call
	for range p.calls {
		k := p.keys[i]
		var err error
		if batch == 1 {
			err = d.Send(k, message(p.id, round))
		} else {
			for j := range buf {
				buf[j] = message(p.id, round*batch+j)
			}
			err = d.SendBatch(k, buf)
		}
		if err != nil {
			return err
		}
		if i++; i == n {
			i, round = 0, round+1
		}
	}
	return nil
}

// drain is a key's reader goroutine.
func drain(r *reader, seq iter.Seq[sse.Event]) {
	for ev := range seq {
		r.check(ev)
	}
	r.end()
}

// watch waits for done while watching the readers' progress; when none has
// moved for stallPatience, it closes release and reports that it did.
func watch(done <-chan struct{}, rs []reader, release chan struct{}) (blocked bool) {
	tick := time.NewTicker(stallPatience / 10)
	defer tick.Stop()
	last, since := int64(-1), time.Now()
	for {
		select {
		case <-done:
			return blocked
		case now := <-tick.C:
			if blocked {
				continue
			}
			var sum int64
			for k := range rs {
				sum += rs[k].seen.Load()
			}
			if sum != last {
				last, since = sum, now
			} else if now.Sub(since) >= stallPatience {
				close(release)
				blocked = true
			}
		}
	}
}

// stalled is W7's extra key: its producer and its stalled reader.
type stalled struct {
	key     int
	release chan struct{} // closed by watch or finish, in the benchmark's goroutine, to let the stalled reader read
	sent    chan struct{} // closed when the stall producer has returned
	err     error         // the stall producer's error; read after sent is closed
	read    chan struct{} // closed when the stalled reader has ended
}

// startStall starts the stalled key's producer and reader and returns once
// the producer has sent everything or has stopped getting anywhere.
func startStall(d Design, key, id int, r *reader, seq iter.Seq[sse.Event]) *stalled {
	st := &stalled{key: key, release: make(chan struct{}), sent: make(chan struct{}), read: make(chan struct{})}
	r.want[id] = stallEvents
	go func() {
		defer close(st.read)
		<-st.release
		drain(r, seq)
	}()
	var count atomic.Int64
	go func() {
		defer close(st.sent)
		for i := range stallEvents {
			if st.err = d.Send(key, message(id, i)); st.err != nil {
				return
			}
			count.Add(1)
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	last := int64(-1)
	for {
		select {
		case <-st.sent:
			return st
		case <-tick.C:
			n := count.Load()
			if n == last {
				return st // blocked on the stalled key
			}
			last = n
		}
	}
}

// finish unstalls the key if need be, lets its producer end, closes it and
// waits until its reader has ended.
func (st *stalled) finish(d Design) error {
	select {
	case <-st.release:
	default:
		close(st.release)
	}
	<-st.sent
	err := st.err
	if cerr := d.Close(st.key); err == nil {
		err = cerr
	}
	<-st.read
	return err
}

// report reports the per-message metrics.
func report(b *testing.B, msgs int, elapsed time.Duration, ms0, ms1 *runtime.MemStats) {
	n := float64(msgs)
	b.ReportMetric(float64(elapsed.Nanoseconds())/n, "ns/msg")
	b.ReportMetric(n/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/n, "B/msg")
	b.ReportMetric(float64(ms1.Mallocs-ms0.Mallocs)/n, "allocs/msg")
}

// startReaders runs read(0) to read(n-1), each in a goroutine of its own,
// and returns once they have all started, so that a clock started next
// does not count starting them. The channel it returns is closed when they
// have all returned.
func startReaders(n int, read func(i int)) <-chan struct{} {
	var readers, ready sync.WaitGroup
	ready.Add(n)
	for i := range n {
		readers.Go(func() {
			ready.Done()
			read(i)
		})
	}
	ready.Wait()
	done := make(chan struct{})
	go func() {
		readers.Wait()
		close(done)
	}()
	return done
}
