package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse/ssetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestServer serves the demo with jobs of steps steps of the given
// duration.
func newTestServer(t *testing.T, steps int, step time.Duration) *httptest.Server {
	t.Helper()
	return newTestServerHistory(t, steps, step, 0)
}

// newTestServerHistory is newTestServer with the flag -history.
func newTestServerHistory(t *testing.T, steps int, step time.Duration, history int) *httptest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	d := newDemo(ctx, logger, config{steps: steps, step: step, history: history})
	srv := httptest.NewServer(d.handler)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		d.runner.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := d.broker.Shutdown(ctx); err != nil {
			t.Errorf("broker.Shutdown: %v", err)
		}
	})
	return srv
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	return do(t, http.MethodGet, url)
}

// do sends a request and reads the whole response, within 10 seconds.
func do(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// startJob starts a job and returns the URL of its event stream.
func startJob(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	resp, body := do(t, http.MethodPost, srv.URL+"/jobs")
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /jobs: status %d, want 201", resp.StatusCode)
	}
	var job struct{ ID, Events string }
	if err := json.Unmarshal([]byte(body), &job); err != nil {
		t.Fatal(err)
	}
	if want := "/jobs/" + job.ID + "/events"; job.Events != want || resp.Header.Get("Location") != want {
		t.Fatalf("POST /jobs: events %q, Location %q, want %q", job.Events, resp.Header.Get("Location"), want)
	}
	return srv.URL + job.Events
}

// readStream reads a whole event stream, which must be a 200 response
// that ends with "close", and returns its events before "close".
func readStream(t *testing.T, resp *http.Response, body string) []ssetest.Event {
	t.Helper()
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	events, err := ssetest.ReadAll(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 || events[len(events)-1].Type != "close" {
		t.Fatalf("the stream does not end with close: %+v", events)
	}
	return events[:len(events)-1]
}

// checkEvents checks a job's whole stream: IDs "<epoch>-1", "<epoch>-2", …
// with one epoch, the job's log from "Queued." to "Finished.", and every
// step's progress in order. It returns the epoch.
func checkEvents(t *testing.T, events []ssetest.Event, steps int) string {
	t.Helper()
	var progress, want []string
	for i := 1; i <= steps; i++ {
		want = append(want, strconv.Itoa(i*100/steps))
	}
	if n := 2*steps + 3; len(events) != n {
		t.Fatalf("%d events, want %d: %+v", len(events), n, events)
	}
	epoch, _, _ := strings.Cut(events[0].ID, "-")
	for i, ev := range events {
		// An ID is "<epoch>-<event ID>", the epoch naming the job's key.
		if e, id, _ := strings.Cut(ev.ID, "-"); epoch == "" || e != epoch || id != strconv.Itoa(i+1) {
			t.Errorf("event %d: id %q, want %s-%d", i, ev.ID, epoch, i+1)
		}
		switch ev.Type {
		case "progress":
			progress = append(progress, ev.Data)
		case "log":
		default:
			t.Errorf("event %d: unexpected type %q", i, ev.Type)
		}
	}
	if got, want := strings.Join(progress, " "), strings.Join(want, " "); got != want {
		t.Errorf("progress %q, want %q", got, want)
	}
	if first, last := events[0], events[len(events)-1]; first.Data != "Queued." || last.Data != "Finished." {
		t.Errorf("the log goes from %q to %q, want Queued. to Finished.", first.Data, last.Data)
	}
	return epoch
}

// getFrom sends GET url with a Last-Event-ID header.
func getFrom(t *testing.T, url, lastID string) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(body)
}

// A job's stream carries every step's progress in order, then ends with
// "close". The job keeps its events: a later stream, as from a tab that
// opens the job after it ended, gets all of them again; one that resumes
// gets those after its ID; one that has them all gets 204.
func TestJobStream(t *testing.T) {
	const steps = 4
	srv := newTestServer(t, steps, time.Millisecond)
	url := startJob(t, srv)

	resp, body := get(t, url+"?lastEventId=0") // as the page asks
	events := readStream(t, resp, body)
	epoch := checkEvents(t, events, steps)
	last := events[len(events)-1].ID

	// Once the job has ended: the whole history, then "close".
	for _, u := range []string{url, url + "?lastEventId=0"} {
		resp, body := get(t, u)
		if again := readStream(t, resp, body); !slices.Equal(again, events) {
			t.Errorf("GET %s after the end: %+v, want the job's %d events again", u, again, len(events))
		}
	}
	// An ID of another life of the key counts as 0.
	resp, body = getFrom(t, url, "zz0-3")
	if again := readStream(t, resp, body); !slices.Equal(again, events) {
		t.Errorf("GET with Last-Event-ID zz0-3: %+v, want the job's %d events again", again, len(events))
	}
	// Resuming gets the rest.
	mid := epoch + "-5"
	resp, body = getFrom(t, url, mid)
	if rest := readStream(t, resp, body); !slices.Equal(rest, events[5:]) {
		t.Errorf("GET with Last-Event-ID %s: %+v, want %+v", mid, rest, events[5:])
	}
	// A browser that reconnects after the last event is told to stop.
	if resp, body := getFrom(t, url, last); resp.StatusCode != http.StatusNoContent {
		t.Errorf("GET with Last-Event-ID %s (the last): status %d %q, want 204", last, resp.StatusCode, body)
	}
	if resp, body := get(t, url+"?lastEventId="+last); resp.StatusCode != http.StatusNoContent {
		t.Errorf("GET ?lastEventId=%s (the last): status %d %q, want 204", last, resp.StatusCode, body)
	}
}

