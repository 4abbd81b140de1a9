package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// jobState is what the page knows of one job: window.demo.snapshot() in
// static/app.js returns a list of them.
type jobState struct {
	ID         string   `json:"id"`
	Progress   []int    `json:"progress"`   // the data of every "progress" event, in order
	Logs       []string `json:"logs"`       // the data of every "log" event, in order
	IDs        []string `json:"ids"`        // the job's own ID (its entry in a multi-key ID) of every event and gap, in order
	At         []int    `json:"at"`         // for every event and gap, its number among all the events the page received
	Gaps       []gap    `json:"gaps"`       // every gap, in order
	Conns      int      `json:"conns"`      // the page's connections that followed the job (one more each time it starts a job)
	Opens      int      `json:"opens"`      // "open" events of those connections
	Errors     int      `json:"errors"`     // "error" events of those connections, while they followed the job
	Status     string   `json:"status"`     // what the page shows: connecting, running, reconnecting, done, failed
	ReadyState int      `json:"readyState"` // of the last connection that followed the job
	Bar        int      `json:"bar"`        // the progress bar's aria-valuenow
	Width      string   `json:"width"`      // the progress bar's fill width
	Watch      string   `json:"watch"`      // the URL of the job's "Watch in another tab" link
	Served     string   `json:"served"`     // in the cluster demo, the replica that serves (or last served) the job's stream: "via replica a"
}

// gap is the data of a "gap" event: the IDs of the events the page missed.
type gap struct {
	From uint64 `json:"from"`
	To   uint64 `json:"to"`
}

// readyClosed is EventSource.CLOSED.
const readyClosed = 2

// Two jobs in two tabs at once, each started in its tab: each tab follows
// its own job only, gets every progress event of it in order, shows 100%
// and "done", and does not reconnect after the stream's "close" event.
func TestTwoTabs(t *testing.T) {
	const steps = 20
	chromium := findChromium(t)
	d := startDemo(t, "-step", "50ms", "-steps", strconv.Itoa(steps))
	browser := newBrowser(t, chromium)
	tabs := []context.Context{browser, newTab(t, browser)}
	for _, tab := range tabs {
		open(t, tab, d.url)
	}
	for _, tab := range tabs {
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("start"))); err != nil {
			t.Fatalf("clicking Start: %v", err)
		}
	}

	ids := make(map[string]bool)
	for i, tab := range tabs {
		jobs := waitFor(t, tab, fmt.Sprintf("the job of tab %d to end", i+1), allEnded(1))
		checkJob(t, jobs[0], steps)
		ids[jobs[0].ID] = true
	}
	if len(ids) != len(tabs) {
		t.Errorf("the tabs follow %d jobs, want %d", len(ids), len(tabs))
	}

	// A browser that reconnected would do it within its retry delay (about
	// 3s in Chromium), but would fire "error" at once.
	time.Sleep(time.Second)
	for i, tab := range tabs {
		jobs := snapshot(t, tab)
		checkJob(t, jobs[0], steps)
		saveScreenshot(t, tab, fmt.Sprintf("two-tabs-%d.png", i+1), "")
	}
}

// Several jobs on one page, started while others run: the page follows
// them on one connection, which it replaces with one for the new list each
// time it starts a job, and each job gets every event once. The test also takes the README's screenshot, with one job done and
// two running.
func TestSeveralJobsOnOnePage(t *testing.T) {
	const steps = 30
	chromium := findChromium(t)
	d := startDemo(t, "-step", "100ms", "-steps", strconv.Itoa(steps))
	tab := newBrowser(t, chromium)
	open(t, tab, d.url)

	start := func() {
		t.Helper()
		if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("start"))); err != nil {
			t.Fatalf("clicking Start: %v", err)
		}
	}
	start()
	waitFor(t, tab, "the first job to end", allEnded(1))
	start()
	waitFor(t, tab, "the second job to reach 40%", func(jobs []jobState) bool {
		return len(jobs) == 2 && jobs[1].Bar >= 40
	})
	start()
	waitFor(t, tab, "the third job to start", func(jobs []jobState) bool {
		return len(jobs) == 3 && jobs[2].Bar >= 10
	})
	readme := ""
	if os.Getenv("UPDATE_SCREENSHOT") != "" {
		readme = filepath.Join("..", "docs", "demo.png")
	}
	saveScreenshot(t, tab, "several-jobs.png", readme)

	for _, job := range waitFor(t, tab, "every job to end", allEnded(3)) {
		checkJob(t, job, steps)
	}
}

// checkJob checks that a job's page got every event of the job exactly
// once and in order, with IDs <epoch>-1, <epoch>-2, … and no gap, every
// progress event among them, shows it done at 100%, and that each of the
// page's connections that followed it opened once, none reconnected, and
// the last is closed.
func checkJob(t *testing.T, job jobState, steps int) {
	t.Helper()
	checkEvents(t, job, steps)
	if job.Conns < 1 || job.Opens != job.Conns || job.Errors != 0 || job.ReadyState != readyClosed {
		t.Errorf("job %s: %d connections, %d open and %d error events, readyState %d; want an open event a connection, no error, and %d (CLOSED)",
			job.ID, job.Conns, job.Opens, job.Errors, job.ReadyState, readyClosed)
	}
}

