// Command progress is a demo of github.com/rocketqueue/sse: a web page
// starts long-running jobs on the server and shows each job's progress
// live, streamed over Server-Sent Events.
//
// Run it from the repository's root and open the URL it prints:
//
//	go run ./examples/progress
//
// Each click on "Start a job" sends POST /jobs. The server makes a random
// job ID, a key of an [sse.Broker] in [sse.FanOut] mode, and runs the job in
// a goroutine that publishes "progress" and "log" events into that key,
// then closes it. The page opens an EventSource on /jobs/{id}/events, served
// by [sse.Handler], and closes it on the "close" event that ends the stream.
//
// Any number of tabs can watch one job: the page at /?job={id} (each job's
// "Watch in another tab" link) follows that job. In FanOut mode the broker
// keeps each job's events, so every stream of a job gets all of them, from
// the first, whenever it starts: while the job runs, it then gets the live
// events; after the job ended (for at least the retention time, 5 minutes),
// it gets the whole history and "close".
//
// Flags:
//
//	-addr     address to listen on (default localhost:8080)
//	-step     duration of one step of a job (default 250ms)
//	-steps    number of steps of a job (default 30)
//	-history  events each job's history holds (default 0: the library's
//	          default); with fewer than a job's events, a tab that opens
//	          the job late is told of the events it missed
//
// On SIGINT or SIGTERM the server stops accepting connections, ends the open
// streams and the running jobs, and exits.
package main

import (
	"context"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rocketqueue/sse"
)

// static holds the page: plain HTML, CSS and JavaScript, with no build step.
//
//go:embed static
var static embed.FS

// shutdownTimeout bounds the wait for connections and jobs to end.
const shutdownTimeout = 5 * time.Second

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	step := flag.Duration("step", 250*time.Millisecond, "duration of one step of a job")
	steps := flag.Int("steps", 30, "number of steps of a job")
	history := flag.Int("history", 0, "events each job's history holds (0: the library's default)")
	flag.Parse()
	if *step <= 0 || *steps <= 0 || *history < 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *steps, *step, *history); err != nil {
		log.Fatal(err)
	}
}

// run serves the demo on addr until ctx ends, then shuts down gracefully.
// history bounds the events each job's history holds; 0 leaves the
// library's default.
func run(ctx context.Context, addr string, steps int, step time.Duration, history int) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// Listening first means that the server is ready once this is printed.
	fmt.Printf("Listening on http://%s/\n", ln.Addr())

	// Streams never end by themselves, and http.Server.Shutdown waits for
	// every handler: the handlers' context ends when Shutdown begins, so
	// that the streams end. The jobs stop with it.
	base, cancel := context.WithCancel(context.Background())
	defer cancel()

	broker := newBroker(history)
	jobs := newJobs(base, broker, steps, step)
	page, err := fs.Sub(static, "static")
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           jobs.routes(http.FileServerFS(page)),
		BaseContext:       func(net.Listener) context.Context { return base },
		ReadHeaderTimeout: 10 * time.Second,
	}
	srv.RegisterOnShutdown(cancel)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var serveErr error
	select {
	case serveErr = <-served: // the listener failed
	case <-ctx.Done():
		log.Print("shutting down")
	}

	ctx, stop := context.WithTimeout(context.Background(), shutdownTimeout)
	defer stop()
	err = srv.Shutdown(ctx)
	jobs.wait()
	// Every stream and every job has ended. In FanOut mode the broker has
	// no queue to drain: Shutdown closes the jobs' keys and stops at once.
	return errors.Join(serveErr, err, broker.Shutdown(ctx))
}

// newBroker returns the demo's broker. In FanOut mode each job's key keeps
// a history of its events, and every stream of the job, from any number of
// tabs, reads all of it from its own position: none takes events from
// another, and a tab that opens a job late still gets its first events.
// history, if not 0, bounds the events a history holds.
func newBroker(history int) *sse.Broker[jobID] {
	opts := []sse.Option{sse.WithMode(sse.FanOut)}
	if history > 0 {
		opts = append(opts, sse.WithHistory(history, sse.DefaultReplayBytes, sse.DefaultHistoryAge))
	}
	return sse.New[jobID](opts...)
}
