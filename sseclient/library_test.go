package sseclient_test

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/cutproxy"
	"github.com/rocketqueue/sse/sseclient"
)

// library serves one broker of this library, in mode, with its Handler:
// the key is the query parameter "key".
type library struct {
	broker *sse.Broker[string]
	srv    *httptest.Server
	mode   sse.Mode
}

func serveLibrary(t *testing.T, mode sse.Mode) *library {
	t.Helper()
	b := sse.New[string](sse.WithMode(mode))
	key := func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil }
	return &library{broker: b, srv: serveBroker(t, b, sse.Handler(b, key)), mode: mode}
}

// serveBroker serves h, a handler of b, until the test ends, then shuts b
// down.
func serveBroker(t *testing.T, b *sse.Broker[string], h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return srv
}

// send adds the event with data to key, as the mode wants.
func (l *library) send(ctx context.Context, key, data string) error {
	if l.mode == sse.Queue {
		return l.broker.Enqueue(ctx, key, data)
	}
	return l.broker.Publish(ctx, key, sse.Event{Data: data})
}

// payload is the data of event n: 1 to 400 bytes, line breaks included,
// different for each n.
func payload(n int) string {
	rng := rand.New(rand.NewPCG(uint64(n), 99))
	var sb strings.Builder
	sb.WriteString(strconv.Itoa(n))
	for range rng.IntN(400) {
		if rng.IntN(40) == 0 {
			sb.WriteByte('\n')
		} else {
			sb.WriteByte(byte('a' + rng.IntN(26)))
		}
	}
	return sb.String()
}

// produce sends total events to key, then closes it, staying at most lead
// events ahead of the client, which takes one token from ahead for each
// event it receives: the producer runs while the client reads, cut or not.
func (l *library) produce(ctx context.Context, t *testing.T, key string, total int, ahead chan struct{}) func() {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= total; i++ {
			select {
			case ahead <- struct{}{}:
			case <-ctx.Done():
				return
			}
			if err := l.send(ctx, key, payload(i)); err != nil {
				t.Errorf("event %d: %v", i, err)
				return
			}
		}
		if err := l.broker.Close(ctx, key); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	return func() { <-done }
}

// exactlyOnce follows key at url with hc while a producer sends total
// events, and checks that the client got each once, in order, then the
// end of the stream; it returns the number of reconnections.
func (l *library) exactlyOnce(t *testing.T, hc *http.Client, url, key string, total int) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	defer cancel()
	ahead := make(chan struct{}, 100)
	wait := l.produce(ctx, t, key, total, ahead)
	defer wait()
	defer cancel() // first: the producer may wait for a client that failed

	reasons := map[string]int{}
	n := 0
	var last string
	seq := sseclient.Events(ctx, url+"?key="+key,
		sseclient.WithHTTPClient(hc),
		sseclient.WithBackoff(0, 0),
		sseclient.WithOnReconnect(func(err error, _ time.Duration) { reasons[reason(err)]++ }))
	for e, err := range seq {
		if err != nil {
			t.Fatalf("after %d events: %v", n, err)
		}
		n++
		if e.Name != "" || e.Data != payload(n) {
			t.Fatalf("event %d is %q %q (ID %s, the previous %s), want event %d", n, e.Name, head(e.Data), e.ID, last, n)
		}
		if _, seq, _ := strings.Cut(e.ID, "-"); seq != strconv.Itoa(n) {
			t.Fatalf("event %d has ID %s", n, e.ID)
		}
		last = e.ID
		<-ahead
	}
	if n != total {
		t.Fatalf("got %d events, want %d", n, total)
	}
	reconnections := 0
	for _, c := range reasons {
		reconnections += c
	}
	t.Logf("%d events, %d reconnections: %v", n, reconnections, reasons)
	return reconnections
}

