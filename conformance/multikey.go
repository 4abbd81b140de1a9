// This file is the suite's multi-key part: several FanOut keys on one
// connection, served by [sse.MultiHandler] over the implementation's
// Source and read on the wire (docs/protocol.md, "Several keys on one
// connection").

package conformance

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/rocketqueue/sse/sseclient"
)

// multiKey runs the multi-key cases (FanOut only: MultiHandler needs it):
// with cursor IDs and the cases proper to cursors if the Source stores
// cursors, and with vector IDs (the Source's store hidden), as a Source
// without a store gets them.
func (s suite[K]) multiKey(t *testing.T) {
	if _, ok := s.impl(t, 0).Source.(sse.CursorStore[K]); !ok {
		s.multiKeyCases(t)
		return
	}
	t.Run("Cursors", func(t *testing.T) {
		s.multiKeyCases(t)
		t.Run("ChangingKeys", s.multiChangingKeys)
		t.Run("ManyKeys", s.multiManyKeys)
		t.Run("UnknownCursor", s.multiUnknownCursor)
	})
	vs := s
	vs.vectors = true
	t.Run("Vectors", vs.multiKeyCases)
}

// multiKeyCases runs the cases every multi-key stream must pass, of
// either form of ID.
func (s suite[K]) multiKeyCases(t *testing.T) {
	t.Run("Interleaved", s.multiInterleaved)
	t.Run("ResumeAfterCuts", s.multiResume)
	t.Run("Gap", s.multiGap)
	t.Run("CloseDetaches", s.multiCloseDetaches)
	t.Run("FinishedKey", s.multiFinishedKey)
	t.Run("Refusals", s.multiRefusals)
	t.Run("Bound", s.multiBound)
	t.Run("OneKey", s.multiOneKey)
}

// A multiServer serves MultiHandler over an implementation's Source, seen
// through a [trackSource] (a [trackCursorSource], showing the Source's
// [sse.CursorStore], if it has one and the suite is not the vectors'). A request names its keys by their numbers in
// the query, "?k=0,1,2" (s.key of each); "?refuse=1" makes the key
// function refuse it with 403.
type multiServer[K comparable] struct {
	im  Impl[K]
	src *trackSource[K]
	srv *httptest.Server
	hc  *http.Client
}

// errRefused is the key function's refusal, with its status.
type errRefused struct{}

func (errRefused) Error() string   { return "refused by the key function" }
func (errRefused) StatusCode() int { return http.StatusForbidden }

func (s suite[K]) multiServer(t *testing.T, retain int, opts ...sse.HandlerOption) *multiServer[K] {
	t.Helper()
	im := s.impl(t, retain)
	m := &multiServer[K]{im: im, src: &trackSource[K]{Source: im.Source, open: make(map[K]int)}}
	var served sse.Source[K] = m.src
	if cs, ok := im.Source.(sse.CursorStore[K]); ok && !s.vectors {
		served = &trackCursorSource[K]{trackSource: m.src, CursorStore: cs}
	}
	keys := func(r *http.Request) ([]K, error) {
		if r.URL.Query().Get("refuse") != "" {
			return nil, errRefused{}
		}
		var ks []K
		for f := range strings.SplitSeq(r.URL.Query().Get("k"), ",") {
			if f == "" {
				continue
			}
			i, err := strconv.Atoi(f)
			if err != nil {
				return nil, err
			}
			ks = append(ks, s.key(i))
		}
		return ks, nil
	}
	opts = append([]sse.HandlerOption{sse.WithHeartbeat(200 * time.Millisecond)}, opts...)
	mux := http.NewServeMux()
	mux.Handle("/m", sse.MultiHandler(served, keys, opts...))
	mux.Handle("/one/{k}", sse.Handler(m.src, func(r *http.Request) (K, error) {
		i, err := strconv.Atoi(r.PathValue("k"))
		return s.key(i), err
	}, opts...))
	m.srv = httptest.NewServer(mux)
	tr := &http.Transport{}
	m.hc = &http.Client{Transport: tr}
	t.Cleanup(func() {
		m.srv.CloseClientConnections()
		m.srv.Close()
		tr.CloseIdleConnections()
	})
	return m
}

