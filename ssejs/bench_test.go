package ssejs_test

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// inFlight is how many publishes are outstanding at once: 256 calls of
// the broker's, each waiting for its acknowledgement, or 256 raw async
// publishes.
const inFlight = 256

// BenchmarkDelivery measures enqueue-to-reader throughput and latency
// (p50, p99) through the broker, against "raw", the baseline, frozen: the
// consumer layout the broker had before its feed (a Limits stream with a
// subject per key, an ordered in-memory consumer per reader) driven
// directly with the jetstream package, async publishes with 256 in
// flight (a publisher stalled by them waits, up to a minute), acks
// awaited. b.N is the number of events, spread over the keys round robin;
// one reader per key. The broker's readers are fed by the process's one
// consumer (see feed), its producer publishes 256 calls at a time.
// "publish" is the broker's producer alone, with no reader: the rate
// that caps the broker's delivery (events/s, and each call's time as
// p50 and p99).
func BenchmarkDelivery(b *testing.B) {
	srv := startServer(b)
	for _, mode := range []sse.Mode{sse.FanOut, sse.Queue} {
		for _, keys := range []int{1, 1000} {
			for _, impl := range []string{"raw", "ssejs", "publish"} {
				b.Run(fmt.Sprintf("mode=%s/keys=%d/impl=%s", mode, keys, impl), func(b *testing.B) {
					if impl == "raw" {
						benchRaw(b, srv.ClientURL(), keys)
					} else {
						benchBroker(b, srv.ClientURL(), mode, keys, impl == "ssejs")
					}
				})
			}
		}
	}
}

// latencies collects each event's latency, from its publish to its
// reader.
type latencies struct {
	mu   sync.Mutex
	ns   []int64
	got  atomic.Int64
	done chan struct{}
	want int64
}

func newLatencies(want int) *latencies {
	return &latencies{done: make(chan struct{}), want: int64(want), ns: make([]int64, 0, want)}
}

func (l *latencies) add(batch []int64) {
	if len(batch) == 0 {
		return
	}
	l.mu.Lock()
	l.ns = append(l.ns, batch...)
	l.mu.Unlock()
	if l.got.Add(int64(len(batch))) == l.want {
		close(l.done)
	}
}

func (l *latencies) report(b *testing.B, elapsed, cpu time.Duration) {
	slices.Sort(l.ns)
	q := func(p float64) float64 { return float64(l.ns[int(p*float64(len(l.ns)-1))]) / 1e3 }
	b.ReportMetric(float64(len(l.ns))/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(l.ns)), "cpu-µs/event")
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(0, "ns/op")
}

// cpuTime returns the CPU time the process has used, user and system: the
// NATS server's, which runs in it, included. Per event, it is what a
// layout costs the machine, which other processes' load changes less than
// the rate.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func stamp() string { return strconv.FormatInt(time.Now().UnixNano(), 10) }

func since(data string) int64 {
	t, _ := strconv.ParseInt(data, 10, 64)
	return time.Now().UnixNano() - t
}

