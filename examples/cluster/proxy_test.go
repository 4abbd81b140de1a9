package main

import (
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/rocketqueue/sse/examples/internal/jobs"
)

// The proxy tells an event stream's jobs from its request, for one job
// (/jobs/{id}/events) and for several on one connection
// (/jobs/events?job=…, the page's), so that GET /cluster shows which
// replica serves each job.
func TestEventStream(t *testing.T) {
	a, b := strings.Repeat("a", 32), strings.Repeat("b", 32)
	ida, _ := jobs.ParseID(a)
	idb, _ := jobs.ParseID(b)
	for _, tc := range []struct {
		method, target string
		want           []jobs.ID // nil: not an event stream
	}{
		{"GET", "/jobs/" + a + "/events", []jobs.ID{ida}},
		{"GET", "/jobs/events?job=" + a + "&job=" + b, []jobs.ID{ida, idb}},
		{"GET", "/jobs/events?job=" + b, []jobs.ID{idb}},
		{"GET", "/jobs/events", nil},
		{"GET", "/jobs/events?job=nope", nil},
		{"GET", "/jobs/nope/events", nil},
		{"POST", "/jobs", nil},
		{"GET", "/app.js", nil},
	} {
		got, ok := eventStream(httptest.NewRequest(tc.method, tc.target, nil))
		if ok != (tc.want != nil) || ok && !slices.Equal(got, tc.want) {
			t.Errorf("%s %s: %v %v, want %v", tc.method, tc.target, got, ok, tc.want)
		}
	}
}
