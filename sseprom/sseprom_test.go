package sseprom_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/sseprom"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCollector: every documented metric is exported, with its type and
// labels, and moves as the handler and the broker work.
func TestCollector(t *testing.T) {
	ctx := context.Background()
	b := sse.New[string]()
	defer b.Shutdown(ctx)
	var m sse.Metrics
	h := sse.Handler(b, func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil }, sse.WithMetrics(&m))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sseprom.New("app", &m, sseprom.Broker("jobs", b)))

	b.Enqueue(ctx, "k", "1", "2")
	b.Close(ctx, "k")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key=k", nil))
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/?key=k", nil)) // refused: method

	want := `
# HELP app_events_written_total Events written to streams.
# TYPE app_events_written_total counter
app_events_written_total 2
# HELP app_streams_total Event streams started.
# TYPE app_streams_total counter
app_streams_total 1
# HELP app_streams_open Event streams being served.
# TYPE app_streams_open gauge
app_streams_open 0
# HELP app_broker_events_enqueued_total Events accepted.
# TYPE app_broker_events_enqueued_total counter
app_broker_events_enqueued_total{broker="jobs"} 2
# HELP app_broker_closed_keys Closed keys still remembered.
# TYPE app_broker_closed_keys gauge
app_broker_closed_keys{broker="jobs"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"app_events_written_total", "app_streams_total", "app_streams_open",
		"app_broker_events_enqueued_total", "app_broker_closed_keys"); err != nil {
		t.Fatal(err)
	}
	got, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := make(map[string]int)
	for _, f := range got {
		names[f.GetName()] = len(f.GetMetric())
	}
	for _, name := range []string{
		"app_streams_open", "app_streams_total", "app_takeovers_total", "app_resumes_total", "app_gaps_total",
		"app_events_written_total", "app_written_bytes_total", "app_clients_dropped_total", "app_heartbeats_total",
		"app_broker_keys", "app_broker_closed_keys", "app_broker_pending_events", "app_broker_replay_bytes",
		"app_broker_events_enqueued_total", "app_broker_events_discarded_total", "app_broker_events_dropped_total",
	} {
		if names[name] != 1 {
			t.Errorf("%s: %d series, want 1", name, names[name])
		}
	}
	if n := names["app_requests_refused_total"]; n != len(sse.Reasons()) {
		t.Errorf("app_requests_refused_total: %d series, want one per reason (%d)", n, len(sse.Reasons()))
	}
	if v := refused(t, reg, "method"); v != 1 {
		t.Errorf("refused for the method: %v, want 1", v)
	}
}

// refused returns the value of the refused counter of reason.
func refused(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "app_requests_refused_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no refused counter for %q", reason)
	return 0
}
