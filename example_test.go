package sse_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssetest"
)

//readme:writer

// JobID names the queue of one job. Any comparable type can be a key.
type JobID string

// doLongProcess is the seed library's MyLongRunningProcess: it reports its
// progress into the job's queue, then closes the queue.
func doLongProcess(ctx context.Context, events *sse.Broker[JobID], job JobID) error {
	// Adding a single message to the queue.
	if err := events.Enqueue(ctx, job, "Starting process."); err != nil {
		return err
	}
	// Adding several messages at once: one batch, kept together.
	if err := events.Enqueue(ctx, job, "Message One", "Message Two", "Message Three"); err != nil {
		return err
	}
	// Closing the queue: the reader's range ends after the last message.
	return events.Close(ctx, job)
}

//readme:end

//readme:start

// startJob creates the job's key, then runs the job in the background.
// The key exists once startJob returns, so a request for the job's events
// finds it even before the first event: hand out the job's URL only then.
func startJob(ctx context.Context, events *sse.Broker[JobID], job JobID) error {
	if err := events.Open(ctx, job); err != nil {
		return err
	}
	// The job outlives the request that started it, and its cancellation.
	go doLongProcess(context.WithoutCancel(ctx), events, job)
	return nil
}

//readme:end

// A long-running process enqueues progress for its job's key and closes it;
// a reader ranges over the key's channel until the end. startJob creates the
// key before the job runs, so that a reader, in process or over SSE, finds
// it at once.
func Example() {
	//readme:reader
	ctx := context.Background()
	events := sse.New[JobID]()
	defer events.Shutdown(ctx)

	job := JobID("job-42")
	if err := startJob(ctx, events, job); err != nil {
		panic(err)
	}

	for ev := range events.Stream(job) {
		fmt.Println(ev.ID, ev.Data)
	}
	//readme:end
	// Output:
	// 1 Starting process.
	// 2 Message One
	// 3 Message Two
	// 4 Message Three
}

// Events enqueued before any reader wait for it; events with names become
// SSE events of that type.
func ExampleBroker_Publish() {
	ctx := context.Background()
	b := sse.New[int]()
	defer b.Shutdown(ctx)

	b.Publish(ctx, 7,
		sse.Event{Name: "progress", Data: "50"},
		sse.Event{Name: "progress", Data: "100"},
		sse.Event{Name: "result", Data: "line 1\nline 2"},
	)
	b.Close(ctx, 7)

	for ev := range b.Stream(7) {
		fmt.Printf("%d %s %q\n", ev.ID, ev.Name, ev.Data)
	}
	// Output:
	// 1 progress "50"
	// 2 progress "100"
	// 3 result "line 1\nline 2"
}

// Invalid events are refused in the caller, and nothing of the call is
// enqueued.
func ExampleErrInvalidEvent() {
	ctx := context.Background()
	b := sse.New[string]()
	defer b.Shutdown(ctx)

	err := b.Publish(ctx, "k", sse.Event{Data: "fine"}, sse.Event{Name: "two\nlines"})
	fmt.Println(errors.Is(err, sse.ErrInvalidEvent))
	fmt.Println(b.Stats().Enqueued)
	// Output:
	// true
	// 0
}

// A key closed before anything was enqueued ends a late reader's range at
// once, and later events for it are discarded.
func ExampleBroker_Close() {
	ctx := context.Background()
	b := sse.New[string]()
	defer b.Shutdown(ctx)

	b.Close(ctx, "cancelled-job")
	b.Enqueue(ctx, "cancelled-job", "too late")
	for range b.Stream("cancelled-job") {
		fmt.Println("never printed")
	}
	fmt.Printf("%+v\n", b.Stats())
	// Output:
	// {Keys:0 Closed:1 Pending:0 Enqueued:0 Discarded:1 Dropped:0 Replay:0}
}

// With a bound on each key's overflow, a reader that falls behind sees the
// newest events; the IDs show what it missed.
func ExampleWithMaxPending() {
	ctx := context.Background()
	b := sse.New[string](sse.WithBuffer(2), sse.WithMaxPending(2, sse.DropOldest))
	defer b.Shutdown(ctx)

	// One batch of 100 while nobody reads: 2 fit in the channel and the
	// overflow keeps the newest 2.
	batch := make([]string, 100)
	for i := range batch {
		batch[i] = fmt.Sprint("tick ", i+1)
	}
	b.Enqueue(ctx, "ticker", batch...)
	b.Close(ctx, "ticker")

	var last sse.Event
	n := 0
	for ev := range b.Stream("ticker") {
		last, n = ev, n+1
	}
	fmt.Println(n, "received, the last:", last.ID, last.Data)
	fmt.Println(b.Stats().Dropped, "dropped")
	// Output:
	// 4 received, the last: 100 tick 100
	// 96 dropped
}

// Shutdown lets readers drain until its context ends, then stops the broker.
func ExampleBroker_Shutdown() {
	b := sse.New[string]()
	b.Enqueue(context.Background(), "k", "queued before Shutdown")
	ch := b.Stream("k")

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	fmt.Println(b.Shutdown(ctx))
	for ev := range ch {
		fmt.Println(ev.Data)
	}
	fmt.Println(b.Enqueue(context.Background(), "k", "after"))
	// Output:
	// <nil>
	// queued before Shutdown
	// sse: broker shut down
}

