package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"
	"github.com/rocketqueue/sse/ssetest"
)

// One job watched in two tabs at once: tab A starts it, and tab B, opened
// by a click on A's "Watch in another tab" link while the job runs, follows
// the same job. Each tab gets every event of the job exactly once and in
// order (B also those from before it opened), shows 100% and "done", and
// neither reconnects after "close". Then tab C, opened on the job's link
// after the job ended, gets its whole history and shows it done.
func TestOneJobInTwoTabs(t *testing.T) {
	const steps = 30
	chromium := findChromium(t)
	d := startDemo(t, "-step", "100ms", "-steps", strconv.Itoa(steps))
	a := newBrowser(t, chromium)
	open(t, a, d.url)
	if err := chromedp.Do(a, chromedp.Click(chromedp.ID("start"))); err != nil {
		t.Fatalf("clicking Start: %v", err)
	}
	job := waitFor(t, a, "the job to make progress in tab A", func(jobs []jobState) bool {
		return len(jobs) == 1 && len(jobs[0].Progress) > 0
	})[0]
	if want := d.url + "?job=" + job.ID; job.Watch != want {
		t.Errorf("the job's link is %q, want %q", job.Watch, want)
	}

	// The link opens the job in a new tab.
	opened := chromedp.WaitNewTarget(a, func(info *target.Info) bool {
		return strings.Contains(info.URL, "job="+job.ID)
	})
	if err := chromedp.Do(a, chromedp.Click(chromedp.CSS(".watch"))); err != nil {
		t.Fatalf("clicking Watch in another tab: %v", err)
	}
	var id target.ID
	select {
	case id = <-opened:
	case <-time.After(10 * time.Second):
		t.Fatal("the link opened no tab within 10s")
	}
	b, closeB := chromedp.NewContext(a, chromedp.WithTargetID(id))
	t.Cleanup(closeB)
	if err := chromedp.Do(b, chromedp.EmulateViewport(900, 1000), chromedp.WaitVisible(chromedp.ID("start"))); err != nil {
		t.Fatalf("opening tab B: %v", err)
	}
	bJob := waitFor(t, b, "tab B to connect to the job", func(jobs []jobState) bool {
		return len(jobs) == 1 && (jobs[0].Opens > 0 || jobs[0].Status == "failed")
	})[0]
	if bJob.ID != job.ID || bJob.Opens == 0 {
		t.Fatalf("tab B follows job %s, want %s, and shows it %s", bJob.ID, job.ID, bJob.Status)
	}
	// Tab B joined while the job runs, or the test proves less than it says.
	if aJob := snapshot(t, a)[0]; aJob.Status != "running" || aJob.Bar == 100 {
		t.Fatalf("the job had ended (tab A shows %s at %d%%) when tab B connected", aJob.Status, aJob.Bar)
	} else {
		t.Logf("tab B connected with the job at %d%%", aJob.Bar)
	}

	tabs := map[string]context.Context{"A": a, "B": b}
	for _, name := range []string{"A", "B"} {
		jobs := waitFor(t, tabs[name], "the job to end in tab "+name, allEnded(1))
		checkJob(t, jobs[0], steps)
	}
	// A browser that reconnected would fire "error" at once.
	time.Sleep(time.Second)
	var ended []jobState
	for _, name := range []string{"A", "B"} {
		jobs := snapshot(t, tabs[name])
		if len(jobs) != 1 {
			t.Fatalf("tab %s follows %d jobs, want 1", name, len(jobs))
		}
		checkJob(t, jobs[0], steps)
		ended = append(ended, jobs[0])
		saveScreenshot(t, tabs[name], "one-job-tab-"+strings.ToLower(name)+".png", "")
	}
	sameEvents(t, "tab B", ended[1], ended[0])

	// After the end, within the retention time: the whole history, then
	// "close".
	c := newTab(t, a)
	open(t, c, job.Watch)
	jobs := waitFor(t, c, "the ended job to show in tab C", allEnded(1))
	checkJob(t, jobs[0], steps)
	sameEvents(t, "tab C", jobs[0], ended[0])
	time.Sleep(500 * time.Millisecond)
	jobs = snapshot(t, c)
	checkJob(t, jobs[0], steps)
	saveScreenshot(t, c, "one-job-tab-c.png", "")
}

