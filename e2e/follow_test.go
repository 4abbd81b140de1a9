package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// followPage runs the README's snippet, examples/internal/page/static/follow.js
// (which the demo serves at /follow.js), on the job its URL names, as
// ?job=<id>. The bar and the status it gives follow record every value
// the snippet sets; window.followState() returns them.
const followPage = `<!doctype html>
<meta charset="utf-8">
<title>follow.js</title>
<progress id="bar" max="100" value="0"></progress> <span id="status">connecting</span>
<script src="/follow.js"></script>
<script>
"use strict";
const state = {values: [], statuses: [], reloads: 0, gaps: []};
const barEl = document.getElementById("bar");
const statusEl = document.getElementById("status");
const bar = {
  get value() { return barEl.value; },
  set value(v) { state.values.push(v); barEl.value = v; },
};
const status = {
  get textContent() { return statusEl.textContent; },
  set textContent(s) { state.statuses.push(s); statusEl.textContent = s; },
};
const es = follow(new URLSearchParams(location.search).get("job"), bar, status, () => { state.reloads++; });
es.addEventListener("gap", (e) => { state.gaps.push(JSON.parse(e.data)); });
window.followState = () => Object.assign({readyState: es.readyState}, state);
</script>
`

// followState is window.followState() of followPage.
type followState struct {
	Values     []int    `json:"values"`   // what follow set the bar to, in order
	Statuses   []string `json:"statuses"` // what follow set the status to, in order
	Reloads    int      `json:"reloads"`  // calls of reloadState
	Gaps       []gap    `json:"gaps"`     // the data of the gap events
	ReadyState int      `json:"readyState"`
}

// followServer serves followPage at /follow.html and passes every other
// request on to the demo d, so that the page and the job's stream have one
// origin, as follow.js's URL (/jobs/<id>/events) wants. If cut is not
// zero, the first stream of every job ends after cut events, with a retry
// of 100 ms, as a connection that drops. It returns the server's URL and
// the number of stream requests it got.
func followServer(t *testing.T, d *demo, cut int) (string, *atomic.Int64) {
	t.Helper()
	proxy := newDemoProxy(t, d)
	var streams atomic.Int64
	var cutJobs sync.Map // job IDs whose first stream was cut
	mux := http.NewServeMux()
	mux.HandleFunc("GET /follow.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, followPage)
	})
	mux.HandleFunc("GET /jobs/{id}/events", func(w http.ResponseWriter, r *http.Request) {
		streams.Add(1)
		if _, done := cutJobs.LoadOrStore(r.PathValue("id"), true); cut == 0 || done {
			proxy.ServeHTTP(w, r)
			return
		}
		resp := proxy.fetch(w, r)
		if resp == nil {
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.WriteString(w, "retry: 100\n\n")
		in := bufio.NewReader(resp.Body)
		for events := 0; events < cut; {
			line, err := in.ReadString('\n')
			io.WriteString(w, line)
			if err != nil {
				return
			}
			if line == "\n" {
				events++
			}
		}
		// The response ends here, with the job still running.
	})
	mux.Handle("/", proxy)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL, &streams
}