// multiURL returns the path of a request for the keys numbered ks.
func multiURL(ks ...int) string {
	f := make([]string, len(ks))
	for i, k := range ks {
		f[i] = strconv.Itoa(k)
	}
	return "/m?k=" + strings.Join(f, ",")
}

// get makes a request, with a Last-Event-ID header if lastID is not "".
// The response's body is closed when the test ends, if not before.
func (m *multiServer[K]) get(t *testing.T, path, lastID string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx(t), http.MethodGet, m.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := m.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// expectStatus makes a request that must get status code, and returns its
// body.
func (m *multiServer[K]) expectStatus(t *testing.T, path, lastID string, code int) string {
	t.Helper()
	resp := m.get(t, path, lastID)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != code {
		t.Fatalf("GET %s with Last-Event-ID %q: %d %q, want %d", path, lastID, resp.StatusCode, body, code)
	}
	return string(body)
}

// A trackSource is a Source that counts each key's subscriptions not
// closed yet: a key the handler detached has none.
type trackSource[K comparable] struct {
	sse.Source[K]
	mu         sync.Mutex
	open       map[K]int // guarded by mu
	subscribes int       // guarded by mu: Subscribe calls
}

func (s *trackSource[K]) Subscribe(ctx context.Context, key K, req sse.SubscribeRequest) (sse.Subscription, error) {
	s.mu.Lock()
	s.subscribes++
	s.mu.Unlock()
	sub, err := s.Source.Subscribe(ctx, key, req)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.open[key]++
	s.mu.Unlock()
	return &trackSub[K]{Subscription: sub, s: s, key: key}, nil
}

// opened returns how many subscriptions of key are not closed, and how
// many Subscribe calls there were in all.
func (s *trackSource[K]) opened(key K) (open, subscribes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open[key], s.subscribes
}

// totalOpen returns how many subscriptions of any key are not closed.
func (s *trackSource[K]) totalOpen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.open {
		n += c
	}
	return n
}

// A trackCursorSource is a trackSource that forwards the wrapped Source's
// cursor store: MultiHandler then writes cursor IDs, as it does for the
// Source itself.
type trackCursorSource[K comparable] struct {
	*trackSource[K]
	sse.CursorStore[K]
}

type trackSub[K comparable] struct {
	sse.Subscription
	s    *trackSource[K]
	key  K
	once sync.Once
}

func (s *trackSub[K]) Close() {
	s.once.Do(func() {
		s.s.mu.Lock()
		s.s.open[s.key]--
		s.s.mu.Unlock()
	})
	s.Subscription.Close()
}

// eventually waits, up to Patience, for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(Patience); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", Patience, what)
		}
	}
}

// A multiReader is what a client of a multi-key stream holds across its
// connections: per key, the next event number it expects (the suite's
// events have data "<ID>"), the gaps it was told of, whether its sse.close
// came; and the stream's last ID.
type multiReader struct {
	n       int
	next    []uint64
	gaps    [][]sse.Gap
	closed  []bool
	ended   bool   // "close" came
	last    string // the last ID, as a browser keeps it
	events  int    // events read, in all
	longest int    // the length of the longest ID read
	dec     *sseclient.Decoder
}

func newMultiReader(n int) *multiReader {
	return &multiReader{n: n, next: filled(n, 1), gaps: make([][]sse.Gap, n), closed: make([]bool, n)}
}

func filled(n int, v uint64) []uint64 {
	s := make([]uint64, n)
	for i := range s {
		s[i] = v
	}
	return s
}

