package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

var (
	densityStreams = flag.Int("streams", 500, "idle streams BenchmarkDensity opens on each server, at most what RLIMIT_NOFILE allows")
	densityServers = flag.String("density", "bare,queue,fanout,queue-open,fanout-open", "the servers BenchmarkDensity measures, in order (see densityServersAll)")
	densityProfile = flag.String("densityprofile", "", "a directory where BenchmarkDensity writes a heap profile of each server with its streams open (heap-SERVER.pprof)")
)

// densityClientEnv, set in the environment of a re-executed test binary,
// makes TestDensityClient the client process of BenchmarkDensity: its
// value is the server's address and the first octets of the client's
// local addresses, "ADDR PREFIX".
const densityClientEnv = "SSE_BENCH_DENSITY_CLIENT"

// densityServer is a server BenchmarkDensity measures. new returns its
// http.Handler for n streams on keys "0" to "n-1", a way to publish one
// event with the given data to a key (nil for the bare handler) and a way
// to stop what it started.
type densityServer struct {
	name string
	new  func(n int) (h http.Handler, publish func(key, data string) error, stop func() error)
}

// densityServersAll are the servers of BenchmarkDensity, as sub-benchmarks
// "server=NAME":
//
//	bare         a bare streaming net/http handler: it sets the headers the library sets, writes them, flushes, and waits for the request's context to end; the least a server can hold per stream
//	queue        sse.Handler on sse.New (Queue mode), default options (heartbeat every 15 s, write timeout 30 s); each stream on a key of its own, which the request creates: the stream's cost and its key's
//	fanout       the same with sse.WithMode(sse.FanOut)
//	queue-open   queue, with every key opened (Broker.Open) before the first stream: the stream's cost alone, as for a job's key that the server creates and a client follows
//	fanout-open  the same in FanOut mode
var densityServersAll = []densityServer{
	{"bare", func(int) (http.Handler, func(string, string) error, func() error) {
		return http.HandlerFunc(bareStream), nil, func() error { return nil }
	}},
	{"queue", func(int) (http.Handler, func(string, string) error, func() error) {
		return densityBroker(0)
	}},
	{"fanout", func(int) (http.Handler, func(string, string) error, func() error) {
		return densityBroker(0, sse.WithMode(sse.FanOut))
	}},
	{"queue-open", func(n int) (http.Handler, func(string, string) error, func() error) {
		return densityBroker(n)
	}},
	{"fanout-open", func(n int) (http.Handler, func(string, string) error, func() error) {
		return densityBroker(n, sse.WithMode(sse.FanOut))
	}},
}

// bareStream is the baseline: a streaming handler that holds nothing of its
// own.
func bareStream(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache, no-transform")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	<-r.Context().Done()
}

// densityBroker is the library's server: a Broker with opts, keys "0" to
// "open-1" opened, and its Handler with the default options.
func densityBroker(open int, opts ...sse.Option) (http.Handler, func(string, string) error, func() error) {
	b := sse.New[string](opts...)
	for k := range open {
		if err := b.Open(context.Background(), strconv.Itoa(k)); err != nil {
			panic(err)
		}
	}
	key := func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil }
	publish := func(key, data string) error {
		return b.Publish(context.Background(), key, sse.Event{Data: data})
	}
	return sse.Handler(b, key), publish, func() error { return b.Shutdown(context.Background()) }
}

