package sse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rocketqueue/sse/ssetest"
)

// statusError is a key function's error that carries an HTTP status.
type statusError int

func (e statusError) Error() string   { return http.StatusText(int(e)) }
func (e statusError) StatusCode() int { return int(e) }

// publicError is a key function's error that may be shown to the client.
type publicError struct{ msg string }

func (e publicError) Error() string         { return "session expired in db 10.0.0.7: " + e.msg }
func (e publicError) PublicMessage() string { return e.msg }
func (e publicError) StatusCode() int       { return http.StatusUnauthorized }

// queryKey takes the key from the "key" query parameter.
func queryKey(r *http.Request) (string, error) {
	switch k := r.URL.Query().Get("key"); k {
	case "":
		return "", errors.New("missing key parameter")
	case "secret":
		return "", fmt.Errorf("no access: %w", statusError(http.StatusForbidden))
	case "panic":
		panic("key function exploded")
	case "login":
		return "", publicError{"please log in"}
	default:
		return k, nil
	}
}

// tracked wraps a handler and counts the requests still being served, so a
// test can wait for the handler to return.
type tracked struct {
	h      http.Handler
	active atomic.Int64
}

func (t *tracked) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.active.Add(1)
	defer t.active.Add(-1)
	t.h.ServeHTTP(w, r)
}