func benchBroker(b *testing.B, natsURL string, mode sse.Mode, keys int, read bool) {
	name := uniqueName()
	_, jsR := connect(b, natsURL)
	_, jsP := connect(b, natsURL)
	reader := newBroker[string](b, jsR, ssejs.WithName(name), ssejs.WithMode(mode))
	producer := newBroker[string](b, jsP, ssejs.WithName(name), ssejs.WithMode(mode))
	b.Cleanup(func() { // each run starts on an empty server
		ctx := context.Background()
		jsP.DeleteStream(ctx, "SSE_"+name)
		if mode == sse.Queue {
			jsP.DeleteKeyValue(ctx, "SSE_"+name+"_keys")
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lat := newLatencies(b.N)
	var readers sync.WaitGroup
	for k := range keys {
		if !read {
			break
		}
		sub, err := reader.Subscribe(ctx, "k"+strconv.Itoa(k), sse.SubscribeRequest{})
		if err != nil {
			b.Fatal(err)
		}
		readers.Go(func() {
			defer sub.Close()
			var buf []sse.Event
			var ns []int64
			for {
				evs, _, err := sub.Next(ctx, buf, nil, 32<<10)
				ns = ns[:0]
				for _, ev := range evs {
					ns = append(ns, since(ev.Data))
				}
				lat.add(ns)
				if err != nil {
					return
				}
				buf = evs
			}
		})
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var next atomic.Int64
	var producers sync.WaitGroup
	for range inFlight {
		producers.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				t0 := stamp()
				if err := producer.Enqueue(ctx, "k"+strconv.Itoa(int(i)%keys), t0); err != nil {
					b.Error(err)
					return
				}
				if !read {
					lat.add([]int64{since(t0)})
				}
			}
		})
	}
	producers.Wait()
	select {
	case <-lat.done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("readers got %d of %d events", lat.got.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cancel()
	readers.Wait()
	lat.report(b, elapsed, cpuTime()-cpu0)
}

func benchRaw(b *testing.B, natsURL string, keys int) {
	name := uniqueName()
	_, jsR := connect(b, natsURL)
	_, jsP := connect(b, natsURL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := "RAW_" + name
	prefix := "raw." + name + "."
	_, err := jsP.CreateStream(ctx, jetstream.StreamConfig{
		Name: stream, Subjects: []string{prefix + ">"}, Storage: jetstream.FileStorage,
		MaxMsgsPerSubject: ssejs.DefaultHistoryMessages + 1, MaxAge: time.Hour, Duplicates: 10 * time.Minute, AllowDirect: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer jsP.DeleteStream(context.Background(), stream)
	rs, err := jsR.Stream(ctx, stream)
	if err != nil {
		b.Fatal(err)
	}
	lat := newLatencies(b.N)
	var ccs []jetstream.ConsumeContext
	for k := range keys {
		c, err := rs.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + "k" + strconv.Itoa(k)}})
		if err != nil {
			b.Fatal(err)
		}
		cc, err := c.Consume(func(m jetstream.Msg) { lat.add([]int64{since(string(m.Data()))}) }, jetstream.PullMaxMessages(feedBufferForBench))
		if err != nil {
			b.Fatal(err)
		}
		ccs = append(ccs, cc)
	}
	defer func() {
		for _, cc := range ccs {
			cc.Stop()
		}
	}()
	js, err := jetstream.New(jsP.Conn(), jetstream.WithPublishAsyncMaxPending(inFlight))
	if err != nil {
		b.Fatal(err)
	}
	subjects := make([]string, keys)
	for k := range subjects {
		subjects[k] = prefix + "k" + strconv.Itoa(k)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	for i := range b.N {
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: subjects[i%keys], Data: []byte(stamp())}, jetstream.WithMsgID(nuidLike(i)), jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("acks did not come")
	}
	select {
	case <-lat.done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("readers got %d of %d events", lat.got.Load(), b.N)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	lat.report(b, elapsed, cpuTime()-cpu0)
}

// feedBufferForBench is the broker's consumer batch, for the raw readers.
const feedBufferForBench = 256

var runID = strconv.FormatInt(time.Now().UnixNano(), 36)

// nuidLike is a unique message ID, as the broker sets one on every
// publish, so that raw pays for the duplicate window too.
func nuidLike(i int) string { return runID + strconv.Itoa(i) }

var scaleKeys = flag.Int("ssejs.keys", 2000, "BenchmarkScale: how many keys to create (the issue's figure is 100000)")

// BenchmarkScale creates -ssejs.keys keys of 10 events each (a FanOut
// broker, 256 calls in flight), with 2,000 of them read by attached
// readers, on a NATS server in a child process that syncs every write
// (as the durability tests' does); it reports the server's
// resident memory, the store's bytes per key, and the events' throughput:
// while the keys are created (events/s), and then of 10 more events to
// each attached key, from publish to reader (attached-events/s).
func BenchmarkScale(b *testing.B) {
	const perKey, attached = 10, 2000
	for range b.N {
		dir, port := b.TempDir(), freePortB(b)
		cmd, err := child(dir, port)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		natsURL := "nats://127.0.0.1:" + strconv.Itoa(port)
		_, jsR := connect(b, natsURL)
		_, jsP := connect(b, natsURL)
		name := uniqueName()
		reader := newBroker[int](b, jsR, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
		producer := newBroker[int](b, jsP, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
		ctx, cancel := context.WithCancel(context.Background())
		keys := *scaleKeys
		nread := min(attached, keys)
		var got atomic.Int64
		var doneMu sync.Mutex // done is replaced between the phases
		want := int64(nread * perKey)
		done := make(chan struct{})
		var readers sync.WaitGroup
		for k := range nread {
			sub, err := reader.Subscribe(ctx, k, sse.SubscribeRequest{})
			if err != nil {
				b.Fatal(err)
			}
			readers.Go(func() {
				defer sub.Close()
				var buf []sse.Event
				for {
					evs, _, err := sub.Next(ctx, buf, nil, 32<<10)
					if got.Add(int64(len(evs))) == want && len(evs) > 0 {
						doneMu.Lock()
						close(done)
						doneMu.Unlock()
					}
					if err != nil {
						return
					}
					buf = evs
				}
			})
		}
		attachedRSS := rss(cmd.Process.Pid)
		start := time.Now()
		var next atomic.Int64
		var producers sync.WaitGroup
		for range inFlight {
			producers.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= keys*perKey {
						return
					}
					if err := producer.Enqueue(ctx, i%keys, strconv.Itoa(i/keys)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		producers.Wait()
		published := time.Since(start)
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("readers got %d of %d events", got.Load(), want)
		}
		// Then 10 more events to each attached key, as fast as they go:
		// the rate at which attached readers get events.
		doneMu.Lock()
		got.Store(0)
		done = make(chan struct{})
		doneMu.Unlock()
		start = time.Now()
		next.Store(0)
		for range inFlight {
			producers.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= nread*perKey {
						return
					}
					if err := producer.Enqueue(ctx, i%nread, "more"); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		producers.Wait()
		select {
		case <-done:
		case <-time.After(5 * time.Minute):
			b.Fatalf("readers got %d of %d events", got.Load(), want)
		}
		delivered := time.Since(start)
		info, err := jsP.Stream(ctx, "SSE_"+name)
		if err != nil {
			b.Fatal(err)
		}
		st := info.CachedInfo().State
		b.ReportMetric(float64(keys*perKey)/published.Seconds(), "events/s")
		b.ReportMetric(float64(want)/delivered.Seconds(), "attached-events/s")
		b.ReportMetric(float64(rss(cmd.Process.Pid))/(1<<20), "server-RSS-MiB")
		b.ReportMetric(float64(attachedRSS)/(1<<20), "idle-RSS-MiB")
		b.ReportMetric(float64(st.Bytes)/float64(keys), "stored-B/key")
		b.ReportMetric(float64(dirSize(dir))/float64(keys), "disk-B/key")
		b.ReportMetric(0, "ns/op")
		cancel()
		readers.Wait()
	}
}

func freePortB(b *testing.B) int { return freePortOf(b) }

// rss returns a process's resident set size, in bytes.
func rss(pid int) int64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// BenchmarkHotKey measures one FanOut key read by 2,000 attached readers
// in one process (as 2,000 SSE connections to one replica would be): the
// time to attach them, and the rate at which 100 events reach all of
// them (deliveries/s, one per event per reader).
func BenchmarkHotKey(b *testing.B) {
	srv := startServer(b)
	const readers, events = 2000, 100
	for range b.N {
		name := uniqueName()
		_, jsR := connect(b, srv.ClientURL())
		_, jsP := connect(b, srv.ClientURL())
		reader := newBroker[string](b, jsR, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
		producer := newBroker[string](b, jsP, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
		ctx, cancel := context.WithCancel(context.Background())
		var got atomic.Int64
		done := make(chan struct{})
		var wg sync.WaitGroup
		t0 := time.Now()
		for range readers {
			sub, err := reader.Subscribe(ctx, "hot", sse.SubscribeRequest{})
			if err != nil {
				b.Fatal(err)
			}
			wg.Go(func() {
				defer sub.Close()
				var buf []sse.Event
				for {
					evs, _, err := sub.Next(ctx, buf, nil, 32<<10)
					if got.Add(int64(len(evs))) == readers*events+readers && len(evs) > 0 {
						close(done)
					}
					if err != nil {
						return
					}
					buf = evs
				}
			})
		}
		b.ReportMetric(time.Since(t0).Seconds(), "attach-s")
		start := time.Now()
		producer.Enqueue(ctx, "hot", "0")
		for i := 1; i <= events; i++ {
			producer.Enqueue(ctx, "hot", strconv.Itoa(i))
		}
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			b.Fatalf("got %d", got.Load())
		}
		b.ReportMetric(float64(readers*events)/time.Since(start).Seconds(), "deliveries/s")
		cancel()
		wg.Wait()
	}
}

// BenchmarkContention measures calls/s on one key from P producer
// processes (each a broker on its own NATS connection), each making calls
// one after another: every call is a compare and set on the key's last
// sequence, which the other processes' calls race. b.N is the number of
// calls, spread over the processes. It reports calls/s, the calls that
// failed, and the attempts per call (the compare and sets the server
// refused, plus one).
func BenchmarkContention(b *testing.B) {
	srv := startServer(b)
	for _, procs := range []int{1, 2, 4, 8, 32} {
		b.Run(fmt.Sprintf("P=%d", procs), func(b *testing.B) {
			name := uniqueName()
			brokers := make([]*ssejs.Broker[string], procs)
			for i := range brokers {
				_, js := connect(b, srv.ClientURL())
				brokers[i] = newBroker[string](b, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut), ssejs.WithHistoryMessages(100))
			}
			var failed atomic.Int64
			var next atomic.Int64
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for _, p := range brokers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						if err := p.Enqueue(context.Background(), "k", "x"); err != nil {
							failed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "calls/s")
			b.ReportMetric(float64(failed.Load()), "failed")
			var refused uint64
			for _, p := range brokers {
				refused += ssejs.Refused(p)
			}
			b.ReportMetric(1+float64(refused)/float64(b.N), "attempts/call")
		})
	}
}

// BenchmarkReplicaTraffic measures what the feed costs in traffic: the
// bytes NATS delivers to each of R replicas (its connection's bytes in)
// while each reads 1/R of 1,000 FanOut keys, against the bytes of the
// messages of the keys it serves (the stream's bytes, split evenly: the
// keys get the same events). The feed ships every key's messages to every
// replica that reads some key, so the ratio is about R.
func BenchmarkReplicaTraffic(b *testing.B) {
	srv := startServer(b)
	const keys, perKey = 1000, 20
	for _, replicas := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("replicas=%d", replicas), func(b *testing.B) {
			for range b.N {
				name := uniqueName()
				opts := []ssejs.Option{ssejs.WithName(name), ssejs.WithMode(sse.FanOut)}
				_, jsP := connect(b, srv.ClientURL())
				producer := newBroker[int](b, jsP, opts...)
				ctx, cancel := context.WithCancel(context.Background())
				for k := range keys {
					if err := producer.Open(ctx, k); err != nil {
						b.Fatal(err)
					}
				}
				conns := make([]*nats.Conn, replicas)
				var got atomic.Int64
				var readers sync.WaitGroup
				for r := range replicas {
					var js jetstream.JetStream
					conns[r], js = connect(b, srv.ClientURL())
					reader := newBroker[int](b, js, opts...)
					for k := r; k < keys; k += replicas {
						sub, err := reader.Subscribe(ctx, k, sse.SubscribeRequest{Resume: true, LastID: 0})
						if err != nil {
							b.Fatal(err)
						}
						readers.Go(func() {
							defer sub.Close()
							for {
								evs, _, err := sub.Next(ctx, nil, nil, 1<<20)
								got.Add(int64(len(evs)))
								if err != nil {
									return
								}
							}
						})
					}
				}
				stream, err := jsP.Stream(ctx, "SSE_"+name)
				if err != nil {
					b.Fatal(err)
				}
				info, err := stream.Info(ctx)
				if err != nil {
					b.Fatal(err)
				}
				bytes0 := info.State.Bytes
				in0 := make([]uint64, replicas)
				for r, nc := range conns {
					in0[r] = nc.Stats().InBytes
				}
				var next atomic.Int64
				var producers sync.WaitGroup
				for range inFlight {
					producers.Go(func() {
						for i := int(next.Add(1) - 1); i < keys*perKey; i = int(next.Add(1) - 1) {
							if err := producer.Enqueue(ctx, i%keys, strings.Repeat("x", 100)); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				producers.Wait()
				deadline := time.Now().Add(2 * time.Minute)
				for got.Load() < keys*perKey {
					if time.Now().After(deadline) {
						b.Fatalf("readers got %d of %d events", got.Load(), keys*perKey)
					}
					time.Sleep(10 * time.Millisecond)
				}
				if info, err = stream.Info(ctx); err != nil {
					b.Fatal(err)
				}
				served := float64(info.State.Bytes-bytes0) / float64(replicas)
				var in float64
				for r, nc := range conns {
					in += float64(nc.Stats().InBytes - in0[r])
				}
				in /= float64(replicas)
				b.ReportMetric(in/served, "in/served")
				b.ReportMetric(in/(1<<20), "in-MiB/replica")
				b.ReportMetric(served/(1<<20), "served-MiB/replica")
				b.ReportMetric(0, "ns/op")
				cancel()
				readers.Wait()
			}
		})
	}
}
