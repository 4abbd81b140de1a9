package workload

import (
	"errors"
	"iter"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

// W5 is churn: b.N keys, one after another, each created, sent 10 messages,
// closed and drained. One goroutine opens each key, hands its reader loop to
// one of 128 reader goroutines, sends it 10 messages and closes it; the
// reader drains it. A fresh design serves each round of 10,000 keys (keys 0
// to 9,999), so that keys the design remembers after Close (the Broker's
// retention) pile up to 10,000 at most; making and shutting down the designs
// are not timed. b.N is the number of keys: ns/op is ns/key. It reports
// ns/key, B/key, allocs/key, keys/s, and ns/msg counting 10 messages per key.
func W5(b *testing.B, f Factory) {
	type job struct {
		key int
		seq iter.Seq[sse.Event]
	}
	all := make([]reader, min(b.N, churnKeys))
	var elapsed time.Duration
	var bytes, allocs uint64
	b.StopTimer()
	b.ResetTimer()
	for done := 0; done < b.N; done += len(all) {
		rs := all[:min(len(all), b.N-done)] // this round's keys
		for k := range rs {
			rs[k].reset()
			rs[k].want[0] = churnEvents
		}
		d := f(len(rs))
		jobs := make(chan job)
		var readers sync.WaitGroup
		for range churnActive {
			readers.Go(func() {
				for j := range jobs {
					drain(&rs[j.key], j.seq)
				}
			})
		}

		runtime.GC()
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		b.StartTimer()
		t0 := time.Now()
		var err error
		for k := 0; k < len(rs) && err == nil; k++ {
			jobs <- job{k, d.Open(k)}
			for i := 0; i < churnEvents && err == nil; i++ {
				err = d.Send(k, message(0, i))
			}
			if cerr := d.Close(k); err == nil {
				err = cerr
			}
		}
		close(jobs)
		readers.Wait()
		elapsed += time.Since(t0)
		b.StopTimer()
		runtime.ReadMemStats(&ms1)
		bytes += ms1.TotalAlloc - ms0.TotalAlloc
		allocs += ms1.Mallocs - ms0.Mallocs

		errs := []error{err}
		for k := range rs {
			errs = append(errs, rs[k].verify(k))
		}
		errs = append(errs, d.Shutdown())
		if err := errors.Join(errs...); err != nil {
			b.Fatal(err)
		}
	}
	keys := float64(b.N)
	b.ReportMetric(float64(elapsed.Nanoseconds())/keys, "ns/key")
	b.ReportMetric(float64(elapsed.Nanoseconds())/(keys*churnEvents), "ns/msg")
	b.ReportMetric(keys/elapsed.Seconds(), "keys/s")
	b.ReportMetric(float64(bytes)/keys, "B/key")
	b.ReportMetric(float64(allocs)/keys, "allocs/key")
}
