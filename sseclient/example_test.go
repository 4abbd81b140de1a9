package sseclient_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/sseclient"
)

// Follow a key of this library's handler: the range ends after the last
// event, when the key is closed.
func ExampleEvents() {
	broker := sse.New[string]()
	defer broker.Shutdown(context.Background())
	key := func(r *http.Request) (string, error) { return r.PathValue("job"), nil }
	mux := http.NewServeMux()
	mux.Handle("GET /jobs/{job}/events", sse.Handler(broker, key))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	ctx := context.Background()
	broker.Publish(ctx, "42",
		sse.Event{Name: "progress", Data: "50"},
		sse.Event{Name: "log", Data: "halfway\nthere"},
		sse.Event{Name: "progress", Data: "100"})
	broker.Close(ctx, "42")

	//readme:client
	for ev, err := range sseclient.Events(ctx, srv.URL+"/jobs/42/events") {
		if err != nil {
			fmt.Println("error:", err) // the only error, and the last value
			return
		}
		fmt.Printf("%s %q\n", ev.Name, ev.Data)
	}
	//readme:end
	fmt.Println("done")
	// Output:
	// progress "50"
	// log "halfway\nthere"
	// progress "100"
	// done
}

// Any server's stream, here a hand-written one that sends an event and
// then fails: the range ends with the error, once, last.
func ExampleEvents_otherServer() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Last-Event-ID") == "" {
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: a1\nevent: greeting\ndata: hello\n\n")
			return // the stream ends: the client reconnects
		}
		http.Error(w, "the greeting was all", http.StatusGone)
	}))
	defer srv.Close()

	for ev, err := range sseclient.Events(context.Background(), srv.URL, sseclient.WithPlain(),
		sseclient.WithBackoff(time.Millisecond, time.Second)) {
		if err != nil {
			fmt.Println("error:", err)
			break
		}
		fmt.Println(ev.ID, ev.Name, ev.Data)
	}
	// Output:
	// a1 greeting hello
	// error: sseclient: 410 Gone: the greeting was all
}

// A request function makes each attempt's request, here with a token that
// may have changed since the last one.
func ExampleStream() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer fresh" {
			http.Error(w, "who are you?", http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: welcome\n\nevent: close\ndata:\n\n")
	}))
	defer srv.Close()
	token := func() string { return "fresh" }

	newRequest := func(ctx context.Context, lastEventID string) (*http.Request, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token())
		return req, nil // the client adds Last-Event-ID
	}
	for ev, err := range sseclient.Stream(context.Background(), newRequest) {
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Println(ev.Data)
	}
	// Output:
	// welcome
}

// A Decoder parses a stream from any reader, here a recorded one.
func ExampleDecoder() {
	d := sseclient.NewDecoder(strings.NewReader("retry: 3000\r\n: a comment\r\nid: 7\r\nevent: log\r\ndata: one\r\ndata:two\r\n\r\ndata: no id\r\n\r\ndata: cut short"))
	for {
		ev, err := d.Next()
		if err != nil {
			fmt.Println(err)
			break
		}
		fmt.Printf("%q %q %q\n", ev.ID, ev.Name, ev.Data)
	}
	retry, _ := d.Retry()
	fmt.Println(d.LastEventID(), retry)
	// Output:
	// "7" "log" "one\ntwo"
	// "7" "" "no id"
	// EOF
	// 7 3s
}

// A gap event tells which events the client will never get.
func ExampleEvent_Gap() {
	ev := sseclient.Event{ID: "3w5e11264s-18", Name: "gap", Data: `{"from":3,"to":18}`}
	if from, to, ok := ev.Gap(); ok {
		fmt.Printf("missed events %d to %d\n", from, to)
	}
	// Output:
	// missed events 3 to 18
}
