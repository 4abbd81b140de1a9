package sseclient_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse/sseclient"
)

// TestReconnectResumes: a stream that ends without close is reopened with
// the last event ID; events without an id field keep it, across the
// reconnection too.
func TestReconnectResumes(t *testing.T) {
	s := script(t,
		sends("id: 1\ndata: a\n\nid: 2\ndata: b\n\ndata: c\n"), // c is cut off
		sends("data: c\n\nid: 3\ndata: d\n\n"+closing),
	)
	var rec recorder
	events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, rec.option())...))
	want := []sseclient.Event{ev("1", "", "a"), ev("2", "", "b"), ev("2", "", "c"), ev("3", "", "d")}
	if err != nil || !reflect.DeepEqual(events, want) {
		t.Fatalf("got %+v, %v; want %+v", events, err, want)
	}
	if got := s.lastIDs(); !reflect.DeepEqual(got, []string{"-", "2"}) {
		t.Fatalf("Last-Event-ID %q, want none then 2", got)
	}
	if calls := rec.get(); len(calls) != 1 || calls[0].err != sseclient.ErrStreamEnded {
		t.Fatalf("reconnections %+v, want one for ErrStreamEnded", calls)
	}
	h := s.requests()[0].header
	if h.Get("Accept") != "text/event-stream" || h.Get("Cache-Control") != "no-cache" {
		t.Fatalf("request headers %v, want an EventSource's Accept and Cache-Control", h)
	}
}

// TestReconnectBeforeAnyID: with this library's protocol, a client whose
// first request went out says "0" (nothing yet) when it reconnects before
// any ID; in plain mode it sends no Last-Event-ID, as a browser; and
// WithLastEventID sets the first request's.
func TestReconnectBeforeAnyID(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []sseclient.Option
		want []string
	}{
		{"protocol", nil, []string{"-", "0", "0"}},
		{"plain", []sseclient.Option{sseclient.WithPlain()}, []string{"-", "-", "-"}},
		{"WithLastEventID", []sseclient.Option{sseclient.WithLastEventID("e-7")}, []string{"e-7", "e-7", "e-7"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := script(t,
				status(http.StatusServiceUnavailable, "busy"),
				sends(": nothing yet\n\n"),
				status(http.StatusNoContent, ""),
			)
			if events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, tc.opts...)...)); err != nil || len(events) > 0 {
				t.Fatalf("got %+v, %v; want nothing", events, err)
			}
			if got := s.lastIDs(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Last-Event-ID %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRetryField: the server's retry field is the least delay.
func TestRetryField(t *testing.T) {
	const retry = 200 * time.Millisecond
	s := script(t, sends("retry: 200\n\n"), sends("data: a\n\n"), sends(closing))
	var rec recorder
	events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, rec.option())...))
	if err != nil || len(events) != 1 {
		t.Fatalf("got %+v, %v", events, err)
	}
	reqs := s.requests()
	for i, c := range rec.get() {
		if c.delay < retry {
			t.Errorf("reconnection %d after %v, want at least the retry field's %v", i, c.delay, retry)
		}
		if gap := reqs[i+1].at.Sub(reqs[i].at); gap < retry {
			t.Errorf("request %d came %v after the previous one, want at least %v", i+1, gap, retry)
		}
	}
}

// TestBackoff: attempts in a row without an event double the delay up to
// the ceiling; a connection that delivers an event resets it.
func TestBackoff(t *testing.T) {
	busy := status(http.StatusServiceUnavailable, "")
	s := script(t, busy, busy, busy, busy, busy, sends("data: a\n\n"), busy, busy, sends(closing))
	var rec recorder
	_, err := collect(t, sseclient.Events(bounded(t), s.URL,
		sseclient.WithHTTPClient(s.Client()), sseclient.WithBackoff(time.Millisecond, 8*time.Millisecond),
		sseclient.WithoutJitter(), rec.option()))
	if err != nil {
		t.Fatal(err)
	}
	var delays []time.Duration
	for _, c := range rec.get() {
		delays = append(delays, c.delay/time.Millisecond)
	}
	if want := []time.Duration{1, 2, 4, 8, 8, 1, 2, 4}; !reflect.DeepEqual(delays, want) {
		t.Fatalf("delays %v ms, want %v ms", delays, want)
	}
}

