package e2e

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/cutproxy"
)

// resumePage opens an EventSource on the URL in its query's "events"
// parameter and keeps what it gets: window.progress() tells how far it is,
// window.result() returns everything.
const resumePage = `<!doctype html>
<meta charset="utf-8">
<title>resume</title>
<p id="status">connecting</p>
<script>
const state = {messages: [], gaps: [], opens: 0, errors: 0, ended: ""};
const es = new EventSource(new URLSearchParams(location.search).get("events"));
es.onopen = () => { state.opens++; };
es.onmessage = (e) => { state.messages.push({id: e.lastEventId, data: e.data}); };
es.addEventListener("gap", (e) => { state.gaps.push({id: e.lastEventId, data: e.data}); });
es.addEventListener("close", () => { es.close(); end("close"); });
es.onerror = () => {
  state.errors++;
  if (es.readyState === EventSource.CLOSED) end("failed");
};
function end(how) {
  if (state.ended) return;
  state.ended = how;
  document.getElementById("status").textContent =
    how + ": " + state.messages.length + " events, " + state.gaps.length + " gaps, " + state.opens + " connections";
}
window.progress = () => ({
  messages: state.messages.length, gaps: state.gaps.length,
  opens: state.opens, errors: state.errors, ended: state.ended, readyState: es.readyState,
});
window.result = () => Object.assign(window.progress(), {events: state.messages, gapEvents: state.gaps});
</script>
`

// resumeProgress is window.progress() of resumePage.
type resumeProgress struct {
	Messages   int    `json:"messages"` // message events
	Gaps       int    `json:"gaps"`     // "gap" events
	Opens      int    `json:"opens"`    // "open" events: connections that got a stream
	Errors     int    `json:"errors"`   // "error" events: lost connections, and the last failure
	Ended      string `json:"ended"`    // "close", "failed" (the browser gave up), or "" while it runs
	ReadyState int    `json:"readyState"`
}

// pageEvent is an event the page received.
type pageEvent struct {
	ID   string `json:"id"`
	Data string `json:"data"`
}

// resumeResult is window.result() of resumePage.
type resumeResult struct {
	resumeProgress
	Events    []pageEvent `json:"events"`
	GapEvents []pageEvent `json:"gapEvents"`
}

