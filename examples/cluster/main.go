// Command cluster is the progress demo on two replicas that share the
// jobs' event streams through NATS JetStream, with
// github.com/rocketqueue/sse/ssejs: stop the replica that serves a job's
// stream, and the page reconnects to the other one and misses nothing.
//
// Run it from the repository's root and open the URL it prints:
//
//	go run -C examples ./cluster
//
// It starts in one process what a deployment runs on several machines:
//
//   - a NATS server with JetStream, embedded, its store in a temporary
//     directory (or -store);
//   - a worker, with its own NATS connection and [ssejs.Broker], that runs
//     the jobs and publishes their events;
//   - two replicas, "a" and "b": HTTP servers, each with its own NATS
//     connection and ssejs.Broker, serving the page, POST /jobs (handed to
//     the worker) and the jobs' event streams with [sse.Handler] and,
//     several jobs on one connection, [sse.MultiHandler];
//   - a proxy on -addr that sends each request to the next replica that is
//     up, as a load balancer would.
//
// The proxy also answers GET /cluster with the replicas' state and the
// replica that serves each job's stream, POST /cluster/{name}/stop, which
// stops a replica as a crash would (its connections cut, its NATS
// connection closed), and POST /cluster/{name}/start. The page shows the
// replicas, with a button for each.
//
// Flags:
//
//	-addr   address of the proxy (default localhost:8080)
//	-store  JetStream's store directory (default: a temporary one, removed
//	        at exit)
//	-step   duration of one step of a job (default 250ms)
//	-steps  number of steps of a job (default 30)
//
// On SIGINT or SIGTERM the replicas end their streams, the proxy, the jobs
// and the NATS server stop, and the program exits.
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

	"github.com/nats-io/nats-server/v2/server"
)

// shutdownTimeout bounds the wait for connections and jobs to end.
const shutdownTimeout = 5 * time.Second

// config is the demo's settings, from its flags.
type config struct {
	store string        // JetStream's store directory; "": a temporary one
	steps int           // steps in a job
	step  time.Duration // duration of one step
}

func main() {
	addr := flag.String("addr", "localhost:8080", "address of the proxy")
	var cfg config
	flag.StringVar(&cfg.store, "store", "", "JetStream's store directory (default: a temporary one, removed at exit)")
	flag.DurationVar(&cfg.step, "step", 250*time.Millisecond, "duration of one step of a job")
	flag.IntVar(&cfg.steps, "steps", 30, "number of steps of a job")
	flag.Parse()
	if cfg.step <= 0 || cfg.steps <= 0 || flag.NArg() > 0 {
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

// run serves the demo on addr until ctx ends, then shuts it all down.
func run(ctx context.Context, logger *slog.Logger, addr string, cfg config) error {
	c, err := startCluster(logger, cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		c.shutdown(context.Background())
		return err
	}
	srv := &http.Server{
		Handler:           c.proxy,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	// Listening first means that the demo is ready once this is printed.
	fmt.Printf("Listening on http://%s/\n", ln.Addr())

	var serveErr error
	select {
	case serveErr = <-served: // the listener failed
	case <-ctx.Done():
		logger.Info("shutting down")
	}
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	// The replicas first: they end their streams, which ends them through
	// the proxy too, and clients reconnect, to find nobody.
	err = c.stopReplicas(ctx)
	err = errors.Join(serveErr, err, srv.Shutdown(ctx), c.shutdown(ctx))
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// A cluster is the demo's NATS server, worker, replicas and proxy.
type cluster struct {
	nats     *server.Server // immutable
	tempDir  string         // immutable: the store to remove at the end, or ""
	worker   *worker        // immutable
	replicas []*replica     // immutable: "a" and "b"
	proxy    *proxy         // immutable
}

// startCluster starts the NATS server, the worker and two replicas behind
// a proxy. The proxy is not listening yet.
func startCluster(logger *slog.Logger, cfg config) (c *cluster, err error) {
	c = &cluster{}
	defer func() {
		if err != nil {
			c.shutdown(context.Background())
		}
	}()
	store := cfg.store
	if store == "" {
		if c.tempDir, err = os.MkdirTemp("", "sse-cluster-"); err != nil {
			return nil, err
		}
		store = c.tempDir
	}
	// A production cluster runs three NATS servers, and the streams with
	// three replicas (ssejs.WithReplicas): see the README's "Running several
	// replicas".
	c.nats, err = server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: store,
		NoSigs: true, NoLog: true,
	})
	if err != nil {
		return nil, err
	}
	c.nats.Start()
	if !c.nats.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("the NATS server did not start")
	}
	url := c.nats.ClientURL()

	jobsCtx, stopJobs := context.WithCancel(context.Background())
	if c.worker, err = startWorker(jobsCtx, stopJobs, logger, url, cfg); err != nil {
		stopJobs()
		return nil, err
	}
	for _, name := range []string{"a", "b"} {
		r := &replica{name: name, natsURL: url, addr: "127.0.0.1:0", runner: c.worker.runner, logger: logger.With("replica", name)}
		c.replicas = append(c.replicas, r)
		if err := r.start(); err != nil {
			return nil, fmt.Errorf("replica %s: %w", name, err)
		}
	}
	c.proxy = newProxy(c.replicas)
	return c, nil
}

// stopReplicas ends the replicas' streams and stops them.
func (c *cluster) stopReplicas(ctx context.Context) error {
	var err error
	for _, r := range c.replicas {
		err = errors.Join(err, r.shutdown(ctx))
	}
	return err
}

// shutdown stops what startCluster started: the replicas, if still up,
// the jobs and the worker, then the NATS server.
func (c *cluster) shutdown(ctx context.Context) error {
	err := c.stopReplicas(ctx)
	if c.proxy != nil {
		c.proxy.transport.CloseIdleConnections()
	}
	if c.worker != nil {
		err = errors.Join(err, c.worker.shutdown(ctx))
	}
	if c.nats != nil {
		c.nats.Shutdown()
		c.nats.WaitForShutdown()
	}
	if c.tempDir != "" {
		err = errors.Join(err, os.RemoveAll(c.tempDir))
	}
	return err
}