// TestTransientStatuses: 429, 502, 503 and 504 are retried, after at least
// the Retry-After (seconds or an HTTP date), and reported with their body.
func TestTransientStatuses(t *testing.T) {
	s := script(t,
		status(http.StatusTooManyRequests, "slow down", "Retry-After", "1"),
		status(http.StatusBadGateway, "bad gateway"),
		func(w http.ResponseWriter, r *http.Request) {
			// The date has whole seconds: from 0.5 s to 1.5 s from now.
			date := time.Now().Add(1500 * time.Millisecond).UTC().Format(http.TimeFormat)
			status(http.StatusServiceUnavailable, "down", "Retry-After", date)(w, r)
		},
		status(http.StatusGatewayTimeout, "timeout"),
		sends(closing),
	)
	var rec recorder
	if _, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, rec.option())...)); err != nil {
		t.Fatal(err)
	}
	calls, reqs := rec.get(), s.requests()
	var codes []int
	for i, c := range calls {
		var se *sseclient.StatusError
		if !errors.As(c.err, &se) {
			t.Fatalf("reconnection for %v, want a *StatusError", c.err)
		}
		codes = append(codes, se.StatusCode)
		if len(se.Body) == 0 {
			t.Errorf("%d: no body", se.StatusCode)
		}
		asked := se.RetryAfter > 0
		if want := se.StatusCode == 429 || se.StatusCode == 503; asked != want {
			t.Errorf("%d: RetryAfter %v", se.StatusCode, se.RetryAfter)
		}
		if c.delay < se.RetryAfter {
			t.Errorf("%d: delay %v, less than its Retry-After %v", se.StatusCode, c.delay, se.RetryAfter)
		}
		if gap := reqs[i+1].at.Sub(reqs[i].at); gap < se.RetryAfter {
			t.Errorf("%d: the next request came %v later, before its Retry-After %v", se.StatusCode, gap, se.RetryAfter)
		}
	}
	if want := []int{429, 502, 503, 504}; !reflect.DeepEqual(codes, want) {
		t.Fatalf("reconnections for %v, want %v", codes, want)
	}
	var se *sseclient.StatusError
	errors.As(calls[0].err, &se)
	if string(se.Body) != "slow down" || se.RetryAfter != time.Second {
		t.Fatalf("429: body %q, RetryAfter %v; want its body and 1s", se.Body, se.RetryAfter)
	}
}

// TestNoContentStops: 204 ends the sequence without an error, at once or
// after events.
func TestNoContentStops(t *testing.T) {
	s := script(t, status(http.StatusNoContent, ""))
	if events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s)...)); err != nil || len(events) != 0 {
		t.Fatalf("got %+v, %v; want nothing", events, err)
	}
	s = script(t, sends("id: 1\ndata: a\n\n"), status(http.StatusNoContent, ""))
	if events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s)...)); err != nil || len(events) != 1 {
		t.Fatalf("got %+v, %v; want one event", events, err)
	}
}

// TestStatusErrors: other statuses, and a 200 that is not an event stream,
// end the sequence with a *StatusError that carries up to 64 KiB of body.
func TestStatusErrors(t *testing.T) {
	big := strings.Repeat("x", 100<<10)
	for _, tc := range []struct {
		name string
		step step
		want sseclient.StatusError
	}{
		{"404", status(http.StatusNotFound, "no such job\n", "Content-Type", "text/plain"),
			sseclient.StatusError{StatusCode: 404, ContentType: "text/plain", Body: []byte("no such job\n")}},
		{"409", status(http.StatusConflict, "busy", "Content-Type", "text/plain"),
			sseclient.StatusError{StatusCode: 409, ContentType: "text/plain", Body: []byte("busy")}},
		{"500", status(http.StatusInternalServerError, big, "Content-Type", "text/plain"),
			sseclient.StatusError{StatusCode: 500, ContentType: "text/plain", Body: []byte(big[:64<<10])}},
		{"HTML", status(http.StatusOK, "<p>hi", "Content-Type", "text/html"),
			sseclient.StatusError{StatusCode: 200, ContentType: "text/html", Body: []byte("<p>hi")}},
		{"no Content-Type", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil // no sniffing
			w.Write([]byte("data: a\n\n"))
		}, sseclient.StatusError{StatusCode: 200, Body: []byte("data: a\n\n")}},
		{"201", status(http.StatusCreated, "", "Content-Type", "text/event-stream"),
			sseclient.StatusError{StatusCode: 201, ContentType: "text/event-stream", Body: []byte{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := script(t, tc.step)
			var rec recorder
			events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, rec.option())...))
			var se *sseclient.StatusError
			if !errors.As(err, &se) || len(events) > 0 {
				t.Fatalf("got %+v, %v; want a *StatusError", events, err)
			}
			if !reflect.DeepEqual(*se, tc.want) {
				t.Fatalf("got %+v, want %+v", *se, tc.want)
			}
			if calls := rec.get(); len(calls) > 0 {
				t.Fatalf("reconnected: %+v", calls)
			}
			t.Log(err)
		})
	}
}

