package conformance

import (
	"context"
	"fmt"
	"io"
	"iter"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

// A mutation is a fault planted in a correct implementation, which the
// checker must find every time.
type mutation int

const (
	dropOne    mutation = iota // one event never reaches its reader
	dupOne                     // one event is handed twice
	reorderTwo                 // two events are handed in the wrong order
	closeEarly                 // a range ends as finished (close) before the last event
)

func (m mutation) String() string {
	return [...]string{"drop", "duplicate", "reorder", "close early"}[m]
}

// mutant wraps the root broker: each in-process range (path "reader") or
// each connection's subscription (path "source") plants its mutation once,
// at its third event, where the planted fault can be seen (a later event
// exists to show a skip, a reorder or an early end).
type mutant struct {
	b      *sse.Broker[string]
	m      mutation
	source bool // plant in Subscribe's subscriptions, else in Events
	fired  atomic.Int64
}

func (x *mutant) Enqueue(ctx context.Context, key string, data ...string) error {
	return x.b.Enqueue(ctx, key, data...)
}
func (x *mutant) Publish(ctx context.Context, key string, evs ...sse.Event) error {
	return x.b.Publish(ctx, key, evs...)
}
func (x *mutant) Close(ctx context.Context, key string) error { return x.b.Close(ctx, key) }
func (x *mutant) Open(ctx context.Context, key string) error  { return x.b.Open(ctx, key) }
func (x *mutant) Mode() sse.Mode                              { return x.b.Mode() }
func (x *mutant) SaveCursor(ctx context.Context, c sse.Cursor[string]) (string, error) {
	return x.b.SaveCursor(ctx, c)
}
func (x *mutant) LoadCursor(ctx context.Context, name string) (sse.Cursor[string], error) {
	return x.b.LoadCursor(ctx, name)
}
func (x *mutant) Newest(ctx context.Context, key string) (string, uint64, error) {
	return x.b.Newest(ctx, key)
}
func (x *mutant) impl() Impl[string]                 { return Impl[string]{Publisher: x, Reader: x, Source: x} }
func (x *mutant) firedCount() int64                  { return x.fired.Load() }
func (x *mutant) Shutdown(ctx context.Context) error { return x.b.Shutdown(ctx) }

func (x *mutant) Events(ctx context.Context, key string, from ...sse.ReadOption) iter.Seq2[sse.Event, error] {
	inner := x.b.Events(ctx, key, from...)
	if x.source {
		return inner
	}
	return func(yield func(sse.Event, error) bool) {
		next, stop := iter.Pull2(inner)
		defer stop()
		n := 0
		for {
			ev, err, ok := next()
			if !ok {
				return
			}
			if err != nil {
				if !yield(ev, err) {
					return
				}
				continue
			}
			n++
			if n != 3 {
				if !yield(ev, nil) {
					return
				}
				continue
			}
			if x.m == dupOne {
				x.fired.Add(1)
				for range 2 { // handed twice
					if !yield(ev, nil) {
						return
					}
				}
				continue
			}
			// The next event shows the fault.
			ev4, err4, ok4 := next()
			switch {
			case ok4 && err4 == nil:
				x.fired.Add(1)
				switch x.m {
				case dropOne:
					if !yield(ev4, nil) {
						return
					}
				case reorderTwo:
					if !yield(ev4, nil) || !yield(ev, nil) {
						return
					}
				case closeEarly:
					yield(ev, nil)
					return // as if the key were finished: ev4 is gone
				}
			case !ok4 && x.m != reorderTwo:
				// The range finished after ev: end without it.
				x.fired.Add(1)
				return
			default:
				if !yield(ev, nil) || !ok4 || !yield(ev4, err4) {
					return
				}
			}
		}
	}
}

func (x *mutant) Subscribe(ctx context.Context, key string, req sse.SubscribeRequest) (sse.Subscription, error) {
	sub, err := x.b.Subscribe(ctx, key, req)
	if err != nil || !x.source {
		return sub, err
	}
	return &mutSub{Subscription: sub, x: x}, nil
}

// mutSub plants the mutation in the first batch of three events or more.
type mutSub struct {
	sse.Subscription
	x    *mutant
	done bool
}

func (s *mutSub) Next(ctx context.Context, buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	evs, gap, err := s.Subscription.Next(ctx, buf, tick, limit)
	return s.mutate(evs, gap, err)
}

// Poll plants the mutation as Next does: a multi-key stream reads its
// keys with Poll.
func (s *mutSub) Poll(ctx context.Context, buf []sse.Event, limit int, wake func()) ([]sse.Event, sse.Gap, error) {
	evs, gap, err := s.Subscription.Poll(ctx, buf, limit, wake)
	return s.mutate(evs, gap, err)
}

func (s *mutSub) mutate(evs []sse.Event, gap sse.Gap, err error) ([]sse.Event, sse.Gap, error) {
	if s.done || len(evs) < 3 {
		return evs, gap, err
	}
	s.done = true
	s.x.fired.Add(1)
	switch s.x.m {
	case dropOne:
		evs = append(evs[:1], evs[2:]...)
	case dupOne:
		evs = append(evs[:2], evs[1:]...)
	case reorderTwo:
		evs[1], evs[2] = evs[2], evs[1]
	case closeEarly:
		return evs[:2], gap, io.EOF
	}
	return evs, gap, err
}

// mutantBackend is the root broker with a mutation planted.
func mutantBackend(m mutation, source bool, fired *atomic.Int64) Backend {
	return Backend{
		Name: "mutant",
		Start: func(t testing.TB, s Setup) *Deployment {
			opts := []sse.Option{sse.WithMode(s.Mode), sse.WithMaxEventSize(s.MaxEventSize)}
			if s.Retain > 0 {
				if s.Mode == sse.FanOut {
					opts = append(opts, sse.WithHistory(s.Retain, 64<<20, 0))
				} else {
					opts = append(opts, sse.WithReplay(s.Retain, 64<<20))
				}
			}
			x := &mutant{b: sse.New[string](opts...), m: m, source: source}
			return &Deployment{
				Procs: 1,
				Impl:  func(int) Impl[string] { return x.impl() },
				Stop: func() {
					fired.Add(x.firedCount())
					// A mutation may leave events queued: do not wait for
					// them to drain.
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					x.Shutdown(ctx)
				},
			}
		},
	}
}

// TestCheckerCatchesMutations plants each mutation, in in-process ranges
// and in the connections' subscriptions, in both modes, and expects the
// checker to report it in every round where it was planted.
func TestCheckerCatchesMutations(t *testing.T) {
	seeds := []uint64{1}
	if os.Getenv("CI") != "" {
		seeds = []uint64{1, 2, 3}
	}
	for _, m := range []mutation{dropOne, dupOne, reorderTwo, closeEarly} {
		for _, path := range []string{"reader", "source"} {
			for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
				t.Run(fmt.Sprintf("%s/%s/%s", m, path, mode), func(t *testing.T) {
					for _, seed := range seeds {
						var fired atomic.Int64
						b := mutantBackend(m, path == "source", &fired)
						rep := CheckSeed(t, b, seedFor(seed, mode), Options{
							Ops:      600 * time.Millisecond,
							NoFaults: true,
							tweak: func(p *plan) {
								p.cutPct = 0 // a cut makes the source send again what a mutation hid
								p.maxClients = max(p.maxClients, 3)
								p.maxReaders = max(p.maxReaders, 3)
							},
						})
						if fired.Load() == 0 {
							t.Logf("seed %d: the mutation never fired (%s)", seed, rep.Stats)
							continue
						}
						if len(rep.Violations) == 0 {
							t.Errorf("seed %d (%s): %s planted %d times, not detected (%s)", seed, rep.Setup, m, fired.Load(), rep.Stats)
							continue
						}
						var rules []string
						for _, v := range rep.Violations {
							rules = append(rules, v.Rule)
						}
						t.Logf("seed %d: planted %d times, found: %s", seed, fired.Load(), strings.Join(rules, ", "))
						if *flagV {
							t.Logf("%s\n%s", rep.Violations, strings.Join(rep.Traces, "\n"))
						}
					}
				})
			}
		}
	}
}

// seedFor returns a seed whose round runs in the given mode.
func seedFor(n uint64, mode sse.Mode) uint64 {
	for s := n * 1000; ; s++ {
		if setupOf(s, Caps{}).Mode == mode {
			return s
		}
	}
}