// take checks one event of the stream against what the reader holds: a
// key's events once and in order (after a gap, the event after it), a
// gap from the next event it expects, nothing of a key after its
// sse.close, "close" only after every key's sse.close.
func (m *multiReader) take(t *testing.T, ev sseclient.Event) {
	t.Helper()
	if m.ended {
		t.Fatalf("event %+v after close", ev)
	}
	if ev.Name == sseclient.EventClose {
		for i, c := range m.closed {
			if !c {
				t.Fatalf("close before key %d's sse.close (it had events to %d)", i, m.next[i]-1)
			}
		}
		m.ended = true
		return
	}
	m.last = ev.ID
	m.longest = max(m.longest, len(ev.ID))
	i, ok := ev.Key()
	if !ok || i >= m.n {
		t.Fatalf("event %+v names no key of the request's %d", ev, m.n)
	}
	if m.closed[i] {
		t.Fatalf("event %+v of key %d after its sse.close", ev, i)
	}
	switch ev.Name {
	case sseclient.EventKeyClose:
		if want := fmt.Sprintf(`{"key":%d}`, i); ev.Data != want {
			t.Fatalf("sse.close %+v: data %q, want %q", ev, ev.Data, want)
		}
		m.closed[i] = true
	case sseclient.EventKeyGap:
		from, to, ok := ev.Gap()
		if !ok || from != m.next[i] || to < from {
			t.Fatalf("key %d: gap %+v, expecting event %d next", i, ev, m.next[i])
		}
		m.gaps[i] = append(m.gaps[i], sse.Gap{From: from, To: to})
		m.next[i] = to + 1
	case "":
		if want := strconv.FormatUint(m.next[i], 10); ev.Data != want {
			t.Fatalf("key %d: event %+v, want %s next: each event once, in order", i, ev, want)
		}
		m.next[i]++
		m.events++
	default:
		t.Fatalf("unexpected event %+v", ev)
	}
}

// attach makes resp, which must be a 200, the stream m reads next.
func (m *multiReader) attach(t *testing.T, resp *http.Response) *multiReader {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d %q, want 200", resp.StatusCode, body)
	}
	m.dec = sseclient.NewDecoder(resp.Body)
	return m
}

// read reads the attached stream into m: up to limit events (0: to its
// end), and returns whether the stream ended (close or EOF).
func (m *multiReader) read(t *testing.T, limit int) bool {
	t.Helper()
	for n := 0; limit == 0 || n < limit; n++ {
		ev, err := m.dec.Next()
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil {
			t.Fatal(err)
		}
		m.take(t, ev)
		if m.ended {
			if _, err := m.dec.Next(); !errors.Is(err, io.EOF) {
				t.Fatalf("after close: %v, want the end of the response", err)
			}
			return true
		}
	}
	return false
}