// TestEventStreamParameters: a Content-Type with parameters, in any case,
// is still an event stream.
func TestEventStreamParameters(t *testing.T) {
	s := script(t, status(http.StatusOK, "data: a\n\n"+closing, "Content-Type", "Text/Event-Stream; charset=utf-8"))
	if events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s)...)); err != nil || len(events) != 1 {
		t.Fatalf("got %+v, %v", events, err)
	}
}

// idle is the idle timeout of the tests: long enough that a loaded machine
// answers well within it.
const idle = 300 * time.Millisecond

// TestIdleTimeout: a connection silent for the idle timeout, before its
// headers or after, is closed and the client reconnects.
func TestIdleTimeout(t *testing.T) {
	silent := func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() } // no headers
	s := script(t, hangs("id: 1\ndata: a\n\n"), silent, sends("data: b\n\n"+closing))
	var rec recorder
	events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, rec.option(), sseclient.WithIdleTimeout(idle))...))
	if err != nil || len(events) != 2 {
		t.Fatalf("got %+v, %v; want 2 events", events, err)
	}
	calls := rec.get()
	if len(calls) != 2 || calls[0].err != sseclient.ErrIdleTimeout || calls[1].err != sseclient.ErrIdleTimeout {
		t.Fatalf("reconnections %+v, want 2 for ErrIdleTimeout", calls)
	}
	if got := s.lastIDs(); !reflect.DeepEqual(got, []string{"-", "1", "1"}) {
		t.Fatalf("Last-Event-ID %q", got)
	}
}

// TestIdleTimeoutOwnContext: the idle timeout also ends a request that the
// request function made without its context.
func TestIdleTimeoutOwnContext(t *testing.T) {
	s := script(t, hangs(""), sends(closing))
	newRequest := func(_ context.Context, _ string) (*http.Request, error) {
		return http.NewRequest(http.MethodGet, s.URL, nil)
	}
	var rec recorder
	if _, err := collect(t, sseclient.Stream(bounded(t), newRequest, fast(s, rec.option(), sseclient.WithIdleTimeout(idle))...)); err != nil {
		t.Fatal(err)
	}
	if calls := rec.get(); len(calls) != 1 || calls[0].err != sseclient.ErrIdleTimeout {
		t.Fatalf("reconnections %+v, want one for ErrIdleTimeout", calls)
	}
}

// TestSlowConsumerIsNotIdle: the idle timeout counts the time spent waiting
// for the server, not the time the caller takes over an event.
func TestSlowConsumerIsNotIdle(t *testing.T) {
	taken := make(chan struct{})
	s := script(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write([]byte("data: a\n\n"))
		http.NewResponseController(w).Flush()
		select {
		case <-taken:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte("data: b\n\n" + closing))
	})
	var rec recorder
	var events []string
	for e, err := range sseclient.Events(bounded(t), s.URL, fast(s, rec.option(), sseclient.WithIdleTimeout(idle))...) {
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, e.Data)
		if e.Data == "a" {
			time.Sleep(3 * idle) // a slow caller, not synchronisation
			close(taken)
		}
	}
	if calls := rec.get(); len(calls) > 0 || len(events) != 2 {
		t.Fatalf("events %q, reconnections %+v; want both events on one connection", events, calls)
	}
}