// sameEvents checks that got has exactly the events of want.
func sameEvents(t *testing.T, what string, got, want jobState) {
	t.Helper()
	if got.ID != want.ID || !slices.Equal(got.IDs, want.IDs) || !slices.Equal(got.Progress, want.Progress) || !slices.Equal(got.Logs, want.Logs) {
		t.Errorf("%s got other events than tab A:\n%+v\nwant\n%+v", what, got, want)
	}
}

// A tab that opens a job after it ended, with the job's history bounded
// (-history) below its number of events, gets a "gap" event for the events
// no longer held, then the rest and "close": it shows the job done at 100%,
// even with no progress event left in the history, tells that it missed
// events, and does not reconnect.
func TestLateTabMissedEvents(t *testing.T) {
	const (
		steps = 10
		total = 2*steps + 3 // the job's events: Queued, Started, two a step, Finished
	)
	chromium := findChromium(t)
	for _, history := range []int{8, 1} {
		t.Run(fmt.Sprintf("history=%d", history), func(t *testing.T) {
			d := startDemo(t, "-step", "10ms", "-steps", strconv.Itoa(steps), "-history", strconv.Itoa(history))
			events := d.startJob(t, newClient(t))
			readToClose(t, events+"?lastEventId=0")

			tab := newBrowser(t, chromium)
			open(t, tab, d.url+"?job="+path.Base(path.Dir(events)))
			waitFor(t, tab, "the ended job to show", allEnded(1))
			time.Sleep(500 * time.Millisecond) // time to reconnect, which it must not
			job := snapshot(t, tab)[0]

			// The history holds events total-history+1 to total; event 2i+1
			// is step i's progress.
			var wantIDs []string
			var wantProgress []int
			epoch, _, _ := strings.Cut(firstOr(job.IDs, ""), "-")
			wantIDs = append(wantIDs, fmt.Sprintf("%s-%d", epoch, total-history)) // the gap's
			for n := total - history + 1; n <= total; n++ {
				wantIDs = append(wantIDs, fmt.Sprintf("%s-%d", epoch, n))
				if n%2 == 1 && n > 1 && n < total {
					wantProgress = append(wantProgress, (n-1)/2*100/steps)
				}
			}
			if want := []gap{{1, uint64(total - history)}}; !slices.Equal(job.Gaps, want) {
				t.Errorf("gaps %v, want %v", job.Gaps, want)
			}
			if epoch == "" || !slices.Equal(job.IDs, wantIDs) {
				t.Errorf("event ids %q, want %q", job.IDs, wantIDs)
			}
			if !slices.Equal(job.Progress, wantProgress) {
				t.Errorf("progress %v, want %v", job.Progress, wantProgress)
			}
			if n := len(job.Logs); n == 0 || job.Logs[n-1] != "Finished." {
				t.Errorf("log %q, want it to end with Finished.", job.Logs)
			}
			if job.Status != "done" || job.Bar != 100 || job.Width != "100%" {
				t.Errorf("the job shows %s at %d%% (%s wide), want done at 100%%", job.Status, job.Bar, job.Width)
			}
			if job.Opens != 1 || job.Errors != 0 || job.ReadyState != readyClosed {
				t.Errorf("%d open and %d error events, readyState %d; want 1, 0 and %d (CLOSED)",
					job.Opens, job.Errors, job.ReadyState, readyClosed)
			}
			note, err := chromedp.Run(tab, chromedp.Evaluate[string]("document.querySelector('.log .note')?.textContent ?? ''"))
			if err != nil {
				t.Fatal(err)
			}
			if want := fmt.Sprintf("%d earlier events are no longer held", total-history); !strings.Contains(note, want) {
				t.Errorf("the log's note is %q, want it to say %q", note, want)
			}
			saveScreenshot(t, tab, fmt.Sprintf("late-tab-history-%d.png", history), "")
		})
	}
}