// BenchmarkDensity measures what an idle SSE stream costs a server. Each
// server (-density, in order; see densityServersAll) runs in a process of
// its own, and its clients in another: this test binary, run again as
// TestDensityServer, which runs it again as TestDensityClient. A fresh
// process for each server puts them on an equal footing: the goroutines of
// a process that ran another server before would reuse that server's dead
// goroutines, which start with the runtime's adaptive stack size (see
// below), while a fresh process's start with 2 KiB.
//
// The server process opens -streams streams, each on a key of its own, in
// four steps, and after each step reads its memory (two runtime.GC, then
// runtime.ReadMemStats). It reports, per stream, the slope of a line
// fitted through the four steps:
//
//	heap-B/stream        heap in use (HeapInuse)
//	B/stream             heap in use and goroutine stacks (HeapInuse + StackInuse)
//	goroutines/stream    goroutines
//	stack-used-B/stream  the part of those stacks in use (/gc/scan/stack:bytes)
//
// and, for the library's servers, when bare ran in the same invocation,
// what they add to it: extra-heap-B/stream and extra-B/stream. streams is
// how many it opened: fewer than -streams when the descriptor limit
// (raised to its hard limit in every process) does not allow that many.
// heap-MiB is the heap in use with every stream open.
//
// stack-used-B/stream tells how the runtime sizes the stack of a goroutine
// that reuses a dead one (one that is new starts with 2 KiB): the average
// stack in use at the last GC, plus 928 bytes, rounded up to a power of
// two (unless GODEBUG=adaptivestackstart=0). With net/http's two
// goroutines per stream (the handler's, and a background reader), streams
// that use more than 2,240 bytes of stack in all make that 4 KiB.
//
// Then, for the library's servers, a burst: one event to each key, from one
// goroutine, each with the time it was published as its data. The client
// reports when each arrived: p50-ms, p99-ms and max-ms of the delivery
// times (publish call to the client's read), and burst-ms, from the first
// publish to the last arrival.
//
// The client spreads its connections over loopback addresses, 20,000 to an
// address, as one address has about 28,000 ephemeral ports. It measures
// once per run, whatever b.N: run it with -benchtime 1x. It is skipped
// under -short and under the race detector.
func BenchmarkDensity(b *testing.B) {
	if testing.Short() {
		b.Skip("BenchmarkDensity opens thousands of connections; skipped under -short")
	}
	if raceEnabled {
		b.Skip("BenchmarkDensity is skipped under the race detector: its shadow memory would swamp the figures, and it allows 8,128 goroutines")
	}
	limit, hard := raiseFileLimit()
	n := *densityStreams
	if most := limit - 200; n > most {
		b.Logf("-streams %d: RLIMIT_NOFILE is %d (hard limit %d), so %d streams", n, limit, hard, most)
		n = most
	}
	if n < 4 {
		b.Fatalf("-streams %d: want at least 4", n)
	}
	var bare *densityResult
	for j, name := range strings.Split(*densityServers, ",") {
		if !slices.ContainsFunc(densityServersAll, func(s densityServer) bool { return s.name == name }) {
			b.Fatalf("-density: unknown server %q", name)
		}
		b.Run("server="+name, func(b *testing.B) {
			f := runDensityServer(b, name, n, 1+j)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(f.Streams), "streams")
			b.ReportMetric(f.Heap, "heap-B/stream")
			b.ReportMetric(f.Total, "B/stream")
			b.ReportMetric(f.Goroutines, "goroutines/stream")
			b.ReportMetric(f.StackUsed, "stack-used-B/stream")
			b.ReportMetric(f.HeapMiB, "heap-MiB")
			if f.Burst {
				b.ReportMetric(f.P50.Seconds()*1e3, "p50-ms")
				b.ReportMetric(f.P99.Seconds()*1e3, "p99-ms")
				b.ReportMetric(f.Max.Seconds()*1e3, "max-ms")
				b.ReportMetric(f.BurstTime.Seconds()*1e3, "burst-ms")
			}
			if name == "bare" {
				bare = f
			} else if bare != nil && bare.Streams == f.Streams {
				b.ReportMetric(f.Heap-bare.Heap, "extra-heap-B/stream")
				b.ReportMetric(f.Total-bare.Total, "extra-B/stream")
			}
		})
	}
}

// densityResult is what a server process measured: its slopes, per
// stream, and its burst.
type densityResult struct {
	Streams                            int
	Heap, Total, StackUsed, Goroutines float64
	HeapMiB                            float64
	Burst                              bool
	P50, P99, Max, BurstTime           time.Duration
}

// densityServerEnv, set in the environment of a re-executed test binary,
// makes TestDensityServer a server process of BenchmarkDensity: its value
// is "SERVER STREAMS BLOCK". densityProfileEnv is -densityprofile.
const (
	densityServerEnv  = "SSE_BENCH_DENSITY_SERVER"
	densityProfileEnv = "SSE_BENCH_DENSITY_PROFILE"
)

// densityResultPrefix starts the line on which a server process writes its
// result, as JSON.
const densityResultPrefix = "density-server: "

// runDensityServer runs server in a process of its own, with n streams
// from a client process whose local addresses are 127.0.block.*, and
// returns what it measured.
func runDensityServer(b *testing.B, server string, n, block int) *densityResult {
	cmd := exec.Command(os.Args[0], "-test.run=^TestDensityServer$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("%s=%s %d %d", densityServerEnv, server, n, block),
		densityProfileEnv+"="+*densityProfile)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var f *densityResult
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, densityResultPrefix); ok {
			f = new(densityResult)
			if err := json.Unmarshal([]byte(v), f); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err != nil || f == nil {
		b.Fatalf("server process: %v\n%s", err, out)
	}
	return f
}