// reason names the kind of a transient error, for the test's log.
func reason(err error) string {
	switch {
	case errors.Is(err, errCut):
		return "cut by the client"
	case errors.Is(err, sseclient.ErrStreamEnded):
		return "ended"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected EOF"
	}
	return "other"
}

func head(s string) string { return s[:min(len(s), 20)] }

var modes = []struct {
	name string
	mode sse.Mode
}{{"Queue", sse.Queue}, {"FanOut", sse.FanOut}}

// TestExactlyOnceClientCuts: the client's connections are cut, client
// side, after a random number of bytes of the body, mid-event more often
// than not; a third of them are left open and unread, as a dead network
// leaves them, so that the server still streams to them when the client
// comes back. Each event still arrives once, in order.
func TestExactlyOnceClientCuts(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			l := serveLibrary(t, m.mode)
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			c := &cutter{base: l.srv.Client().Transport, rng: rand.New(rand.NewPCG(seed, 1)), most: 4000, stale: 3}
			t.Cleanup(c.close) // before the server's cleanup, which waits for its handlers
			if r := l.exactlyOnce(t, &http.Client{Transport: c}, l.srv.URL, "k", 3000); r < 20 {
				t.Fatalf("%d reconnections: the stream was hardly cut", r)
			}
		})
	}
}

// TestExactlyOnceProxyCuts: the connections go through a proxy that cuts
// them after a random number of bytes of the response, its headers
// included; each event still arrives once, in order.
func TestExactlyOnceProxyCuts(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			l := serveLibrary(t, m.mode)
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			p, err := cutproxy.Start(l.srv.Listener.Addr().String(), cutproxy.Options{
				Cut: func(n int) int64 { return 1 + rand.New(rand.NewPCG(seed, uint64(n))).Int64N(4000) },
			})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			if r := l.exactlyOnce(t, &http.Client{Transport: tr}, "http://"+p.Addr(), "k", 3000); r < 20 {
				t.Fatalf("%d reconnections: the stream was hardly cut", r)
			}
		})
	}
}

// errCut is the error of a body the cutter cut.
var errCut = errors.New("cut by the test")

// cutter is an http.RoundTripper that cuts each response's body after a
// random number of bytes, from 0 to most: the read fails and the
// connection is closed, as a network failure would. One connection in
// stale is not closed but left open, unread, until close.
type cutter struct {
	base  http.RoundTripper // immutable
	most  int               // immutable
	stale int               // immutable: 0 for none

	mu   sync.Mutex
	rng  *rand.Rand      // guarded by mu
	kept []io.ReadCloser // guarded by mu: the stale bodies
}

func (c *cutter) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	n := c.rng.IntN(c.most + 1)
	stale := c.stale > 0 && c.rng.IntN(c.stale) == 0
	c.mu.Unlock()
	if stale {
		// The client ends the request's context once it gives up on the
		// connection, which would close it.
		req = req.WithContext(context.WithoutCancel(req.Context()))
	}
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &cutBody{rc: resp.Body, left: n, stale: stale, c: c}
	return resp, nil
}

// keep holds a stale body until close.
func (c *cutter) keep(rc io.ReadCloser) {
	c.mu.Lock()
	c.kept = append(c.kept, rc)
	c.mu.Unlock()
}

// close closes the stale bodies.
func (c *cutter) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rc := range c.kept {
		rc.Close()
	}
	c.kept = nil
}

// cutBody reads a body until left bytes are read, then fails and closes it
// or, if it is stale, leaves it to the cutter.
type cutBody struct {
	rc    io.ReadCloser // immutable
	stale bool          // immutable
	c     *cutter       // immutable
	left  int           // owned by the reader
	done  bool          // owned by the reader: closed or kept
}

func (b *cutBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		b.Close()
		return 0, errCut
	}
	n, err := b.rc.Read(p[:min(len(p), b.left)])
	b.left -= n
	return n, err
}

func (b *cutBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	if b.stale {
		b.c.keep(b.rc)
		return nil
	}
	return b.rc.Close()
}