// publishKeys publishes events from..to to each key of ks, one per call,
// interleaved, with data "<ID>".
func publishKeys[K comparable](t *testing.T, p sse.Publisher[K], keys []K, from, to int) {
	t.Helper()
	for n := from; n <= to; n++ {
		for _, k := range keys {
			if err := p.Enqueue(ctx(t), k, strconv.Itoa(n)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func (s suite[K]) keys(nums ...int) []K {
	ks := make([]K, len(nums))
	for i, n := range nums {
		ks[i] = s.key(n)
	}
	return ks
}

// multiInterleaved: a connection that follows three keys while three
// producers publish to them gets each key's events once and in order,
// then the key's sse.close, then close after the last, and the response
// ends.
func (s suite[K]) multiInterleaved(t *testing.T) {
	m := s.multiServer(t, 0)
	nums := []int{20, 21, 22}
	keys := s.keys(nums...)
	publishKeys(t, m.im.Publisher, keys, 1, 1) // the keys exist before the request
	resp := m.get(t, multiURL(nums...), "")
	const total = 60
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			for n := 2; n <= total; n++ {
				if err := m.im.Publisher.Enqueue(ctx(t), k, strconv.Itoa(n)); err != nil {
					t.Error(err)
					return
				}
			}
			if err := m.im.Publisher.Close(ctx(t), k); err != nil {
				t.Error(err)
			}
		})
	}
	r := newMultiReader(len(keys))
	ended := r.attach(t, resp).read(t, 0)
	wg.Wait()
	if !ended || !r.ended {
		t.Fatal("the stream did not end with close")
	}
	for i := range keys {
		if r.next[i] != total+1 || len(r.gaps[i]) > 0 {
			t.Fatalf("key %d: events to %d, gaps %v; want 1 to %d", i, r.next[i]-1, r.gaps[i], total)
		}
	}
}

// multiResume: a client that follows four keys is cut again and again at
// random points while producers publish and close the keys; each time it
// comes back with its last ID, as a browser does, and gets every key's
// missing events exactly once, each key's sse.close, and close; coming
// back once more, with every key closed, it gets 204.
func (s suite[K]) multiResume(t *testing.T) {
	m := s.multiServer(t, 0)
	nums := []int{30, 31, 32, 33}
	keys := s.keys(nums...)
	const total = 40
	publishKeys(t, m.im.Publisher, keys, 1, 10)
	var wg sync.WaitGroup
	wg.Go(func() {
		for n := 11; n <= total; n++ {
			for j, k := range keys {
				if j == 1 && n > 20 {
					continue // key 1 ends early
				}
				if err := m.im.Publisher.Enqueue(ctx(t), k, strconv.Itoa(n)); err != nil {
					t.Error(err)
					return
				}
			}
			if n == 20 {
				if err := m.im.Publisher.Close(ctx(t), keys[1]); err != nil {
					t.Error(err)
				}
			}
			time.Sleep(time.Millisecond)
		}
		for _, k := range keys {
			if err := m.im.Publisher.Close(ctx(t), k); err != nil && !errors.Is(err, sse.ErrClosed) {
				t.Error(err)
			}
		}
	})
	defer wg.Wait()
	rng := rand.New(rand.NewPCG(23, 0))
	r := newMultiReader(len(keys))
	conns := 0
	for !r.ended {
		if conns++; conns > 1000 {
			t.Fatal("1000 connections and the stream did not end")
		}
		resp := m.get(t, multiURL(nums...), r.last)
		if resp.StatusCode == http.StatusNoContent {
			// Every key closed and read, but close was cut off.
			for i, c := range r.closed {
				if !c {
					t.Fatalf("204 to %q, without key %d's sse.close", r.last, i)
				}
			}
			resp.Body.Close()
			break
		}
		r.attach(t, resp).read(t, 1+rng.IntN(12))
		resp.Body.Close() // the cut
	}
	wg.Wait()
	for i := range keys {
		want := uint64(total)
		if i == 1 {
			want = 20
		}
		if r.next[i] != want+1 || len(r.gaps[i]) > 0 || !r.closed[i] {
			t.Fatalf("key %d: events to %d, gaps %v, closed %v; want 1 to %d and its sse.close", i, r.next[i]-1, r.gaps[i], r.closed[i], want)
		}
	}
	m.expectStatus(t, multiURL(nums...), r.last, http.StatusNoContent)
	t.Logf("%d connections", conns)
}

// multiGap: a client that resumes after one key's history moved past what
// it had gets that key's exact sse.gap, then the rest, and the other
// key's events with no gap; a client that starts from "0" gets each key's
// exact gap from 1.
func (s suite[K]) multiGap(t *testing.T) {
	m := s.multiServer(t, 5)
	nums := []int{40, 41}
	keys := s.keys(nums...)
	publishKeys(t, m.im.Publisher, keys, 1, 3)
	r := newMultiReader(2)
	resp := m.get(t, multiURL(nums...), "")
	r.attach(t, resp).read(t, 6)
	resp.Body.Close()
	if r.next[0] != 4 || r.next[1] != 4 {
		t.Fatalf("read to %d and %d, want 3 of each", r.next[0]-1, r.next[1]-1)
	}
	publishSeq(t, m.im.Publisher, keys[0], 4, 23) // the history keeps 19-23
	publishSeq(t, m.im.Publisher, keys[1], 4, 5)
	for _, k := range keys {
		if err := m.im.Publisher.Close(ctx(t), k); err != nil {
			t.Fatal(err)
		}
	}
	if !r.attach(t, m.get(t, multiURL(nums...), r.last)).read(t, 0) || !r.ended {
		t.Fatal("the resumed stream did not end with close")
	}
	if want := []sse.Gap{{From: 4, To: 18}}; fmt.Sprint(r.gaps[0]) != fmt.Sprint(want) || r.next[0] != 24 {
		t.Fatalf("key 0: gaps %v and events to %d, want %v then 19-23", r.gaps[0], r.next[0]-1, want)
	}
	if len(r.gaps[1]) > 0 || r.next[1] != 6 {
		t.Fatalf("key 1: gaps %v and events to %d, want 4-5 and no gap", r.gaps[1], r.next[1]-1)
	}
	fresh := newMultiReader(2)
	if !fresh.attach(t, m.get(t, multiURL(nums...), "0")).read(t, 0) || !fresh.ended {
		t.Fatal("the stream from 0 did not end with close")
	}
	if want := []sse.Gap{{From: 1, To: 18}}; fmt.Sprint(fresh.gaps[0]) != fmt.Sprint(want) || fresh.next[0] != 24 {
		t.Fatalf("from 0, key 0: gaps %v and events to %d, want %v then 19-23", fresh.gaps[0], fresh.next[0]-1, want)
	}
	if len(fresh.gaps[1]) > 0 || fresh.next[1] != 6 {
		t.Fatalf("from 0, key 1: gaps %v and events to %d, want 1-5", fresh.gaps[1], fresh.next[1]-1)
	}
}

// multiCloseDetaches: a key's sse.close detaches it: the handler closes
// the key's subscription at once, while the connection goes on with the
// other key; the stream ends with close after the other's.
func (s suite[K]) multiCloseDetaches(t *testing.T) {
	m := s.multiServer(t, 0)
	nums := []int{50, 51}
	keys := s.keys(nums...)
	publishSeq(t, m.im.Publisher, keys[0], 1, 2)
	publishSeq(t, m.im.Publisher, keys[1], 1, 1)
	r := newMultiReader(2).attach(t, m.get(t, multiURL(nums...), ""))
	// Both attached, then key 0 closed under the connection.
	for r.next[0] < 3 || r.next[1] < 2 {
		r.read(t, 1)
	}
	if err := m.im.Publisher.Close(ctx(t), keys[0]); err != nil {
		t.Fatal(err)
	}
	for !r.closed[0] {
		if r.read(t, 1) {
			t.Fatal("the stream ended before key 0's sse.close")
		}
	}
	eventually(t, "key 0's subscription closed after its sse.close", func() bool {
		open, _ := m.src.opened(keys[0])
		return open == 0
	})
	if open, _ := m.src.opened(keys[1]); open != 1 {
		t.Fatalf("key 1 has %d subscriptions open, want the connection's", open)
	}
	publishSeq(t, m.im.Publisher, keys[1], 2, 3)
	if err := m.im.Publisher.Close(ctx(t), keys[1]); err != nil {
		t.Fatal(err)
	}
	if !r.read(t, 0) || !r.ended {
		t.Fatal("the stream did not end with close")
	}
	if r.next[0] != 3 || r.next[1] != 4 {
		t.Fatalf("events to %d and %d, want 2 and 3", r.next[0]-1, r.next[1]-1)
	}
	eventually(t, "every subscription closed once the stream ended", func() bool { return m.src.totalOpen() == 0 })
}

// multiFinishedKey: a client that has every event of a closed key but not
// its sse.close gets the sse.close first when it resumes, and nothing
// else of the key; one whose ID marks the key closed gets nothing of it;
// the other key goes on.
func (s suite[K]) multiFinishedKey(t *testing.T) {
	m := s.multiServer(t, 0)
	nums := []int{60, 61}
	keys := s.keys(nums...)
	publishSeq(t, m.im.Publisher, keys[0], 1, 2)
	if err := m.im.Publisher.Close(ctx(t), keys[0]); err != nil {
		t.Fatal(err)
	}
	publishSeq(t, m.im.Publisher, keys[1], 1, 1)
	// Read until key 0's event 2 and key 1's event 1, keeping the last ID
	// before key 0's sse.close.
	resp := m.get(t, multiURL(nums...), "")
	r := newMultiReader(2).attach(t, resp)
	var before string // an ID with key 0 at 2, not closed
	for r.next[0] < 3 || r.next[1] < 2 {
		r.read(t, 1)
		if !r.closed[0] {
			before = r.last
		}
	}
	for !r.closed[0] {
		r.read(t, 1)
	}
	resp.Body.Close()
	after := r.last // key 0 closed in it
	if r.closed[1] {
		t.Fatal("key 1 closed, though it was not")
	}

	// From before: key 0's sse.close first.
	resp = m.get(t, multiURL(nums...), before)
	dec := sseclient.NewDecoder(resp.Body)
	ev, err := dec.Next()
	if err != nil {
		t.Fatal(err)
	}
	if i, _ := ev.Key(); ev.Name != sseclient.EventKeyClose || i != 0 {
		t.Fatalf("resuming with every event of closed key 0: first %+v, want its sse.close", ev)
	}
	resp.Body.Close()

	// From after: nothing of key 0; key 1's events, close.
	publishSeq(t, m.im.Publisher, keys[1], 2, 3)
	if err := m.im.Publisher.Close(ctx(t), keys[1]); err != nil {
		t.Fatal(err)
	}
	if !r.attach(t, m.get(t, multiURL(nums...), after)).read(t, 0) || !r.ended {
		t.Fatal("the resumed stream did not end with close")
	}
	if r.next[0] != 3 || r.next[1] != 4 {
		t.Fatalf("events to %d and %d, want 2 and 3", r.next[0]-1, r.next[1]-1)
	}
	m.expectStatus(t, multiURL(nums...), r.last, http.StatusNoContent)
}

// multiRefusals: the key function's refusal refuses the whole request
// with its status, before any key is subscribed; so do an empty list and
// a key listed twice (400); with WithKnownKeysOnly, one unknown key
// refuses the whole request (404), leaving no subscription open; an ID
// that is not one of the request's gets 400.
func (s suite[K]) multiRefusals(t *testing.T) {
	m := s.multiServer(t, 0)
	m.expectStatus(t, multiURL(70, 71)+"&refuse=1", "", http.StatusForbidden)
	m.expectStatus(t, "/m?k=", "", http.StatusBadRequest)
	m.expectStatus(t, multiURL(70, 71, 70), "", http.StatusBadRequest)
	if _, n := m.src.opened(s.key(70)); n != 0 {
		t.Fatalf("%d Subscribe calls for requests refused before any key", n)
	}
	for _, id := range []string{"x", "5:,", "0:zz,"} {
		m.expectStatus(t, multiURL(70, 71), id, http.StatusBadRequest)
	}

	known := s.multiServer(t, 0, sse.WithKnownKeysOnly())
	publishSeq(t, known.im.Publisher, s.key(72), 1, 1)
	publishSeq(t, known.im.Publisher, s.key(73), 1, 1)
	known.expectStatus(t, multiURL(72, 74, 73), "", http.StatusNotFound)
	eventually(t, "no subscription open after the refusal", func() bool { return known.src.totalOpen() == 0 })
	r := newMultiReader(2).attach(t, known.get(t, multiURL(72, 73), ""))
	for r.next[0] < 2 || r.next[1] < 2 {
		r.read(t, 1)
	}
}

// multiBound: a request may name at most WithMaxKeysPerRequest keys
// (DefaultKeysPerRequest without it); one with more gets 400, before any
// key is subscribed.
func (s suite[K]) multiBound(t *testing.T) {
	m := s.multiServer(t, 0, sse.WithMaxKeysPerRequest(3))
	m.expectStatus(t, multiURL(80, 81, 82, 83), "", http.StatusBadRequest)
	if _, n := m.src.opened(s.key(80)); n != 0 {
		t.Fatalf("%d Subscribe calls for a request over the bound", n)
	}
	publishKeys(t, m.im.Publisher, s.keys(80, 81, 82), 1, 1)
	r := newMultiReader(3).attach(t, m.get(t, multiURL(80, 81, 82), ""))
	for r.events < 3 {
		r.read(t, 1)
	}

	def := s.multiServer(t, 0)
	nums := make([]int, sse.DefaultKeysPerRequest+1)
	for i := range nums {
		nums[i] = 100 + i
	}
	def.expectStatus(t, multiURL(nums...), "", http.StatusBadRequest)
	if _, n := def.src.opened(s.key(100)); n != 0 {
		t.Fatalf("%d Subscribe calls for a request over the default bound", n)
	}
}

// multiOneKey: a request that names one key is served as Handler serves
// it, byte for byte.
func (s suite[K]) multiOneKey(t *testing.T) {
	m := s.multiServer(t, 0)
	k := s.key(90)
	publishSeq(t, m.im.Publisher, k, 1, 3)
	if err := m.im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	body := func(path, lastID string) string {
		resp := m.get(t, path, lastID)
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d, %v", path, resp.StatusCode, err)
		}
		return string(b)
	}
	one, multi := body("/one/90", ""), body(multiURL(90), "")
	if one != multi {
		t.Fatalf("one key through MultiHandler:\n%q\nthrough Handler:\n%q", multi, one)
	}
	// Resumed from its second event.
	dec := sseclient.NewDecoder(strings.NewReader(one))
	dec.Next()
	ev, _ := dec.Next()
	if one, multi := body("/one/90", ev.ID), body(multiURL(90), ev.ID); one != multi {
		t.Fatalf("resumed from %q, one key through MultiHandler:\n%q\nthrough Handler:\n%q", ev.ID, multi, one)
	}
}