// TestContextEnds: the sequence ends with ctx.Err() when ctx ends, while
// reading and while waiting to reconnect.
func TestContextEnds(t *testing.T) {
	t.Run("reading", func(t *testing.T) {
		s := script(t, hangs("data: a\n\n"))
		ctx, cancel := context.WithCancel(bounded(t))
		defer cancel()
		var events []sseclient.Event
		var err error
		for e, er := range sseclient.Events(ctx, s.URL, fast(s)...) {
			if er != nil {
				err = er
				continue
			}
			events = append(events, e)
			cancel()
		}
		if err != context.Canceled || len(events) != 1 {
			t.Fatalf("got %+v, %v; want one event, then context.Canceled", events, err)
		}
	})
	t.Run("waiting", func(t *testing.T) {
		s := script(t, status(http.StatusServiceUnavailable, ""))
		ctx, cancel := context.WithCancel(bounded(t))
		defer cancel()
		start := time.Now()
		_, err := collect(t, sseclient.Events(ctx, s.URL,
			sseclient.WithHTTPClient(s.Client()), sseclient.WithBackoff(time.Hour, time.Hour), sseclient.WithoutJitter(),
			sseclient.WithOnReconnect(func(error, time.Duration) { cancel() })))
		if err != context.Canceled || time.Since(start) > patience/2 {
			t.Fatalf("got %v after %v, want context.Canceled at once", err, time.Since(start))
		}
	})
	t.Run("before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := collect(t, sseclient.Events(ctx, "http://127.0.0.1:1/")); err != context.Canceled {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

// TestBreakClosesTheConnection: stopping the range closes the connection.
func TestBreakClosesTheConnection(t *testing.T) {
	gone := make(chan struct{})
	s := script(t, func(w http.ResponseWriter, r *http.Request) {
		hangs("data: a\n\ndata: b\n\n")(w, r)
		close(gone)
	})
	for e, err := range sseclient.Events(bounded(t), s.URL, fast(s)...) {
		if err != nil || e.Data != "a" {
			t.Fatalf("got %+v, %v", e, err)
		}
		break
	}
	select {
	case <-gone:
	case <-time.After(patience):
		t.Fatal("the server still has the connection")
	}
}

// TestControlEvents: by default close and ---terminate--- end the
// sequence, gap is yielded, and names starting with "sse." are skipped;
// WithPlain yields them all and reconnects when the stream ends.
func TestControlEvents(t *testing.T) {
	body := "id: e-5\nevent: gap\ndata: {\"from\":3,\"to\":5}\n\n" +
		"id: e-6\nevent: sse.future\ndata: x\n\n" +
		"id: e-7\ndata: a\n\n"
	for _, tc := range []struct {
		name string
		end  string
		opts []sseclient.Option
		want []string // names and data
	}{
		{"close", closing, nil, []string{"gap", `{"from":3,"to":5}`, "", "a"}},
		{"terminate", "data: ---terminate---\n\n", nil, []string{"gap", `{"from":3,"to":5}`, "", "a"}},
		{"plain close", closing, []sseclient.Option{sseclient.WithPlain()},
			[]string{"gap", `{"from":3,"to":5}`, "sse.future", "x", "", "a", "close", ""}},
		{"plain terminate", "data: ---terminate---\n\n", []sseclient.Option{sseclient.WithPlain()},
			[]string{"gap", `{"from":3,"to":5}`, "sse.future", "x", "", "a", "", "---terminate---"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := script(t, sends(body+tc.end), status(http.StatusNoContent, ""))
			events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, tc.opts...)...))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range events {
				got = append(got, e.Name, e.Data)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			if from, to, ok := events[0].Gap(); !ok || from != 3 || to != 5 {
				t.Fatalf("Gap() = %d, %d, %v", from, to, ok)
			}
			if reqs := len(s.requests()); reqs != 1+len(tc.opts) {
				t.Fatalf("%d requests", reqs)
			}
		})
	}
}

// TestRequestFunc: the request function is called for each attempt with
// the ID to resume from, and its headers are kept, its own Last-Event-ID
// included; its error ends the sequence.
func TestRequestFunc(t *testing.T) {
	s := script(t, sends("id: 1\ndata: a\n\n"), sends("id: 2\ndata: b\n\n"), sends(closing))
	var ids []string
	newRequest := func(ctx context.Context, lastID string) (*http.Request, error) {
		ids = append(ids, lastID)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
		req.Header.Set("Authorization", "Bearer token-"+lastID)
		if lastID == "2" {
			req.Header.Set("Last-Event-ID", "mine")
		}
		return req, err
	}
	if _, err := collect(t, sseclient.Stream(bounded(t), newRequest, fast(s)...)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids, []string{"", "1", "2"}) {
		t.Fatalf("the function was called with %q", ids)
	}
	var auth []string
	for _, r := range s.requests() {
		auth = append(auth, r.header.Get("Authorization"))
	}
	if want := []string{"Bearer token-", "Bearer token-1", "Bearer token-2"}; !reflect.DeepEqual(auth, want) {
		t.Fatalf("Authorization %q, want %q", auth, want)
	}
	if got := s.lastIDs(); !reflect.DeepEqual(got, []string{"-", "1", "mine"}) {
		t.Fatalf("Last-Event-ID %q", got)
	}

	boom := errors.New("no token")
	_, err := collect(t, sseclient.Stream(bounded(t), func(context.Context, string) (*http.Request, error) { return nil, boom }))
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want %v", err, boom)
	}
	if _, err := collect(t, sseclient.Events(bounded(t), "::not a URL")); err == nil {
		t.Fatal("no error for a malformed URL")
	}
}