// readToClose reads the event stream at url until its end, which must come
// after a "close" event, within 30 seconds.
func readToClose(t *testing.T, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	events, err := ssetest.ReadAll(strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 || events[len(events)-1].Type != "close" {
		t.Fatalf("the stream of %s ended without close: %+v", url, events)
	}
}

// A connection lost between a finished job's last event and its "close"
// event: the browser reconnects with the last event's ID, and the server
// answers 204, as the job has ended and the tab has all of its events. The
// EventSource then gives up with an error that cannot tell a 204 from a
// failure, so the page asks again itself: it shows the job done, not
// failed. (The page follows its jobs on /jobs/events, which serves a list
// of one job as Handler serves it.) A proxy in front of the demo makes the loss: it ends the tab's
// first stream just before "close".
func TestResumeAfterLastEventGets204(t *testing.T) {
	const steps = 5
	chromium := findChromium(t)
	d := startDemo(t, "-step", "10ms", "-steps", strconv.Itoa(steps))
	events := d.startJob(t, newClient(t))
	readToClose(t, events+"?lastEventId=0")
	job := path.Base(path.Dir(events))

	proxy := newDemoProxy(t, d)
	statuses := &statusCounts{}
	var cut atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jobs/events" || r.URL.Query().Get("job") != job {
			proxy.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Last-Event-ID") != "" || cut.Swap(true) {
			proxy.ServeHTTP(&statusWriter{ResponseWriter: w, counts: statuses}, r)
			return
		}
		// The first stream: every event of the job, not "close", and a
		// short reconnection time.
		resp := proxy.fetch(w, r)
		if resp == nil {
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		const end = "event: close\ndata: \n\n"
		if !strings.HasSuffix(string(body), end) {
			t.Errorf("the job's stream does not end with close: %q", body)
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "retry: 100\n\n"+strings.TrimSuffix(string(body), end))
	}))
	t.Cleanup(srv.Close)

	tab := newBrowser(t, chromium)
	open(t, tab, srv.URL+"/?job="+job)
	waitFor(t, tab, "the job to show done or failed", func(jobs []jobState) bool {
		return len(jobs) == 1 && (jobs[0].Status == "done" || jobs[0].Status == "failed")
	})
	time.Sleep(500 * time.Millisecond) // time to reconnect, which it must not
	state := snapshot(t, tab)[0]
	if !cut.Load() || statuses.get(http.StatusNoContent) != 2 || len(statuses.snapshot()) != 1 {
		t.Errorf("the proxy cut the first stream: %t; answers to requests that resume: %v, want two 204s (the browser's and the page's)",
			cut.Load(), statuses.snapshot())
	}
	// Two error events: when the first stream ended (the browser then
	// reconnects), and when the browser got 204 (it gives up). Otherwise as
	// a job read in one connection: every event once, and done.
	if state.Errors != 2 {
		t.Errorf("%d error events, want 2", state.Errors)
	}
	state.Errors = 0
	checkJob(t, state, steps)
}

// A page opened on a job the server does not hold (never started, or
// forgotten after its retention time) shows it failed and says why, without
// retrying; a link with a malformed job ID shows an error and follows
// nothing.
func TestUnknownJob(t *testing.T) {
	chromium := findChromium(t)
	d := startDemo(t)
	tab := newBrowser(t, chromium)
	unknown := strings.Repeat("0", 32)
	open(t, tab, d.url+"?job="+unknown+"&job=nope")
	waitFor(t, tab, "the unknown job to fail", func(jobs []jobState) bool {
		return len(jobs) == 1 && jobs[0].Status == "failed"
	})
	time.Sleep(500 * time.Millisecond) // time to reconnect, which it must not
	job := snapshot(t, tab)[0]
	if job.ID != unknown || job.Conns != 1 || job.Opens != 0 || job.Errors != 1 || job.ReadyState != readyClosed || len(job.IDs) != 0 {
		t.Errorf("the page shows %+v; want job %s failed after one error, and no event", job, unknown)
	}
	texts, err := chromedp.Run(tab, chromedp.Evaluate[[]string](
		"[document.querySelector('.log .note')?.textContent ?? '', document.getElementById('error').hidden ? '' : document.getElementById('error').textContent]"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "the job is unknown or ended too long ago"; !strings.Contains(texts[0], want) {
		t.Errorf("the job's log says %q, want %q", texts[0], want)
	}
	if want := "Not a job ID: nope"; texts[1] != want {
		t.Errorf("the page's error says %q, want %q", texts[1], want)
	}
}
