package sse

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"time"
)

// Graceful prepares srv, in one call before Serve, so that the function it
// returns shuts everything down in order:
//
//  1. every event stream that srv's handlers serve ends, each with a
//     "retry" field drawn at random between [ShutdownRetryMin] and
//     [ShutdownRetryMax], so that thousands of clients do not come back at
//     once, and without "close", so that they come back (perhaps to
//     another replica);
//  2. srv stops, as [http.Server.Shutdown] does: it closes its listeners
//     and waits for every handler to return;
//  3. the brokers shut down, in order, closing their keys once no client
//     can see it.
//
// Each step is bounded by the context given to the returned function, and
// it returns the errors of all steps, joined. Graceful keeps srv's
// BaseContext, if it has one, as the parent of what it installs. Calling
// srv.Shutdown directly instead ends the streams too, but leaves the
// brokers running. Use Graceful once per server.
func Graceful(srv *http.Server, brokers ...Stopper) (shutdown func(context.Context) error) {
	var mu sync.Mutex
	var stops []context.CancelCauseFunc // guarded by mu: one per listener
	stopping := false                   // guarded by mu
	base := srv.BaseContext
	srv.BaseContext = func(l net.Listener) context.Context {
		parent := context.Background()
		if base != nil {
			parent = base(l)
		}
		ctx, stop := context.WithCancelCause(parent)
		mu.Lock()
		defer mu.Unlock()
		if stopping {
			stop(errServerShutdown)
		}
		stops = append(stops, stop)
		return ctx
	}
	srv.RegisterOnShutdown(func() {
		mu.Lock()
		defer mu.Unlock()
		stopping = true
		for _, stop := range stops {
			stop(errServerShutdown)
		}
	})
	return func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		for _, b := range brokers {
			err = errors.Join(err, b.Shutdown(ctx))
		}
		return err
	}
}

// errServerShutdown is the cause with which Graceful cancels the contexts
// of a server's requests: streams that end for it tell their clients when
// to come back.
var errServerShutdown = errors.New("sse: the server is shutting down")

// ShutdownRetryMin and ShutdownRetryMax bound the "retry" field of the
// streams that [Graceful] ends: each client waits a random time between
// them before it reconnects.
const (
	ShutdownRetryMin = time.Second
	ShutdownRetryMax = 10 * time.Second
)

// shutdownRetry returns a reconnection delay for a stream ended by the
// server's shutdown.
func shutdownRetry() time.Duration {
	return ShutdownRetryMin + rand.N(ShutdownRetryMax-ShutdownRetryMin)
}
