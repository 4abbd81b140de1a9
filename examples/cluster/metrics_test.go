package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rocketqueue/sse/examples/internal/jobs"
	"github.com/rocketqueue/sse/sseclient"
	"github.com/rocketqueue/sse/ssejs"
	"github.com/rocketqueue/sse/sseprom"
)

// TestSSEPromReportsSSEJS: sseprom's Collector reports the brokers of
// github.com/rocketqueue/sse/ssejs as it reports sse.Broker's, through the
// Stats method both have (sseprom imports neither ssejs nor NATS; this
// module has both): the worker's broker counts the events its job stored,
// the replica serving the job's stream counts the key while it reads it,
// and the figures ssejs cannot know are 0.
func TestSSEPromReportsSSEJS(t *testing.T) {
	const steps = 3
	c, srv := startTest(t, steps, 20*time.Millisecond)
	brokerOf := func(r *replica) *ssejs.Broker[jobs.ID] {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.broker
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(sseprom.New("cluster", nil,
		sseprom.Broker("worker", c.worker.broker),
		sseprom.Broker("a", brokerOf(c.replicas[0])),
		sseprom.Broker("b", brokerOf(c.replicas[1]))))
	// metric returns the value of name for broker.
	metric := func(name, broker string) float64 {
		t.Helper()
		families, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != "cluster_"+name {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "broker" && l.GetValue() == broker {
						if f.GetType().String() == "COUNTER" {
							return m.GetCounter().GetValue()
						}
						return m.GetGauge().GetValue()
					}
				}
			}
		}
		t.Fatalf("no metric cluster_%s{broker=%q}", name, broker)
		return 0
	}

	code, body := do(t, http.MethodPost, srv.URL+"/jobs")
	var job struct{ ID, Events string }
	if err := json.Unmarshal([]byte(body), &job); code != http.StatusCreated || err != nil {
		t.Fatalf("POST /jobs: %d %q: %v", code, body, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n := 0
	for _, err := range sseclient.Events(ctx, srv.URL+job.Events) {
		if err != nil {
			t.Fatal(err)
		}
		if n++; n == 1 {
			_, serving := clusterState(t, srv.URL)
			name := serving[job.ID]
			if got := metric("broker_keys", name); got != 1 {
				t.Errorf("while replica %s streams the job: broker_keys %v, want 1", name, got)
			}
		}
	}
	events := float64(2*steps + 3)
	if n != int(events) {
		t.Fatalf("got %d events, want %v", n, events)
	}
	if got := metric("broker_events_enqueued_total", "worker"); got != events {
		t.Errorf("the worker's broker_events_enqueued_total %v, want the job's %v events", got, events)
	}
	for _, b := range []string{"worker", "a", "b"} {
		for _, name := range []string{"broker_events_discarded_total", "broker_events_dropped_total", "broker_closed_keys", "broker_pending_events", "broker_replay_bytes"} {
			if got := metric(name, b); got != 0 {
				t.Errorf("%s{broker=%q} %v, want 0", name, b, got)
			}
		}
	}
}