// waitIdle fails the test unless every request has returned within patience.
func (t *tracked) waitIdle(tb testing.TB) {
	tb.Helper()
	deadline := time.Now().Add(patience)
	for t.active.Load() != 0 {
		if time.Now().After(deadline) {
			tb.Fatalf("%d handlers still running after %v", t.active.Load(), patience)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitActive fails the test unless n requests are being served within
// patience.
func (t *tracked) waitActive(tb testing.TB, n int64) {
	tb.Helper()
	deadline := time.Now().Add(patience)
	for t.active.Load() != n {
		if time.Now().After(deadline) {
			tb.Fatalf("%d handlers running after %v, want %d", t.active.Load(), patience, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// serve starts a test server for b's handler.
func serve(t *testing.T, b *Broker[string], opts ...HandlerOption) (*httptest.Server, *tracked) {
	t.Helper()
	h := &tracked{h: Handler(b, queryKey, opts...)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

// client is one open event stream.
type client struct {
	resp   *http.Response
	events *ssetest.Reader
	cancel context.CancelFunc
	epoch  string // the epoch of the IDs it received; next strips it from them
}

// splitID splits a wire ID into its epoch and event ID, failing the test
// unless it has both.
func splitID(t testing.TB, id string) (epoch, seq string) {
	t.Helper()
	i := strings.LastIndexByte(id, '-')
	if i <= 0 {
		t.Fatalf("ID %q has no epoch", id)
	}
	return id[:i], id[i+1:]
}

// wireID returns the wire ID of event id of the stream's epoch.
func (c *client) wireID(id int) string { return c.epoch + "-" + strconv.Itoa(id) }

// open requests key's stream and fails unless it is a 200 event stream.
func open(t *testing.T, hc *http.Client, url, key string, header ...string) *client {
	t.Helper()
	c, err := tryOpen(hc, url, key, header...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	if err := ssetest.CheckResponse(c.resp); err != nil {
		t.Fatal(err)
	}
	return c
}

// tryOpen requests key's stream with header (name, value pairs).
func tryOpen(hc *http.Client, url, key string, header ...string) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"?key="+key, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	c := &client{resp: resp, events: ssetest.NewReader(resp.Body), cancel: cancel}
	return c, nil
}

func (c *client) close() {
	c.cancel()
	c.resp.Body.Close()
}

// next returns the next event, with its ID stripped of the stream's epoch,
// failing the test at the end of the stream or if the epoch changes.
func (c *client) next(t testing.TB) ssetest.Event {
	t.Helper()
	ev, err := c.events.Next()
	if err != nil {
		t.Fatalf("reading the stream: %v", err)
	}
	return c.strip(t, ev)
}

// strip removes the stream's epoch from ev's ID.
func (c *client) strip(t testing.TB, ev ssetest.Event) ssetest.Event {
	t.Helper()
	if ev.ID == "" {
		return ev
	}
	epoch, seq := splitID(t, ev.ID)
	if c.epoch == "" {
		c.epoch = epoch
	} else if epoch != c.epoch {
		t.Fatalf("event %+v has epoch %q, the stream had %q", ev, epoch, c.epoch)
	}
	ev.ID = seq
	return ev
}

// stripIDs strips the epoch, one for all, from the IDs of evs.
func stripIDs(t testing.TB, evs []ssetest.Event) []ssetest.Event {
	t.Helper()
	var c client
	out := make([]ssetest.Event, len(evs))
	for i, ev := range evs {
		out[i] = c.strip(t, ev)
	}
	return out
}

// plain strips the epochs from the id lines of a raw stream.
func plain(s string) string { return epochs.ReplaceAllString(s, "id: ") }

var epochs = regexp.MustCompile(`(?m)^id: [0-9a-zA-Z]+-`)

// expectSeq reads events from..to, each with data "<ID>".
func (c *client) expectSeq(t testing.TB, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		ev := c.next(t)
		if want := strconv.Itoa(i); ev.ID != want || ev.Data != want {
			t.Fatalf("got event %+v, want ID and data %s", ev, want)
		}
	}
}

// expectClose reads the close event and the end of the stream.
func (c *client) expectClose(t testing.TB) {
	t.Helper()
	if ev := c.next(t); ev.Type != "close" || ev.Data != "" {
		t.Fatalf("got %+v, want the close event", ev)
	}
	c.expectEOF(t)
}

// expectCut reads to the end of the stream, which must come without a
// close event: a clean end, or a connection ended in the middle of the
// response, as a takeover ends the connection it replaces. Events still in
// flight before the end are skipped.
func (c *client) expectCut(t testing.TB) {
	t.Helper()
	for {
		ev, err := c.events.Next()
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return
		case err != nil:
			t.Fatalf("reading to the end: %v", err)
		case ev.Type == EventClose:
			t.Fatal("close before the end of a stream that was cut")
		}
	}
}

// expectEOF reads the end of the stream.
func (c *client) expectEOF(t testing.TB) {
	t.Helper()
	if ev, err := c.events.Next(); err != io.EOF {
		t.Fatalf("got %+v, %v; want the end of the stream", ev, err)
	}
}

func TestAppendEvent(t *testing.T) {
	for _, c := range []struct {
		ev   Event
		want string
	}{
		{Event{ID: 1, Data: "x"}, "id: e1-1\ndata: x\n\n"},
		{Event{ID: 2, Name: "progress", Data: "50"}, "id: e1-2\nevent: progress\ndata: 50\n\n"},
		{Event{ID: 3}, "id: e1-3\ndata: \n\n"},
		{Event{ID: 4, Data: "a\nb\rc\r\nd"}, "id: e1-4\ndata: a\ndata: b\ndata: c\ndata: d\n\n"},
		{Event{ID: 5, Data: "a\n"}, "id: e1-5\ndata: a\ndata: \n\n"},
		{Event{ID: 6, Data: "\r\n\r"}, "id: e1-6\ndata: \ndata: \ndata: \n\n"},
		{Event{ID: 7, Data: " x"}, "id: e1-7\ndata:  x\n\n"},
	} {
		if got := string(appendEvent(nil, "e1", c.ev)); got != c.want {
			t.Errorf("appendEvent(%+v) = %q, want %q", c.ev, got, c.want)
		}
	}
}

// TestHandlerEncoding checks, with a spec-following parser, that a browser
// would receive each event's data as it was published, line breaks read as
// LF.
func TestHandlerEncoding(t *testing.T) {
	b := newBroker[string](t)
	ctx := context.Background()
	data := []string{
		"plain", "two\nlines", "cr\rline", "crlf\r\nline", " leading space", "  two spaces",
		":leading colon", "", "ünïcödé ✓ 🎉", "trailing\n", "\n", "\r\n\r\n", "a\n\nb",
		"data: nested", "nul\x00inside", strings.Repeat("long ", 10000),
	}
	for i, d := range data {
		name := []string{"", "progress", "with space", "ünï"}[i%4]
		must(t, b.Publish(ctx, "k", Event{Name: name, Data: d}))
	}
	must(t, b.Close(ctx, "k"))

	rec := httptest.NewRecorder()
	Handler(b, queryKey).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	got, err := ssetest.Events(rec)
	if err != nil {
		t.Fatal(err)
	}
	got = stripIDs(t, got)
	if len(got) != len(data)+1 {
		t.Fatalf("got %d events, want %d and the close event", len(got), len(data))
	}
	lf := strings.NewReplacer("\r\n", "\n", "\r", "\n")
	for i, d := range data {
		want := ssetest.Event{ID: strconv.Itoa(i + 1), Type: []string{"", "progress", "with space", "ünï"}[i%4], Data: lf.Replace(d)}
		if got[i] != want {
			t.Errorf("event %d: got %+v, want %+v", i, got[i], want)
		}
	}
	if last := got[len(data)]; last.Type != "close" || last.Data != "" || last.ID != strconv.Itoa(len(data)) {
		t.Errorf("last event %+v, want close with empty data (and the last ID kept)", last)
	}
}

func TestHandlerHeaders(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b, WithRetry(1500*time.Millisecond))
	// Nothing is queued: the response headers must arrive anyway.
	c := open(t, srv.Client(), srv.URL, "k")
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache, no-transform",
		"X-Accel-Buffering": "no",
	} {
		if got := c.resp.Header.Get(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	enqueueSeq(t, b, "k", 1, 1)
	c.expectSeq(t, 1, 1)
	if d, ok := c.events.Retry(); !ok || d != 1500*time.Millisecond {
		t.Errorf("retry %v %v, want 1.5s", d, ok)
	}
}

func TestHandlerRefusals(t *testing.T) {
	b := newBroker[string](t)
	var logs syncBuffer
	srv, _ := serve(t, b, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	for _, c := range []struct {
		method, query string
		status        int
		body          string
	}{
		{http.MethodPost, "?key=k", http.StatusMethodNotAllowed, "sse: only GET streams events"},
		{http.MethodHead, "?key=k", http.StatusMethodNotAllowed, ""},
		// The key function's own words stay in the log: the client reads
		// the status text, or the error's public message.
		{http.MethodGet, "", http.StatusBadRequest, "Bad Request"},
		{http.MethodGet, "?key=secret", http.StatusForbidden, "Forbidden"},
		{http.MethodGet, "?key=panic", http.StatusInternalServerError, "Internal Server Error"},
		{http.MethodGet, "?key=login", http.StatusUnauthorized, "please log in"},
	} {
		req, _ := http.NewRequest(c.method, srv.URL+c.query, nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || strings.TrimSpace(string(body)) != c.body {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.query, resp.StatusCode, body, c.status, c.body)
		}
		if c.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET" {
			t.Errorf("405 without Allow: GET")
		}
	}
	if s := b.Stats(); s.Keys != 0 {
		t.Errorf("refused requests created %d keys", s.Keys)
	}
	for _, want := range []string{"status=403", "status=500", "missing key parameter", "no access", "exploded", "10.0.0.7"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
}

// noFlush is a ResponseWriter that cannot flush.
type noFlush struct{ http.ResponseWriter }

// middleware wraps a ResponseWriter and exposes it with Unwrap, as
// well-behaved middleware does.
type middleware struct{ http.ResponseWriter }

func (m middleware) Unwrap() http.ResponseWriter { return m.ResponseWriter }

func TestHandlerNeedsFlush(t *testing.T) {
	b := newBroker[string](t)
	ctx := context.Background()
	enqueueSeq(t, b, "k", 1, 3)
	must(t, b.Close(ctx, "k"))
	h := Handler(b, queryKey)

	rec := httptest.NewRecorder()
	h.ServeHTTP(noFlush{rec}, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), "must implement Unwrap() http.ResponseWriter") {
		t.Fatalf("a writer that cannot flush got %d %q, want 500 saying what a wrapper must do", rec.Code, rec.Body.String())
	}
	// Nothing was taken: the events are still there for a writer that can.
	rec = httptest.NewRecorder()
	h.ServeHTTP(middleware{rec}, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	evs, err := ssetest.Events(rec)
	if err != nil {
		t.Fatal(err)
	}
	if evs = stripIDs(t, evs); len(evs) != 4 || evs[0].ID != "1" || evs[2].ID != "3" {
		t.Fatalf("through middleware: %+v, want events 1-3 and close", evs)
	}
}

func TestHandlerFinishedKeyGets204(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	ctx := context.Background()
	must(t, b.Close(ctx, "never-opened"))
	enqueueSeq(t, b, "done", 1, 2)
	must(t, b.Close(ctx, "done"))

	c := open(t, srv.Client(), srv.URL, "done")
	c.expectSeq(t, 1, 2)
	c.expectClose(t)
	for _, key := range []string{"never-opened", "done"} {
		resp, err := srv.Client().Get(srv.URL + "?key=" + key)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("%s: %d, want 204", key, resp.StatusCode)
		}
	}
}

func TestHandlerStreamsLiveEventsAndClose(t *testing.T) {
	b := newBroker[string](t)
	srv, h := serve(t, b)
	c := open(t, srv.Client(), srv.URL, "k")
	for i := 1; i <= 50; i++ {
		enqueueSeq(t, b, "k", i, i)
		c.expectSeq(t, i, i) // each event arrives before the next is sent
	}
	enqueueSeq(t, b, "k", 51, 500)
	must(t, b.Close(context.Background(), "k"))
	c.expectSeq(t, 51, 500)
	c.expectClose(t)
	h.waitIdle(t)
}

func TestHandlerTerminateMessage(t *testing.T) {
	b := newBroker[string](t)
	enqueueSeq(t, b, "k", 1, 1)
	must(t, b.Close(context.Background(), "k"))
	rec := httptest.NewRecorder()
	Handler(b, queryKey, WithTerminateMessage()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	evs, err := ssetest.Events(rec)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[1].Data != "---terminate---" || evs[1].Type != "" {
		t.Fatalf("got %+v, want event 1 then the terminate message", evs)
	}
}

// flushRecorder is a ResponseWriter for a handler run in a synctest
// bubble: it records what each Flush sent. The handler's goroutine writes,
// the test reads; mu guards both.
type flushRecorder struct {
	header  http.Header // the handler's goroutine only
	mu      sync.Mutex
	pending bytes.Buffer // written since the last Flush
	flushes []string     // what each Flush sent, in order
	read    int          // how many of them sent has returned
}

func (f *flushRecorder) Header() http.Header { return f.header }
func (f *flushRecorder) WriteHeader(int)     {}

func (f *flushRecorder) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pending.Write(p)
}

func (f *flushRecorder) Flush() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes = append(f.flushes, f.pending.String())
	f.pending.Reset()
}

// sent returns what was flushed since its last call (or rawSent's), with
// the epochs stripped from the IDs.
func (f *flushRecorder) sent() []string {
	out := f.rawSent()
	for i := range out {
		out[i] = plain(out[i])
	}
	return out
}

// rawSent returns what was flushed since its last call (or sent's).
func (f *flushRecorder) rawSent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := slices.Clone(f.flushes[f.read:])
	f.read = len(f.flushes)
	return out
}

// serveBubble runs h for key k in the calling synctest bubble until the
// test ends.
func serveBubble(t *testing.T, h http.Handler, k string) *flushRecorder {
	ctx, cancel := context.WithCancel(context.Background())
	rec := &flushRecorder{header: http.Header{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/?key="+k, nil))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return rec
}

func TestHandlerHeartbeatOnlyWhileIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t)
		rec := serveBubble(t, Handler(b, queryKey, WithHeartbeat(20*time.Millisecond)), "k")
		synctest.Wait()
		if got := rec.sent(); len(got) != 1 || got[0] != "" {
			t.Fatalf("sent %q at the start, want one flush of the headers", got)
		}

		time.Sleep(110 * time.Millisecond) // idle: a beat at 20, 40, 60, 80, 100 ms
		synctest.Wait()
		if got := rec.sent(); len(got) != 5 || strings.Count(strings.Join(got, ""), ": ping\n\n") != 5 {
			t.Fatalf("sent %q in 110ms at 20ms, want 5 heartbeats", got)
		}

		for i := 1; i <= 20; i++ { // busy: an event every 10 ms for 200 ms
			enqueueSeq(t, b, "k", i, i)
			synctest.Wait()
			want := fmt.Sprintf("id: %d\ndata: %d\n\n", i, i)
			if got := rec.sent(); len(got) != 1 || got[0] != want {
				t.Fatalf("sent %q for event %d, want only %q", got, i, want)
			}
			time.Sleep(10 * time.Millisecond)
		}

		time.Sleep(35 * time.Millisecond) // idle again for 45 ms since the last write
		synctest.Wait()
		if got := rec.sent(); len(got) != 2 || strings.Join(got, "") != ": ping\n\n: ping\n\n" {
			t.Fatalf("sent %q, want 2 heartbeats once idle again", got)
		}
	})
}

func TestHandlerFlushesOncePerReadyBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t)
		enqueueSeq(t, b, "k", 1, 10) // ready before the handler starts
		rec := serveBubble(t, Handler(b, queryKey, WithHeartbeat(0)), "k")
		synctest.Wait()
		var want strings.Builder
		for i := 1; i <= 10; i++ {
			fmt.Fprintf(&want, "id: %d\ndata: %d\n\n", i, i)
		}
		if got := rec.sent(); len(got) != 2 || got[0] != "" || got[1] != want.String() {
			t.Fatalf("sent %q, want the headers, then the 10 ready events in one flush", got)
		}

		// One event, with no time passing: it is flushed at once, not held
		// back to fill a buffer.
		enqueueSeq(t, b, "k", 11, 11)
		synctest.Wait()
		if got := rec.sent(); len(got) != 1 || got[0] != "id: 11\ndata: 11\n\n" {
			t.Fatalf("sent %q, want event 11 flushed at once", got)
		}
	})
}

