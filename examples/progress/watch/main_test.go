package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/sseclient"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// demo serves jobs as the progress demo does: a FanOut broker, known keys
// only, at /jobs/{id}/events. A job, run by the test, publishes its log
// and progress events, then closes its key.
func demo(t *testing.T) (*sse.Broker[string], *httptest.Server) {
	t.Helper()
	b := sse.New[string](sse.WithMode(sse.FanOut))
	mux := http.NewServeMux()
	key := func(r *http.Request) (string, error) { return r.PathValue("id"), nil }
	mux.Handle("GET /jobs/{id}/events", sse.Handler(b, key, sse.WithKnownKeysOnly()))
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	return b, srv
}

// runJob publishes a job of steps steps, as the demo's jobs do, and closes it.
func runJob(t *testing.T, b *sse.Broker[string], id string, steps int) {
	t.Helper()
	ctx := context.Background()
	evs := []sse.Event{{Name: "log", Data: "Queued."}, {Name: "log", Data: "Started."}}
	for i := 1; i <= steps; i++ {
		evs = append(evs, sse.Event{Name: "progress", Data: strconv.Itoa(i * 100 / steps)},
			sse.Event{Name: "log", Data: "Step " + strconv.Itoa(i) + "."})
	}
	if err := b.Publish(ctx, id, evs...); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	b, srv := demo(t)
	runJob(t, b, "j1", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := watch(ctx, srv.URL+"/jobs/j1/events", &out, &errOut, false); err != nil {
		t.Fatal(err)
	}
	want := "Queued.\nStarted.\n" +
		"[####################....................]  50%\nStep 1.\n" +
		"[########################################] 100%\nStep 2.\n"
	if out.String() != want || errOut.Len() > 0 {
		t.Fatalf("output:\n%s\nwant:\n%s\nerrors: %s", out.String(), want, errOut.String())
	}
}

// TestWatchTerminal: on a terminal the bar is redrawn in place, and log
// lines go above it.
func TestWatchTerminal(t *testing.T) {
	b, srv := demo(t)
	runJob(t, b, "j1", 1)
	var out bytes.Buffer
	if err := watch(context.Background(), srv.URL+"/jobs/j1/events", &out, &out, true); err != nil {
		t.Fatal(err)
	}
	blank := "\r" + strings.Repeat(" ", barWidth+6) + "\r"
	full := "\r[" + strings.Repeat("#", barWidth) + "] 100%"
	want := "Queued.\nStarted.\n" + full + blank + "Step 1.\n" + full + "\n"
	if out.String() != want {
		t.Fatalf("output %q\nwant %q", out.String(), want)
	}
}

// TestWatchUnknownJob: a job the server does not know fails with its 404.
func TestWatchUnknownJob(t *testing.T) {
	_, srv := demo(t)
	var out bytes.Buffer
	err := watch(context.Background(), srv.URL+"/jobs/nope/events", &out, &out, false)
	var se *sseclient.StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
		t.Fatalf("got %v, want a 404", err)
	}
}
