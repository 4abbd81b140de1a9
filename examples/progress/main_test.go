package main

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newTestServer serves the demo with jobs of steps steps of 1ms.
func newTestServer(t *testing.T, steps int) *httptest.Server {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	broker := sse.New[jobID]()
	jobs := newJobs(ctx, broker, steps, time.Millisecond)
	page, err := fs.Sub(static, "static")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(jobs.routes(http.FileServerFS(page)))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		jobs.wait()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := broker.Shutdown(ctx); err != nil {
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

// A job's stream carries every step's progress in order, then ends with
// "close"; the job's events can be read once.
func TestJobStream(t *testing.T) {
	const steps = 4
	srv := newTestServer(t, steps)
	url := startJob(t, srv)

	resp, body := get(t, url)
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	events, err := ssetest.ReadAll(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var progress []string
	for i, ev := range events[:len(events)-1] {
		// An ID is "<epoch>-<event ID>", the epoch naming the job's stream.
		if epoch, id, _ := strings.Cut(ev.ID, "-"); epoch == "" || id != strconv.Itoa(i+1) {
			t.Errorf("event %d: id %q, want <epoch>-%d", i, ev.ID, i+1)
		}
		switch ev.Type {
		case "progress":
			progress = append(progress, ev.Data)
		case "log":
		default:
			t.Errorf("event %d: unexpected type %q", i, ev.Type)
		}
	}
	if got, want := strings.Join(progress, " "), "25 50 75 100"; got != want {
		t.Errorf("progress %q, want %q", got, want)
	}
	if last := events[len(events)-1]; last.Type != "close" {
		t.Errorf("last event %+v, want close", last)
	}

	// Read to the end: a browser that reconnects is told to stop.
	if resp, _ := get(t, url); resp.StatusCode != http.StatusNoContent {
		t.Errorf("second GET: status %d, want 204", resp.StatusCode)
	}
}

func TestRefusals(t *testing.T) {
	srv := newTestServer(t, 1)
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

func TestPage(t *testing.T) {
	srv := newTestServer(t, 1)
	for _, path := range []string{"/", "/app.js", "/style.css"} {
		if resp, _ := get(t, srv.URL+path); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200", path, resp.StatusCode)
		}
	}
	if _, body := get(t, srv.URL+"/"); !strings.Contains(body, `id="start"`) {
		t.Errorf("GET /: no start button in %q", body)
	}
}