// multiChangingKeys: a request for another list of keys that resumes from
// the last ID of the old list's stream (a page that follows a new key and
// drops one) gets each kept key's events after where it was, exactly
// once, wherever the key stands in the new list, and the new key's from
// its start.
func (s suite[K]) multiChangingKeys(t *testing.T) {
	m := s.multiServer(t, 0)
	keys := s.keys(200, 201, 202) // the old list is 200, 201; the new 201, 202
	publishKeys(t, m.im.Publisher, keys, 1, 5)
	old := newMultiReader(2).attach(t, m.get(t, multiURL(200, 201), ""))
	for old.next[0] < 6 || old.next[1] < 6 {
		old.read(t, 1)
	}
	publishKeys(t, m.im.Publisher, keys, 6, 8)
	for _, k := range keys {
		if err := m.im.Publisher.Close(ctx(t), k); err != nil {
			t.Fatal(err)
		}
	}
	r := newMultiReader(2)
	r.next[0] = 6 // 201, now first, resumes after 5
	if !r.attach(t, m.get(t, multiURL(201, 202), old.last)).read(t, 0) || !r.ended {
		t.Fatalf("the stream of the new list, from %q, did not end with close", old.last)
	}
	if r.next[0] != 9 || r.next[1] != 9 || len(r.gaps[0])+len(r.gaps[1]) > 0 {
		t.Fatalf("from %q: events to %d and %d, gaps %v; want 6-8 of the kept key, 1-8 of the new one", old.last, r.next[0]-1, r.next[1]-1, r.gaps)
	}
}

