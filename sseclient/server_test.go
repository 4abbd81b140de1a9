package sseclient_test

import (
	"context"
	"iter"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse/sseclient"
)

// patience bounds every wait of a test that runs in real time.
const patience = 10 * time.Second

// A step answers one request of a scripted server.
type step func(w http.ResponseWriter, r *http.Request)

// A request is what a scripted server saw of one request.
type request struct {
	at      time.Time
	lastID  []string // the Last-Event-ID header's values: nil without one
	header  http.Header
	attempt int
}

// scripted is a hand-written SSE server, not this library's: request n
// gets steps[n], and requests beyond the script fail the test.
type scripted struct {
	*httptest.Server
	t     *testing.T
	steps []step

	mu   sync.Mutex
	reqs []request // guarded by mu
}

// script starts a scripted server, closed when the test ends.
func script(t *testing.T, steps ...step) *scripted {
	t.Helper()
	s := &scripted{t: t, steps: steps}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *scripted) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.reqs)
	s.reqs = append(s.reqs, request{at: time.Now(), lastID: r.Header.Values("Last-Event-ID"), header: r.Header.Clone(), attempt: n})
	s.mu.Unlock()
	if n >= len(s.steps) {
		s.t.Errorf("request %d: the script has %d steps", n, len(s.steps))
		http.Error(w, "no more steps", http.StatusGone)
		return
	}
	s.steps[n](w, r)
}

// requests returns the requests so far.
func (s *scripted) requests() []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]request(nil), s.reqs...)
}

// lastIDs returns the Last-Event-ID of each request so far, "-" for none.
func (s *scripted) lastIDs() []string {
	var ids []string
	for _, r := range s.requests() {
		if r.lastID == nil {
			ids = append(ids, "-")
		} else {
			ids = append(ids, r.lastID...)
		}
	}
	return ids
}

// sends answers with a stream that carries body, then ends.
func sends(body string) step {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(body))
	}
}

// hangs answers with a stream that carries body, then stays silent until
// the client goes away, as a half-open connection does.
func hangs(body string) step {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(body))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}
}

// status answers with code, the given headers (name, value, ...) and body.
func status(code int, body string, header ...string) step {
	return func(w http.ResponseWriter, r *http.Request) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header()[header[i]] = []string{header[i+1]}
		}
		w.WriteHeader(code)
		w.Write([]byte(body))
	}
}

const closing = "event: close\ndata:\n\n"

// reconnection is one call of the WithOnReconnect function.
type reconnection struct {
	err   error
	delay time.Duration
}

// recorder records the calls of the WithOnReconnect function.
type recorder struct {
	mu    sync.Mutex
	calls []reconnection // guarded by mu
}

func (r *recorder) option() sseclient.Option {
	return sseclient.WithOnReconnect(func(err error, delay time.Duration) {
		r.mu.Lock()
		r.calls = append(r.calls, reconnection{err, delay})
		r.mu.Unlock()
	})
}

func (r *recorder) get() []reconnection {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]reconnection(nil), r.calls...)
}

// fast are options for tests: short delays, and the test server's client.
func fast(s *scripted, more ...sseclient.Option) []sseclient.Option {
	return append([]sseclient.Option{sseclient.WithHTTPClient(s.Client()), sseclient.WithBackoff(time.Millisecond, 5*time.Millisecond)}, more...)
}

// collect ranges over seq to its end, within patience, and returns its
// events and error, failing the test unless an error comes at most once,
// last.
func collect(t *testing.T, seq iter.Seq2[sseclient.Event, error]) ([]sseclient.Event, error) {
	t.Helper()
	var events []sseclient.Event
	var err error
	errs := 0
	for e, er := range seq {
		if errs > 0 {
			t.Fatalf("got %+v, %v after the error %v", e, er, err)
		}
		if er != nil {
			if e != (sseclient.Event{}) {
				t.Fatalf("event %+v with the error %v", e, er)
			}
			err, errs = er, errs+1
			continue
		}
		events = append(events, e)
	}
	return events, err
}

// bounded returns a context that ends after patience, or with the test.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	t.Cleanup(cancel)
	return ctx
}
