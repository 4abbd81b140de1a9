package sse

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMultiStreamGoroutines: a multi-key connection costs the same
// goroutines whatever its number of keys (the server's own for the
// connection): the request's goroutine reads every key.
func TestMultiStreamGoroutines(t *testing.T) {
	b := fanOut(t)
	names := make([]string, 100)
	for i := range names {
		names[i] = "k" + strconv.Itoa(i)
		must(t, b.Publish(context.Background(), names[i], Event{Data: "x"}))
	}
	srv := httptest.NewServer(MultiHandler(b, listKeys))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	var conns []net.Conn
	defer func() { // before srv.Close, which waits for the streams
		for _, c := range conns {
			c.Close()
		}
	}()
	// cost opens a stream of n keys, reads their events, and returns the
	// goroutines it added.
	cost := func(n int) int {
		before := runtime.NumGoroutine()
		c, err := dialIdle(addr, names[:n], n)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		return runtime.NumGoroutine() - before
	}
	// Other goroutines come and go (the server's, the runtime's): measure
	// again until two measures agree, within patience.
	deadline := time.Now().Add(patience)
	for {
		two, hundred := cost(2), cost(100)
		if hundred == two {
			t.Logf("%d goroutines for a stream of 2 keys, and of 100", two)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("a stream of 2 keys adds %d goroutines, of 100 keys %d", two, hundred)
		}
	}
}

// TestEventsOfFair: a key with many events ready does not hold back
// another's: the keys take turns, a batch each.
func TestEventsOfFair(t *testing.T) {
	const busy = 3000
	b := fanOut(t, WithHistory(1<<14, 64<<20, 0))
	publish(t, b, "busy", 1, busy)
	publish(t, b, "quiet", 1, 1)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	before := 0 // busy's events before quiet's
	for ke, err := range b.EventsOf(ctx, []string{"busy", "quiet"}) {
		must(t, err)
		if ke.Key == "quiet" {
			break
		}
		before++
	}
	if before >= busy/4 {
		t.Fatalf("%d of the busy key's %d events came before the other key's first", before, busy)
	}
	t.Logf("%d of the busy key's events came first", before)
}

// TestMultiHandlerFair: on a multi-key stream too, a key with many events
// ready does not hold back another's.
func TestMultiHandlerFair(t *testing.T) {
	const busy = 3000
	b := fanOut(t, WithHistory(1<<14, 64<<20, 0))
	publish(t, b, "busy", 1, busy)
	publish(t, b, "quiet", 1, 1)
	srv := httptest.NewServer(MultiHandler(b, listKeys, WithHeartbeat(0)))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/?keys=busy,quiet", nil)
	must(t, err)
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	before := 0
	for sc.Scan() {
		line := sc.Text()
		if line == "data: quiet/1" {
			if before >= busy/4 {
				t.Fatalf("%d of the busy key's %d events came before the other key's first", before, busy)
			}
			t.Logf("%d of the busy key's events came first", before)
			return
		}
		if strings.HasPrefix(line, "data: busy/") {
			before++
		}
	}
	t.Fatalf("the stream ended (%v) before the quiet key's event, after %d of the busy key's", sc.Err(), before)
}

// TestMultiStreamWritesWhole: a multi-key stream's writes stay within
// flushBytes, each a whole number of blocks, however long the IDs: a
// write past it went out as two chunks, the second a block's few last
// bytes (two system calls where one does).
func TestMultiStreamWritesWhole(t *testing.T) {
	b := fanOut(t)
	names := make([]string, 100)
	for i := range names {
		names[i] = "k" + strconv.Itoa(i)
		publish(t, b, names[i], 1, 30)
		must(t, b.Close(context.Background(), names[i]))
	}
	rec := &flushRecorder{header: http.Header{}}
	MultiHandler(b, listKeys, WithHeartbeat(0)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?keys="+strings.Join(names, ","), nil))
	events := 0
	for i, f := range rec.rawSent() {
		if len(f) > flushBytes || f != "" && !strings.HasSuffix(f, "\n\n") {
			t.Fatalf("write %d: %d bytes, ending %q; want at most %d, whole blocks", i, len(f), f[max(0, len(f)-20):], flushBytes)
		}
		events += strings.Count(f, "\ndata: k")
	}
	if events != 100*30 {
		t.Fatalf("%d events written, want %d", events, 100*30)
	}
}

// TestEventsOfGoroutines: EventsOf reads its keys from the ranging
// goroutine: ranging over 100 keys starts no goroutine per key. (Other
// goroutines of the process may come and go meanwhile: a few are
// tolerated.)
func TestEventsOfGoroutines(t *testing.T) {
	b := fanOut(t)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		publish(t, b, keys[i], 1, 1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	before := runtime.NumGoroutine()
	n, most := 0, 0
	for _, err := range b.EventsOf(ctx, keys) {
		must(t, err)
		most = max(most, runtime.NumGoroutine()-before)
		if n++; n == len(keys) {
			break
		}
	}
	if most >= 10 {
		t.Fatalf("up to %d goroutines more while ranging over %d keys", most, len(keys))
	}
}
