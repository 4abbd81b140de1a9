// Command progress is a demo of github.com/rocketqueue/sse: a web page
// starts long-running jobs on the server and shows each job's progress
// live, streamed over Server-Sent Events.
//
// Run it from the repository's root and open the URL it prints:
//
//	go run -C examples ./progress
//
// Each click on "Start a job" sends POST /jobs. The server makes a random
// job ID, a key of an [sse.Broker] in [sse.FanOut] mode, and runs the job in
// a goroutine that publishes "progress" and "log" events into that key,
// then closes it. The page follows all of its jobs on one EventSource, on
// /jobs/events?job={id}&job={id}…, served by [sse.MultiHandler], with the
// library's browser module (/sse.js, [sse.ScriptHandler]); when it starts
// another job, it reconnects with the new list and the positions it has
// in the others. Each job alone is also served on /jobs/{id}/events, by
// [sse.Handler], until its "close" event ends the stream.
//
// Any number of tabs can watch one job: the page at /?job={id} (each job's
// "Watch in another tab" link) follows that job. In FanOut mode the broker
// keeps each job's events, so every stream of a job gets all of them, from
// the first, whenever it starts: while the job runs, it then gets the live
// events; after the job ended (for at least the retention time, 5 minutes),
// it gets the whole history and "close".
//
// It is set up as a server in production would be:
//
//   - only the jobs the server created are streamed ([sse.WithKnownKeysOnly]):
//     POST /jobs creates the job's key with [sse.Broker.Open] before it
//     answers, so that the stream is served even before the job's first
//     event, and a request for any other ID gets 404 and creates nothing;
//   - GET /metrics serves Prometheus metrics: what the handler serves
//     (streams, resumes, events, refusals: an [sse.Metrics]) and the
//     broker's figures, through the nested module
//     github.com/rocketqueue/sse/sseprom, and the Go runtime's;
//   - the broker and the handler log to stderr, with log/slog
//     ([sse.WithLogger]);
//   - on SIGINT or SIGTERM, [sse.Graceful] ends the open streams, each with
//     a random "retry" and no "close", so that clients come back later
//     (perhaps to another replica), stops the server, then the broker; the
//     running jobs stop, and the program exits.
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
// The terminal client in ./watch follows a job too.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/examples/internal/jobs"
	"github.com/rocketqueue/sse/examples/internal/page"
	"github.com/rocketqueue/sse/sseprom"
)

// shutdownTimeout bounds the wait for connections and jobs to end.
const shutdownTimeout = 5 * time.Second

// config is the demo's settings, from its flags.
type config struct {
	steps   int           // steps in a job
	step    time.Duration // duration of one step
	history int           // events each job's history holds; 0: the library's default
}

func main() {
	addr := flag.String("addr", "localhost:8080", "address to listen on")
	var cfg config
	flag.DurationVar(&cfg.step, "step", 250*time.Millisecond, "duration of one step of a job")
	flag.IntVar(&cfg.steps, "steps", 30, "number of steps of a job")
	flag.IntVar(&cfg.history, "history", 0, "events each job's history holds (0: the library's default)")
	flag.Parse()
	if cfg.step <= 0 || cfg.steps <= 0 || cfg.history < 0 || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, *addr, cfg); err != nil {
		logger.Error("exiting", "error", err)
		os.Exit(1)
	}
}

// run serves the demo on addr until ctx ends, then shuts down gracefully.
func run(ctx context.Context, logger *slog.Logger, addr string, cfg config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	// Listening first means that the server is ready once this is printed.
	fmt.Printf("Listening on http://%s/\n", ln.Addr())

	jobsCtx, stopJobs := context.WithCancel(context.Background())
	defer stopJobs()
	d := newDemo(jobsCtx, logger, cfg)
	srv := &http.Server{
		Handler:           d.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	// Called before Serve: shutdown ends the streams (a stream never ends
	// by itself, and http.Server.Shutdown waits for every handler), stops
	// the server, then the broker.
	shutdown := sse.Graceful(srv, d.broker)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	var serveErr error
	select {
	case serveErr = <-served: // the listener failed
	case <-ctx.Done():
		logger.Info("shutting down")
	}

	stopJobs()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = shutdown(ctx)
	d.runner.Wait()
	return errors.Join(serveErr, err)
}

// A demo is the server's side of the demo.
type demo struct {
	broker  *sse.Broker[jobs.ID]
	runner  *jobs.Runner
	handler http.Handler // the page, POST /jobs, the streams and /metrics
}

// newDemo returns the demo's broker, its jobs, which stop early when ctx
// ends, and its HTTP handler.
func newDemo(ctx context.Context, logger *slog.Logger, cfg config) *demo {
	// In FanOut mode each job's key keeps a history of its events, and
	// every stream of the job, from any number of tabs, reads all of it
	// from its own position: none takes events from another, and a tab
	// that opens a job late still gets its first events.
	opts := []sse.Option{sse.WithMode(sse.FanOut), sse.WithLogger(logger)}
	if cfg.history > 0 {
		opts = append(opts, sse.WithHistory(cfg.history, sse.DefaultReplayBytes, sse.DefaultHistoryAge))
	}
	broker := sse.New[jobs.ID](opts...)
	runner := jobs.NewRunner(ctx, logger, broker, cfg.steps, cfg.step)

	// The handler counts what it serves in metrics; the registry exports
	// it with the broker's figures, as progress_streams_open,
	// progress_broker_keys{broker="jobs"} and so on.
	var metrics sse.Metrics
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		sseprom.New("progress", &metrics, sseprom.Broker("jobs", broker)),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(page.FS))
	mux.HandleFunc("POST /jobs", runner.Start)
	mux.Handle("GET /jobs/{id}/events", sse.Handler(broker, jobs.Key,
		sse.WithKnownKeysOnly(), // a made-up or forgotten job gets 404
		sse.WithMetrics(&metrics),
		sse.WithLogger(logger),
	))
	// The page follows all of its jobs on one connection: a browser opens
	// at most six per site. One job, or any of them made-up or forgotten,
	// gets what the route above gives it; the connection counts as one
	// stream in the metrics.
	mux.Handle("GET /jobs/events", sse.MultiHandler(broker, jobs.List,
		sse.WithKnownKeysOnly(),
		sse.WithMetrics(&metrics),
		sse.WithLogger(logger),
	))
	mux.Handle("GET /sse.js", sse.ScriptHandler()) // the browser module the page imports
	// A real server would serve its metrics where only Prometheus can
	// reach them: on another port, or behind authentication.
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return &demo{broker: broker, runner: runner, handler: mux}
}