func TestHandlerClientDisconnectLeavesEventsQueued(t *testing.T) {
	b := newBroker[string](t)
	srv, h := serve(t, b)
	c := open(t, srv.Client(), srv.URL, "k")
	enqueueSeq(t, b, "k", 1, 1)
	c.expectSeq(t, 1, 1)
	c.close()
	h.waitIdle(t)
	enqueueSeq(t, b, "k", 2, 5)
	must(t, b.Close(context.Background(), "k"))
	checkSeq(t, recvAll(t, b.Stream("k")), 2) // nothing taken after the disconnect
}

func TestHandlerEndsOnBrokerShutdown(t *testing.T) {
	b := New[string]()
	srv, h := serve(t, b)
	c := open(t, srv.Client(), srv.URL, "k")
	enqueueSeq(t, b, "k", 1, 3)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	must(t, b.Shutdown(ctx))
	c.expectSeq(t, 1, 3)
	c.expectClose(t)
	h.waitIdle(t)
	resp, err := srv.Client().Get(srv.URL + "?key=other")
	if err != nil {
		t.Fatal(err)
	}
	// A shut down broker asks clients to come back, perhaps to another
	// server: any status but 200 would make a browser give up.
	expectTryLater(t, resp, DefaultBusyRetry)
}

// writes is a ResponseWriter that counts the events in each Write.
type writes struct {
	http.ResponseWriter
	events []int
}