// Several streams of one job at once, three from its start and one that
// starts once another has seen 50%, each get every event, in order, and
// "close": none takes events from another, and none is refused.
func TestSeveralReaders(t *testing.T) {
	const (
		steps   = 20
		readers = 4
	)
	srv := newTestServer(t, steps, 10*time.Millisecond)
	url := startJob(t, srv) + "?lastEventId=0"

	type result struct {
		events []ssetest.Event
		err    error
	}
	results := make(chan result, readers)
	halfway := make(chan struct{}) // closed when reader 0 saw 50%
	read := func(n int) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			results <- result{err: err}
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			results <- result{err: err}
			return
		}
		defer resp.Body.Close()
		if err := ssetest.CheckResponse(resp); err != nil {
			results <- result{err: err}
			return
		}
		r := ssetest.NewReader(resp.Body)
		var events []ssetest.Event
		for {
			ev, err := r.Next()
			if err != nil {
				results <- result{events, fmt.Errorf("reader %d: %w before close", n, err)}
				return
			}
			if ev.Type == "close" {
				results <- result{events, nil}
				return
			}
			events = append(events, ev)
			if n == 0 && ev.Type == "progress" && ev.Data == "50" {
				close(halfway)
			}
		}
	}
	for n := range readers - 1 {
		go read(n)
	}
	select {
	case <-halfway:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not reach 50% within 10s")
	}
	go read(readers - 1)

	var first []ssetest.Event
	for range readers {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
			continue
		}
		checkEvents(t, r.events, steps)
		if first == nil {
			first = r.events
		} else if !slices.Equal(r.events, first) {
			t.Errorf("readers got different events:\n%+v\n%+v", first, r.events)
		}
	}
}

// With -history n, a job's key holds its newest n events: a stream that
// starts from the first event after more have passed gets a "gap" event
// that names those it missed, then the n newest, then "close".
func TestHistoryBound(t *testing.T) {
	const (
		steps   = 10
		history = 6
	)
	srv := newTestServerHistory(t, steps, time.Millisecond, history)
	url := startJob(t, srv)
	// Wait for the end: the stream ends with "close".
	resp, body := get(t, url+"?lastEventId=0")
	events := readStream(t, resp, body)
	if len(events) == 0 {
		t.Fatal("no events")
	}

	// Now the history holds only the newest events.
	const total = 2*steps + 3
	resp, body = get(t, url+"?lastEventId=0")
	events = readStream(t, resp, body)
	if len(events) != history+1 {
		t.Fatalf("%d events, want a gap and %d events: %+v", len(events), history, events)
	}
	gap := events[0]
	epoch, _, _ := strings.Cut(gap.ID, "-")
	if want := fmt.Sprintf(`{"from":1,"to":%d}`, total-history); gap.Type != "gap" || gap.Data != want || gap.ID != fmt.Sprintf("%s-%d", epoch, total-history) {
		t.Errorf("first event %+v, want a gap %s with id %s-%d", gap, want, epoch, total-history)
	}
	for i, ev := range events[1:] {
		if want := fmt.Sprintf("%s-%d", epoch, total-history+1+i); ev.ID != want {
			t.Errorf("event %d: id %q, want %q", i+1, ev.ID, want)
		}
	}
	if last := events[len(events)-1]; last.Data != "Finished." {
		t.Errorf("last event %+v, want the log line Finished.", last)
	}
}

func TestRefusals(t *testing.T) {
	srv := newTestServer(t, 1, time.Millisecond)
	id := strings.TrimSuffix(strings.TrimPrefix(startJob(t, srv), srv.URL+"/jobs/"), "/events")
	for _, tc := range []struct {
		path string
		want int
	}{
		{"/jobs/" + strings.Repeat("0", 32) + "/events", http.StatusNotFound},
		{"/jobs/nope/events", http.StatusBadRequest},
		{"/jobs/" + strings.ToUpper(id) + "/events", http.StatusBadRequest},
		{"/jobs/" + id[1:] + "/events", http.StatusBadRequest},
	} {
		if resp, body := get(t, srv.URL+tc.path); resp.StatusCode != tc.want {
			t.Errorf("GET %s: status %d %q, want %d", tc.path, resp.StatusCode, body, tc.want)
		}
	}
}