// TestDensityServer is a server process of BenchmarkDensity; without its
// environment variable it is skipped. It writes its result on stdout.
func TestDensityServer(t *testing.T) {
	env := os.Getenv(densityServerEnv)
	if env == "" {
		t.Skip("a server process of BenchmarkDensity: run by it")
	}
	var server string
	var n, block int
	if _, err := fmt.Sscan(env, &server, &n, &block); err != nil {
		t.Fatalf("%s=%q: %v", densityServerEnv, env, err)
	}
	profile := os.Getenv(densityProfileEnv)
	if profile != "" {
		runtime.MemProfileRate = 1 // every allocation, so that small ones show
	}
	i := slices.IndexFunc(densityServersAll, func(s densityServer) bool { return s.name == server })
	if i < 0 {
		t.Fatalf("unknown server %q", server)
	}
	raiseFileLimit()
	f := measureDensity(t, densityServersAll[i], n, block, profile)
	v, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("%s%s\n", densityResultPrefix, v)
}

// measureDensity runs s with n streams from a client process whose local
// addresses are 127.0.block.*, and returns its figures; with a profile
// directory, it writes its heap profile there with every stream open.
func measureDensity(t testing.TB, s densityServer, n, block int, profile string) *densityResult {
	h, publish, stop := s.new(n)
	var active atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			active.Add(1)
			defer active.Add(-1)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()
	c := startDensityClient(t, ln.Addr().String(), fmt.Sprintf("127.0.%d", block))
	defer c.stop(t)

	var ms runtime.MemStats
	scanned := []metrics.Sample{{Name: "/gc/scan/stack:bytes"}}
	read := func() (heap, total, used, goros float64) {
		runtime.GC()
		runtime.GC() // the second frees what sync.Pools kept through the first
		runtime.ReadMemStats(&ms)
		metrics.Read(scanned)
		if scanned[0].Value.Kind() == metrics.KindUint64 {
			used = float64(scanned[0].Value.Uint64())
		}
		return float64(ms.HeapInuse), float64(ms.HeapInuse + ms.StackInuse), used, float64(runtime.NumGoroutine())
	}
	var xs, heaps, totals, useds, goros []float64
	opened := 0
	for step := 1; step <= 4; step++ {
		want := n * step / 4
		got, err := c.open(want - opened)
		opened = got
		if err != nil {
			t.Fatalf("%d streams of %d opened: %v", opened, want, err)
		}
		// The client has every response's headers; the handler may still
		// be setting up after its flush.
		for deadline := time.Now().Add(10 * time.Second); active.Load() != int64(opened); {
			if time.Now().After(deadline) {
				t.Fatalf("%d streams open, the server serves %d", opened, active.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		hp, tt, u, g := read()
		xs, heaps, totals, useds, goros = append(xs, float64(opened)), append(heaps, hp), append(totals, tt), append(useds, u), append(goros, g)
	}
	f := &densityResult{
		Streams:    opened,
		Heap:       slope(xs, heaps),
		Total:      slope(xs, totals),
		StackUsed:  slope(xs, useds),
		Goroutines: slope(xs, goros),
		HeapMiB:    heaps[len(heaps)-1] / (1 << 20),
	}
	if profile != "" {
		writeHeapProfile(t, filepath.Join(profile, "heap-"+s.name+".pprof"))
	}

	if publish != nil {
		start := time.Now()
		for k := range opened {
			if err := publish(strconv.Itoa(k), strconv.FormatInt(time.Now().UnixNano(), 10)); err != nil {
				t.Fatal(err)
			}
		}
		lat, err := c.collect(opened)
		if err != nil {
			t.Fatal(err)
		}
		f.Burst, f.P50, f.P99, f.Max, f.BurstTime = true, lat.p50, lat.p99, lat.max, lat.last.Sub(start)
	}

	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); active.Load() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the client closed its streams, the server still serves %d", active.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return f
}

// slope is the least-squares slope of ys against xs.
func slope(xs, ys []float64) float64 {
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(xs))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	return num / den
}

func writeHeapProfile(t testing.TB, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// raiseFileLimit raises the soft limit on open files to the hard limit,
// and returns both.
func raiseFileLimit() (soft, hard int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 1024, 1024
	}
	if lim.Cur < lim.Max {
		raised := lim
		raised.Cur = lim.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised) == nil {
			lim = raised
		}
	}
	return int(min(lim.Cur, math.MaxInt32)), int(min(lim.Max, math.MaxInt32))
}