func (w *writes) Write(p []byte) (int, error) {
	w.events = append(w.events, bytes.Count(p, []byte("id: ")))
	return w.ResponseWriter.Write(p)
}

func (w *writes) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestHandlerBatchesNoMoreThanTheWindow: the handler takes no more events
// between two writes than the replay window holds, so that a write that
// fails loses none of them.
func TestHandlerBatchesNoMoreThanTheWindow(t *testing.T) {
	const window, total = 8, 100
	b := newBroker[string](t, WithBuffer(128), WithReplay(window, 1<<20))
	enqueueSeq(t, b, "k", 1, total) // all ready at once
	must(t, b.Close(context.Background(), "k"))
	w := &writes{ResponseWriter: httptest.NewRecorder()}
	Handler(b, queryKey).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	sum := 0
	for _, n := range w.events {
		if n > window {
			t.Fatalf("a write of %d events, more than the window of %d: %v", n, window, w.events)
		}
		sum += n
	}
	if sum != total {
		t.Fatalf("wrote %d events, want %d: %v", sum, total, w.events)
	}
}

// busy is a Source whose keys are always held by another connection.
type busy struct{}

func (busy) Subscribe(context.Context, string, SubscribeRequest) (Subscription, error) {
	return nil, ErrBusy
}

func (busy) Mode() Mode { return Queue }

// TestHandlerBusy: a second reader is refused with 409, which stops a
// browser; a resuming client whose takeover lost to a newer one is told to
// come back instead.
func TestHandlerBusy(t *testing.T) {
	h := Handler[string](busy{}, queryKey)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	if rec.Code != http.StatusConflict {
		t.Fatalf("a second reader got %d, want 409", rec.Code)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
	req.Header.Set("Last-Event-ID", "3")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	expectTryLater(t, resp, DefaultBusyRetry)
}

// smallBuffers is a listener whose connections have tiny socket send
// buffers, so that a client that stops reading blocks the server's writes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		err = c.(*net.TCPConn).SetWriteBuffer(4096)
	}
	return c, err
}

// dialStalled requests key's stream from addr over a connection with a tiny
// receive buffer, then never reads: a client whose network died, or that
// stopped reading, as the server sees it.
func dialStalled(t *testing.T, addr, key string, header ...string) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) {
			err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		})
		return err
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /?key=%s HTTP/1.1\r\nHost: x\r\n", key)
	for i := 0; i+1 < len(header); i += 2 {
		fmt.Fprintf(conn, "%s: %s\r\n", header[i], header[i+1])
	}
	fmt.Fprintf(conn, "\r\n")
	return conn
}

// TestHandlerDropsClientThatStopsReading: the write deadline releases a
// handler whose client stopped reading, and what it took is not lost. The
// client that resumes reads through another handler of the broker, with
// the default deadline, so that its long read is not cut on a slow machine.
func TestHandlerDropsClientThatStopsReading(t *testing.T) {
	b := newBroker[string](t)
	h := &tracked{h: Handler(b, queryKey, WithWriteTimeout(200*time.Millisecond))}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	dialStalled(t, srv.Listener.Addr().String(), "k")
	h.waitActive(t, 1)

	big := strings.Repeat("x", 64<<10)
	const n = 200 // 12.8 MB: far more than the socket buffers hold
	for range n {
		must(t, b.Enqueue(context.Background(), "k", big))
	}
	h.waitIdle(t) // the write deadline released the handler
	must(t, b.Close(context.Background(), "k"))
	sub, err := b.Subscribe(context.Background(), "k", SubscribeRequest{Resume: true})
	must(t, err)
	if _, taken := missed(t, sub); len(taken) == 0 || len(taken) == n {
		t.Fatalf("the handler took %d of %d events before it was dropped", len(taken), n)
	}
	sub.Close()

	// Nothing is lost: what the handler took is in the replay window, the
	// rest is still queued. A client resuming from the start gets it all.
	resumed, _ := serve(t, b)
	c := open(t, resumed.Client(), resumed.URL, "k", "Last-Event-ID", "0")
	for i := 1; i <= n; i++ {
		if ev := c.next(t); ev.ID != strconv.Itoa(i) || len(ev.Data) != len(big) {
			t.Fatalf("got event %s (%d bytes), want %d", ev.ID, len(ev.Data), i)
		}
	}
	c.expectClose(t)
}

func TestHandlerSurvivesServerWriteTimeout(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			b := newBroker[string](t)
			h := &tracked{h: Handler(b, queryKey, WithHeartbeat(200*time.Millisecond))}
			srv := httptest.NewUnstartedServer(h)
			srv.Config.WriteTimeout = time.Second
			if h2 {
				srv.EnableHTTP2 = true
				srv.StartTLS()
			} else {
				srv.Start()
			}
			t.Cleanup(srv.Close)
			c := open(t, srv.Client(), srv.URL, "k")
			if h2 && c.resp.ProtoMajor != 2 {
				t.Fatalf("protocol %s, want HTTP/2", c.resp.Proto)
			}
			start := time.Now()
			for i := 1; time.Since(start) < 3*time.Second; i++ {
				if i == 10 {
					time.Sleep(1500 * time.Millisecond) // idle longer than WriteTimeout
				}
				enqueueSeq(t, b, "k", i, i)
				c.expectSeq(t, i, i)
				time.Sleep(100 * time.Millisecond)
			}
			must(t, b.Close(context.Background(), "k"))
			c.expectClose(t)
		})
	}
}