// GET /jobs/events?job=A&job=B serves both jobs on one stream
// (sse.MultiHandler), as the page follows its jobs: every event of each
// job once and in order, each telling its job by its position in the list,
// then each job's sse.close and the stream's close. A list of one job is a
// one-job stream; a list with a job the server does not hold, or a
// malformed ID, is refused whole.
func TestJobsOnOneStream(t *testing.T) {
	const steps = 4
	srv := newTestServer(t, steps, time.Millisecond)
	id := func(url string) string {
		return strings.TrimSuffix(strings.TrimPrefix(url, srv.URL+"/jobs/"), "/events")
	}
	a, b := id(startJob(t, srv)), id(startJob(t, srv))
	resp, body := get(t, srv.URL+"/jobs/events?job="+a+"&job="+b+"&lastEventId=0")
	events := readStream(t, resp, body)
	var byJob [2][]ssetest.Event
	var closes []int
	for _, ev := range events {
		index, rest, ok := strings.Cut(ev.ID, ":")
		i, err := strconv.Atoi(index)
		if !ok || err != nil || i > 1 {
			t.Fatalf("event %+v: the ID does not name one of the 2 jobs", ev)
		}
		switch ev.Type {
		case "sse.close":
			closes = append(closes, i)
		default:
			// The job's own ID is its entry among the keys that moved
			// since the ID's cursor (docs/protocol.md, "IDs"):
			// "~<cursor>:<j>_<entry>,…".
			ev.ID = ownEntry(t, rest, index)
			byJob[i] = append(byJob[i], ev)
		}
	}
	for i := range byJob {
		checkEvents(t, byJob[i], steps)
	}
	if slices.Sort(closes); !slices.Equal(closes, []int{0, 1}) {
		t.Errorf("sse.close for the jobs %v, want one for each of 0 and 1", closes)
	}

	// One job: its own stream's wire, byte for byte.
	_, one := get(t, srv.URL+"/jobs/events?job="+a+"&lastEventId=0")
	if _, alone := get(t, srv.URL+"/jobs/"+a+"/events?lastEventId=0"); one != alone {
		t.Errorf("a list of one job got\n%q\nwant its own stream's\n%q", one, alone)
	}

	for _, tc := range []struct {
		query string
		want  int
	}{
		{"job=" + a + "&job=" + strings.Repeat("0", 32), http.StatusNotFound},
		{"job=" + a + "&job=nope", http.StatusBadRequest},
		{"job=" + a + "&job=" + a, http.StatusBadRequest},
		{"", http.StatusBadRequest},
	} {
		if resp, body := get(t, srv.URL+"/jobs/events?"+tc.query); resp.StatusCode != tc.want {
			t.Errorf("GET /jobs/events?%s: status %d %q, want %d", tc.query, resp.StatusCode, body, tc.want)
		}
	}
}

func TestPage(t *testing.T) {
	srv := newTestServer(t, 1, time.Millisecond)
	// sse.js: the library's browser module, which app.js imports.
	for _, path := range []string{"/", "/app.js", "/style.css", "/sse.js"} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200", path, resp.StatusCode)
		}
	}
	// The page at /?job={id} follows that job: it is the same page, which
	// tells that any number of tabs can watch a job.
	for _, path := range []string{"/", "/?job=" + strings.Repeat("0", 32)} {
		_, body := get(t, srv.URL+path)
		for _, want := range []string{`id="start"`, `class="watch"`, "Any number of tabs can watch a job"} {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: no %s in %q", path, want, body)
			}
		}
	}
}

// GET /metrics serves the handler's and the broker's figures in
// Prometheus's text format.
func TestMetrics(t *testing.T) {
	const steps = 2
	srv := newTestServer(t, steps, time.Millisecond)
	url := startJob(t, srv)
	resp, body := get(t, url+"?lastEventId=0")
	events := readStream(t, resp, body)
	get(t, srv.URL+"/jobs/"+strings.Repeat("0", 32)+"/events") // 404

	resp, body = get(t, srv.URL+"/metrics")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("GET /metrics: status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{
		"progress_streams_open 0",
		"progress_streams_total 1",
		"progress_resumes_total 1", // ?lastEventId=0
		fmt.Sprintf("progress_events_written_total %d", len(events)),
		`progress_requests_refused_total{reason="not_found"} 1`,
		fmt.Sprintf(`progress_broker_events_enqueued_total{broker="jobs"} %d`, len(events)),
		`progress_broker_closed_keys{broker="jobs"} 1`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, "\n"+want) {
			t.Errorf("GET /metrics: no line %q in\n%s", want, body)
		}
	}
}

// ownEntry returns the entry of the key at position index in the cursor
// form of a multi-key ID, after its "<index>:".
func ownEntry(t *testing.T, rest, index string) string {
	t.Helper()
	name, moved, ok := strings.Cut(rest, ":")
	if !ok || !strings.HasPrefix(name, "~") {
		t.Fatalf("ID %q is not of the cursor form", rest)
	}
	for m := range strings.SplitSeq(moved, ",") {
		if j, entry, _ := strings.Cut(m, "_"); j == index {
			return entry
		}
	}
	t.Fatalf("ID %q holds no entry for the key at %s, whose event it is", rest, index)
	return ""
}
