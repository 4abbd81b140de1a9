package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/cutproxy"
)

// multiPage imports the library's browser module (sse.ScriptHandler) and
// follows streams with it: start(label, url, names) records, in
// window.runs[label], every callback in the order the module made them.
const multiPage = `<!doctype html>
<meta charset="utf-8">
<title>sse.js</title>
<script type="module">
import { follow } from "/sse.js";
window.runs = {};
window.start = (label, url, names) => {
  const s = window.runs[label] = {events: [], gaps: [], closes: [], done: false, errors: 0, reconnects: 0, opens: 0};
  follow(url, {
    keys: names,
    events: ["progress"],
    onEvent(key, e) { s.events.push([String(key), e.data]); },
    onGap(key, from, to) { s.gaps.push([String(key), String(from), String(to)]); },
    onClose(key) { s.closes.push(String(key)); },
    onDone() { s.done = true; },
    onError() { s.errors++; },
    onReconnect() { s.reconnects++; },
    onOpen() { s.opens++; },
  });
};
window.ready = true;
</script>`

// multiRun is window.runs[label] of multiPage.
type multiRun struct {
	Events     [][]string `json:"events"` // [key, data], in arrival order
	Gaps       [][]string `json:"gaps"`
	Closes     []string   `json:"closes"`
	Done       bool       `json:"done"`
	Errors     int        `json:"errors"`
	Reconnects int        `json:"reconnects"`
	Opens      int        `json:"opens"`
}

// TestMultiKeyModule follows 8 FanOut keys on one EventSource with the
// browser module (sse.ScriptHandler) through MultiHandler; the connection
// is cut twice mid-way, at a byte offset, and the browser resumes by itself
// with Last-Event-ID. Every key's events arrive exactly once and in order,
// every key gets its close, and the keys progress together: every key's
// first event arrives before any key's last. The same page follows one key
// (Handler's wire) with the same module.
func TestMultiKeyModule(t *testing.T) {
	chromium := findChromium(t)
	const keys, steps = 8, 40
	b := sse.New[string](sse.WithMode(sse.FanOut))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	multi := sse.MultiHandler[string](b, func(r *http.Request) ([]string, error) {
		return r.URL.Query()["job"], nil
	}, sse.WithRetry(100*time.Millisecond))

	var served, resumed atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(multiPage))
	})
	mux.Handle("GET /sse.js", sse.ScriptHandler())
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		// The page's origin is the server's, the stream's the proxy's.
		w.Header().Set("Access-Control-Allow-Origin", "*")
		served.Add(1)
		if r.Header.Get("Last-Event-ID") != "" {
			resumed.Add(1)
		}
		multi.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	// The first two connections are cut mid-way (an event is some 200
	// bytes with its 8-key ID; the whole stream some 65 KB).
	proxy, err := cutproxy.Start(srv.Listener.Addr().String(), cutproxy.Options{
		Cut: func(n int) int64 {
			switch n {
			case 0:
				return 15_001
			case 1:
				return 20_003
			}
			return -1
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })

	names := make([]string, keys)
	q := make([]string, keys)
	for i := range names {
		names[i] = "job" + strconv.Itoa(i)
		q[i] = "job=" + names[i]
		if err := b.Open(context.Background(), names[i]); err != nil {
			t.Fatal(err)
		}
	}

	tab := newBrowser(t, chromium) // closed first: it ends the streams
	navigate(t, tab, srv.URL+"/")
	waitRun(t, tab, "", "the module to load", func(bool, multiRun) bool { return true })
	stream := "http://" + proxy.Addr() + "/events?" + strings.Join(q, "&")
	evaluate[any](t, tab, fmt.Sprintf(`start("multi", %q, %s)`, stream, jsList(names)))
	waitRun(t, tab, "multi", "the stream to open", func(_ bool, r multiRun) bool { return r.Opens > 0 })

	// The jobs progress together: a step of every job every 10 ms.
	ctx := context.Background()
	for step := 1; step <= steps; step++ {
		for _, k := range names {
			if err := b.Publish(ctx, k, sse.Event{Name: "progress", Data: strconv.Itoa(step)}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, k := range names {
		if err := b.Close(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	r := waitRun(t, tab, "multi", "every key's close", func(_ bool, r multiRun) bool { return r.Done || r.Errors > 0 })

	if !r.Done || r.Errors != 0 || len(r.Gaps) != 0 {
		t.Fatalf("done %v, %d errors, gaps %v", r.Done, r.Errors, r.Gaps)
	}
	if n := served.Load(); n < 3 || resumed.Load() < 2 {
		t.Errorf("%d requests, %d with a Last-Event-ID: want 3 and 2 (two cuts)", n, resumed.Load())
	}
	if r.Reconnects < 2 {
		t.Errorf("%d reconnections reported, want 2", r.Reconnects)
	}
	first, last := map[string]int{}, map[string]int{}
	got := map[string][]string{}
	for i, ev := range r.Events {
		k := ev[0]
		if _, ok := first[k]; !ok {
			first[k] = i
		}
		last[k] = i
		got[k] = append(got[k], ev[1])
	}
	want := make([]string, steps)
	for i := range want {
		want[i] = strconv.Itoa(i + 1)
	}
	for _, k := range names {
		if !slices.Equal(got[k], want) {
			t.Errorf("%s: events %v, want 1 to %d, each once, in order", k, got[k], steps)
		}
	}
	slices.Sort(r.Closes)
	if !slices.Equal(r.Closes, names) {
		t.Errorf("closes %v, want one for each of %v", r.Closes, names)
	}
	maxFirst, minLast := -1, len(r.Events)
	for _, k := range names {
		maxFirst = max(maxFirst, first[k])
		minLast = min(minLast, last[k])
	}
	if maxFirst >= minLast {
		t.Errorf("a key's first event (event %d of the page) came after another's last (%d): the keys did not progress together", maxFirst, minLast)
	}
	t.Logf("%d events on %d requests (%d resumed), %d reconnections; every key's first event by the page's event %d, the first last at %d",
		len(r.Events), served.Load(), resumed.Load(), r.Reconnects, maxFirst, minLast)

	// One key: Handler's wire (no colon in the IDs, "close"), key 0.
	if err := b.Publish(ctx, "solo", sse.Event{Name: "progress", Data: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "solo", sse.Event{Name: "progress", Data: "2"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, "solo"); err != nil {
		t.Fatal(err)
	}
	evaluate[any](t, tab, fmt.Sprintf(`start("solo", %q, ["solo"])`, srv.URL+"/events?job=solo"))
	s := waitRun(t, tab, "solo", "the one key's close", func(_ bool, r multiRun) bool { return r.Done || r.Errors > 0 })
	if !s.Done || s.Errors != 0 || !slices.Equal(s.Closes, []string{"solo"}) ||
		!slices.EqualFunc(s.Events, [][]string{{"solo", "1"}, {"solo", "2"}}, slices.Equal) {
		t.Errorf("one key: %+v", s)
	}
}

// jsList writes names as a JavaScript array literal.
func jsList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return "[" + strings.Join(q, ",") + "]"
}

// waitRun polls window.runs[label] of multiPage every 50 ms until cond
// holds, for at most 30 seconds; the bool is whether the module loaded.
func waitRun(t *testing.T, tab context.Context, label, what string, cond func(bool, multiRun) bool) multiRun {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := evaluate[bool](t, tab, "window.ready === true")
		var r multiRun
		if ready && label != "" {
			r = evaluate[multiRun](t, tab, fmt.Sprintf("window.runs[%q] || {}", label))
		}
		if ready && cond(ready, r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: the module loaded %v, %+v", what, ready, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
