// Package jobs is the demos' pretend work: a job publishes its progress
// into its key, step by step, then closes the key. The progress demo keeps
// the keys in an in-process [sse.Broker], the cluster demo in NATS
// JetStream; the code here is the same for both, written against [Keys].
package jobs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/rocketqueue/sse"
)

// ID names one job and its key: 16 random bytes, written in URLs as 32
// lowercase hex digits. Nobody can guess another user's job, but whoever
// has its link can watch it.
type ID [16]byte

// newID returns a random job ID.
func newID() ID {
	var id ID
	rand.Read(id[:]) // never fails: crypto/rand crashes the program instead
	return id
}

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the canonical form of a job ID, as String writes it.
func ParseID(s string) (ID, bool) {
	var id ID
	if len(s) != hex.EncodedLen(len(id)) {
		return id, false
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, false
	}
	return id, s == id.String() // one URL per job: no upper-case digits
}

// statusError is an error that carries the HTTP status to answer with:
// [sse.Handler] uses its StatusCode method.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string   { return e.msg }
func (e *statusError) StatusCode() int { return e.code }

var errMalformedID = &statusError{http.StatusBadRequest, "malformed job ID"}

// Keys is where jobs publish: an [*sse.Broker], or a broker shared by
// several servers. Open creates a key before its first event.
type Keys interface {
	sse.Publisher[ID]
	Open(ctx context.Context, key ID) error
}

// A Runner starts jobs and publishes their progress. Its methods are safe
// for concurrent use.
type Runner struct {
	keys   Keys            // immutable
	steps  int             // immutable: steps in a job
	step   time.Duration   // immutable: duration of one step
	ctx    context.Context // immutable: ends the running jobs early
	logger *slog.Logger    // immutable
	wg     sync.WaitGroup  // running jobs

	mu       sync.Mutex
	stopping bool // guarded by mu: Wait has begun, start no more jobs
}

// NewRunner returns a Runner whose jobs have steps steps of the given
// duration and publish into keys. They stop early when ctx ends.
func NewRunner(ctx context.Context, logger *slog.Logger, keys Keys, steps int, step time.Duration) *Runner {
	return &Runner{keys: keys, steps: steps, step: step, ctx: ctx, logger: logger}
}

// Start handles POST /jobs: it starts a job and answers 201 Created with the
// job's ID and the URL of its event stream.
func (j *Runner) Start(w http.ResponseWriter, r *http.Request) {
	id := newID()
	j.mu.Lock()
	if j.stopping {
		j.mu.Unlock()
		http.Error(w, "the server is shutting down", http.StatusServiceUnavailable)
		return
	}
	j.wg.Add(1)
	j.mu.Unlock()
	// Open creates the job's key before its first event, and returns once
	// the broker holds it: the handler, which serves only the keys the
	// server created, streams the job as soon as the client has its URL.
	if err := j.keys.Open(r.Context(), id); err != nil {
		j.wg.Done()
		j.logger.Error("cannot start a job", "job", id.String(), "error", err)
		http.Error(w, "cannot start a job now", http.StatusServiceUnavailable)
		return
	}
	go func() {
		defer j.wg.Done()
		j.run(id)
	}()

	events := "/jobs/" + id.String() + "/events"
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", events)
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]string{"id": id.String(), "events": events})
}

// Key is the key function of the events handler, for a route with the
// wildcard {id}: 400 for a malformed ID.
func Key(r *http.Request) (ID, error) {
	id, ok := ParseID(r.PathValue("id"))
	if !ok {
		return id, errMalformedID
	}
	return id, nil
}

// List is the key function of the multi-key events handler,
// [sse.MultiHandler], for GET /jobs/events?job=<id>&job=<id>…: the jobs the
// query names, in its order (the page reads each event's job from its
// position in that list); 400 for a malformed ID. A real server would also
// check here that the client may read each job (see the README's
// "Authorising streams").
func List(r *http.Request) ([]ID, error) {
	q := r.URL.Query()["job"]
	ids := make([]ID, len(q))
	for i, s := range q {
		id, ok := ParseID(s)
		if !ok {
			return nil, errMalformedID
		}
		ids[i] = id
	}
	return ids, nil
}

// tasks are what the steps of a job pretend to do.
var tasks = []string{
	"fetching records", "validating rows", "resizing images", "computing totals",
	"writing the report", "compressing output", "uploading results",
}

// run is one job: it logs that it was queued and started, then every step
// it publishes its progress (an event "progress" with the percentage done)
// and a line of log (an event "log"), then it closes the job's key. It
// stops early, leaving the key open, when the server shuts down.
func (j *Runner) run(id ID) {
	ctx := j.ctx
	err := j.keys.Publish(ctx, id,
		sse.Event{Name: "log", Data: "Queued."},
		sse.Event{Name: "log", Data: fmt.Sprintf("Started: %d steps.", j.steps)},
	)
	tick := time.NewTicker(j.step)
	defer tick.Stop()
	for i := 1; err == nil && i <= j.steps; i++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
		err = j.keys.Publish(ctx, id,
			sse.Event{Name: "progress", Data: strconv.Itoa(i * 100 / j.steps)},
			sse.Event{Name: "log", Data: fmt.Sprintf("Step %d of %d: %s.", i, j.steps, tasks[(i-1)%len(tasks)])},
		)
	}
	if err == nil {
		err = j.keys.Publish(ctx, id, sse.Event{Name: "log", Data: "Finished."})
	}
	if err == nil {
		err = j.keys.Close(ctx, id)
	}
	if err != nil && ctx.Err() == nil {
		j.logger.Error("job failed", "job", id.String(), "error", err)
	}
}

// Wait starts no more jobs and waits for the running ones to return. End
// their context first.
func (j *Runner) Wait() {
	j.mu.Lock()
	j.stopping = true
	j.mu.Unlock()
	j.wg.Wait()
}
