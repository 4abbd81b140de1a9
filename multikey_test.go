package sse

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rocketqueue/sse/internal/cutproxy"
	"github.com/rocketqueue/sse/ssetest"
)

// listKeys takes a multi-key request's keys from the "keys" query
// parameter, comma separated; "secret" among them refuses the request
// with 403.
func listKeys(r *http.Request) ([]string, error) {
	v := r.URL.Query().Get("keys")
	if v == "" {
		return nil, nil
	}
	keys := strings.Split(v, ",")
	for _, k := range keys {
		if k == "secret" {
			return nil, fmt.Errorf("no access: %w", statusError(http.StatusForbidden))
		}
	}
	return keys, nil
}

// serveMulti starts a test server for b's MultiHandler.
func serveMulti(t *testing.T, b *Broker[string], opts ...HandlerOption) (*httptest.Server, *tracked) {
	t.Helper()
	h := &tracked{h: MultiHandler(b, listKeys, opts...)}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

// getMulti requests keys' stream, with lastID in Last-Event-ID unless it
// is empty. The response's body is closed when the test ends.
func getMulti(t testing.TB, hc *http.Client, url string, keys []string, lastID string) *http.Response {
	t.Helper()
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	resp, cancel, err := tryGet(hc, url+sep+"keys="+strings.Join(keys, ","), lastID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); resp.Body.Close() })
	return resp
}

