package bench

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	r3sse "github.com/r3labs/sse/v2"
	"github.com/rocketqueue/sse"
	gosse "github.com/tmaxmax/go-sse"
	"gopkg.in/cenkalti/backoff.v1"
)

// TestRetryDispatchesNothing: the handler's "retry" field, with WithRetry
// at the start of a stream, must make neither go-sse nor r3labs dispatch a
// message of its own: both take a block that holds a retry field and no
// event for a message. The stream is recorded from a real handler (the
// field, heartbeats, three events and close), then read by each client.
// go-sse also reads a "retry later" answer, and dispatches nothing for it;
// r3labs dispatches every block with a retry field that holds no event,
// whatever the server does, so it is not asked to.
func TestRetryDispatchesNothing(t *testing.T) {
	b := sse.New[string]()
	defer b.Shutdown(context.Background())
	srv := httptest.NewServer(sse.Handler(b, func(r *http.Request) (string, error) { return "k", nil },
		sse.WithRetry(1500*time.Millisecond), sse.WithHeartbeat(5*time.Millisecond)))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw := bufio.NewReader(resp.Body)
	var stream strings.Builder
	for pings := 0; pings < 3; { // heartbeats before the first event
		line, err := raw.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		stream.WriteString(line)
		if strings.HasPrefix(line, ":") {
			pings++
		}
	}
	for _, data := range []string{"a", "b", "c"} {
		if err := b.Enqueue(context.Background(), "k", data); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(context.Background(), "k"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(raw)
	if err != nil {
		t.Fatal(err)
	}
	stream.Write(rest)
	want := []string{"a", "b", "c", ""} // and close, with empty data

	if got := goSSEConnection(t, stream.String()); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("go-sse dispatched %q from %q, want %q", got, stream.String(), want)
	}

	var got []string
	c := r3sse.NewClient("http://bench.invalid/events")
	c.ReconnectStrategy = &backoff.StopBackOff{}
	c.Connection = &http.Client{Transport: roundTripper(func(req *http.Request) (*http.Response, error) {
		return &http.Response{
			StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1, Request: req,
			Header: http.Header{"Content-Type": {"text/event-stream"}},
			Body:   io.NopCloser(strings.NewReader(stream.String())),
		}, nil
	})}
	if err := c.SubscribeRaw(func(ev *r3sse.Event) { got = append(got, string(ev.Data)) }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("r3labs dispatched %q from %q, want %q", got, stream.String(), want)
	}

	// A "retry later" answer: the broker is shut down.
	shut := sse.New[string]()
	if err := shut.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	sse.Handler(shut, func(r *http.Request) (string, error) { return "k", nil }).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	if got := goSSEConnection(t, rec.Body.String()); len(got) > 0 {
		t.Errorf("go-sse dispatched %q from the retry later answer %q", got, rec.Body.String())
	}
}

// goSSEConnection returns the data of the messages that go-sse's client, a
// Connection, dispatches from body, served once.
func goSSEConnection(t *testing.T, body string) []string {
	t.Helper()
	client := &gosse.Client{
		HTTPClient: &http.Client{Transport: roundTripper(func(req *http.Request) (*http.Response, error) {
			return &http.Response{
				StatusCode: http.StatusOK, ProtoMajor: 1, ProtoMinor: 1, Request: req,
				Header: http.Header{"Content-Type": {"text/event-stream"}},
				Body:   io.NopCloser(strings.NewReader(body)),
			}, nil
		})},
		Backoff: gosse.Backoff{MaxRetries: -1}, // one request
	}
	req, err := http.NewRequest(http.MethodGet, "http://bench.invalid/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := client.NewConnection(req)
	var got []string
	conn.SubscribeToAll(func(ev gosse.Event) { got = append(got, ev.Data) })
	conn.Connect() // ends with the body: "connection to server lost"
	return got
}
