package sse_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/conformance"
)

// TestChecker runs the conformance checker on the in-process Broker: its
// regression seeds, then fresh rounds for a bounded time (-check.time,
// -check.seed; see the conformance package). The broker is not durable:
// its one fault is a restart (Shutdown, sometimes with a deadline too
// short to drain, then a new broker), which loses every key's life; the
// checker itself cuts connections and stalls readers and clients. In
// FanOut rounds its multi-key readers include EventsOf ranges, besides
// the clients that follow several keys through MultiHandler.
func TestChecker(t *testing.T) {
	if testing.Short() {
		t.Skip("the checker runs for a while")
	}
	conformance.Check(t, BrokerBackend())
}

// BrokerBackend is the in-process Broker as the checker sees it.
func BrokerBackend() conformance.Backend {
	return conformance.Backend{
		Name: "broker",
		Caps: conformance.Caps{Overflows: []conformance.Overflow{
			{Policy: sse.DropOldest, Max: 8, Buffer: 2},
			{Policy: sse.DropNewest, Max: 8, Buffer: 2},
			{Policy: sse.Block, Max: 16, Buffer: 4},
		}},
		Start: startBroker,
	}
}

// brokerOptions are the options of a round's broker.
func brokerOptions(s conformance.Setup) []sse.Option {
	opts := []sse.Option{sse.WithMode(s.Mode), sse.WithMaxEventSize(s.MaxEventSize)}
	if s.Mode == sse.Queue && s.Overflow.Policy != 0 {
		opts = append(opts, sse.WithMaxPending(s.Overflow.Max, s.Overflow.Policy), sse.WithBuffer(s.Overflow.Buffer))
	}
	if s.Retain > 0 {
		if s.Mode == sse.FanOut {
			opts = append(opts, sse.WithHistory(s.Retain, 64<<20, 0))
		} else {
			opts = append(opts, sse.WithReplay(s.Retain, 64<<20))
		}
	}
	return opts
}

func startBroker(t testing.TB, s conformance.Setup) *conformance.Deployment {
	var mu sync.Mutex
	b := sse.New[string](brokerOptions(s)...)
	current := func() *sse.Broker[string] {
		mu.Lock()
		defer mu.Unlock()
		return b
	}
	return &conformance.Deployment{
		Procs: 1,
		Impl: func(int) conformance.Impl[string] {
			b := current()
			return conformance.Impl[string]{Publisher: b, Reader: b, Source: b}
		},
		Faults: []conformance.Fault{{
			// A restart: Shutdown closes every key and lets readers drain
			// until its deadline (none, 50 ms or 2 s: a short one cuts
			// streams short), then a new broker, with new epochs.
			Name:  "restart",
			Loses: conformance.LosesAll,
			Inject: func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
				d := []time.Duration{0, 50 * time.Millisecond, 2 * time.Second}[a.Rand.IntN(3)]
				sctx, cancel := context.WithTimeout(ctx, d)
				defer cancel()
				current().Shutdown(sctx) // an error says events were dropped: not durable
				mu.Lock()
				b = sse.New[string](brokerOptions(s)...)
				mu.Unlock()
				return nil, nil
			},
		}},
		Stop: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			current().Shutdown(ctx)
		},
	}
}
