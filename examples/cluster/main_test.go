package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse/sseclient"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startTest starts the demo's cluster with jobs of steps steps of the given
// duration, its proxy on a test server.
func startTest(t *testing.T, steps int, step time.Duration) (*cluster, *httptest.Server) {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(t.Output(), nil))
	c, err := startCluster(logger, config{steps: steps, step: step})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c.proxy)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.stopReplicas(ctx); err != nil {
			t.Errorf("stopping the replicas: %v", err)
		}
		srv.Close()
		if err := c.shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return c, srv
}

// do sends a request to the proxy and returns the status and body.
func do(t *testing.T, method, url string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, string(body)
}

// clusterState reads GET /cluster.
func clusterState(t *testing.T, base string) (up map[string]bool, serving map[string]string) {
	t.Helper()
	code, body := do(t, http.MethodGet, base+"/cluster")
	var state struct {
		Replicas []replicaState    `json:"replicas"`
		Streams  map[string]string `json:"streams"`
	}
	if err := json.Unmarshal([]byte(body), &state); code != http.StatusOK || err != nil {
		t.Fatalf("GET /cluster: %d %q: %v", code, body, err)
	}
	up = make(map[string]bool)
	for _, r := range state.Replicas {
		up[r.Name] = r.Up
	}
	return up, state.Streams
}

// TestReplicaStopsMidJob: a client follows a job through the proxy; the
// replica serving its stream is stopped (as a crash would), then, once the
// client is on the other one, started again and the other one stopped.
// The client gets every event of the job once, in order, with no gap, then
// the end, from both replicas in turn.
func TestReplicaStopsMidJob(t *testing.T) {
	const steps = 40
	_, srv := startTest(t, steps, 50*time.Millisecond)
	code, body := do(t, http.MethodPost, srv.URL+"/jobs")
	var job struct{ ID, Events string }
	if err := json.Unmarshal([]byte(body), &job); code != http.StatusCreated || err != nil {
		t.Fatalf("POST /jobs: %d %q: %v", code, body, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	reconnects := 0
	var got []sseclient.Event
	servedBy := map[string]bool{}
	stops := 0
	for ev, err := range sseclient.Events(ctx, srv.URL+job.Events,
		sseclient.WithBackoff(10*time.Millisecond, 200*time.Millisecond),
		sseclient.WithOnReconnect(func(error, time.Duration) { reconnects++ })) {
		if err != nil {
			t.Fatalf("after %d events: %v", len(got), err)
		}
		got = append(got, ev)
		// Stop the serving replica after 10 events, and again after 30.
		if n := len(got); n == 10 || n == 30 {
			_, serving := clusterState(t, srv.URL)
			name := serving[job.ID]
			if name == "" {
				t.Fatalf("after %d events, GET /cluster names no replica serving the job", n)
			}
			servedBy[name] = true
			for other := range map[string]bool{"a": true, "b": true} {
				if other != name {
					// The other replica may have been stopped before.
					if code, body := do(t, http.MethodPost, srv.URL+"/cluster/"+other+"/start"); code != http.StatusNoContent {
						t.Fatalf("starting %s: %d %s", other, code, body)
					}
				}
			}
			if code, body := do(t, http.MethodPost, srv.URL+"/cluster/"+name+"/stop"); code != http.StatusNoContent {
				t.Fatalf("stopping %s: %d %s", name, code, body)
			}
			stops++
		}
	}
	if len(servedBy) != 2 {
		t.Errorf("the job was served by %v, want both replicas", servedBy)
	}
	if reconnects < stops {
		t.Errorf("%d reconnections for %d stops", reconnects, stops)
	}
	want := 2*steps + 3 // queued, started, a progress and a log a step, finished
	if len(got) != want {
		t.Fatalf("got %d events, want %d", len(got), want)
	}
	epoch, _, _ := strings.Cut(got[0].ID, "-")
	for i, ev := range got {
		if id := fmt.Sprintf("%s-%d", epoch, i+1); ev.ID != id || ev.Name == "gap" {
			t.Fatalf("event %d: %s %q, want ID %s", i, ev.ID, ev.Name, id)
		}
	}
	if last := got[len(got)-1]; last.Data != "Finished." {
		t.Errorf("last event %q, want Finished.", last.Data)
	}
}

// TestNoReplicaUp: with both replicas stopped, an event stream is told to
// retry (an EventSource gives up on an error status), other requests get
// 503; once one is started again, the job's stream is served by it.
func TestNoReplicaUp(t *testing.T) {
	_, srv := startTest(t, 2, 10*time.Millisecond)
	code, body := do(t, http.MethodPost, srv.URL+"/jobs")
	var job struct{ ID, Events string }
	if err := json.Unmarshal([]byte(body), &job); code != http.StatusCreated || err != nil {
		t.Fatalf("POST /jobs: %d %q: %v", code, body, err)
	}
	for _, name := range []string{"a", "b"} {
		if code, _ := do(t, http.MethodPost, srv.URL+"/cluster/"+name+"/stop"); code != http.StatusNoContent {
			t.Fatalf("stopping %s: %d", name, code)
		}
	}
	if up, _ := clusterState(t, srv.URL); up["a"] || up["b"] {
		t.Fatalf("replicas up after stopping both: %v", up)
	}
	if code, body := do(t, http.MethodGet, srv.URL+job.Events); code != http.StatusOK || body != "retry: 1000\n" {
		t.Errorf("event stream with no replica up: %d %q, want 200 with a retry field", code, body)
	}
	if code, _ := do(t, http.MethodPost, srv.URL+"/jobs"); code != http.StatusServiceUnavailable {
		t.Errorf("POST /jobs with no replica up: %d, want 503", code)
	}
	if code, _ := do(t, http.MethodPost, srv.URL+"/cluster/c/stop"); code != http.StatusNotFound {
		t.Errorf("stopping an unknown replica: %d, want 404", code)
	}
	if code, _ := do(t, http.MethodPost, srv.URL+"/cluster/b/start"); code != http.StatusNoContent {
		t.Fatalf("starting b: %d", code)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	for _, err := range sseclient.Events(ctx, srv.URL+job.Events) {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2*2+3 {
		t.Errorf("got %d events, want %d", n, 2*2+3)
	}
}