// TestNetworkErrorsAreTransient: a server that cannot be reached is
// retried, each failure reported.
func TestNetworkErrorsAreTransient(t *testing.T) {
	s := script(t)
	url := s.URL
	s.Close() // nothing listens there now
	ctx, cancel := context.WithCancel(bounded(t))
	defer cancel()
	var calls []error // the function is called from the ranging goroutine
	_, err := collect(t, sseclient.Events(ctx, url, sseclient.WithBackoff(time.Millisecond, time.Millisecond),
		sseclient.WithOnReconnect(func(err error, _ time.Duration) {
			if calls = append(calls, err); len(calls) == 3 {
				cancel()
			}
		})))
	if err != context.Canceled || len(calls) != 3 {
		t.Fatalf("got %v after %d reconnections", err, len(calls))
	}
	for _, err := range calls {
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("reconnection for %v, want the network error", err)
		}
	}
}

// TestLimits: a line beyond the limit ends the sequence: reconnecting
// would read it again.
func TestLimits(t *testing.T) {
	s := script(t, sends("data: "+strings.Repeat("x", 100)+"\n\n"))
	_, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, sseclient.WithLimits(50, 0))...))
	if err != sseclient.ErrLineTooLong {
		t.Fatalf("got %v, want ErrLineTooLong", err)
	}
	s = script(t, sends("data: 1234\ndata: 5678\n\n"))
	_, err = collect(t, sseclient.Events(bounded(t), s.URL, fast(s, sseclient.WithLimits(0, 8))...))
	if err != sseclient.ErrEventTooLong {
		t.Fatalf("got %v, want ErrEventTooLong", err)
	}
}

// TestControlByteInID: an id field holding a byte that Go's net/http
// refuses in a header is ignored, so that the client reconnects with the
// last good ID (or none) instead of failing every request before it leaves
// the machine, forever. Both with this library's protocol and plain.
func TestControlByteInID(t *testing.T) {
	for _, tc := range []struct {
		name   string
		first  string
		opts   []sseclient.Option
		events []sseclient.Event
		want   []string // Last-Event-ID of each request
	}{
		{"protocol", "id: 1\ndata: a\n\nid: a\x01b\ndata: b\n\n", nil,
			[]sseclient.Event{ev("1", "", "a"), ev("1", "", "b")}, []string{"-", "1"}},
		{"plain", "id: 1\ndata: a\n\nid: a\x01b\ndata: b\n\n", []sseclient.Option{sseclient.WithPlain()},
			[]sseclient.Event{ev("1", "", "a"), ev("1", "", "b")}, []string{"-", "1"}},
		{"protocol, no ID before", "id: a\x7fb\ndata: b\n\n", nil,
			[]sseclient.Event{ev("", "", "b")}, []string{"-", "0"}},
		{"plain, no ID before", "id: a\x1bb\ndata: b\n\n", []sseclient.Option{sseclient.WithPlain()},
			[]sseclient.Event{ev("", "", "b")}, []string{"-", "-"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := script(t, sends(tc.first), status(http.StatusNoContent, ""))
			var rec recorder
			events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, append(tc.opts, rec.option())...)...))
			if err != nil || !reflect.DeepEqual(events, tc.events) {
				t.Fatalf("got %+v, %v; want %+v", events, err, tc.events)
			}
			if got := s.lastIDs(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Last-Event-ID %q, want %q", got, tc.want)
			}
			if calls := rec.get(); len(calls) != 1 || calls[0].err != sseclient.ErrStreamEnded {
				t.Fatalf("reconnections %+v, want one for ErrStreamEnded", calls)
			}
		})
	}
}

// trickle answers with code and a body that never ends: a byte at once,
// then one every 5 ms, until the client goes away.
func trickle(code int) step {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		rc := http.NewResponseController(w)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			if _, err := w.Write([]byte("x")); err != nil || rc.Flush() != nil {
				return
			}
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
	}
}