// densityClient is the parent's handle on the client process. The two
// speak in lines: commands on the client's stdin, answers on its stdout,
// each answer prefixed with densityReply (the test binary writes its own
// lines too).
type densityClient struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

const densityReply = "density-client: "

func startDensityClient(t testing.TB, addr, prefix string) *densityClient {
	cmd := exec.Command(os.Args[0], "-test.run=^TestDensityClient$", "-test.count=1")
	cmd.Env = append(os.Environ(), densityClientEnv+"="+addr+" "+prefix)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &densityClient{cmd: cmd, in: in, out: bufio.NewScanner(out)}
}

// ask sends a command and returns the fields of the answer.
func (c *densityClient) ask(command string) ([]string, error) {
	if _, err := fmt.Fprintln(c.in, command); err != nil {
		return nil, err
	}
	for c.out.Scan() {
		if line, ok := strings.CutPrefix(c.out.Text(), densityReply); ok {
			f := strings.Fields(line)
			if len(f) > 0 && f[0] == "error" {
				return f, errors.New(line)
			}
			return f, nil
		}
	}
	if err := c.out.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("the client process ended")
}

// open opens k more streams and returns how many are open.
func (c *densityClient) open(k int) (int, error) {
	f, err := c.ask("open " + strconv.Itoa(k))
	if len(f) < 2 {
		return 0, err
	}
	n, _ := strconv.Atoi(f[1])
	return n, err
}

// latencies are what the client measured of a burst.
type latencies struct {
	p50, p99, max time.Duration
	last          time.Time
}

// collect waits for one event on each of the n streams.
func (c *densityClient) collect(n int) (latencies, error) {
	f, err := c.ask("collect " + strconv.Itoa(n))
	if err != nil {
		return latencies{}, err
	}
	if len(f) != 5 {
		return latencies{}, fmt.Errorf("client: %q", f)
	}
	v := make([]int64, 4)
	for i := range v {
		if v[i], err = strconv.ParseInt(f[i+1], 10, 64); err != nil {
			return latencies{}, err
		}
	}
	return latencies{time.Duration(v[0]), time.Duration(v[1]), time.Duration(v[2]), time.Unix(0, v[3])}, nil
}

// close closes every stream.
func (c *densityClient) close() error {
	_, err := c.ask("close")
	return err
}

// stop ends the client process.
func (c *densityClient) stop(t testing.TB) {
	c.in.Close()
	for c.out.Scan() { // drain, so that the client can exit
	}
	if err := c.cmd.Wait(); err != nil {
		t.Errorf("client process: %v", err)
	}
}

// TestDensityClient is the client process of BenchmarkDensity; without its
// environment variable it is skipped. It reads commands on stdin:
//
//	open K      opens K more streams (keys 0, 1, ... in order); answers "opened N", N streams open
//	collect N   waits until streams 0 to N-1 have each had an event whose data is the time it was published (Unix ns); answers "latency P50 P99 MAX LAST" in ns, LAST the time of the last arrival
//	close       closes every stream; answers "closed"
//
// and ends at the end of stdin. An error is answered "error ...".
func TestDensityClient(t *testing.T) {
	env := os.Getenv(densityClientEnv)
	if env == "" {
		t.Skip("the client process of BenchmarkDensity: run by it")
	}
	addr, prefix, _ := strings.Cut(env, " ")
	raiseFileLimit()
	c := &streamClient{addr: addr, prefix: prefix}
	defer c.closeAll()
	in := bufio.NewScanner(os.Stdin)
	reply := func(format string, args ...any) { fmt.Printf(densityReply+format+"\n", args...) }
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		n, _ := strconv.Atoi(arg)
		switch cmd {
		case "open":
			if err := c.open(n); err != nil {
				reply("error %d open: %v", len(c.streams), err)
				continue
			}
			reply("opened %d", len(c.streams))
		case "collect":
			lat, err := c.collect(n, time.Minute)
			if err != nil {
				reply("error %v", err)
				continue
			}
			reply("latency %d %d %d %d", lat.p50, lat.p99, lat.max, lat.last.UnixNano())
		case "close":
			c.closeAll()
			reply("closed")
		default:
			reply("error unknown command %q", in.Text())
		}
	}
}

// perAddress is how many connections the client makes from one local
// address: fewer than the ephemeral ports of one (net.ipv4.ip_local_port_range,
// 28,232 by default).
const perAddress = 20000