// The README's follow.js in Chromium, against the demo: it follows a job
// live to its end, stops on "close", reports a gap and a failure, and tells
// a connection the browser retries from one it gave up.
func TestFollowJS(t *testing.T) {
	const steps = 30
	chromium := findChromium(t)
	d := startDemo(t, "-step", "100ms", "-steps", strconv.Itoa(steps))
	browser := newBrowser(t, chromium)
	var allSteps []int
	for i := 1; i <= steps; i++ {
		allSteps = append(allSteps, i*100/steps)
	}

	// A running job: the bar moves while the job runs, through every
	// step; on "close" the status says done and the EventSource is closed,
	// after one connection.
	t.Run("live", func(t *testing.T) {
		base, streams := followServer(t, d, 0)
		tab := newTab(t, browser)
		job := path.Base(path.Dir(d.startJob(t, newClient(t))))
		navigate(t, tab, base+"/follow.html?job="+job)
		waitFollow(t, tab, "the bar to move while the job runs", func(s followState) bool {
			return len(s.Values) > 0 && len(s.Statuses) == 0
		})
		s := waitFollow(t, tab, "the job to end", func(s followState) bool { return len(s.Statuses) > 0 })
		// A browser that reconnected would fire "error" at once.
		time.Sleep(500 * time.Millisecond)
		s = getFollow(t, tab)
		if !slices.Equal(s.Values, allSteps) || !slices.Equal(s.Statuses, []string{"done"}) || s.Reloads != 0 || s.ReadyState != readyClosed {
			t.Errorf("the page got %+v; want the bar at %v, the status done, no reload, and the EventSource closed", s, allSteps)
		}
		if n := streams.Load(); n != 1 {
			t.Errorf("%d requests for the stream, want 1", n)
		}
	})

	// The first connection drops mid-job: the status says reconnecting,
	// the browser resumes after the last event it got, and the bar gets
	// every step once.
	t.Run("reconnecting", func(t *testing.T) {
		base, streams := followServer(t, d, 6)
		tab := newTab(t, browser)
		job := path.Base(path.Dir(d.startJob(t, newClient(t))))
		navigate(t, tab, base+"/follow.html?job="+job)
		waitFollow(t, tab, "the job to end", func(s followState) bool {
			return slices.Contains(s.Statuses, "done") || slices.Contains(s.Statuses, "failed")
		})
		time.Sleep(500 * time.Millisecond)
		s := getFollow(t, tab)
		if !slices.Equal(s.Values, allSteps) || !slices.Equal(s.Statuses, []string{"reconnecting", "done"}) || s.Reloads != 0 || s.ReadyState != readyClosed {
			t.Errorf("the page got %+v; want the bar at %v, the status reconnecting then done, no reload, and the EventSource closed", s, allSteps)
		}
		if n := streams.Load(); n != 2 {
			t.Errorf("%d requests for the stream, want 2", n)
		}
	})

	// A job the server does not know: 404, and the browser gives up.
	t.Run("failed", func(t *testing.T) {
		base, streams := followServer(t, d, 0)
		tab := newTab(t, browser)
		navigate(t, tab, base+"/follow.html?job="+strings.Repeat("0", 32))
		waitFollow(t, tab, "the status", func(s followState) bool { return len(s.Statuses) > 0 })
		time.Sleep(500 * time.Millisecond)
		s := getFollow(t, tab)
		if len(s.Values) != 0 || !slices.Equal(s.Statuses, []string{"failed"}) || s.Reloads != 0 || s.ReadyState != readyClosed {
			t.Errorf("the page got %+v; want the status failed and nothing else", s)
		}
		if n := streams.Load(); n != 1 {
			t.Errorf("%d requests for the stream, want 1", n)
		}
	})

	// A job that ended before the page opened, with a history shorter than
	// its events: the page gets a gap, and calls reloadState once, then the
	// events the history holds (the last progress among them) and "close".
	t.Run("gap", func(t *testing.T) {
		const (
			steps   = 10
			history = 4
			total   = 2*steps + 3
		)
		d := startDemo(t, "-step", "10ms", "-steps", strconv.Itoa(steps), "-history", strconv.Itoa(history))
		events := d.startJob(t, newClient(t))
		readToClose(t, events+"?lastEventId=0")
		base, _ := followServer(t, d, 0)
		tab := newTab(t, browser)
		navigate(t, tab, base+"/follow.html?job="+path.Base(path.Dir(events)))
		waitFollow(t, tab, "the job to show", func(s followState) bool { return len(s.Statuses) > 0 })
		time.Sleep(500 * time.Millisecond)
		s := getFollow(t, tab)
		if want := []gap{{1, total - history}}; !slices.Equal(s.Gaps, want) || s.Reloads != 1 {
			t.Errorf("gaps %v and %d reloads, want %v and 1", s.Gaps, s.Reloads, want)
		}
		if !slices.Equal(s.Values, []int{100}) || !slices.Equal(s.Statuses, []string{"done"}) || s.ReadyState != readyClosed {
			t.Errorf("the page got %+v; want the bar at 100, the status done, and the EventSource closed", s)
		}
	})
}

// navigate loads url in tab.
func navigate(t *testing.T, tab context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(tab, chromedp.Navigate(url)); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
}

// getFollow returns window.followState() of followPage.
func getFollow(t *testing.T, tab context.Context) followState {
	t.Helper()
	s, err := chromedp.Run(tab, chromedp.Evaluate[followState]("window.followState ? window.followState() : {}"))
	if err != nil {
		t.Fatalf("reading the page's state: %v", err)
	}
	return s
}

// waitFollow polls followPage's state every 50 ms until cond holds, for at
// most 30 seconds.
func waitFollow(t *testing.T, tab context.Context, what string, cond func(followState) bool) followState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := getFollow(t, tab)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the page has %+v", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
