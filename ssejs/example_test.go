package ssejs_test

import (
	"bufio"
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// embedded starts a NATS server with JetStream in process, its store in a
// temporary directory, and returns its URL and a function that stops it.
// A deployment runs nats-server -js instead (see the package
// documentation).
func embedded() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "ssejs-example")
	if err != nil {
		log.Fatal(err)
	}
	s, err := server.NewServer(&server.Options{JetStream: true, StoreDir: dir, Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true})
	if err != nil {
		log.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		log.Fatal("NATS did not start")
	}
	return s.ClientURL(), func() {
		s.Shutdown()
		s.WaitForShutdown()
		os.RemoveAll(dir)
	}
}

// Two processes share a key: one publishes, the other reads. Here they
// are two connections of one program.
func Example() {
	url, stop := embedded()
	defer stop()
	ctx := context.Background()

	// The worker process: it publishes a job's progress.
	wc, _ := nats.Connect(url)
	defer wc.Close()
	wjs, _ := jetstream.New(wc)
	worker, err := ssejs.New[string](ctx, wjs, ssejs.WithMode(sse.FanOut))
	if err != nil {
		log.Fatal(err)
	}
	defer worker.Shutdown(ctx)
	worker.Enqueue(ctx, "job-42", "Starting.")
	worker.Publish(ctx, "job-42", sse.Event{Name: "progress", Data: "50%"}, sse.Event{Name: "progress", Data: "100%"})
	worker.Close(ctx, "job-42")

	// A web replica: it reads the same key, from the start.
	rc, _ := nats.Connect(url)
	defer rc.Close()
	rjs, _ := jetstream.New(rc)
	replica, err := ssejs.New[string](ctx, rjs, ssejs.WithMode(sse.FanOut))
	if err != nil {
		log.Fatal(err)
	}
	defer replica.Shutdown(ctx)
	for ev, err := range replica.Events(ctx, "job-42") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.ID, ev.Name, ev.Data)
	}
	// Output:
	// 1  Starting.
	// 2 progress 50%
	// 3 progress 100%
}

// sse.Handler serves the broker as it serves an sse.Broker: any replica
// serves any key.
func ExampleBroker_Subscribe() {
	url, stop := embedded()
	defer stop()
	ctx := context.Background()
	nc, _ := nats.Connect(url)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	b, err := ssejs.New[string](ctx, js) // Queue mode: each event read once
	if err != nil {
		log.Fatal(err)
	}
	defer b.Shutdown(ctx)

	srv := httptest.NewServer(sse.Handler(b, func(r *http.Request) (string, error) {
		return r.URL.Query().Get("job"), nil
	}))
	defer srv.Close()

	b.Enqueue(ctx, "job-7", "one", "two")
	b.Close(ctx, "job-7")

	resp, err := http.Get(srv.URL + "/?job=job-7")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data:") || strings.HasPrefix(line, "event:") {
			fmt.Println(line)
		}
	}
	// Output:
	// data: one
	// data: two
	// event: close
	// data:
}

// A call that failed with an unknown outcome is retried safely with an
// idempotency key: its events are stored once.
func ExampleWithIdempotencyKey() {
	url, stop := embedded()
	defer stop()
	ctx := context.Background()
	nc, _ := nats.Connect(url)
	defer nc.Close()
	js, _ := jetstream.New(nc)
	b, err := ssejs.New[int](ctx, js, ssejs.WithMode(sse.FanOut))
	if err != nil {
		log.Fatal(err)
	}
	defer b.Shutdown(ctx)

	idem := ssejs.WithIdempotencyKey(ctx, "invoice-1001-paid")
	for range 3 { // as a caller retrying after timeouts would
		if err := b.Enqueue(idem, 1001, "paid"); err != nil {
			continue
		}
	}
	b.Close(ctx, 1001)
	for ev := range b.Events(ctx, 1001) {
		fmt.Println(ev.ID, ev.Data)
	}
	// Output:
	// 1 paid
}

// A web replica as deployed: a NATS connection that reconnects for ever,
// the shared keys, and the same handler as with an in-process broker.
// Every replica runs the same code; a worker process only publishes.
func Example_replica() {
	url, stop := embedded()
	defer stop()
	ctx := context.Background()
	//readme:replica
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	jobs, err := ssejs.New[string](ctx, js,
		ssejs.WithMode(sse.FanOut), // every tab, on every replica, gets every event
		ssejs.WithReplicas(1),      // 3 on a three-node NATS cluster
	)
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /jobs/{id}/events", sse.Handler(jobs, func(r *http.Request) (string, error) {
		return r.PathValue("id"), nil
	}))
	srv := &http.Server{Handler: mux}
	shutdown := sse.Graceful(srv, jobs) // on SIGTERM: shutdown(ctx)
	//readme:end
	defer shutdown(ctx)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go srv.Serve(ln)

	jobs.Enqueue(ctx, "42", "Starting.")
	jobs.Close(ctx, "42")
	resp, err := http.Get("http://" + ln.Addr().String() + "/jobs/42/events")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data:") || strings.HasPrefix(line, "event:") {
			fmt.Println(line)
		}
	}
	// Output:
	// data: Starting.
	// event: close
	// data:
}
