package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssetest"
)

// MultiHandler streams several jobs on one connection: a page that follows
// a list of jobs opens one EventSource, and tells each event's job by the
// position before the colon in its lastEventId.
func ExampleMultiHandler() {
	ctx := context.Background()
	events := sse.New[JobID](sse.WithMode(sse.FanOut))
	defer events.Shutdown(ctx)

	//readme:multi
	mux := http.NewServeMux()
	// GET /jobs/events?job=7&job=9: the page's jobs, on one connection;
	// each is shown on the wire by its position in the list (0, 1, …).
	mux.Handle("GET /jobs/events", sse.MultiHandler(events,
		func(r *http.Request) ([]JobID, error) {
			var jobs []JobID
			for _, id := range r.URL.Query()["job"] {
				jobs = append(jobs, JobID(id))
			}
			return jobs, nil // check here that the client may read them
		},
		sse.WithKnownKeysOnly(), // any unknown job: 404 for the request
	))
	//readme:end
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, job := range []JobID{"7", "9"} {
		events.Publish(ctx, job, sse.Event{Name: "progress", Data: "100"})
		events.Close(ctx, job)
	}
	resp, err := http.Get(srv.URL + "/jobs/events?job=7&job=9")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	received, err := ssetest.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	// The keys' events interleave as they come: print job 7's, then 9's,
	// then the end.
	for _, key := range []string{"0", "1", ""} {
		for _, ev := range received {
			// An ID is "<position>:<every key's position>"; the final
			// close has none of its own.
			pos, _, _ := strings.Cut(ev.ID, ":")
			if ev.Type == sse.EventClose && key == "" || pos == key && ev.Type != sse.EventClose {
				fmt.Printf("key=%s event=%s data=%s\n", key, ev.Type, ev.Data)
			}
		}
	}
	// Output:
	// key=0 event=progress data=100
	// key=0 event=sse.close data={"key":0}
	// key=1 event=progress data=100
	// key=1 event=sse.close data={"key":1}
	// key= event=close data=
}
