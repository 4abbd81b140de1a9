package e2e

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssetest"
)

// On SIGTERM, the demo ends every open stream and exits promptly and
// cleanly, although its jobs are far from done. It shuts down with
// sse.Graceful: each stream ends without "close" (the job is not done) and
// with a retry field between sse.ShutdownRetryMin and ShutdownRetryMax, so
// that clients come back spread out.
func TestGracefulShutdown(t *testing.T) {
	const streams = 3
	d := startDemo(t, "-step", "20ms", "-steps", "100000")
	client := newClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel() // ends the readers if the test fails early

	type result struct {
		events []ssetest.Event
		err    error
		retry  time.Duration // the last retry field; 0: none
	}
	results := make(chan result, streams)
	live := make(chan struct{}, streams) // one per stream that delivered progress
	for range streams {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.startJob(t, client), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if err := ssetest.CheckResponse(resp); err != nil {
			resp.Body.Close()
			t.Fatal(err)
		}
		go func() {
			defer resp.Body.Close()
			r := ssetest.NewReader(resp.Body)
			var events []ssetest.Event
			for progressed := false; ; {
				ev, err := r.Next()
				if err != nil {
					retry, _ := r.Retry()
					results <- result{events, err, retry}
					return
				}
				events = append(events, ev)
				if ev.Type == "progress" && !progressed {
					progressed = true
					live <- struct{}{}
				}
			}
		}()
	}
	for range streams {
		select {
		case <-live:
		case <-ctx.Done():
			t.Fatal("the streams delivered no progress within 30s")
		}
	}

	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.exited:
		// A binary built with -race sleeps 1s before it exits.
		t.Logf("the demo exited %v after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(5 * time.Second):
		t.Fatal("the demo did not exit within 5s of SIGTERM")
	}
	if d.err != nil {
		t.Errorf("the demo exited with %v, want status 0", d.err)
	}

	for i := range streams {
		var r result
		select {
		case r = <-results:
		case <-time.After(5 * time.Second):
			t.Fatalf("stream %d did not end within 5s of the demo's exit", i)
		}
		// The response ends cleanly, without the "close" event that would
		// tell the page the job is done: the job is not done.
		if !errors.Is(r.err, io.EOF) {
			t.Errorf("stream %d ended with %v, want a clean end (io.EOF)", i, r.err)
		}
		for _, ev := range r.events {
			if ev.Type == "close" {
				t.Errorf("stream %d got a close event", i)
			}
		}
		if r.retry < sse.ShutdownRetryMin || r.retry > sse.ShutdownRetryMax {
			t.Errorf("stream %d ended with retry %v, want between %v and %v", i, r.retry, sse.ShutdownRetryMin, sse.ShutdownRetryMax)
		}
		t.Logf("stream %d: %d events before the end, then retry %v", i, len(r.events), r.retry)
	}
	if !strings.Contains(d.stderr.String(), "shutting down") {
		t.Errorf("the demo did not log its shutdown")
	}
}