// Handler streams a key's queue to browsers. Here it serves one job's events
// behind a router; a browser would read them with
// new EventSource("/jobs/job-42/events").
func ExampleHandler() {
	ctx := context.Background()
	events := sse.New[JobID]()
	defer events.Shutdown(ctx)

	//readme:handler
	mux := http.NewServeMux()
	mux.Handle("GET /jobs/{id}/events", sse.Handler(events,
		func(r *http.Request) (JobID, error) { return JobID(r.PathValue("id")), nil },
		sse.WithKnownKeysOnly(), // unknown jobs get 404
	))
	//readme:end
	srv := httptest.NewServer(mux)
	defer srv.Close()

	events.Publish(ctx, "job-42",
		sse.Event{Name: "progress", Data: "50"},
		sse.Event{Name: "progress", Data: "100"},
	)
	events.Close(ctx, "job-42")

	resp, err := http.Get(srv.URL + "/jobs/job-42/events")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	received, err := ssetest.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	for _, ev := range received {
		// An ID is "<epoch>-<event ID>": the epoch names this life of
		// the key, so that a client resuming with an ID of another life
		// (the key forgotten and created again, the server restarted) is
		// not taken for one of this life. It is random: print the rest.
		_, id, _ := strings.Cut(ev.ID, "-")
		fmt.Printf("id=%s event=%s data=%q\n", id, ev.Type, ev.Data)
	}
	// Output:
	// id=1 event=progress data="50"
	// id=2 event=progress data="100"
	// id=2 event=close data=""
}

// In FanOut mode every reader gets every event of a key: here a logger and
// a dashboard read the same build, each from the start of its history.
func ExampleWithMode() {
	ctx := context.Background()
	//readme:fanout
	events := sse.New[string](sse.WithMode(sse.FanOut))
	defer events.Shutdown(ctx)

	events.Publish(ctx, "build-7",
		sse.Event{Name: "log", Data: "compiling"},
		sse.Event{Name: "log", Data: "linking"},
	)
	events.Close(ctx, "build-7")

	for _, reader := range []string{"logger", "dashboard"} {
		for ev, err := range events.Events(ctx, "build-7") {
			if err != nil {
				panic(err)
			}
			fmt.Println(reader, ev.ID, ev.Data)
		}
	}
	//readme:end
	// Output:
	// logger 1 compiling
	// logger 2 linking
	// dashboard 1 compiling
	// dashboard 2 linking
}

// A FanOut reader that falls further behind than its key's history is told
// which events it missed, with a *GapError, then goes on with the oldest
// event held. Here the history holds 3 events, and the reader starts after
// event 2.
func ExampleGapError() {
	ctx := context.Background()
	events := sse.New[string](sse.WithMode(sse.FanOut), sse.WithHistory(3, 1<<20, 0))
	defer events.Shutdown(ctx)
	for i := 1; i <= 10; i++ {
		events.Enqueue(ctx, "ticker", strconv.Itoa(i))
	}
	events.Close(ctx, "ticker")

	for ev, err := range events.Events(ctx, "ticker", sse.After(2)) {
		var gap *sse.GapError
		if errors.As(err, &gap) {
			fmt.Printf("missed %d to %d: reload what they carried\n", gap.From, gap.To)
			continue
		}
		if err != nil {
			panic(err)
		}
		fmt.Println(ev.ID, ev.Data)
	}
	// Output:
	// missed 3 to 7: reload what they carried
	// 8 8
	// 9 9
	// 10 10
}

// tenantSource is a Source of one tenant's keys in a broker that all
// tenants share: it prefixes every key with the tenant's name, so that no
// tenant can read another's keys, whatever URL it asks for.
type tenantSource struct {
	broker *sse.Broker[string]
	tenant string
}

func (s tenantSource) Subscribe(ctx context.Context, key string, req sse.SubscribeRequest) (sse.Subscription, error) {
	return s.broker.Subscribe(ctx, s.tenant+"/"+key, req)
}

func (s tenantSource) Mode() sse.Mode { return s.broker.Mode() }

// A custom Source: Handler streams whatever implements Subscribe and Mode.
// Here each tenant's handler sees only its own keys of a shared broker.
func ExampleSource() {
	ctx := context.Background()
	events := sse.New[string](sse.WithMode(sse.FanOut))
	defer events.Shutdown(ctx)
	events.Enqueue(ctx, "acme/report", "acme's")
	events.Enqueue(ctx, "globex/report", "globex's")
	events.Close(ctx, "acme/report")
	events.Close(ctx, "globex/report")

	key := func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil }
	acme := httptest.NewServer(sse.Handler[string](tenantSource{events, "acme"}, key))
	defer acme.Close()

	resp, err := http.Get(acme.URL + "?key=report")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	received, err := ssetest.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	for _, ev := range received {
		fmt.Printf("event=%s data=%q\n", ev.Type, ev.Data)
	}
	// Output:
	// event= data="acme's"
	// event=close data=""
}

// WithTakeover(TakeoverAlways) lets every new request take a Queue key over
// from the connection that has it: the newest wins, even without a
// Last-Event-ID (the default gives such a request 409).
func ExampleWithTakeover() {
	ctx := context.Background()
	events := sse.New[string]()
	defer events.Shutdown(ctx)
	key := func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil }

	for _, policy := range []sse.Takeover{sse.TakeoverOnResume, sse.TakeoverAlways} {
		srv := httptest.NewServer(sse.Handler(events, key, sse.WithTakeover(policy)))
		first, err := http.Get(srv.URL + "?key=k")
		if err != nil {
			panic(err)
		}
		second, err := http.Get(srv.URL + "?key=k") // another tab, with no ID
		if err != nil {
			panic(err)
		}
		fmt.Printf("%s: the second request gets %d\n", map[sse.Takeover]string{sse.TakeoverOnResume: "TakeoverOnResume", sse.TakeoverAlways: "TakeoverAlways"}[policy], second.StatusCode)
		second.Body.Close()
		first.Body.Close()
		srv.Close()
	}
	// Output:
	// TakeoverOnResume: the second request gets 409
	// TakeoverAlways: the second request gets 200
}
