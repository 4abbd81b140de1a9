package sse

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The figures of issue 23 for several keys on one connection:
//
//	go test -run '^$' -bench 'Multi' -benchtime 1x -count 6 .   # memory
//	go test -run '^$' -bench 'MultiDelivery' -count 6 .          # cost per event
//	go test -run 'TestMultiIDSize' -v .                          # ID sizes

// BenchmarkMultiMemory measures what idle streams of 2,000 FanOut keys
// cost the process (server, and raw clients that hold only their socket),
// with every key on a connection of its own, and with 100 keys on each of
// 20 connections. It reports, per key, the heap and goroutine stacks in
// use (two runtime.GC, then runtime.ReadMemStats) and the goroutines.
// Each key holds one event, read by its stream. It measures once per run:
// use -benchtime 1x, and not under the race detector, whose shadow memory
// would swamp the figures.
func BenchmarkMultiMemory(b *testing.B) {
	const keys = 2000
	for _, perConn := range []int{1, 100} {
		b.Run(fmt.Sprintf("keys-per-conn=%d", perConn), func(b *testing.B) {
			for range b.N {
				heap, stacks, goros := multiMemory(b, keys, perConn)
				b.ReportMetric(heap/keys, "heap-B/key")
				b.ReportMetric((heap+stacks)/keys, "B/key")
				b.ReportMetric(goros/keys, "goroutines/key")
			}
		})
	}
}

// multiMemory opens keys streams' worth of keys, perConn a connection, and
// returns what the process holds more than before: heap and stacks in
// use, and goroutines.
func multiMemory(b *testing.B, keys, perConn int) (heap, stacks, goros float64) {
	br := New[string](WithMode(FanOut))
	defer br.Shutdown(context.Background())
	names := make([]string, keys)
	for i := range names {
		names[i] = "k" + strconv.Itoa(i)
		if err := br.Publish(context.Background(), names[i], Event{Data: "x"}); err != nil {
			b.Fatal(err)
		}
	}
	srv := httptest.NewServer(MultiHandler(br, listKeys, WithMaxKeysPerRequest(max(perConn, 1))))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	var ms runtime.MemStats
	read := func() (float64, float64, float64) {
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&ms)
		return float64(ms.HeapInuse), float64(ms.StackInuse), float64(runtime.NumGoroutine())
	}
	h0, s0, g0 := read()
	conns := make([]net.Conn, 0, keys/perConn)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < keys; i += perConn {
		c, err := dialIdle(addr, names[i:i+perConn], perConn)
		if err != nil {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	h1, s1, g1 := read()
	return h1 - h0, s1 - s0, g1 - g0
}

// dialIdle opens a stream of keys over a raw connection and reads until
// it has their n events, then leaves it idle: the client holds its socket
// and nothing else.
func dialIdle(addr string, keys []string, n int) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, patience)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(patience))
	if _, err := io.WriteString(c, "GET /?keys="+strings.Join(keys, ",")+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	var buf [64 << 10]byte
	var got []byte
	for bytes.Count(got, []byte("data: x\n\n")) < n {
		m, err := c.Read(buf[:])
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("%q: %w", got, err)
		}
		got = append(got, buf[:m]...)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// BenchmarkMultiDelivery measures the cost of an event delivered over SSE
// on loopback, publish to the client's read, when a client follows 100
// keys on one connection, when it follows them on 100 connections, and
// when it follows one key. The events, 20 bytes of data each, go to the
// keys in turn, one Publish each, the producer staying at most 32,768
// events ahead of the clients so that no history drops any. The client
// counts blank lines and reads nothing else (but fails on a gap). It reports ns per event and the bytes on the wire per
// event (wire-B/event).
func BenchmarkMultiDelivery(b *testing.B) {
	for _, c := range []struct {
		name        string
		keys, conns int
	}{
		{"keys=1", 1, 1},
		{"keys=100/conns=100", 100, 100},
		{"keys=100/conns=1", 100, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			multiDelivery(b, c.keys, c.conns)
		})
	}
}

func multiDelivery(b *testing.B, keys, conns int) {
	br := New[string](WithMode(FanOut), WithHistory(1<<16, 64<<20, 0))
	defer br.Shutdown(context.Background())
	names := make([]string, keys)
	for i := range names {
		names[i] = "k" + strconv.Itoa(i)
		if err := br.Open(context.Background(), names[i]); err != nil {
			b.Fatal(err)
		}
	}
	srv := httptest.NewServer(MultiHandler(br, listKeys))
	defer srv.Close()
	per := keys / conns
	want := make([]int, conns) // events each connection gets
	for i := range b.N {
		want[i%keys/per]++
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wire int64
	var delivered atomic.Int64
	errs := make(chan error, conns)
	ready := make(chan struct{}, conns)
	for c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n, err := countEvents(srv.Listener.Addr().String(), names[c*per:(c+1)*per], want[c], ready, &delivered)
			mu.Lock()
			wire += n
			mu.Unlock()
			if err != nil {
				errs <- err
			}
		}()
	}
	for range conns {
		<-ready
	}
	data := strings.Repeat("d", 20)
	b.ResetTimer()
	for i := range b.N {
		for i%1024 == 0 && int64(i)-delivered.Load() > 32<<10 {
			time.Sleep(20 * time.Microsecond)
		}
		if err := br.Publish(context.Background(), names[i%keys], Event{Data: data}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(wire)/float64(b.N), "wire-B/event")
}

