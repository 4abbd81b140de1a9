package sse

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rocketqueue/sse/ssetest"
	"golang.org/x/sync/errgroup"
)

// rawStream is an event stream read over a plain TCP connection, with no
// http.Transport: one goroutine per client at most, so that thousands of
// clients stay within the race detector's goroutine limit.
type rawStream struct {
	conn   net.Conn
	events *ssetest.Reader
}

// dialStream requests key's stream from addr and checks the response.
func dialStream(addr, key string, deadline time.Time) (*rawStream, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(deadline)
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/?key="+key, nil)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err == nil {
		err = ssetest.CheckResponse(resp)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("key %s: %w", key, err)
	}
	return &rawStream{conn: conn, events: ssetest.NewReader(resp.Body)}, nil
}

// seqOf returns the event ID of a wire ID, "<epoch>-<id>", or "" if it has
// no epoch.
func seqOf(id string) string {
	if i := strings.LastIndexByte(id, '-'); i > 0 {
		return id[i+1:]
	}
	return ""
}

// expect reads events 1..n, each with data "<key>/<ID>", then the close
// event and the end of the stream.
func (s *rawStream) expect(key string, n int) error {
	for i := 1; i <= n; i++ {
		ev, err := s.events.Next()
		if err != nil {
			return fmt.Errorf("key %s, event %d: %w", key, i, err)
		}
		if seqOf(ev.ID) != strconv.Itoa(i) || ev.Data != key+"/"+strconv.Itoa(i) {
			return fmt.Errorf("key %s: got %+v, want event %d", key, ev, i)
		}
	}
	if ev, err := s.events.Next(); err != nil || ev.Type != "close" {
		return fmt.Errorf("key %s: got %+v, %v; want close", key, ev, err)
	}
	return nil
}

// openStreams opens n streams, stream i of key keyOf(i), a few dials at a
// time so that the listen backlog does not overflow.
func openStreams(t *testing.T, addr string, n int, keyOf func(int) string, deadline time.Time) []*rawStream {
	t.Helper()
	streams := make([]*rawStream, n)
	var dials errgroup.Group
	dials.SetLimit(64)
	for k := range n {
		dials.Go(func() error {
			s, err := dialStream(addr, keyOf(k), deadline)
			if err != nil {
				return err
			}
			streams[k] = s
			return nil
		})
	}
	err := dials.Wait()
	t.Cleanup(func() {
		for _, s := range streams {
			if s != nil {
				s.conn.Close()
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return streams
}

// needFiles fails the test unless the process may open n files.
func needFiles(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < n {
		t.Fatalf("the open file limit is %d, this test needs %d: raise it (ulimit -n)", lim.Cur, n)
	}
}

// peakRSS returns the process's peak resident set (VmHWM), if Linux tells.
func peakRSS() string {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// TestLoad streams 50 events to each of 2,000 concurrent SSE connections on
// loopback, each on its own key, and checks that every client gets all its
// events in order. It reports the time taken and the peak memory.
func TestLoad(t *testing.T) {
	load(t, newBroker[string](t), 2000, 50, strconv.Itoa)
}

// TestLoadFanOut streams the 100 events of one FanOut key to each of 2,000
// concurrent SSE connections on loopback, and checks that every client gets
// them all in order. It reports the time taken and the peak memory.
func TestLoadFanOut(t *testing.T) {
	load(t, newBroker[string](t, WithMode(FanOut)), 2000, 100, func(int) string { return "k" })
}

// load opens conns streams on b's handler, stream i of key keyOf(i), sends
// events events to every key, each with data "<key>/<ID>", closes the keys,
// and checks that every stream got its key's events in order, then close.
func load(t *testing.T, b *Broker[string], conns, events int, keyOf func(int) string) {
	needFiles(t, uint64(2*conns+100))
	deadline := time.Now().Add(50 * time.Second) // the test stops by itself
	h := &tracked{h: Handler(b, queryKey, WithHeartbeat(0))}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)

	var peakHeap atomic.Uint64
	sampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peakHeap.Load() {
				peakHeap.Store(ms.HeapInuse)
			}
			select {
			case <-sampling:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	})
	defer func() {
		close(sampling)
		sampler.Wait()
	}()

	start := time.Now()
	streams := openStreams(t, srv.Listener.Addr().String(), conns, keyOf, deadline)
	opened := time.Since(start)

	var readers sync.WaitGroup
	keys := make(map[string]bool)
	for i, s := range streams {
		key := keyOf(i)
		keys[key] = true
		readers.Go(func() {
			if err := s.expect(key, events); err != nil {
				t.Error(err)
			}
		})
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	for i := 1; i <= events; i++ {
		for key := range keys {
			must(t, b.Enqueue(ctx, key, key+"/"+strconv.Itoa(i)))
		}
	}
	for key := range keys {
		must(t, b.Close(ctx, key))
	}
	readers.Wait()
	elapsed := time.Since(start)
	h.waitIdle(t)
	t.Logf("%d connections, %d keys × %d events: %v in all (%v to connect), %.0f events/s delivered; peak heap in use %.1f MiB, peak RSS %s",
		conns, len(keys), events, elapsed.Round(time.Millisecond), opened.Round(time.Millisecond),
		float64(conns*events)/elapsed.Seconds(), float64(peakHeap.Load())/(1<<20), peakRSS())
}