// multiManyKeys: a request of 1,000 keys, cut again and again and resumed
// with its last ID, gets every key's events and sse.close exactly once,
// then close, and its IDs stay short (at most 512 bytes: a cursor and a
// few moved keys, however many keys there are).
func (s suite[K]) multiManyKeys(t *testing.T) {
	const n, most = 1000, 512
	m := s.multiServer(t, 0, sse.WithMaxKeysPerRequest(n))
	nums := make([]int, n)
	for i := range nums {
		nums[i] = 1000 + i
	}
	keys := s.keys(nums...)
	// Eight producers, each with its share of the keys: event 1 of each
	// before the first request, then event 2 and Close while it reads.
	const producers = 8
	share := func(p int) []K { return keys[p*n/producers : (p+1)*n/producers] }
	var first sync.WaitGroup
	for p := range producers {
		first.Go(func() {
			for _, k := range share(p) {
				if err := m.im.Publisher.Enqueue(ctx(t), k, "1"); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	if first.Wait(); t.Failed() {
		return
	}
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for _, k := range share(p) {
				if err := m.im.Publisher.Enqueue(ctx(t), k, "2"); err != nil {
					t.Error(err)
					return
				}
				if err := m.im.Publisher.Close(ctx(t), k); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	defer wg.Wait()
	rng := rand.New(rand.NewPCG(29, 0))
	r := newMultiReader(n)
	conns := 0
	for !r.ended {
		if conns++; conns > 200 {
			t.Fatal("200 connections and the stream did not end")
		}
		resp := m.get(t, multiURL(nums...), r.last)
		if resp.StatusCode == http.StatusNoContent {
			resp.Body.Close()
			break
		}
		r.attach(t, resp).read(t, 1+rng.IntN(1500))
		resp.Body.Close() // the cut
		if r.longest > most {
			t.Fatalf("an ID of %d bytes, more than %d: %q", r.longest, most, r.last)
		}
	}
	wg.Wait()
	for i := range keys {
		if r.next[i] != 3 || len(r.gaps[i]) > 0 || !r.closed[i] {
			t.Fatalf("key %d: events to %d, gaps %v, closed %v; want 1, 2 and its sse.close", i, r.next[i]-1, r.gaps[i], r.closed[i])
		}
	}
	t.Logf("%d connections, IDs of at most %d bytes", conns, r.longest)
}

// multiUnknownCursor: an ID naming a cursor the source does not hold
// restarts every key with an sse.gap up to its newest event (none for a
// key without events), then the events after it: never an event again
// without a gap, never 400, and never 204 or close as if the keys were
// done: keys all closed get their gaps and sse.closes, then close.
func (s suite[K]) multiUnknownCursor(t *testing.T) {
	m := s.multiServer(t, 0)
	const unknown = "0:~unknowncursor0000:"
	keys := s.keys(210, 211, 212) // 3 events; 2 events and closed; none
	publishSeq(t, m.im.Publisher, keys[0], 1, 3)
	publishSeq(t, m.im.Publisher, keys[1], 1, 2)
	if err := m.im.Publisher.Close(ctx(t), keys[1]); err != nil {
		t.Fatal(err)
	}
	r := newMultiReader(3).attach(t, m.get(t, multiURL(210, 211, 212), unknown))
	for !r.closed[1] || r.next[0] < 4 {
		if r.read(t, 1) {
			t.Fatal("the stream ended before the gaps and key 1's sse.close")
		}
	}
	publishSeq(t, m.im.Publisher, keys[0], 4, 5)
	publishSeq(t, m.im.Publisher, keys[2], 1, 1)
	for _, k := range []K{keys[0], keys[2]} {
		if err := m.im.Publisher.Close(ctx(t), k); err != nil {
			t.Fatal(err)
		}
	}
	if !r.read(t, 0) || !r.ended {
		t.Fatal("the stream did not end with close")
	}
	want := [][]sse.Gap{{{From: 1, To: 3}}, {{From: 1, To: 2}}, nil}
	if fmt.Sprint(r.gaps) != fmt.Sprint(want) || r.next[0] != 6 || r.next[1] != 3 || r.next[2] != 2 {
		t.Fatalf("from an unknown cursor: gaps %v, events to %v; want gaps %v, then 4-5 of key 0 and 1 of key 2", r.gaps, r.next, want)
	}

	// Every key closed: gaps, sse.closes and close; not 204.
	done := newMultiReader(2).attach(t, m.get(t, multiURL(210, 211), unknown))
	if !done.read(t, 0) || !done.ended {
		t.Fatal("the stream of closed keys from an unknown cursor did not end with close")
	}
	if want := [][]sse.Gap{{{From: 1, To: 5}}, {{From: 1, To: 2}}}; fmt.Sprint(done.gaps) != fmt.Sprint(want) {
		t.Fatalf("closed keys from an unknown cursor: gaps %v, want %v", done.gaps, want)
	}
}
