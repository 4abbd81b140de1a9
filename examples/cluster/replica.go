package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/examples/internal/jobs"
	"github.com/rocketqueue/sse/examples/internal/page"
	"github.com/rocketqueue/sse/ssejs"
)

// connect opens a NATS connection named name, and on it the broker of the
// jobs' keys: the worker and every replica make the same one, and share
// the keys through JetStream. In FanOut mode any number of streams, on any
// replica, read a job's events, each from its own position.
func connect(ctx context.Context, url, name string) (*nats.Conn, *ssejs.Broker[jobs.ID], error) {
	nc, err := nats.Connect(url, nats.Name(name))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err == nil {
		var b *ssejs.Broker[jobs.ID]
		b, err = ssejs.New[jobs.ID](ctx, js,
			ssejs.WithName("jobs"),
			ssejs.WithMode(sse.FanOut),
			ssejs.WithCodec[jobs.ID](idCodec{}),
		)
		if err == nil {
			return nc, b, nil
		}
	}
	nc.Close()
	return nil, nil, err
}

// idCodec gives a job ID's 16 bytes as its key in JetStream.
type idCodec struct{}

func (idCodec) Encode(id jobs.ID) ([]byte, error) { return id[:], nil }

func (idCodec) Decode(b []byte) (jobs.ID, error) {
	var id jobs.ID
	if len(b) != len(id) {
		return id, errors.New("not a job ID")
	}
	copy(id[:], b)
	return id, nil
}

// A worker runs the jobs. In a deployment it is a process of its own; here
// it has a NATS connection and a broker of its own.
type worker struct {
	nc       *nats.Conn             // immutable
	broker   *ssejs.Broker[jobs.ID] // immutable
	runner   *jobs.Runner           // immutable
	stopJobs context.CancelFunc     // immutable: ends the runner's context
}

// startWorker starts a worker whose jobs stop early when ctx ends, as
// stopJobs makes it.
func startWorker(ctx context.Context, stopJobs context.CancelFunc, logger *slog.Logger, url string, cfg config) (*worker, error) {
	setup, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, broker, err := connect(setup, url, "worker")
	if err != nil {
		return nil, err
	}
	runner := jobs.NewRunner(ctx, logger.With("role", "worker"), broker, cfg.steps, cfg.step)
	return &worker{nc: nc, broker: broker, runner: runner, stopJobs: stopJobs}, nil
}

// shutdown stops the jobs, then the broker and the connection.
func (w *worker) shutdown(ctx context.Context) error {
	w.stopJobs()
	w.runner.Wait()
	err := w.broker.Shutdown(ctx)
	w.nc.Close()
	return err
}

// A replica is one HTTP server of the jobs: the page, POST /jobs and the
// jobs' event streams, with a NATS connection and a broker of its own. It
// can be stopped and started again, on the same address.
type replica struct {
	name    string       // immutable
	natsURL string       // immutable
	runner  *jobs.Runner // immutable: the worker's, which runs the jobs POST /jobs starts
	logger  *slog.Logger // immutable

	mu     sync.Mutex
	addr   string                      // guarded by mu: where it listens; port 0 until it first does
	srv    *http.Server                // guarded by mu: nil while stopped
	stop   func(context.Context) error // guarded by mu: sse.Graceful's, for srv
	nc     *nats.Conn                  // guarded by mu
	broker *ssejs.Broker[jobs.ID]      // guarded by mu
}

// start starts the replica, if it is stopped.
func (r *replica) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.srv != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, broker, err := connect(ctx, r.natsURL, "replica "+r.name)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		broker.Shutdown(ctx)
		nc.Close()
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServerFS(page.FS))
	mux.HandleFunc("POST /jobs", r.runner.Start)
	mux.Handle("GET /jobs/{id}/events", sse.Handler(broker, jobs.Key,
		sse.WithKnownKeysOnly(), // a made-up or forgotten job gets 404
		sse.WithLogger(r.logger),
	))
	// The page's jobs, on one connection (see the progress demo).
	mux.Handle("GET /jobs/events", sse.MultiHandler(broker, jobs.List,
		sse.WithKnownKeysOnly(),
		sse.WithLogger(r.logger),
	))
	mux.Handle("GET /sse.js", sse.ScriptHandler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(r.logger.Handler(), slog.LevelWarn),
	}
	r.addr, r.srv, r.nc, r.broker = ln.Addr().String(), srv, nc, broker
	r.stop = sse.Graceful(srv, broker)
	go srv.Serve(ln)
	r.logger.Info("started", "addr", r.addr)
	return nil
}

// address returns where the replica listens, and false if it is stopped.
func (r *replica) address() (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr, r.srv != nil
}

// take marks the replica stopped and returns what it ran, for the caller
// to stop: start may start it again meanwhile, on the same address, once
// the old listener is closed.
func (r *replica) take() (*http.Server, func(context.Context) error, *nats.Conn, *ssejs.Broker[jobs.ID]) {
	r.mu.Lock()
	defer r.mu.Unlock()
	srv, stop, nc, broker := r.srv, r.stop, r.nc, r.broker
	r.srv, r.stop, r.nc, r.broker = nil, nil, nil, nil
	return srv, stop, nc, broker
}

// crash stops the replica as a crash would: its connections are cut, its
// clients get neither "close" nor a retry field, and reconnect.
func (r *replica) crash() {
	srv, _, nc, broker := r.take()
	if srv == nil {
		return
	}
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	broker.Shutdown(ctx)
	nc.Close()
	r.logger.Info("crashed")
}

// shutdown stops the replica gracefully: its streams end, with a retry
// field, and its clients reconnect, perhaps to the other replica.
func (r *replica) shutdown(ctx context.Context) error {
	srv, stop, nc, _ := r.take()
	if srv == nil {
		return nil
	}
	err := stop(ctx)
	nc.Close()
	return err
}