// TestTricklingErrorBody: the body of a refused response is read for one
// idle timeout in all (5 s at most), not for an idle timeout per byte: a
// body trickling in a byte at a time cannot hold the client for the
// 64 KiB it keeps (5.5 min here, 34 days at the defaults). The client
// retries a 503 and ends with a 404 within that bound, keeping the start
// of the body.
func TestTricklingErrorBody(t *testing.T) {
	t.Run("503", func(t *testing.T) {
		s := script(t, trickle(http.StatusServiceUnavailable), sends(closing))
		var rec recorder
		if _, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, rec.option(), sseclient.WithIdleTimeout(idle))...)); err != nil {
			t.Fatal(err)
		}
		calls, reqs := rec.get(), s.requests()
		var se *sseclient.StatusError
		if len(calls) != 1 || !errors.As(calls[0].err, &se) || se.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("reconnections %+v, want one for a 503", calls)
		}
		if n := len(se.Body); n == 0 || n >= 64<<10 || strings.Trim(string(se.Body), "x") != "" {
			t.Fatalf("body of %d bytes %q, want the start of the trickle", n, head(string(se.Body)))
		}
		if gap := reqs[1].at.Sub(reqs[0].at); gap > patience/2 {
			t.Fatalf("reconnected %v later, want about the idle timeout %v", gap, idle)
		}
	})
	t.Run("404", func(t *testing.T) {
		s := script(t, trickle(http.StatusNotFound))
		start := time.Now()
		_, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, sseclient.WithIdleTimeout(idle))...))
		var se *sseclient.StatusError
		if !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
			t.Fatalf("got %v, want a 404 *StatusError", err)
		}
		if took := time.Since(start); took > patience/2 {
			t.Fatalf("ended after %v, want about the idle timeout %v", took, idle)
		}
	})
}

// TestHugeBackoff: the largest delays the options accept do not panic on
// the first reconnection (the jitter's range used to overflow); the test
// cancels the wait rather than sleep for centuries.
func TestHugeBackoff(t *testing.T) {
	for _, tc := range []struct{ base, ceiling time.Duration }{
		{math.MaxInt64, math.MaxInt64},
		{math.MaxInt64, 0},
		{0, math.MaxInt64},
		{math.MinInt64, math.MaxInt64},
		{-1, -1},
	} {
		s := script(t, status(http.StatusServiceUnavailable, ""))
		ctx, cancel := context.WithCancel(bounded(t))
		var delays []time.Duration
		_, err := collect(t, sseclient.Events(ctx, s.URL, sseclient.WithHTTPClient(s.Client()),
			sseclient.WithBackoff(tc.base, tc.ceiling),
			sseclient.WithOnReconnect(func(_ error, d time.Duration) { delays = append(delays, d); cancel() })))
		cancel()
		if err != context.Canceled || len(delays) != 1 || delays[0] < 0 {
			t.Fatalf("WithBackoff(%d, %d): got %v after reconnections %v; want context.Canceled after one", tc.base, tc.ceiling, err, delays)
		}
	}
}

// TestMaxServerDelay: a retry field or a Retry-After of years is cut to
// WithMaxServerDelay's cap: the client waits that long, and no longer, then
// reconnects. The StatusError still says what the server asked.
func TestMaxServerDelay(t *testing.T) {
	const limit = 100 * time.Millisecond
	for _, tc := range []struct {
		name  string
		first step
	}{
		{"retry field", sends("retry: 999999999999\n\n")},                                     // 31 years
		{"Retry-After", status(http.StatusServiceUnavailable, "", "Retry-After", "99999999")}, // 3 years
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := script(t, tc.first, sends(closing))
			var rec recorder
			if _, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s, rec.option(), sseclient.WithMaxServerDelay(limit))...)); err != nil {
				t.Fatal(err)
			}
			calls, reqs := rec.get(), s.requests()
			if len(calls) != 1 || calls[0].delay != limit {
				t.Fatalf("reconnections %+v, want one after the cap %v", calls, limit)
			}
			if gap := reqs[1].at.Sub(reqs[0].at); gap < limit || gap > patience/2 {
				t.Fatalf("reconnected %v later, want the cap %v", gap, limit)
			}
			var se *sseclient.StatusError
			if errors.As(calls[0].err, &se) && se.RetryAfter != 99999999*time.Second {
				t.Fatalf("RetryAfter %v, want what the server asked", se.RetryAfter)
			}
		})
	}
}