// TestHandlerIdleLongerThanWriteTimeout checks that the write deadline is
// lifted between writes: HTTP/2 resets a stream whose deadline passes even
// while nothing is being written.
func TestHandlerIdleLongerThanWriteTimeout(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			b := newBroker[string](t)
			srv := httptest.NewUnstartedServer(Handler(b, queryKey, WithHeartbeat(0), WithWriteTimeout(100*time.Millisecond)))
			srv.EnableHTTP2 = h2
			srv.StartTLS()
			t.Cleanup(srv.Close)
			c := open(t, srv.Client(), srv.URL, "k")
			enqueueSeq(t, b, "k", 1, 1)
			c.expectSeq(t, 1, 1)
			time.Sleep(400 * time.Millisecond)
			enqueueSeq(t, b, "k", 2, 2)
			c.expectSeq(t, 2, 2)
		})
	}
}

func TestHandlerHTTP2(t *testing.T) {
	b := newBroker[string](t)
	srv := httptest.NewUnstartedServer(Handler(b, queryKey))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := open(t, srv.Client(), srv.URL, "k")
	if c.resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", c.resp.Proto)
	}
	if v := c.resp.Header.Values("Connection"); len(v) != 0 {
		t.Fatalf("Connection header %q on HTTP/2", v)
	}
	must(t, b.Publish(context.Background(), "k", Event{Name: "n", Data: "a\r\nb"}))
	if ev := c.next(t); ev != (ssetest.Event{ID: "1", Type: "n", Data: "a\nb"}) {
		t.Fatalf("got %+v", ev)
	}
	must(t, b.Close(context.Background(), "k"))
	c.expectClose(t)
}

func TestHandlerSecondConnection(t *testing.T) {
	t.Run("resume takes over", func(t *testing.T) {
		b := newBroker[string](t)
		var logs syncBuffer
		srv, h := serve(t, b, WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		first := open(t, srv.Client(), srv.URL, "k")
		enqueueSeq(t, b, "k", 1, 1)
		first.expectSeq(t, 1, 1)

		second := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", first.wireID(1))
		first.expectCut(t) // the older response ended first, without close
		if h.active.Load() != 1 {
			t.Fatalf("%d handlers running, want only the new one", h.active.Load())
		}
		enqueueSeq(t, b, "k", 2, 3)
		second.expectSeq(t, 2, 3)
		if !strings.Contains(logs.String(), "taken over") {
			t.Errorf("takeover not logged:\n%s", logs.String())
		}

		// A request without an ID is another reader: refused.
		resp, err := srv.Client().Get(srv.URL + "?key=k")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict {
			t.Fatalf("second reader: %d, want 409", resp.StatusCode)
		}
		enqueueSeq(t, b, "k", 4, 4)
		second.expectSeq(t, 4, 4) // undisturbed
		if !strings.Contains(logs.String(), "status=409") {
			t.Errorf("409 not logged:\n%s", logs.String())
		}
	})
	t.Run("always take over", func(t *testing.T) {
		b := newBroker[string](t)
		srv, _ := serve(t, b, WithTakeover(TakeoverAlways))
		first := open(t, srv.Client(), srv.URL, "k")
		enqueueSeq(t, b, "k", 1, 1)
		first.expectSeq(t, 1, 1)
		second := open(t, srv.Client(), srv.URL, "k")
		first.expectCut(t)
		enqueueSeq(t, b, "k", 2, 2)
		second.expectSeq(t, 2, 2)
	})
}

func TestHandlerManyClients(t *testing.T) {
	b := newBroker[string](t)
	srv, h := serve(t, b)
	const clients, events = 200, 20
	tr := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: clients}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	conns := make([]*client, clients)
	for i := range conns {
		conns[i] = open(t, hc, srv.URL, strconv.Itoa(i))
	}
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			for j := 1; j <= events; j++ {
				ev, err := c.events.Next()
				if want := strconv.Itoa(j); err != nil || seqOf(ev.ID) != want || ev.Data != fmt.Sprintf("%d/%d", i, j) {
					t.Errorf("client %d: got %+v %v, want event %s", i, ev, err, want)
					return
				}
			}
			if ev, err := c.events.Next(); err != nil || ev.Type != "close" {
				t.Errorf("client %d: got %+v %v, want close", i, ev, err)
			}
		})
	}
	ctx := context.Background()
	for j := 1; j <= events; j++ {
		for i := range clients {
			must(t, b.Enqueue(ctx, strconv.Itoa(i), fmt.Sprintf("%d/%d", i, j)))
		}
	}
	for i := range clients {
		must(t, b.Close(ctx, strconv.Itoa(i)))
	}
	wg.Wait()
	h.waitIdle(t)
}

