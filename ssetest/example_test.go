package ssetest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/rocketqueue/sse/ssetest"
)

// greet is a handler under test that writes a short event stream.
func greet(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, ": hello\n\nretry: 2000\n\nevent: greeting\ndata: hello\ndata: world\n\nid: 2\ndata: bye\n\n")
}

// Example tests a handler by recording its response and reading the events
// a browser would receive.
func Example() {
	rec := httptest.NewRecorder()
	greet(rec, httptest.NewRequest(http.MethodGet, "/events", nil))

	events, err := ssetest.Events(rec)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, ev := range events {
		fmt.Printf("%s id=%q data=%q\n", ev.EffectiveType(), ev.ID, ev.Data)
	}
	// Output:
	// greeting id="" data="hello\nworld"
	// message id="2" data="bye"
}

// ExampleReader reads a stream event by event, as a test of a live response
// would, and checks the heartbeat comments and the reconnection settings.
func ExampleReader() {
	stream := ": heartbeat\nretry: 2000\nid: 7\ndata: first\n\n: heartbeat\ndata: unfinished"

	r := ssetest.NewReader(strings.NewReader(stream))
	heartbeats := 0
	r.OnComment = func(text string) {
		if text == " heartbeat" {
			heartbeats++
		}
	}
	for {
		ev, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("event %q\n", ev.Data)
	}
	retry, _ := r.Retry()
	fmt.Println("heartbeats:", heartbeats)
	fmt.Println("retry:", retry)
	fmt.Println("Last-Event-ID:", r.LastEventID())
	// Output:
	// event "first"
	// heartbeats: 2
	// retry: 2s
	// Last-Event-ID: 7
}