// The bug report's setup: Chromium reads 3,000 events of 10–310 bytes
// through a proxy that cuts every stream response after 300–6,300 bytes,
// with the broker at its default settings. Each time, the browser comes
// back with Last-Event-ID (the first request with ?lastEventId=0) and the
// handler sends again, from the replay window, what the dead connection
// took: the page gets every event exactly once, in order, intact, and no
// "gap", though the stream took well over a hundred connections.
func TestBrowserResumesThroughCuttingProxy(t *testing.T) {
	const (
		events = 3000
		retry  = 20 * time.Millisecond
	)
	chromium := findChromium(t)
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("E2E_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (set E2E_SEED to repeat the events and the cuts)", seed)

	b := sse.New[string]()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil && !t.Failed() {
			t.Errorf("Shutdown: %v", err)
		}
	})

	// The page comes from the server itself; its EventSource goes through
	// the proxy, another origin, so the stream allows any origin.
	statuses := &statusCounts{}
	var resumed atomic.Int64 // requests with a Last-Event-ID header
	h := sse.Handler[string](b, func(r *http.Request) (string, error) {
		if k := r.URL.Query().Get("key"); k != "" {
			return k, nil
		}
		return "", errors.New("no key")
	}, sse.WithRetry(retry))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(resumePage))
	})
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if r.Header.Get("Last-Event-ID") != "" {
			resumed.Add(1)
		}
		h.ServeHTTP(&statusWriter{ResponseWriter: w, counts: statuses}, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// Connection n is cut after a number of bytes drawn from (seed, n).
	var cutsMu sync.Mutex
	var cuts []int64 // guarded by cutsMu
	proxy, err := cutproxy.Start(srv.Listener.Addr().String(), cutproxy.Options{
		Cut: func(n int) int64 {
			cut := 300 + rand.New(rand.NewPCG(seed, uint64(n)+1)).Int64N(6001)
			cutsMu.Lock()
			cuts = append(cuts, cut)
			cutsMu.Unlock()
			return cut
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	rng := rand.New(rand.NewPCG(seed, 0))
	want := make([]string, events)
	for i := range want {
		want[i] = eventData(rng, i+1, 10+rng.IntN(301))
	}

	tab := newBrowser(t, chromium) // closed first: it ends the streams
	stream := "http://" + proxy.Addr() + "/events?key=k&lastEventId=0"
	start := time.Now()
	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/?events="+url.QueryEscape(stream))); err != nil {
		t.Fatalf("opening the page: %v", err)
	}
	waitResume(t, tab, "the stream to open", 30*time.Second, func(p resumeProgress) bool { return p.Opens > 0 })

	// The producer enqueues while the page reads, as fast as it can.
	produced := make(chan struct{})
	var produceErr error // set before produced is closed
	go func() {
		defer close(produced)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, data := range want {
			if produceErr = b.Enqueue(ctx, "k", data); produceErr != nil {
				return
			}
		}
		produceErr = b.Close(ctx, "k")
	}()
	t.Cleanup(func() { <-produced }) // before Shutdown; nothing blocks it for long

	p := waitResume(t, tab, "the stream to end", 100*time.Second, func(p resumeProgress) bool { return p.Ended != "" })
	elapsed := time.Since(start)
	select {
	case <-produced:
		if produceErr != nil {
			t.Fatalf("producing: %v", produceErr)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("the page ended (%+v) but the producer has not finished within 10s", p)
	}
	res, err := chromedp.Run(tab, chromedp.Evaluate[resumeResult]("window.result()"))
	if err != nil {
		t.Fatalf("reading the page's result: %v", err)
	}
	cutsMu.Lock()
	sizes := slices.Clone(cuts)
	cutsMu.Unlock()
	t.Logf("%v: %d events, %d gaps; %d proxy connections (cut after %d–%d bytes), %d opens, %d errors; %d requests with Last-Event-ID, server statuses %v; ended by %q",
		elapsed.Round(time.Millisecond), p.Messages, p.Gaps, proxy.Conns(), slices.Min(sizes), slices.Max(sizes),
		p.Opens, p.Errors, resumed.Load(), statuses.snapshot(), p.Ended)
	saveScreenshot(t, tab, "resume.png", "")

	if len(res.GapEvents) > 0 {
		t.Errorf("%d gap events, want none; the first ones: %v", len(res.GapEvents), res.GapEvents[:min(5, len(res.GapEvents))])
	}
	if len(res.Events) != events {
		t.Errorf("%d message events, want %d", len(res.Events), events)
	}
	bad, epoch := 0, ""
	for i, ev := range res.Events {
		// An ID is "<epoch>-<event ID>"; the epoch is the key's, the same
		// throughout.
		id := strconv.Itoa(i + 1)
		e, seq, _ := strings.Cut(ev.ID, "-")
		if epoch == "" {
			epoch = e
		}
		if i < events && e == epoch && seq == id && ev.Data == want[i] {
			continue
		}
		if bad++; bad <= 5 {
			exp := "none"
			if i < events {
				exp = fmt.Sprintf("id %s, %.20q…", id, want[i])
			}
			t.Errorf("message %d: id %s, data %.20q… (%d bytes); want %s", i+1, ev.ID, ev.Data, len(ev.Data), exp)
		}
	}
	if bad > 5 {
		t.Errorf("… %d wrong messages in all", bad)
	}
	// The stream ends with "close"; or, when the cut fell between the last
	// event and "close", the browser resumed after the last event and gave
	// up at the server's 204 (the key is done).
	if p.Ended != "close" && !(p.Ended == "failed" && statuses.get(http.StatusNoContent) > 0) {
		t.Errorf("the stream ended by %q (server statuses %v), want the close event", p.Ended, statuses.snapshot())
	}
	if n := proxy.Conns(); n < 50 {
		t.Errorf("the proxy cut only %d connections: the test proves little", n)
	}
}

// eventData returns the data of event n, of the given length (at least
// that of its prefix): the number, a colon, then letters.
func eventData(rng *rand.Rand, n, length int) string {
	var sb strings.Builder
	sb.WriteString(strconv.Itoa(n))
	sb.WriteByte(':')
	for sb.Len() < length {
		sb.WriteByte(byte('a' + rng.IntN(26)))
	}
	return sb.String()
}

// waitResume polls resumePage's progress every 150 ms until cond holds, for
// at most limit.
func waitResume(t *testing.T, tab context.Context, what string, limit time.Duration, cond func(resumeProgress) bool) resumeProgress {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		p, err := chromedp.Run(tab, chromedp.Evaluate[resumeProgress]("window.progress()"))
		if err != nil {
			t.Fatalf("reading the page's progress: %v", err)
		}
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; the page has %+v", limit, what, p)
		}
		time.Sleep(150 * time.Millisecond)
	}
}

// statusWriter counts the status of each response in counts.
type statusWriter struct {
	http.ResponseWriter
	counts *statusCounts
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.wrote = true
		w.counts.add(code)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController flush and set deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusCounts counts responses by status.
type statusCounts struct {
	mu sync.Mutex
	n  map[int]int // guarded by mu
}

func (c *statusCounts) add(code int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = make(map[int]int)
	}
	c.n[code]++
}

func (c *statusCounts) get(code int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[code]
}

func (c *statusCounts) snapshot() map[int]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.n)
}
