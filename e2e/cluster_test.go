package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// The cluster demo in Chromium: two replicas share the jobs' streams
// through NATS JetStream behind a round-robin proxy. The replica serving a
// job's stream is stopped mid-job, as a crash would: the page reconnects
// through the proxy to the other replica and still gets every event of the
// job once and in order, with no gap, then "close".
func TestClusterReplicaStopped(t *testing.T) {
	const steps = 30
	chromium := findChromium(t)
	d := startProgram(t, "cluster", "-step", "200ms", "-steps", strconv.Itoa(steps))
	tab := newBrowser(t, chromium)
	open(t, tab, d.url)
	if err := chromedp.Do(tab, chromedp.Click(chromedp.ID("start"))); err != nil {
		t.Fatalf("clicking Start: %v", err)
	}
	jobs := waitFor(t, tab, "the job to reach 20% through a replica", func(jobs []jobState) bool {
		return len(jobs) == 1 && jobs[0].Bar >= 20 && jobs[0].Served != ""
	})
	first := strings.TrimPrefix(jobs[0].Served, "via replica ")
	client := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"cluster/"+first+"/stop", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("stopping replica %s: status %d", first, res.StatusCode)
	}

	jobs = waitFor(t, tab, "the job to end", func(jobs []jobState) bool {
		return len(jobs) == 1 && (jobs[0].Status == "done" || jobs[0].Status == "failed")
	})
	job := jobs[0]
	checkEvents(t, job, steps)
	if job.Errors < 1 || job.Conns != 1 || job.Opens != job.Errors+1 || job.ReadyState != readyClosed {
		t.Errorf("%d open and %d error events, readyState %d; want one reconnection or more, and CLOSED",
			job.Opens, job.Errors, job.ReadyState)
	}
	if job.Served == "" || job.Served == "via replica "+first {
		t.Errorf("the page shows the job %q after replica %s stopped, want the other replica", job.Served, first)
	}

	// The proxy's view agrees: the stopped replica is down, no stream is
	// open any more.
	req, err = http.NewRequestWithContext(ctx, http.MethodGet, d.url+"cluster", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var state struct {
		Replicas []struct {
			Name    string `json:"name"`
			Up      bool   `json:"up"`
			Streams int    `json:"streams"`
		} `json:"replicas"`
	}
	if err := json.NewDecoder(res.Body).Decode(&state); err != nil {
		t.Fatal(err)
	}
	for _, r := range state.Replicas {
		if r.Up == (r.Name == first) || r.Streams != 0 {
			t.Errorf("replica %s: up %v with %d streams; want only %s down, no stream", r.Name, r.Up, r.Streams, first)
		}
	}
	saveScreenshot(t, tab, "cluster.png", "")
}

// The cluster demo's page follows several jobs on one connection
// (sse.MultiHandler on ssejs): the replica that serves it is stopped
// mid-way, and the page resumes every job on the other replica, with the
// Last-Event-ID that holds every job's position: each job's events arrive
// once and in order, with no gap, and each job gets its close.
func TestClusterJobsOnOneConnection(t *testing.T) {
	const (
		jobs  = 3
		steps = 30
	)
	chromium := findChromium(t)
	d := startProgram(t, "cluster", "-step", "200ms", "-steps", strconv.Itoa(steps))
	tab := newBrowser(t, chromium)
	open(t, tab, d.url)
	if ids := evalAwait[[]string](t, tab, "window.demo.startMany("+strconv.Itoa(jobs)+")"); len(ids) != jobs {
		t.Fatalf("started %d jobs, want %d", len(ids), jobs)
	}
	js := waitFor(t, tab, "the jobs to reach 20% through a replica", func(js []jobState) bool {
		for _, j := range js {
			if j.Bar < 20 || j.Served == "" {
				return false
			}
		}
		return len(js) == jobs
	})
	first := strings.TrimPrefix(js[0].Served, "via replica ")
	for _, j := range js {
		if j.Served != js[0].Served {
			t.Fatalf("the jobs are served by %q and %q, want one connection", js[0].Served, j.Served)
		}
	}
	client := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"cluster/"+first+"/stop", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Fatalf("stopping replica %s: status %d", first, res.StatusCode)
	}

	js = waitFor(t, tab, "the jobs to end", func(js []jobState) bool {
		for _, j := range js {
			if j.Status != "done" && j.Status != "failed" {
				return false
			}
		}
		return len(js) == jobs
	})
	for _, job := range js {
		checkEvents(t, job, steps)
		if job.Conns != 1 || job.Errors < 1 || job.Opens != job.Errors+1 || job.ReadyState != readyClosed {
			t.Errorf("job %s: %d connections, %d open and %d error events, readyState %d; want one connection that reconnected, and CLOSED",
				job.ID, job.Conns, job.Opens, job.Errors, job.ReadyState)
		}
		if job.Served == "" || job.Served == "via replica "+first {
			t.Errorf("job %s shows %q after replica %s stopped, want the other replica", job.ID, job.Served, first)
		}
	}
	saveScreenshot(t, tab, "cluster-jobs-on-one-connection.png", "")
}