// TestGracefulServerShutdown is the recipe in Handler's documentation:
// http.Server.Shutdown waits for handlers, so it cancels the server's base
// context to end the streams.
func TestGracefulServerShutdown(t *testing.T) {
	b := newBroker[string](t)
	h := &tracked{h: Handler(b, queryKey)}
	srv := httptest.NewUnstartedServer(h)
	base, stop := context.WithCancel(context.Background())
	defer stop()
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	srv.Config.RegisterOnShutdown(stop)
	srv.Start()
	t.Cleanup(srv.Close)

	const streams = 50
	conns := make([]*client, streams)
	for i := range conns {
		b.Stream(strconv.Itoa(i)) // a server key, which outlives its streams
		conns[i] = open(t, srv.Client(), srv.URL, strconv.Itoa(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	t.Logf("Shutdown with %d streams took %v", streams, time.Since(start))
	for _, c := range conns {
		c.expectEOF(t) // no close event: the client reconnects elsewhere
	}
	h.waitIdle(t)
	if s := b.Stats(); s.Keys != streams {
		t.Fatalf("%d keys, want %d still open for the clients' return", s.Keys, streams)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestHandlerWaitEndedSaysTryLater: a resuming request still waiting for
// the old connection when the server shuts down is told to come back; an
// empty 200 without the event-stream type would make a browser give up.
func TestHandlerWaitEndedSaysTryLater(t *testing.T) {
	b := newBroker[string](t)
	old, err := b.Subscribe(context.Background(), "k", SubscribeRequest{}) // never lets go
	must(t, err)
	defer old.Close()
	base, stop := context.WithCancel(context.Background())
	defer stop()
	h := &tracked{h: Handler(b, queryKey)}
	srv := httptest.NewUnstartedServer(h)
	srv.Config.BaseContext = func(net.Listener) context.Context { return base }
	srv.Start()
	defer srv.Close()
	got := make(chan *http.Response, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
		req.Header.Set("Last-Event-ID", "0")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	h.waitActive(t, 1) // waiting for old to end
	stop()             // what RegisterOnShutdown does in the recipe
	if resp := <-got; resp != nil {
		expectTryLater(t, resp, DefaultBusyRetry)
	}
}

// TestHandlerQueryIDDoesNotTakeOver: the lastEventId parameter is in every
// request a page makes, so it does not take a key over as a reconnecting
// browser's Last-Event-ID header does: a second tab gets 409.
func TestHandlerQueryIDDoesNotTakeOver(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	tabA := open(t, srv.Client(), srv.URL, "k&lastEventId=0")
	tabB, err := tryOpen(srv.Client(), srv.URL, "k&lastEventId=0")
	if err != nil {
		t.Fatal(err)
	}
	defer tabB.close()
	if tabB.resp.StatusCode != http.StatusConflict {
		t.Fatalf("second tab: %d, want 409", tabB.resp.StatusCode)
	}
	enqueueSeq(t, b, "k", 1, 1)
	tabA.expectSeq(t, 1, 1) // the first tab still has its stream
}

// TestHandlerRetryAtLeastOneMillisecond: a retry under a millisecond is
// sent as 1, never as 0, which would make clients reconnect at once.
func TestHandlerRetryAtLeastOneMillisecond(t *testing.T) {
	b := newBroker[string](t)
	enqueueSeq(t, b, "k", 1, 1)
	must(t, b.Close(context.Background(), "k"))
	for _, src := range []Source[string]{b, busy{}} { // a stream, and a refusal
		h := Handler(src, queryKey, WithRetry(500*time.Microsecond))
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/?key=k", nil)
		req.Header.Set("Last-Event-ID", "0")
		h.ServeHTTP(rec, req)
		if !strings.HasPrefix(rec.Body.String(), "retry: 1\n") {
			t.Errorf("%T: %q, want retry: 1 first", src, rec.Body.String())
		}
	}
}

// gatedRecorder is a flushRecorder whose writes wait for gate, and take
// delay each: a slow client, or one that stopped reading.
type gatedRecorder struct {
	flushRecorder
	gate  chan struct{} // nil: open
	delay time.Duration
}

func (g *gatedRecorder) Write(p []byte) (int, error) {
	if g.gate != nil {
		<-g.gate
	}
	time.Sleep(g.delay)
	return g.flushRecorder.Write(p)
}

// serveGated runs h for key k in the calling synctest bubble, writing into
// rec, and returns a channel closed when the handler returns.
func serveGated(t *testing.T, h http.Handler, k string, rec *gatedRecorder) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	rec.header = http.Header{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/?key="+k, nil))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return done
}

// events parses what rec was sent, with the epoch stripped from the IDs.
func (f *flushRecorder) events(t *testing.T) []ssetest.Event {
	t.Helper()
	var all []ssetest.Event
	r := ssetest.NewReader(strings.NewReader(strings.Join(f.rawSent(), "")))
	for {
		ev, err := r.Next()
		if err == io.EOF {
			return stripIDs(t, all)
		}
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ev)
	}
}

// TestHandlerSlowClientOfClosedKey: a client that takes longer than the
// retention time to read a closed key still gets every event, then close.
func TestHandlerSlowClientOfClosedKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithRetention(200*time.Millisecond))
		big := strings.Repeat("x", 2<<10)
		for i := 1; i <= 100; i++ {
			must(t, b.Enqueue(context.Background(), "k", strconv.Itoa(i)+big))
		}
		must(t, b.Close(context.Background(), "k"))
		// 16 events a write, 70 ms each: the retention time passes while
		// the third write is on its way, with 36 events still in overflow.
		rec := &gatedRecorder{delay: 70 * time.Millisecond}
		<-serveGated(t, Handler(b, queryKey, WithHeartbeat(0)), "k", rec)
		evs := rec.events(t)
		if len(evs) != 101 || evs[100].Type != EventClose {
			t.Fatalf("got %d events, the last %+v: want 100 and close", len(evs), evs[len(evs)-1])
		}
		for i, ev := range evs[:100] {
			if ev.ID != strconv.Itoa(i+1) {
				t.Fatalf("event %d has ID %s", i+1, ev.ID)
			}
		}
	})
}

// TestHandlerCutShortSendsNoClose: when a key's stream is cut short (the
// key forgotten with events its client never took, or Shutdown's deadline
// passed), the response ends without close, so that the browser reconnects
// and learns what happened.
func TestHandlerCutShortSendsNoClose(t *testing.T) {
	for _, how := range []string{"forgotten", "shutdown"} {
		t.Run(how, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				b := New[string](WithRetention(time.Minute))
				defer b.Shutdown(context.Background())
				enqueueSeq(t, b, "k", 1, 100)
				must(t, b.Close(context.Background(), "k"))
				rec := &gatedRecorder{gate: make(chan struct{})}
				done := serveGated(t, Handler(b, queryKey, WithHeartbeat(0)), "k", rec)
				synctest.Wait() // the handler is blocked writing its first events
				switch how {
				case "forgotten":
					time.Sleep(2 * time.Minute)
				case "shutdown":
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					defer cancel()
					if err := b.Shutdown(ctx); !errors.Is(err, ErrDropped) {
						t.Fatalf("Shutdown: %v, want ErrDropped", err)
					}
				}
				synctest.Wait()
				if s := b.Stats(); s.Dropped == 0 {
					t.Fatalf("stats %+v: want events dropped", s)
				}
				close(rec.gate)
				<-done
				evs := rec.events(t)
				if len(evs) == 0 || len(evs) == 100 || evs[len(evs)-1].Type == EventClose {
					t.Fatalf("got %d events, the last %+v: want some, then the end without close", len(evs), evs[len(evs)-1])
				}
			})
		})
	}
}

