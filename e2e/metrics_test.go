package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse/ssetest"
)

// The demo's /metrics follows its streams: the open streams gauge goes up
// as clients connect and down as they leave; the streams, resumes and
// events counters grow, a reconnection with Last-Event-ID counts as a
// resume, and a request for an unknown job as refused; the broker's figures
// count the job's key and events.
func TestMetrics(t *testing.T) {
	const (
		open    = "progress_streams_open"
		streams = "progress_streams_total"
		resumes = "progress_resumes_total"
		written = "progress_events_written_total"
		refused = `progress_requests_refused_total{reason="not_found"}`
		keys    = `progress_broker_keys{broker="jobs"}`
		events  = `progress_broker_events_enqueued_total{broker="jobs"}`
	)
	// A job that runs for the whole test.
	d := startDemo(t, "-step", "50ms", "-steps", "100000")
	client := newClient(t)
	m0 := scrape(t, client, d.url)
	if m0[open] != 0 || m0[keys] != 0 {
		t.Fatalf("before any job: %s %v, %s %v; want 0 and 0", open, m0[open], keys, m0[keys])
	}

	url := d.startJob(t, client)
	a := openStream(t, client, url, "")
	b := openStream(t, client, url, "")
	a.read(t, 3)
	b.read(t, 3)
	m1 := waitMetrics(t, client, d.url, "two streams open", func(m map[string]float64) bool {
		return m[open] == 2 && m[streams] == m0[streams]+2
	})
	if m1[keys] != 1 || m1[events] < 3 {
		t.Errorf("with a job running: %s %v, %s %v; want 1 and at least 3", keys, m1[keys], events, m1[events])
	}
	waitMetrics(t, client, d.url, "the events counters to grow", func(m map[string]float64) bool {
		return m[written] > m1[written] && m[events] > m1[events]
	})

	// A cut connection, then its client resumes.
	a.close()
	waitMetrics(t, client, d.url, "one stream open after a cut", func(m map[string]float64) bool { return m[open] == 1 })
	last := a.last
	a = openStream(t, client, url, last)
	if ev := a.read(t, 1)[0]; ev.ID != nextID(t, last) {
		t.Errorf("the stream resumed after %s with %s, want %s", last, ev.ID, nextID(t, last))
	}
	waitMetrics(t, client, d.url, "a resume", func(m map[string]float64) bool {
		return m[open] == 2 && m[streams] == m0[streams]+3 && m[resumes] == m0[resumes]+1
	})

	// An unknown job.
	resp, err := client.Get(d.url + "jobs/" + strings.Repeat("0", 32) + "/events")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitMetrics(t, client, d.url, "a refusal", func(m map[string]float64) bool { return m[refused] == m0[refused]+1 })

	a.close()
	b.close()
	waitMetrics(t, client, d.url, "no stream open", func(m map[string]float64) bool { return m[open] == 0 })
}

// A stream is a client's connection to a job's event stream.
type stream struct {
	resp   *http.Response
	r      *ssetest.Reader
	cancel context.CancelFunc
	last   string // the ID of the last event read
}

// openStream opens the event stream at url, resuming after lastID if it is
// not empty. The stream is closed when the test ends, if not before.
func openStream(t *testing.T, client *http.Client, url, lastID string) *stream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := client.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &stream{resp: resp, r: ssetest.NewReader(resp.Body), cancel: cancel}
	t.Cleanup(s.close)
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	return s
}

// read reads n events.
func (s *stream) read(t *testing.T, n int) []ssetest.Event {
	t.Helper()
	var events []ssetest.Event
	for range n {
		ev, err := s.r.Next()
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		events = append(events, ev)
		s.last = ev.ID
	}
	return events
}

// close cuts the connection.
func (s *stream) close() {
	s.cancel()
	io.Copy(io.Discard, s.resp.Body) // ends at once: the request is canceled
	s.resp.Body.Close()
}

// nextID returns the ID after id, "<epoch>-<n>".
func nextID(t *testing.T, id string) string {
	t.Helper()
	epoch, n, _ := strings.Cut(id, "-")
	i, err := strconv.Atoi(n)
	if err != nil {
		t.Fatalf("event ID %q: %v", id, err)
	}
	return fmt.Sprintf("%s-%d", epoch, i+1)
}

// waitMetrics scrapes the demo's metrics every 50 ms until cond holds, for
// at most 15 seconds, and returns them.
func waitMetrics(t *testing.T, client *http.Client, base, what string, cond func(map[string]float64) bool) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		m := scrape(t, client, base)
		if cond(m) {
			return m
		}
		if time.Now().After(deadline) {
			var lines []string
			for k, v := range m {
				if strings.HasPrefix(k, "progress_") {
					lines = append(lines, fmt.Sprintf("%s %v", k, v))
				}
			}
			t.Fatalf("timed out waiting for %s; the metrics are:\n%s", what, strings.Join(lines, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// scrape returns the metrics that base+"metrics" serves in Prometheus's
// text format, by name with labels as written:
// progress_requests_refused_total{reason="not_found"}.
func scrape(t *testing.T, client *http.Client, base string) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d, %v", resp.StatusCode, err)
	}
	m := make(map[string]float64)
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value, where label values may hold spaces.
		i := strings.LastIndexByte(line, '}') + 1
		if i == 0 {
			i = strings.IndexByte(line, ' ')
		}
		fields := strings.Fields(line[i:])
		if i <= 0 || len(fields) == 0 {
			t.Fatalf("GET /metrics: cannot parse %q", line)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			t.Fatalf("GET /metrics: %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m
}