// tryGet requests url, with lastID in Last-Event-ID unless it is empty,
// within patience; cancel ends the request.
func tryGet(hc *http.Client, url, lastID string) (resp *http.Response, cancel context.CancelFunc, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err == nil {
		if lastID != "" {
			req.Header.Set("Last-Event-ID", lastID)
		}
		resp, err = hc.Do(req)
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return resp, cancel, nil
}

// openMulti is getMulti for a stream: it fails unless the answer is one.
func openMulti(t testing.TB, hc *http.Client, url string, keys []string, lastID string) *ssetest.Reader {
	t.Helper()
	resp := getMulti(t, hc, url, keys, lastID)
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	return ssetest.NewReader(resp.Body)
}

// splitMulti splits a multi-key ID into its key index and entries; an ID
// that names a cursor is read with the cursor store, and must name one it
// holds, of keys, with at most CursorDelta keys moved (one more from a
// stream whose store failed, which then ends).
func splitMulti(t testing.TB, store CursorStore[string], keys []string, id string) (int, []string) {
	return splitCached(t, store, keys, id, nil)
}

// splitCached is splitMulti, keeping the cursors it read in cache if it is
// not nil.
func splitCached(t testing.TB, store CursorStore[string], keys []string, id string, cache map[string][]string) (int, []string) {
	t.Helper()
	index, vec, ok := strings.Cut(id, ":")
	i, err := strconv.Atoi(index)
	if !ok || err != nil {
		t.Fatalf("ID %q is not <index>:<vector>", id)
	}
	if !strings.HasPrefix(vec, "~") {
		return i, strings.Split(vec, ",")
	}
	if store == nil {
		t.Fatalf("ID %q names a cursor", id)
	}
	name, delta, _ := strings.Cut(vec[1:], ":")
	entries, ok := cache[name]
	if !ok {
		c, err := store.LoadCursor(context.Background(), name)
		if err != nil || fmt.Sprint(c.Keys) != fmt.Sprint(keys) {
			t.Fatalf("ID %q: cursor %q of keys %v, %v; want one of %v", id, name, c.Keys, err, keys)
		}
		entries = strings.Split(c.Positions, ",")
		if cache != nil {
			cache[name] = entries
		}
	}
	entries = slices.Clone(entries)
	if delta == "" {
		return i, entries
	}
	moved := strings.Split(delta, ",")
	if len(moved) > CursorDelta+1 { // one more when the store failed: the stream then ends
		t.Fatalf("ID %q moves %d keys, more than %d", id, len(moved), CursorDelta)
	}
	for _, d := range moved {
		j, e, _ := strings.Cut(d, "_")
		k, err := strconv.Atoi(j)
		if err != nil || k >= len(entries) {
			t.Fatalf("ID %q moves key %q", id, j)
		}
		entries[k] = e
	}
	return i, entries
}

// resolved returns a multi-key ID in the vector form: "<i>:<vector>".
func (l *multiLog) resolved(id string) string {
	l.t.Helper()
	i, entries := splitMulti(l.t, l.store, l.keys, id)
	return strconv.Itoa(i) + ":" + strings.Join(entries, ",")
}

// multiLog is what a page following keys on one connection has received,
// checked as it arrives: each ID names the event's key and moves only
// that key's entry; each key's events come in order, each once, with
// data "<key>/<ID>", or their sse.gap; sse.close comes once per key, and
// close only after the last.
type multiLog struct {
	t      testing.TB
	store  CursorStore[string] // reads the IDs that name cursors; nil: none may
	cache  map[string][]string // the entries of the cursors read
	keys   []string
	next   []uint64 // per key: the ID expected next; 0: any (the key's first event or gap)
	events [][]uint64
	gaps   [][]Gap
	closed []int
	vec    []string // the entries of the last ID
	epochs []string // per key: the epoch of its IDs
	ended  bool     // close was received
	last   string   // the last ID
}

func newMultiLog(t testing.TB, store CursorStore[string], keys []string) *multiLog {
	return &multiLog{t: t, store: store, cache: make(map[string][]string), keys: keys, next: make([]uint64, len(keys)), events: make([][]uint64, len(keys)),
		gaps: make([][]Gap, len(keys)), closed: make([]int, len(keys)), vec: make([]string, len(keys)), epochs: make([]string, len(keys))}
}

// strict makes every key start at its first event (or a gap from 1).
func (l *multiLog) strict() *multiLog {
	for i := range l.next {
		l.next[i] = 1
	}
	return l
}

func (l *multiLog) add(ev ssetest.Event) {
	t := l.t
	t.Helper()
	if l.ended {
		t.Fatalf("%+v after close", ev)
	}
	if ev.Type == EventClose {
		for i, e := range l.vec {
			if e != closedEntry {
				t.Fatalf("close, but key %d was not closed (ID %q)", i, l.last)
			}
		}
		l.ended = true
		return
	}
	i, entries := splitCached(t, l.store, l.keys, ev.ID, l.cache)
	if len(entries) != len(l.keys) || i >= len(l.keys) {
		t.Fatalf("ID %q for %d keys", ev.ID, len(l.keys))
	}
	if l.vec[i] == closedEntry {
		t.Fatalf("%+v after key %d's sse.close", ev, i)
	}
	for j, e := range entries {
		if j != i && e != l.vec[j] {
			t.Fatalf("ID %q of key %d moved key %d's entry from %q", ev.ID, i, j, l.vec[j])
		}
	}
	seqOf := func(e string) uint64 {
		epoch, id, ok := parseID(e)
		if !ok || epoch == "" {
			t.Fatalf("entry %q of key %d in ID %q is not epoch-seq", e, i, ev.ID)
		}
		if l.epochs[i] == "" {
			l.epochs[i] = epoch
		} else if l.epochs[i] != epoch {
			t.Fatalf("key %d's epoch went from %q to %q", i, l.epochs[i], epoch)
		}
		return id
	}
	switch ev.Type {
	case EventKeyGap:
		var g struct{ Key, From, To uint64 }
		if err := json.Unmarshal([]byte(ev.Data), &g); err != nil || g.Key != uint64(i) || g.From > g.To {
			t.Fatalf("sse.gap %q with ID %q", ev.Data, ev.ID)
		}
		if to := seqOf(entries[i]); to != g.To || l.next[i] != 0 && g.From != l.next[i] {
			t.Fatalf("sse.gap %q with ID %q: key %d's next event was %d", ev.Data, ev.ID, i, l.next[i])
		}
		l.gaps[i] = append(l.gaps[i], Gap{g.From, g.To})
		l.next[i] = g.To + 1
	case EventKeyClose:
		if ev.Data != `{"key":`+strconv.Itoa(i)+`}` || entries[i] != closedEntry {
			t.Fatalf("sse.close %q with ID %q", ev.Data, ev.ID)
		}
		l.closed[i]++
	default:
		id := seqOf(entries[i])
		if want := l.keys[i] + "/" + strconv.FormatUint(id, 10); ev.Data != want {
			t.Fatalf("event %q with ID %q, want data %q", ev.Data, ev.ID, want)
		}
		if l.next[i] != 0 && id != l.next[i] {
			t.Fatalf("key %d: event %d, want %d: each key's events in order, each once", i, id, l.next[i])
		}
		l.events[i] = append(l.events[i], id)
		l.next[i] = id + 1
	}
	l.vec, l.last = entries, ev.ID
}

// readToClose reads r to its end into the log, and fails unless the
// stream ended with close.
func (l *multiLog) readToClose(r *ssetest.Reader) {
	l.t.Helper()
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			l.t.Fatal(err)
		}
		l.add(ev)
	}
	if !l.ended {
		l.t.Fatal("the stream ended without close")
	}
}