// TestHandlerGapForDroppedEvents: events an overflow policy dropped reach
// an SSE client as a gap, never as a silent jump in IDs.
func TestHandlerGapForDroppedEvents(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t, WithBuffer(1), WithMaxPending(2, DropOldest))
		enqueueSeq(t, b, "k", 1, 20)
		must(t, b.Close(context.Background(), "k"))
		rec := &gatedRecorder{}
		<-serveGated(t, Handler(b, queryKey, WithHeartbeat(0)), "k", rec)
		next, gaps := 1, 0
		for _, ev := range rec.events(t) {
			switch ev.Type {
			case EventClose:
				continue
			case EventGap:
				gaps++
				want := fmt.Sprintf(`{"from":%d,"to":%s}`, next, ev.ID)
				if ev.Data != want {
					t.Fatalf("gap %s, want %s", ev.Data, want)
				}
				next, _ = strconv.Atoi(ev.ID)
			default:
				if ev.ID != strconv.Itoa(next) {
					t.Fatalf("event %s after %d without a gap", ev.ID, next-1)
				}
			}
			next++
		}
		if gaps != 1 || next != 21 {
			t.Fatalf("%d gaps, up to %d: want one gap, then 19 and 20", gaps, next-1)
		}
	})
}

// TestHandlerCacheControl: responses that are not a live stream must not
// be cached; streams must not be transformed (compressing proxies buffer).
func TestHandlerCacheControl(t *testing.T) {
	b := newBroker[string](t)
	must(t, b.Close(context.Background(), "done"))
	known := Handler(b, queryKey, WithKnownKeysOnly())
	for _, c := range []struct {
		name   string
		h      http.Handler
		method string
		url    string
		header string
		status int
	}{
		{"405", known, http.MethodPost, "/?key=k", "", http.StatusMethodNotAllowed},
		{"400", known, http.MethodGet, "/", "", http.StatusBadRequest},
		{"403", known, http.MethodGet, "/?key=secret", "", http.StatusForbidden},
		{"404", known, http.MethodGet, "/?key=unknown", "", http.StatusNotFound},
		{"409", Handler[string](busy{}, queryKey), http.MethodGet, "/?key=k", "", http.StatusConflict},
		{"204", known, http.MethodGet, "/?key=done", "", http.StatusNoContent},
		{"retry later", Handler[string](busy{}, queryKey), http.MethodGet, "/?key=k", "1", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(c.method, c.url, nil)
		if c.header != "" {
			req.Header.Set("Last-Event-ID", c.header)
		}
		c.h.ServeHTTP(rec, req)
		if rec.Code != c.status || rec.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("%s: status %d, Cache-Control %q; want %d, no-store", c.name, rec.Code, rec.Header().Get("Cache-Control"), c.status)
		}
	}
}

// TestHandlerInvalidKey: a key the broker cannot hold gets 400, and the
// broker carries on.
func TestHandlerInvalidKey(t *testing.T) {
	b := newBroker[any](t)
	h := Handler(b, func(r *http.Request) (any, error) {
		if r.URL.Query().Get("key") == "bad" {
			return []int{1}, nil
		}
		return r.URL.Query().Get("key"), nil
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key=bad", nil))
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("an unhashable key: %d, want 400", rec.Code)
	}
	must(t, b.Enqueue(context.Background(), "fine", "1"))
	checkSeq(t, recv(t, b.Stream("fine"), 1), 1)
}

// pieces is a ResponseWriter that records the size of each Write and
// checks that each has a fresh write deadline, set since the last Write.
type pieces struct {
	header   http.Header
	mu       sync.Mutex
	largest  int
	written  int
	writes   int
	fresh    bool // a deadline was set since the last Write
	stale    int  // writes without a fresh deadline
	deadline time.Time
}

func (p *pieces) Header() http.Header { return p.header }
func (p *pieces) WriteHeader(int)     {}
func (p *pieces) Flush()              {}

func (p *pieces) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.largest = max(p.largest, len(b))
	p.written += len(b)
	p.writes++
	if !p.fresh || p.deadline.IsZero() {
		p.stale++
	}
	p.fresh = false
	return len(b), nil
}

func (p *pieces) SetWriteDeadline(t time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deadline, p.fresh = t, !t.IsZero()
	return nil
}

// TestReplayIsWrittenInPieces: a large replay is written in writes of at
// most 32 KiB, each under its own deadline, without a copy of the window.
func TestReplayIsWrittenInPieces(t *testing.T) {
	b := newBroker[string](t, WithReplay(1024, 128<<20))
	big := strings.Repeat("x", 64<<10)
	const n = 1024 // 64 MiB
	for range n {
		must(t, b.Enqueue(context.Background(), "k", big))
	}
	take(t, b, "k", SubscribeRequest{}, n)
	w := &pieces{header: http.Header{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	go func() {
		defer close(done)
		Handler(b, queryKey).ServeHTTP(w, httptest.NewRequestWithContext(ctx, http.MethodGet, "/?key=k&lastEventId=0", nil))
	}()
	deadline := time.Now().Add(patience)
	for {
		w.mu.Lock()
		written := w.written
		w.mu.Unlock()
		if written >= n*len(big) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replayed %d bytes in %v", written, patience)
		}
		time.Sleep(time.Millisecond)
	}
	runtime.ReadMemStats(&after)
	cancel()
	<-done
	if w.largest > 32<<10 || w.stale > 0 {
		t.Fatalf("%d writes, the largest %d bytes, %d without a fresh deadline: want at most 32 KiB each, each with its deadline", w.writes, w.largest, w.stale)
	}
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 4<<20 {
		t.Fatalf("the replay of 64 MiB allocated %d bytes, want under 4 MiB", grown)
	}
}

// TestHandlerRetryInTheFirstEventsBlock: a retry field never stands in a
// block of its own, which some clients (go-sse, r3labs) dispatch as an
// empty message, nor in a block left open (heartbeats piling up in it
// would overflow their line scanners). With WithRetry it starts the block
// of the stream's first event, after heartbeats as usual. In a retry later
// answer, and at a graceful shutdown, it ends the response with no blank
// line after it.
func TestHandlerRetryInTheFirstEventsBlock(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b, WithRetry(1500*time.Millisecond), WithHeartbeat(5*time.Millisecond))
	c := open(t, srv.Client(), srv.URL, "k")
	raw := bufio.NewReader(c.resp.Body)
	var head strings.Builder
	for pings := 0; pings < 3; {
		line, err := raw.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		head.WriteString(line)
		if line == ": ping\n" {
			pings++
		}
	}
	enqueueSeq(t, b, "k", 1, 2)
	for !strings.HasSuffix(head.String(), "id: 2\ndata: 2\n\n") && !strings.HasSuffix(plain(head.String()), "id: 2\ndata: 2\n\n") {
		line, err := raw.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		head.WriteString(line)
	}
	got := plain(head.String())
	if !strings.HasPrefix(got, ": ping\n\n") || !strings.Contains(got, ": ping\n\nretry: 1500\nid: 1\ndata: 1\n\n") || strings.Count(got, "retry") != 1 {
		t.Fatalf("the stream began %q: want heartbeats, then the retry at the start of the first event's block only", got)
	}

	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/?key=k", nil)
	req.Header.Set("Last-Event-ID", "0") // a takeover that lost: come back later
	Handler[string](busy{}, queryKey, WithRetry(time.Second)).ServeHTTP(rec, req)
	if got := rec.Body.String(); got != "retry: 1000\n" {
		t.Fatalf("retry later: %q, want the field alone with no blank line", got)
	}
}