// checkEvents is checkJob without the count of connections.
func checkEvents(t *testing.T, job jobState, steps int) {
	t.Helper()
	if n := 2*steps + 3; len(job.IDs) != n || len(job.Gaps) != 0 {
		t.Errorf("job %s: %d events and gaps %v, want %d events and no gap", job.ID, len(job.IDs), job.Gaps, n)
	}
	epoch, _, _ := strings.Cut(firstOr(job.IDs, ""), "-")
	for i, id := range job.IDs {
		if want := fmt.Sprintf("%s-%d", epoch, i+1); epoch == "" || id != want {
			t.Errorf("job %s: event %d has id %q, want %q; ids %q", job.ID, i+1, id, want, job.IDs)
			break
		}
	}
	var want []int
	for i := 1; i <= steps; i++ {
		want = append(want, i*100/steps)
	}
	if !slices.Equal(job.Progress, want) {
		t.Errorf("job %s: progress events %v, want %v", job.ID, job.Progress, want)
	}
	if job.Bar != 100 || job.Width != "100%" {
		t.Errorf("job %s: the bar shows %d%% and is %s wide, want 100%%", job.ID, job.Bar, job.Width)
	}
	if job.Status != "done" {
		t.Errorf("job %s: status %q, want done", job.ID, job.Status)
	}
	if n := len(job.Logs); n != steps+3 || job.Logs[0] != "Queued." || job.Logs[1] != fmt.Sprintf("Started: %d steps.", steps) || job.Logs[n-1] != "Finished." {
		t.Errorf("job %s: log %q, want %d lines from Queued to Finished", job.ID, job.Logs, steps+3)
	}
}

// allEnded returns a condition for waitFor: the page follows n jobs, and
// none of them is still connecting or running.
func allEnded(n int) func([]jobState) bool {
	return func(jobs []jobState) bool {
		if len(jobs) != n {
			return false
		}
		for _, job := range jobs {
			if job.Status == "connecting" || job.Status == "running" {
				return false
			}
		}
		return true
	}
}

// waitFor polls the page's jobs until cond holds, for at most 30 seconds.
func waitFor(t *testing.T, tab context.Context, what string, cond func([]jobState) bool) []jobState {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		jobs := snapshot(t, tab)
		if cond(jobs) {
			return jobs
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the page has %+v", what, jobs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// snapshot returns what the page knows of its jobs, in the order they were
// started or opened: none until the page's script has run.
func snapshot(t *testing.T, tab context.Context) []jobState {
	t.Helper()
	jobs, err := chromedp.Run(tab, chromedp.Evaluate[[]jobState]("window.demo ? window.demo.snapshot() : []"))
	if err != nil {
		t.Fatalf("reading the page's state: %v", err)
	}
	return jobs
}

// open loads the demo's page in tab, at a fixed viewport size.
func open(t *testing.T, tab context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(tab,
		chromedp.EmulateViewport(900, 1000),
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("start")),
	); err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
}

// saveScreenshot saves a screenshot of the page as name in the
// artifacts directory ($E2E_ARTIFACTS, or artifacts/), and also as also if
// that is not empty.
func saveScreenshot(t *testing.T, tab context.Context, name, also string) {
	t.Helper()
	// A tab hidden behind another of its window gets no frames, and a
	// screenshot of it would wait for ever: show it first.
	if _, err := chromedp.Call(tab, page.BringToFront, cdp.Empty{}); err != nil {
		t.Fatal(err)
	}
	// The page as a person sees it: no button under the mouse, and the
	// whole page, cut to its content, at twice the pixel density.
	if err := chromedp.Do(tab, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 0, 0)); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(tab, chromedp.ScreenshotScale(chromedp.CSS("body"), 2))
	if err != nil {
		t.Fatalf("taking a screenshot: %v", err)
	}
	dir := os.Getenv("E2E_ARTIFACTS")
	if dir == "" {
		dir = "artifacts"
	}
	paths := []string{filepath.Join(dir, name)}
	if also != "" {
		paths = append(paths, also)
	}
	for _, path := range paths {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("screenshot: %s", path)
	}
}

// newBrowser starts exe, a headless Chromium, with a fresh profile and
// returns the context of its first tab. The browser is closed when the test
// ends, and cannot outlive 2 minutes.
func newBrowser(t *testing.T, exe string) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	out := &output{}
	// chromedp makes, and then removes, a fresh user data directory.
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Background tabs must not be throttled: both tabs run at once.
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.CombinedOutput(out),
	)
	t.Cleanup(func() {
		cancelAlloc() // waits for the browser to exit
		if t.Failed() {
			t.Logf("Chromium's output:\n%s", out)
		}
	})
	tab, closeTab := chromedp.NewContext(alloc)
	t.Cleanup(closeTab)
	if err := chromedp.Do(tab); err != nil { // starts the browser
		t.Fatalf("starting %s: %v", exe, err)
	}
	return tab
}

// newTab opens another tab in browser's browser.
func newTab(t *testing.T, browser context.Context) context.Context {
	t.Helper()
	tab, closeTab := chromedp.NewContext(browser)
	t.Cleanup(closeTab)
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	return tab
}

// findChromium returns the path of Chromium: $CHROMIUM, or chromium or
// chromium-browser on the PATH. Without it the test is skipped, or fails if
// CI=true (CI installs it).
func findChromium(t *testing.T) string {
	t.Helper()
	if exe := os.Getenv("CHROMIUM"); exe != "" {
		return exe
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if exe, err := exec.LookPath(name); err == nil {
			return exe
		}
	}
	const msg = "Chromium not found: install it (apt-get install chromium) or set CHROMIUM to its binary"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// firstOr returns the first element of s, or def if s is empty.
func firstOr[T any](s []T, def T) T {
	if len(s) == 0 {
		return def
	}
	return s[0]
}