// countEvents reads a stream of keys until it has n events (blank lines),
// and returns the bytes it read after the headers; it signals ready once
// the headers came, and adds the events to delivered as they come.
func countEvents(addr string, keys []string, n int, ready chan<- struct{}, delivered *atomic.Int64) (int64, error) {
	c, err := net.DialTimeout("tcp", addr, patience)
	if err != nil {
		ready <- struct{}{}
		return 0, err
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /?keys="+strings.Join(keys, ",")+" HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		ready <- struct{}{}
		return 0, err
	}
	buf := make([]byte, 64<<10)
	var total int64
	headers, prev, seen := true, byte(0), 0
	for seen < n || headers {
		c.SetReadDeadline(time.Now().Add(patience))
		m, err := c.Read(buf)
		if err != nil {
			if headers {
				ready <- struct{}{}
			}
			return total, err
		}
		p := buf[:m]
		if headers {
			i := bytes.Index(p, []byte("\r\n\r\n"))
			if i < 0 {
				continue // a header split between reads does not happen here
			}
			p, headers = p[i+4:], false
			ready <- struct{}{}
		}
		if len(p) == 0 {
			continue
		}
		total += int64(len(p))
		got := bytes.Count(p, []byte("\n\n"))
		if prev == '\n' && p[0] == '\n' { // a blank line split between reads
			got++
		}
		if bytes.Contains(p, []byte("gap\ndata: ")) { // gap or sse.gap
			return total, fmt.Errorf("a gap: the producer ran too far ahead")
		}
		prev = p[len(p)-1]
		seen += got
		delivered.Add(int64(got))
	}
	return total, nil
}

// TestMultiIDSize reports the size of a multi-key ID, with the epochs the
// Broker and ssejs draw (10 characters at most), at 10, 100, 256, 1,000
// and 4,096 keys, every key at event 1, 10⁶ − 1 and 10⁹ − 1: in the
// vector form (a source without cursors, up to MaxVectorKeys keys), and in
// the cursor form at its largest (a cursor name of 22 characters, as
// ssejs's, and CursorDelta keys moved, of the highest indices). It checks
// the figures docs/protocol.md gives, and that a Last-Event-ID header of
// either form, where it may be sent, stays under 8 KiB.
func TestMultiIDSize(t *testing.T) {
	epoch := strings.Repeat("z", 10) // the longest: 48 bits in base 36
	for _, n := range []int{10, 100, MaxVectorKeys, 1000, MaxKeysPerRequest} {
		var vec, cur []string
		for _, seq := range []uint64{1, 999_999, 999_999_999} {
			v := newVector(make([]position, n))
			for i := range n {
				v.setID(i, epoch, seq)
			}
			size := len(v.appendID(nil, n-1)) - len("id: \n")
			vec = append(vec, fmt.Sprintf("%d B", size))
			if header := len("Last-Event-ID: \r\n") + size; n <= MaxVectorKeys && header >= 8<<10 {
				t.Errorf("%d keys at seq %d: a header of %d bytes", n, seq, header)
			}
			if seq == 999_999 && n == DefaultKeysPerRequest && size > 1802 || seq == 999_999 && n == MaxVectorKeys && size > 4611 {
				t.Errorf("%d keys at seq %d: %d bytes, more than docs/protocol.md says", n, seq, size)
			}
			v = newVector(make([]position, n))
			v.withCursor(func(string) (string, error) { return strings.Repeat("c", 22), nil }, "", nil)
			for i := range n { // stores a cursor every CursorDelta keys moved
				v.setID(i, epoch, seq)
			}
			for i := n - min(n, CursorDelta); i < n; i++ {
				v.setID(i, epoch, seq+1)
			}
			size = len(v.appendID(nil, n-1)) - len("id: \n")
			cur = append(cur, fmt.Sprintf("%d B", size))
			if seq == 999_999 && size > 460 {
				t.Errorf("%d keys at seq %d: a cursor ID of %d bytes, more than docs/protocol.md says", n, seq, size)
			}
		}
		t.Logf("%4d keys at seq 1, 10⁶−1, 10⁹−1: vector form %s; cursor form %s", n, strings.Join(vec, ", "), strings.Join(cur, ", "))
	}
}
