package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
)

// The demo's page follows 8 jobs, started at once, on one connection
// (/jobs/events, sse.MultiHandler, with the browser module), through two
// cuts: a proxy in front of the demo breaks the stream's connection twice
// mid-event, and the browser resumes by itself with its Last-Event-ID,
// which holds every job's position. Every job gets every event exactly
// once and in order, and its close; the jobs progress together (every
// job's first event arrives before any job's last); every request for the
// stream names all 8 jobs; and the demo's metrics count one open stream
// for the page.
func TestDemoJobsOnOneConnection(t *testing.T) {
	const (
		jobs  = 8
		steps = 30
	)
	chromium := findChromium(t)
	d := startDemo(t, "-step", "200ms", "-steps", strconv.Itoa(steps))
	proxy := newDemoProxy(t, d)

	// An event is some 150 bytes with its 8-job ID, the stream some 75 KB.
	cuts := []int64{15_001, 30_003}
	var (
		mu       sync.Mutex
		requests []int // guarded by mu: the jobs each request for the stream named
		resumed  int   // guarded by mu: requests with a Last-Event-ID header
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jobs/events" {
			proxy.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		n := len(requests)
		requests = append(requests, len(r.URL.Query()["job"]))
		if r.Header.Get("Last-Event-ID") != "" {
			resumed++
		}
		mu.Unlock()
		if n >= len(cuts) {
			proxy.ServeHTTP(w, r)
			return
		}
		cutStream(w, r, proxy, cuts[n])
	}))
	t.Cleanup(srv.Close)

	tab := newBrowser(t, chromium) // closed first: it ends the streams
	open(t, tab, srv.URL+"/")
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("start-many"))); err != nil {
		t.Fatalf("clicking Start 8: %v", err)
	}
	waitFor(t, tab, "the 8 jobs to make progress", func(js []jobState) bool {
		if len(js) != jobs {
			return false
		}
		for _, j := range js {
			if len(j.Progress) == 0 {
				return false
			}
		}
		return true
	})
	// While the jobs run, the page holds one stream open: all of its jobs
	// on one connection.
	client := newClient(t)
	waitMetrics(t, client, d.url, "one stream open for the page's 8 jobs", func(m map[string]float64) bool {
		return m["progress_streams_open"] == 1
	})
	finished := func(js []jobState) bool {
		for _, j := range js {
			if j.Status != "done" && j.Status != "failed" {
				return false
			}
		}
		return len(js) == jobs
	}
	if js := snapshot(t, tab); finished(js) {
		t.Fatal("the jobs had ended when the metrics were read: the test proves less than it says")
	}

	js := waitFor(t, tab, "every job to end", finished)
	waitMetrics(t, client, d.url, "no stream open", func(m map[string]float64) bool {
		return m["progress_streams_open"] == 0
	})
	maxFirst, minLast := 0, int(^uint(0)>>1)
	for _, job := range js {
		checkEvents(t, job, steps)
		// One connection followed every job, through both cuts.
		if job.Conns != 1 || job.Errors != len(cuts) || job.Opens != len(cuts)+1 || job.ReadyState != readyClosed {
			t.Errorf("job %s: %d connections, %d open and %d error events, readyState %d; want 1, %d, %d and %d (CLOSED)",
				job.ID, job.Conns, job.Opens, job.Errors, job.ReadyState, len(cuts)+1, len(cuts), readyClosed)
		}
		if len(job.At) > 0 {
			maxFirst = max(maxFirst, job.At[0])
			minLast = min(minLast, job.At[len(job.At)-1])
		}
	}
	if maxFirst >= minLast {
		t.Errorf("a job's first event (event %d of the page) came after another's last (%d): the jobs did not progress together", maxFirst, minLast)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, n := range requests {
		if n != jobs {
			t.Errorf("request %d for the stream named %d jobs, want all %d", i+1, n, jobs)
		}
	}
	if len(requests) != len(cuts)+1 || resumed != len(cuts) {
		t.Errorf("%d requests for the stream, %d with a Last-Event-ID; want %d and %d", len(requests), resumed, len(cuts)+1, len(cuts))
	}
	t.Logf("%d requests for the stream (%d resumed); every job's first event by the page's event %d, the first last at %d",
		len(requests), resumed, maxFirst, minLast)
	saveScreenshot(t, tab, "jobs-on-one-connection.png", "")
}

// cutStream passes r, a request for an event stream, on to the demo behind
// proxy, with its Last-Event-ID, and breaks the connection after the
// first cut bytes of the stream's body, as a network failure would: the
// client gets no end of the response. The stream is told to retry after
// 100 ms, so that the browser comes back at once.
func cutStream(w http.ResponseWriter, r *http.Request, proxy *demoProxy, cut int64) {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, proxy.upstream.JoinPath(r.URL.Path).String()+"?"+r.URL.RawQuery, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		req.Header.Set("Last-Event-ID", id)
	}
	resp, err := proxy.tr.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Cache-Control"} {
		w.Header().Set(h, resp.Header.Get(h))
	}
	w.WriteHeader(resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		io.Copy(w, resp.Body)
		return
	}
	io.WriteString(w, "retry: 100\n\n")
	rc := http.NewResponseController(w)
	rc.Flush()
	buf := make([]byte, 4096)
	for cut > 0 {
		n, err := resp.Body.Read(buf[:min(int64(len(buf)), cut)])
		if n > 0 {
			w.Write(buf[:n])
			rc.Flush()
			cut -= int64(n)
		}
		if err != nil {
			return
		}
	}
	// Break the connection, without the end of the chunked body.
	panic(http.ErrAbortHandler)
}

// The page follows at most 100 running jobs, MultiHandler's default bound
// on the keys of a request: asked to start 104, it starts 100, says why
// not more, and follows all 100 on one connection (one stream in the
// demo's metrics). A request for 101 would be refused whole, and the page
// would follow none.
func TestDemoJobsAtTheBound(t *testing.T) {
	const jobs = 100
	chromium := findChromium(t)
	d := startDemo(t, "-step", "1s", "-steps", "1000")
	tab := newBrowser(t, chromium)
	open(t, tab, d.url)
	if ids := evalAwait[[]string](t, tab, "window.demo.startMany(104)"); len(ids) != jobs {
		t.Fatalf("started %d jobs, want %d", len(ids), jobs)
	}
	if msg := evaluate[string](t, tab, "document.getElementById('error').textContent"); !strings.Contains(msg, "at most 100 running jobs") {
		t.Errorf("the page says %q, want that it follows at most 100 running jobs", msg)
	}
	js := waitFor(t, tab, "the 100 jobs to run", func(js []jobState) bool {
		for _, j := range js {
			if j.Status != "running" || len(j.Progress) == 0 {
				return false
			}
		}
		return len(js) == jobs
	})
	for _, j := range js {
		if j.Conns != 1 || j.Opens != 1 || j.Errors != 0 {
			t.Fatalf("job %s: %d connections, %d open and %d error events; want 1, 1 and 0", j.ID, j.Conns, j.Opens, j.Errors)
		}
	}
	waitMetrics(t, newClient(t), d.url, "one stream open for the page's 100 jobs", func(m map[string]float64) bool {
		return m["progress_streams_open"] == 1
	})
}
