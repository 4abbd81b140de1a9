package workload

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// idleBudget bounds the memory W6 lets a design take: a design whose keys
// cost tens of kilobytes is measured over fewer keys than -idlekeys, so that
// it fits in a small machine's memory. The cost per key does not depend on
// the count.
const idleBudget = 6 << 30

// W6 is memory: the cost of an open idle key at the design's settings. It
// opens -idlekeys keys (default 1,000,000) without reading from them or
// sending to them, and reports the live heap they add (runtime.GC, then
// HeapAlloc deltas) as B/key, the goroutine stacks they add (StackInuse) as
// stack-B/key, goroutines/key, and the number of keys it measured over as
// keys: fewer than -idlekeys when that many would take more than 6 GiB,
// judged from the first 1,000. It measures once, whatever b.N, and
// suppresses ns/op. It is skipped under -short and under the race detector.
func W6(b *testing.B, f Factory) {
	if testing.Short() {
		b.Skip("W6 allocates much memory; skipped under -short")
	}
	if raceEnabled {
		b.Skip("W6 is skipped under the race detector, whose shadow memory would swamp the figures")
	}
	n := *idleKeys
	if n <= 0 {
		b.Fatalf("-idlekeys %d: want a positive number", n)
	}
	d := f(n)
	var ms0, ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()
	used := func() float64 {
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapAlloc) - float64(ms0.HeapAlloc) + float64(ms.StackInuse) - float64(ms0.StackInuse)
	}
	const sample = 1000
	k := 0
	for ; k < min(n, sample); k++ {
		_ = d.Open(k) // the reader loop is garbage; the key's queue is not
	}
	if perKey := used() / float64(k); perKey*float64(n) > idleBudget {
		n = max(k, int(idleBudget/perKey))
	}
	for ; k < n; k++ {
		_ = d.Open(k)
	}
	used()
	g1 := runtime.NumGoroutine()
	runtime.KeepAlive(d)
	if err := d.Shutdown(); err != nil {
		b.Fatal(err)
	}
	keys := float64(n)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric((float64(ms.HeapAlloc)-float64(ms0.HeapAlloc))/keys, "B/key")
	b.ReportMetric((float64(ms.StackInuse)-float64(ms0.StackInuse))/keys, "stack-B/key")
	b.ReportMetric(float64(g1-g0)/keys, "goroutines/key")
	b.ReportMetric(keys, "keys")
	debug.FreeOSMemory() // so that the next design starts from untouched pages
}