// expectKey checks that key i got events from to to, and the gaps.
func (l *multiLog) expectKey(i int, from, to uint64, gaps ...Gap) {
	l.t.Helper()
	var want []uint64
	for id := from; id <= to; id++ {
		want = append(want, id)
	}
	if fmt.Sprint(l.events[i]) != fmt.Sprint(want) || fmt.Sprint(l.gaps[i]) != fmt.Sprint(gaps) {
		l.t.Fatalf("key %d got events %v and gaps %v, want %d to %d and %v", i, l.events[i], l.gaps[i], from, to, gaps)
	}
}

// publish publishes events from to to into key, each with data
// "<key>/<ID>".
func publish(t testing.TB, b *Broker[string], key string, from, to int) {
	t.Helper()
	for id := from; id <= to; id++ {
		must(t, b.Publish(context.Background(), key, Event{Data: key + "/" + strconv.Itoa(id)}))
	}
}

// epochOf returns key's epoch in b.
func epochOf(t testing.TB, b *Broker[string], key string) string {
	t.Helper()
	sub, err := b.Subscribe(context.Background(), key, SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	return sub.Epoch()
}

func fanOut(t testing.TB, opts ...Option) *Broker[string] {
	t.Helper()
	return newBroker[string](t, append([]Option{WithMode(FanOut)}, opts...)...)
}

// waitForgotten fails the test, saying why with msg and args, unless b
// forgets its closed keys within patience: nothing holds them.
func waitForgotten(t testing.TB, b *Broker[string], msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for b.Stats().Closed != 0 {
		if time.Now().After(deadline) {
			t.Fatalf(msg, args...)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestMultiInterleaved: events published in turn into three keys reach
// one connection in that order, each once, each ID naming its key and
// moving only its entry; then each key's sse.close, and close after the
// last.
func TestMultiInterleaved(t *testing.T) {
	b := fanOut(t)
	srv, h := serveMulti(t, b)
	keys := []string{"a", "b", "c"}
	r := openMulti(t, srv.Client(), srv.URL, keys, "")
	l := newMultiLog(t, b, keys).strict()
	next := func() ssetest.Event {
		t.Helper()
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		l.add(ev)
		return ev
	}
	for n := 1; n <= 5; n++ {
		for i, k := range keys {
			publish(t, b, k, n, n)
			if ev := next(); ev.Data != k+"/"+strconv.Itoa(n) || !strings.HasPrefix(ev.ID, strconv.Itoa(i)+":") {
				t.Fatalf("got %+v, want %s/%d", ev, k, n)
			}
		}
	}
	must(t, b.Close(context.Background(), "b"))
	if ev := next(); ev.Type != EventKeyClose || ev.Data != `{"key":1}` {
		t.Fatalf("got %+v, want key 1's sse.close", ev)
	}
	publish(t, b, "a", 6, 6) // a closed key does not end the stream
	if ev := next(); ev.Data != "a/6" {
		t.Fatalf("got %+v, want a/6", ev)
	}
	must(t, b.Close(context.Background(), "a"))
	must(t, b.Close(context.Background(), "c"))
	l.readToClose(r)
	l.expectKey(0, 1, 6)
	l.expectKey(1, 1, 5)
	l.expectKey(2, 1, 5)
	h.waitIdle(t)
	if !strings.HasSuffix(l.resolved(l.last), ".,.,.") {
		t.Fatalf("last ID %q, want every key closed", l.last)
	}
	// Every key closed in the ID: nothing is owed.
	if resp := getMulti(t, srv.Client(), srv.URL, keys, l.last); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resuming with %q: status %d, want 204", l.last, resp.StatusCode)
	}
}

// TestMultiResumeThroughProxy: a page following 20 keys through a proxy
// that cuts its connection at random byte offsets, reconnecting with the
// last ID it received as a browser does, gets every key's events exactly
// once, in order, each key's sse.close once, then close; resuming after it
// gets 204.
func TestMultiResumeThroughProxy(t *testing.T) { resumeThroughProxy(t, 20, 150) }

// TestCursor1000KeysThroughProxy: the same with 1,000 keys, whose IDs name
// cursors: each stays under 8 KiB, and every key resumes exactly once.
func TestCursor1000KeysThroughProxy(t *testing.T) { resumeThroughProxy(t, 1000, 6) }

// resumeThroughProxy is TestMultiResumeThroughProxy with nkeys keys of
// total events each.
func resumeThroughProxy(t *testing.T, nkeys, total int) {
	b := fanOut(t)
	srv, h := serveMulti(t, b, WithMaxKeysPerRequest(max(nkeys, DefaultKeysPerRequest)))
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	p, err := cutproxy.Start(srv.Listener.Addr().String(), cutproxy.Options{
		Cut: func(n int) int64 { // from 200 B (before the first event) to 192 KiB
			return 200 + rand.New(rand.NewPCG(seed, uint64(n))).Int64N(192<<10)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	keys := make([]string, nkeys)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		publish(t, b, keys[i], 1, total/2) // half before, half while it streams
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ctx := context.Background()
		for n := total/2 + 1; n <= total; n++ {
			for _, k := range keys {
				if err := b.Publish(ctx, k, Event{Data: k + "/" + strconv.Itoa(n)}); err != nil {
					t.Error(err)
					return
				}
			}
		}
		for _, k := range keys {
			if err := b.Close(ctx, k); err != nil {
				t.Error(err)
			}
		}
	}()
	l := newMultiLog(t, b, keys).strict()
	hc := srv.Client()
	url := "http://" + p.Addr()
	conns, longest := 0, 0
	for deadline := time.Now().Add(2 * time.Minute); !l.ended; conns++ {
		if time.Now().After(deadline) {
			t.Fatalf("no close after %d connections", conns)
		}
		longest = max(longest, len(l.last))
		// A page opens with lastEventId=0; the browser reconnects with
		// the header.
		resp, cancel, err := tryGet(hc, url+"?lastEventId=0&keys="+strings.Join(keys, ","), l.last)
		if err != nil {
			continue // cut before the headers
		}
		if err := ssetest.CheckResponse(resp); err != nil {
			cancel()
			t.Fatal(err)
		}
		for r := ssetest.NewReader(resp.Body); ; {
			ev, err := r.Next()
			if err != nil {
				break // cut, mid-event or not
			}
			l.add(ev)
		}
		resp.Body.Close()
		cancel()
	}
	wg.Wait()
	t.Logf("%d keys × %d events over %d connections; the longest Last-Event-ID %d bytes", nkeys, total, conns, longest)
	if conns < 3 {
		t.Fatalf("%d connections: the proxy hardly cut the stream", conns)
	}
	if longest >= 8<<10-len("Last-Event-ID: \r\n") {
		t.Fatalf("a Last-Event-ID of %d bytes", longest)
	}
	for i := range keys {
		l.expectKey(i, 1, uint64(total))
	}
	if resp := getMulti(t, hc, srv.URL, keys, l.last); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resuming after close: status %d, want 204", resp.StatusCode)
	}
	h.waitIdle(t)
}

// TestMultiResumeGaps: a client resuming keys whose histories no longer
// hold what it missed gets each such key's sse.gap, naming exactly the
// events lost, then the rest; an empty entry counts as 0, as does an
// entry of another epoch; the plain ID 0 counts as every entry empty.
func TestMultiResumeGaps(t *testing.T) {
	b := fanOut(t, WithHistory(5, 1<<20, 0))
	srv, _ := serveMulti(t, b)
	keys := []string{"a", "b"}
	for _, k := range keys {
		publish(t, b, k, 1, 10) // the histories hold 6 to 10
		must(t, b.Close(context.Background(), k))
	}
	ea, eb := epochOf(t, b, "a"), epochOf(t, b, "b")
	for _, c := range []struct {
		id           string
		fromA, fromB uint64
		gapA, gapB   []Gap
	}{
		{id: "1:" + ea + "-2," + eb + "-7", fromA: 6, gapA: []Gap{{3, 5}}, fromB: 8},
		{id: "0:" + ea + "-2,", fromA: 6, gapA: []Gap{{3, 5}}, fromB: 6, gapB: []Gap{{1, 5}}},
		{id: "0:zzz-8," + eb + "-9", fromA: 6, gapA: []Gap{{1, 5}}, fromB: 10},
		{id: "0", fromA: 6, gapA: []Gap{{1, 5}}, fromB: 6, gapB: []Gap{{1, 5}}},
		{id: "", fromA: 6, fromB: 6}, // no ID: the oldest event held, no gap
		{id: "0:.," + eb + "-4", fromA: 11, fromB: 6, gapB: []Gap{{5, 5}}},
	} {
		t.Run(c.id, func(t *testing.T) {
			l := newMultiLog(t, b, keys)
			if _, entries, ok := strings.Cut(c.id, ":"); ok {
				l.vec = strings.Split(entries, ",")
			}
			l.readToClose(openMulti(t, srv.Client(), srv.URL, keys, c.id))
			if c.fromA <= 10 {
				l.expectKey(0, c.fromA, 10, c.gapA...)
			} else if len(l.events[0]) > 0 || l.closed[0] != 0 {
				// A key closed in the ID is not sent again, not even
				// its sse.close.
				t.Fatalf("key 0, closed in the ID, got %v and %d sse.close", l.events[0], l.closed[0])
			}
			l.expectKey(1, c.fromB, 10, c.gapB...)
		})
	}
}

// TestMultiKeyCloseDetaches: a key's sse.close detaches it from the
// connection at once: with the connection still open on another key, the
// closed key is forgotten after its retention, which a reader would
// prevent.
func TestMultiKeyCloseDetaches(t *testing.T) {
	b := fanOut(t, WithRetention(10*time.Millisecond))
	srv, h := serveMulti(t, b)
	keys := []string{"a", "b"}
	for _, k := range keys {
		must(t, b.Open(context.Background(), k))
	}
	r := openMulti(t, srv.Client(), srv.URL, keys, "")
	l := newMultiLog(t, b, keys).strict()
	publish(t, b, "a", 1, 2)
	must(t, b.Close(context.Background(), "a"))
	for l.closed[0] == 0 {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		l.add(ev)
	}
	waitForgotten(t, b, "key a still remembered %v after its sse.close: the connection still holds it", patience)
	// The stream goes on for b, and ends after b's close.
	publish(t, b, "b", 1, 1)
	must(t, b.Close(context.Background(), "b"))
	l.readToClose(r)
	l.expectKey(0, 1, 2)
	l.expectKey(1, 1, 1)
	h.waitIdle(t)
}

// TestMultiFinishedKeys: keys closed, whose events the client has all,
// get their sse.close at the start of the stream; a key the ID marks
// closed gets nothing; every key marked closed: 204.
func TestMultiFinishedKeys(t *testing.T) {
	b := fanOut(t)
	srv, h := serveMulti(t, b)
	keys := []string{"a", "b", "c"}
	for _, k := range keys {
		publish(t, b, k, 1, 3)
	}
	must(t, b.Close(context.Background(), "a"))
	must(t, b.Close(context.Background(), "b"))
	ea, eb, ec := epochOf(t, b, "a"), epochOf(t, b, "b"), epochOf(t, b, "c")
	id := "2:" + ea + "-3,.," + ec + "-3"
	r := openMulti(t, srv.Client(), srv.URL, keys, id)
	l := newMultiLog(t, b, keys)
	l.vec = []string{ea + "-3", ".", ec + "-3"}
	ev, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Type != EventKeyClose || l.resolved(ev.ID) != "0:.,.,"+ec+"-3" {
		t.Fatalf("got %+v, want a's sse.close first", ev)
	}
	l.add(ev)
	publish(t, b, "c", 4, 4)
	must(t, b.Close(context.Background(), "c"))
	l.readToClose(r)
	if !l.ended || l.closed[1] != 0 || len(l.events[0])+len(l.events[1]) != 0 {
		t.Fatalf("ended %v, sse.close %v, events %v", l.ended, l.closed, l.events)
	}
	l.expectKey(2, 4, 4)
	// Every key closed but none marked: their sse.close, then close.
	id = "0:" + ea + "-3," + eb + "-3," + ec + "-4"
	l = newMultiLog(t, b, keys)
	l.vec = []string{ea + "-3", eb + "-3", ec + "-4"}
	l.readToClose(openMulti(t, srv.Client(), srv.URL, keys, id))
	if !l.ended || fmt.Sprint(l.closed) != "[1 1 1]" {
		t.Fatalf("ended %v, sse.close %v", l.ended, l.closed)
	}
	for _, id := range []string{"1:.,.,.", l.last} {
		if resp := getMulti(t, srv.Client(), srv.URL, keys, id); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%q: status %d, Cache-Control %q, want 204, no-store", id, resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
	}
	// The same ID in the lastEventId parameter, unencoded: its ':' and ','
	// need no escaping.
	if resp := getMulti(t, srv.Client(), srv.URL+"?lastEventId="+l.last, keys, ""); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("?lastEventId=%s: status %d, want 204", l.last, resp.StatusCode)
	}
	h.waitIdle(t)
}

// TestMultiOneKeyIsHandler: a request that names one key is answered as
// Handler answers it, byte for byte.
func TestMultiOneKeyIsHandler(t *testing.T) {
	b := fanOut(t)
	opts := []HandlerOption{WithRetry(1500 * time.Millisecond), WithKnownKeysOnly()}
	one := httptest.NewServer(Handler(b, queryKey, opts...))
	defer one.Close()
	multi := httptest.NewServer(MultiHandler(b, listKeys, opts...))
	defer multi.Close()
	must(t, b.Publish(context.Background(), "a",
		Event{Name: "progress", Data: "1"}, Event{Data: "two\nlines\r\nthree"}, Event{Data: " spaced "}))
	must(t, b.Close(context.Background(), "a"))
	e := epochOf(t, b, "a")
	get := func(url, lastID string) (int, http.Header, string) {
		t.Helper()
		resp, cancel, err := tryGet(http.DefaultClient, url, lastID)
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		resp.Header.Del("Date")
		return resp.StatusCode, resp.Header, string(body)
	}
	for _, c := range []struct{ key, lastID string }{
		{"a", ""}, {"a", e + "-1"}, {"a", e + "-3"}, {"a", "0"}, {"a", "x y"}, {"unknown", ""}, {"secret", ""},
	} {
		s1, h1, b1 := get(one.URL+"?key="+c.key, c.lastID)
		s2, h2, b2 := get(multi.URL+"?keys="+c.key, c.lastID)
		if s1 != s2 || fmt.Sprint(h1) != fmt.Sprint(h2) || b1 != b2 {
			t.Errorf("key %q, Last-Event-ID %q:\nHandler:      %d %v %q\nMultiHandler: %d %v %q", c.key, c.lastID, s1, h1, b1, s2, h2, b2)
		}
	}
}

// TestMultiRefused: what refuses a multi-key request refuses all of it.
func TestMultiRefused(t *testing.T) {
	b := fanOut(t, WithRetention(10*time.Millisecond))
	srv, h := serveMulti(t, b, WithKnownKeysOnly(), WithMaxKeysPerRequest(4))
	must(t, b.Open(context.Background(), "a"))
	must(t, b.Open(context.Background(), "b"))
	for _, c := range []struct {
		keys   string
		status int
		body   string
	}{
		{"", http.StatusBadRequest, "sse: the request names no key"},
		{"a,b,a", http.StatusBadRequest, "sse: key 2 of the request is listed twice"},
		{"a,b,c,d,e", http.StatusBadRequest, "sse: the request names 5 keys, more than the 4 a request may name"},
		{"a,secret", http.StatusForbidden, "Forbidden"},
		{"a,b,nobody", http.StatusNotFound, ErrUnknownKey.Error()},
	} {
		resp := getMulti(t, srv.Client(), srv.URL, strings.Split(c.keys, ","), "")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != c.status || strings.TrimSpace(string(body)) != c.body {
			t.Errorf("keys %q: %d %q, want %d %q", c.keys, resp.StatusCode, body, c.status, c.body)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"?keys=a,b", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
	h.waitIdle(t)
	// The 404 attached a and b before it found the unknown key: it let them
	// go, so they are forgotten once closed.
	must(t, b.Close(context.Background(), "a"))
	must(t, b.Close(context.Background(), "b"))
	waitForgotten(t, b, "the refused request still holds its keys")
}

// TestMultiBadID: a Last-Event-ID that is not an ID of the request's keys
// gets 400, saying why: never a fresh start, which would send every key
// again under new IDs.
func TestMultiBadID(t *testing.T) {
	b := fanOut(t)
	srv, h := serveMulti(t, b)
	keys := []string{"a", "b"}
	for _, c := range []struct{ id, says string }{
		{"abc", "no colon"},
		{"2:,", "key index \"2\" is not one of the request's 2 keys"},
		{"-1:,", "key index \"-1\""},
		{":,", "key index \"\""},
		{"0:", "has 1 positions, the request names 2 keys"},
		{"0:,,", "more positions than the request's 2 keys"},
		{"0:a-1,b-2,c-3", "more positions"},
		{"0:x y,", "position 0 of the Last-Event-ID, \"x y\", is not an event ID"},
		{"1:,ab-", "position 1"},
		{"1:;,", "position 0"},
	} {
		resp := getMulti(t, srv.Client(), srv.URL, keys, c.id)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), c.says) {
			t.Errorf("Last-Event-ID %q: %d %q, want 400 saying %q", c.id, resp.StatusCode, body, c.says)
		}
	}
	// The lastEventId parameter is read the same way.
	resp := getMulti(t, srv.Client(), srv.URL+"?lastEventId=1:2", keys, "")
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("?lastEventId=1:2: %d, want 400", resp.StatusCode)
	}
	h.waitIdle(t)
}

// TestMultiMaxStreams: a multi-key connection counts as one stream under
// WithMaxStreams, however many keys it carries.
func TestMultiMaxStreams(t *testing.T) {
	b := fanOut(t)
	srv, h := serveMulti(t, b, WithMaxStreams(2))
	keys := []string{"a", "b", "c", "d"}
	r1 := openMulti(t, srv.Client(), srv.URL, keys, "")
	r2 := openMulti(t, srv.Client(), srv.URL, keys[:2], "")
	publish(t, b, "d", 1, 1)
	if ev, err := r1.Next(); err != nil || ev.Data != "d/1" {
		t.Fatalf("got %+v, %v", ev, err)
	}
	for _, ks := range [][]string{{"a", "b"}, {"a"}} {
		resp := getMulti(t, srv.Client(), srv.URL, ks, "")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "retry: 5000\n" {
			t.Fatalf("keys %v at the bound: %d %q, want retry later", ks, resp.StatusCode, body)
		}
	}
	for _, k := range keys {
		must(t, b.Close(context.Background(), k))
	}
	h.waitIdle(t)
	l := newMultiLog(t, b, keys[:2]).strict()
	l.readToClose(r2)
}

// TestMultiStreamFeatures: a multi-key stream has Handler's retry field
// (at the start of its first block), heartbeats and metrics.
func TestMultiStreamFeatures(t *testing.T) {
	b := fanOut(t, WithHistory(3, 1<<20, 0))
	m := new(Metrics)
	srv, h := serveMulti(t, b, WithRetry(1500*time.Millisecond), WithHeartbeat(20*time.Millisecond), WithMetrics(m))
	keys := []string{"a", "b"}
	publish(t, b, "a", 1, 5) // the history holds 3 to 5
	resp := getMulti(t, srv.Client(), srv.URL, keys, "0")
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, len("retry: 1500\nid: 0:"))
	if _, err := io.ReadFull(resp.Body, head); err != nil || string(head) != "retry: 1500\nid: 0:" {
		t.Fatalf("the stream starts with %q, %v", head, err)
	}
	var pings atomic.Int64
	pinged := make(chan struct{}, 1)
	r := ssetest.NewReader(io.MultiReader(strings.NewReader(string(head)), resp.Body))
	r.OnComment = func(text string) {
		if text == " ping" {
			pings.Add(1)
			select {
			case pinged <- struct{}{}:
			default:
			}
		}
	}
	l := newMultiLog(t, b, keys)
	for len(l.events[0]) < 3 {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		l.add(ev)
	}
	l.expectKey(0, 3, 5, Gap{1, 2})
	// Idle: a heartbeat comes; then b's event.
	events := make(chan ssetest.Event)
	go func() {
		defer close(events)
		for {
			ev, err := r.Next()
			if err != nil {
				return
			}
			events <- ev
		}
	}()
	select {
	case <-pinged:
	case <-time.After(patience):
		t.Fatal("no heartbeat on an idle multi-key stream")
	}
	publish(t, b, "b", 1, 1)
	for _, k := range keys {
		must(t, b.Close(context.Background(), k))
	}
	for ev := range events {
		l.add(ev)
	}
	if !l.ended {
		t.Fatal("the stream ended without close")
	}
	l.expectKey(1, 1, 1)
	h.waitIdle(t)
	s := m.Stats()
	if s.StreamsServed != 1 || s.StreamsOpen != 0 || s.Resumes != 1 || s.Gaps != 1 || s.Events != 4 || s.Heartbeats != uint64(pings.Load()) || s.Bytes == 0 {
		t.Fatalf("metrics %+v, want 1 stream served, 1 resume, 1 gap, 4 events, %d heartbeats", s, pings.Load())
	}
}

// TestMultiClientLeaves: when the client goes away, the handler returns,
// its goroutines ended (it waits for them) and every key let go.
func TestMultiClientLeaves(t *testing.T) {
	b := fanOut(t, WithRetention(10*time.Millisecond))
	srv, h := serveMulti(t, b)
	keys := []string{"a", "b", "c"}
	for _, k := range keys {
		must(t, b.Open(context.Background(), k))
	}
	resp, cancel, err := tryGet(srv.Client(), srv.URL+"?keys=a,b,c", "")
	if err != nil {
		t.Fatal(err)
	}
	publish(t, b, "b", 1, 1)
	if ev, err := ssetest.NewReader(resp.Body).Next(); err != nil || ev.Data != "b/1" {
		t.Fatalf("got %+v, %v", ev, err)
	}
	cancel()
	resp.Body.Close()
	h.waitIdle(t)
	for _, k := range keys {
		must(t, b.Close(context.Background(), k))
	}
	waitForgotten(t, b, "the ended request still holds its keys")
}

// TestMultiHandlerPanics: MultiHandler refuses, when it is made, what can
// never serve a request.
func TestMultiHandlerPanics(t *testing.T) {
	var nilBroker *Broker[string]
	for name, f := range map[string]func(){
		"queue source": func() { MultiHandler(newBroker[string](t), listKeys) },
		"nil source":   func() { MultiHandler[string](nil, listKeys) },
		"nil pointer":  func() { MultiHandler(nilBroker, listKeys) },
		"nil keys":     func() { MultiHandler(fanOut(t), nil) },
		"nil option":   func() { MultiHandler(fanOut(t), listKeys, nil) },
		"bound 0":      func() { WithMaxKeysPerRequest(0) },
		"bound 4097":   func() { WithMaxKeysPerRequest(MaxKeysPerRequest + 1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

// noCursors is a source that does not store cursors: MultiHandler's IDs
// then carry every key's position.
type noCursors struct{ Source[string] }

// TestMultiLargestVector: without a cursor store, a request may name
// MaxVectorKeys keys when the option allows it; its IDs carry every key's
// position and, sent back in Last-Event-ID, resume every key; one key more
// gets 400, and a bound above it needs a cursor store.
func TestMultiLargestVector(t *testing.T) {
	b := fanOut(t)
	h := &tracked{h: MultiHandler(noCursors{b}, listKeys, WithMaxKeysPerRequest(MaxVectorKeys))}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	keys := make([]string, MaxVectorKeys)
	for i := range keys {
		keys[i] = strconv.Itoa(i)
		publish(t, b, keys[i], 1, 1)
	}
	r := openMulti(t, srv.Client(), srv.URL, keys, "")
	l := newMultiLog(t, nil, keys).strict()
	for len(l.events[len(keys)-1]) == 0 {
		ev, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		l.add(ev)
	}
	t.Logf("an ID of %d keys, each at its first event: %d bytes", len(keys), len(l.last))
	for _, k := range keys {
		publish(t, b, k, 2, 2)
		must(t, b.Close(context.Background(), k))
	}
	l.readToClose(openMulti(t, srv.Client(), srv.URL, keys, l.last))
	for i := range keys {
		l.expectKey(i, 1, 2)
	}
	resp := getMulti(t, srv.Client(), srv.URL, append(keys, "one-more"), "")
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "257 keys, more than the 256") {
		t.Fatalf("257 keys: %d %q", resp.StatusCode, body)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MultiHandler of a source without cursors, 257 keys a request: no panic")
			}
		}()
		MultiHandler(noCursors{b}, listKeys, WithMaxKeysPerRequest(MaxVectorKeys+1))
	}()
	h.waitIdle(t)
}

// TestMultiGraceful: Graceful ends a multi-key stream as a one-key one:
// a retry field and no close, so that the client comes back.
func TestMultiGraceful(t *testing.T) {
	b := New[string](WithMode(FanOut))
	srv := httptest.NewUnstartedServer(MultiHandler(b, listKeys))
	shutdown := Graceful(srv.Config, b)
	srv.Start()
	t.Cleanup(srv.Close)
	r := openMulti(t, srv.Client(), srv.URL, []string{"a", "b"}, "")
	publish(t, b, "b", 1, 1)
	l := newMultiLog(t, b, []string{"a", "b"}).strict()
	ev, err := r.Next()
	if err != nil {
		t.Fatal(err)
	}
	l.add(ev)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	if err := shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if ev, err := r.Next(); err != io.EOF {
		t.Fatalf("got %+v, %v; want the end of the stream, without close", ev, err)
	}
	if d, ok := r.Retry(); !ok || d < ShutdownRetryMin || d > ShutdownRetryMax {
		t.Fatalf("retry %v %v, want one in [%v, %v]", d, ok, ShutdownRetryMin, ShutdownRetryMax)
	}
}

// TestMultiMaxStreamsSpares: at the bound, a multi-key client that
// reconnects with a Last-Event-ID of the current life of its first key
// not closed may have a spare place, as a one-key FanOut client may; a new
// client, or one past the spares, gets retry later.
func TestMultiMaxStreamsSpares(t *testing.T) {
	b := fanOut(t)
	srv, h := serveMulti(t, b, WithMaxStreams(1))
	keys := []string{"a", "b"}
	stale := openMulti(t, srv.Client(), srv.URL, keys, "")
	publish(t, b, "a", 1, 1)
	l := newMultiLog(t, b, keys).strict()
	ev, err := stale.Next()
	if err != nil {
		t.Fatal(err)
	}
	l.add(ev)
	refused := func(id string) {
		t.Helper()
		resp := getMulti(t, srv.Client(), srv.URL, keys, id)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(body) != "retry: 5000\n" {
			t.Fatalf("Last-Event-ID %q at the bound: %d %q, want retry later", id, resp.StatusCode, body)
		}
	}
	refused("")                                            // a new client
	refused("0:zzzz-1,")                                   // another life of a
	refused("1:,")                                         // nothing of a yet
	r := openMulti(t, srv.Client(), srv.URL, keys, l.last) // the spare: 1/8 + 1
	refused(l.last)                                        // past the spares
	publish(t, b, "b", 1, 1)
	for _, k := range keys {
		must(t, b.Close(context.Background(), k))
	}
	l.readToClose(r)
	l.expectKey(0, 1, 1)
	l.expectKey(1, 1, 1)
	h.waitIdle(t)
}
