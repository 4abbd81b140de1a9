package sseprom_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/sseprom"
)

// Handlers share one sse.Metrics; a Collector exports it, with the broker's
// figures, on the application's registry, served at /metrics.
func Example() {
	ctx := context.Background()
	jobs := sse.New[string]()
	defer jobs.Shutdown(ctx)

	var metrics sse.Metrics
	reg := prometheus.NewRegistry()
	reg.MustRegister(sseprom.New("myapp", &metrics, sseprom.Broker("jobs", jobs)))

	mux := http.NewServeMux()
	mux.Handle("GET /jobs/{id}/events", sse.Handler(jobs,
		func(r *http.Request) (string, error) { return r.PathValue("id"), nil },
		sse.WithMetrics(&metrics)))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	jobs.Enqueue(ctx, "42", "started", "done")
	jobs.Close(ctx, "42")
	resp, err := http.Get(srv.URL + "/jobs/42/events")
	if err != nil {
		panic(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	resp, err = http.Get(srv.URL + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	text, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(text)) {
		if strings.HasPrefix(line, "myapp_events_written_total") || strings.HasPrefix(line, "myapp_broker_events_enqueued_total") {
			fmt.Print(line)
		}
	}
	// Output:
	// myapp_broker_events_enqueued_total{broker="jobs"} 2
	// myapp_events_written_total 2
}