// badEpoch is a Source whose subscriptions name their epoch as it says.
type badEpoch struct {
	Source[string]
	epoch string
}

func (s badEpoch) Subscribe(ctx context.Context, key string, req SubscribeRequest) (Subscription, error) {
	sub, err := s.Source.Subscribe(ctx, key, req)
	if err != nil {
		return nil, err
	}
	return epochSub{sub, s.epoch}, nil
}

type epochSub struct {
	Subscription
	epoch string
}

func (s epochSub) Epoch() string { return s.epoch }

// TestHandlerRefusesABadEpoch: an epoch from a custom Source that
// docs/protocol.md does not allow (a line break would let it inject
// fields, a "close" among them) gets 500, and nothing of it is written.
func TestHandlerRefusesABadEpoch(t *testing.T) {
	b := newBroker[string](t)
	enqueueSeq(t, b, "k", 1, 1)
	for _, epoch := range []string{"", "a\nevent: close\ndata:\n\nid: b", "a-b", "é", strings.Repeat("a", 65)} {
		rec := httptest.NewRecorder()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second) // a stream would go on
		Handler[string](badEpoch{b, epoch}, queryKey).ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodGet, "/?key=k", nil))
		cancel()
		if rec.Code != http.StatusInternalServerError || strings.Contains(rec.Body.String(), "close") {
			t.Errorf("epoch %q: %d %q, want 500 and none of it", epoch, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	Handler[string](badEpoch{b, strings.Repeat("Z9", 32)}, queryKey, WithHeartbeat(0)).ServeHTTP(rec, func() *http.Request {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		return httptest.NewRequestWithContext(ctx, http.MethodGet, "/?key=k", nil)
	}())
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "id: "+strings.Repeat("Z9", 32)+"-1\n") {
		t.Errorf("a 64-character epoch: %d %q, want it streamed", rec.Code, rec.Body.String())
	}
}

// TestHandlerRetryBlockStaysShort: go-sse and r3labs split a stream into
// blocks with a bufio.Scanner whose token limit is 64 KiB. With WithRetry,
// a first block left open until the first event, with every heartbeat
// before it added to it, outgrew that after about 9,400 heartbeats of an
// idle key (39 h at the default 15 s), and both clients failed on a well
// formed stream.
func TestHandlerRetryBlockStaysShort(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBroker[string](t)
		rec := serveBubble(t, Handler(b, queryKey, WithRetry(time.Second)), "k")
		synctest.Wait()
		time.Sleep(10000 * DefaultHeartbeat) // an idle key: about 42 hours
		synctest.Wait()
		enqueueSeq(t, b, "k", 1, 1)
		synctest.Wait()
		stream := strings.Join(rec.rawSent(), "")

		// How go-sse and r3labs read it: a block is what ends at a blank line.
		sc := bufio.NewScanner(strings.NewReader(stream))
		sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
			if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
				return i + 2, data[:i], nil
			}
			if atEOF && len(data) > 0 {
				return len(data), data, nil
			}
			return 0, nil, nil
		})
		for sc.Scan() {
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("a 64 KiB block scanner (go-sse, r3labs) fails on the stream: %v; its first block is %d bytes",
				err, strings.Index(stream, "\n\n")+2)
		}
	})
}

// injecting is a Source whose events have a Name with a line break.
type injecting struct{}

func (injecting) Mode() Mode { return Queue }
func (injecting) Subscribe(context.Context, string, SubscribeRequest) (Subscription, error) {
	return &injectingSub{}, nil
}

type injectingSub struct{ sent bool }

func (*injectingSub) Epoch() string { return "e1" }
func (*injectingSub) Close()        {}
func (s *injectingSub) Next(ctx context.Context, buf []Event, _ <-chan time.Time, _ int) ([]Event, Gap, error) {
	if s.sent {
		return nil, Gap{}, ErrTruncated // ends the response without close
	}
	s.sent = true
	return append(buf[:0], Event{ID: 1, Name: "tick\nevent: close", Data: "x"}), Gap{}, nil
}

// Poll is Next: it never waits.
func (s *injectingSub) Poll(ctx context.Context, buf []Event, limit int, _ func()) ([]Event, Gap, error) {
	return s.Next(ctx, buf, nil, limit)
}

// TestHandlerChecksSourceEvents: an event from a Source other than the
// Broker, whose Name has a line break, would inject any field, a close
// among them: it is sent as the gap of its ID.
func TestHandlerChecksSourceEvents(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler[string](injecting{}, queryKey, WithHeartbeat(0)).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	evs, _ := ssetest.Events(rec)
	if len(evs) != 1 || evs[0].Type != EventGap || evs[0].Data != `{"from":1,"to":1}` {
		t.Fatalf("a source's event with a line break in its Name: %q, want only the gap of its ID", rec.Body.String())
	}
}