// streamClient holds the client's streams.
type streamClient struct {
	addr, prefix string
	streams      []*clientConn
	readers      sync.WaitGroup
}

// A clientConn is one stream: a reader goroutine records when its first
// event arrives.
type clientConn struct {
	conn    net.Conn
	arrived atomic.Int64 // Unix ns of the first event's arrival; 0: none yet
	latency atomic.Int64 // its delivery time, ns
}

// open opens k more streams, 64 at a time.
func (c *streamClient) open(k int) error {
	first := len(c.streams)
	c.streams = append(c.streams, make([]*clientConn, k)...)
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	next := atomic.Int64{}
	next.Store(int64(first))
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= first+k || failed.Load() != nil {
					return
				}
				s, err := c.dial(i)
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				c.streams[i] = s
			}
		})
	}
	wg.Wait()
	c.streams = slices.DeleteFunc(c.streams, func(s *clientConn) bool { return s == nil })
	if p := failed.Load(); p != nil {
		return *p
	}
	return nil
}

// dial opens stream i, on key i, from the local address of its block.
func (c *streamClient) dial(i int) (*clientConn, error) {
	local := &net.TCPAddr{IP: net.ParseIP(fmt.Sprintf("%s.%d", c.prefix, 1+i/perAddress))}
	d := net.Dialer{LocalAddr: local, Timeout: 10 * time.Second, Control: bindNoPort}
	conn, err := d.Dial("tcp", c.addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET /?key=%d HTTP/1.1\r\nHost: %s\r\n\r\n", i, c.addr)
	br := bufio.NewReaderSize(conn, 512)
	resp, err := http.ReadResponse(br, nil)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("stream %d: %w", i, err)
	}
	conn.SetDeadline(time.Time{})
	s := &clientConn{conn: conn}
	c.readers.Go(func() { s.read(resp.Body) })
	return s, nil
}

// bindNoPort sets IP_BIND_ADDRESS_NO_PORT on a socket before it binds to
// its local address, so that the port is chosen at connect, by the
// destination as well: otherwise each bind searches the ports of every
// socket bound before, and opening n connections takes O(n²) time.
func bindNoPort(_, _ string, c syscall.RawConn) error {
	const ipBindAddressNoPort = 24 // IP_BIND_ADDRESS_NO_PORT, Linux 4.2
	var err error
	if cerr := c.Control(func(fd uintptr) {
		err = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); cerr != nil {
		return cerr
	}
	if err != nil && runtime.GOOS == "linux" {
		return err
	}
	return nil
}

// read records the first event's arrival, and reads until the connection
// ends.
func (s *clientConn) read(body io.Reader) {
	lines := bufio.NewReaderSize(body, 256)
	for {
		line, err := lines.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
		data, ok := strings.CutPrefix(strings.TrimSuffix(string(line), "\n"), "data: ")
		if !ok || s.arrived.Load() != 0 {
			continue
		}
		if sent, err := strconv.ParseInt(data, 10, 64); err == nil {
			now := time.Now().UnixNano()
			s.latency.Store(now - sent)
			s.arrived.Store(now)
		}
	}
}

// collect waits up to timeout for an event on each of streams 0 to n-1.
func (c *streamClient) collect(n int, timeout time.Duration) (latencies, error) {
	if n > len(c.streams) {
		return latencies{}, fmt.Errorf("collect %d: %d streams open", n, len(c.streams))
	}
	deadline := time.Now().Add(timeout)
	for _, s := range c.streams[:n] {
		for s.arrived.Load() == 0 {
			if time.Now().After(deadline) {
				return latencies{}, fmt.Errorf("collect: no event after %v", timeout)
			}
			time.Sleep(time.Millisecond)
		}
	}
	lat := make([]time.Duration, n)
	var last int64
	for i, s := range c.streams[:n] {
		lat[i] = time.Duration(s.latency.Load())
		last = max(last, s.arrived.Load())
	}
	slices.Sort(lat)
	at := func(q float64) time.Duration { return lat[min(n-1, int(q*float64(n)))] }
	return latencies{p50: at(0.50), p99: at(0.99), max: lat[n-1], last: time.Unix(0, last)}, nil
}

// closeAll closes every stream, with a reset rather than a FIN, so that no
// local port is left in TIME_WAIT, and waits for the readers.
func (c *streamClient) closeAll() {
	for _, s := range c.streams {
		if tc, ok := s.conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
		s.conn.Close()
	}
	c.streams = nil
	c.readers.Wait()
}
