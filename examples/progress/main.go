// Command progress is a demo of github.com/rocketqueue/sse: a web page
// starts long-running jobs on the server and shows each job's progress
// live, streamed over Server-Sent Events.
//
// Run it from the repository's root and open the URL it prints:
//
//	go run ./examples/progress
//
// Each click on "Start a job" sends POST /jobs. The server makes a random
// job ID, the key of the job's queue in an [sse.Broker], and runs the job in
// a goroutine that publishes "progress" and "log" events into that queue,
// then closes it. The page opens an EventSource on /jobs/{id}/events, served
// by [sse.Handler], and closes it on the "close" event that ends the stream.
//
// Flags:
//
//	-addr   address to listen on (default localhost:8080)
//	-step   duration of one step of a job (default 250ms)
//	-steps  number of steps of a job (default 30)
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
	flag.Parse()
	if *step <= 0 || *steps <= 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *steps, *step); err != nil {
		log.Fatal(err)
	}
}

// run serves the demo on addr until ctx ends, then shuts down gracefully.
func run(ctx context.Context, addr string, steps int, step time.Duration) error {
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

	broker := sse.New[jobID]()
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
	// Every stream has ended, so nobody will read what is left in the
	// queues. Given time, Shutdown would wait for readers to drain it until
	// its context ends: an ended context makes it drop the rest at once.
	ended, end := context.WithCancel(context.Background())
	end()
	broker.Shutdown(ended) // its error only says that events were dropped
	return errors.Join(serveErr, err)
}
