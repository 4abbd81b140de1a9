package ssejs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// poller is the readiness half of sse.Subscription (POLL.md), which both
// of ssejs's subscriptions implement.
type poller interface {
	Poll(ctx context.Context, buf []sse.Event, limit int, wake func()) ([]sse.Event, sse.Gap, error)
}

// A wake is one Poll's wake function: it counts its calls and signals c.
type wake struct {
	calls atomic.Int32
	c     chan struct{}
}

func newWake() *wake { return &wake{c: make(chan struct{}, 1)} }

func (w *wake) f() {
	w.calls.Add(1)
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// wait waits, within d, for w's call; it fails the test if none comes
// (a lost wake) or if w was called more than once.
func (w *wake) wait(t testing.TB, d time.Duration) {
	t.Helper()
	select {
	case <-w.c:
	case <-time.After(d):
		t.Fatalf("the wake was not called within %v", d)
	}
	if n := w.calls.Load(); n != 1 {
		t.Fatalf("the wake was called %d times", n)
	}
}

// called reports whether w was called.
func (w *wake) called() bool { return w.calls.Load() > 0 }

// A step is what one Next or Poll returned that was not nothing.
type step struct {
	ids []uint64
	gap sse.Gap
	err string
}

func (s step) String() string { return fmt.Sprintf("%v %v %s", s.ids, s.gap, s.err) }

func stepOf(evs []sse.Event, gap sse.Gap, err error) step {
	s := step{gap: gap}
	for _, ev := range evs {
		s.ids = append(s.ids, ev.ID)
	}
	if err != nil {
		s.err = err.Error()
	}
	return s
}

// pollAll reads sub by Poll until it ends, waiting for each wake; limit
// is the bytes per call.
func pollAll(t testing.TB, ctx context.Context, sub sse.Subscription, limit int) []step {
	t.Helper()
	p := sub.(poller)
	var steps []step
	for {
		w := newWake()
		evs, gap, err := p.Poll(ctx, nil, limit, w.f)
		if len(evs) == 0 && gap == (sse.Gap{}) && err == nil {
			w.wait(t, 20*time.Second)
			continue
		}
		if w.called() {
			t.Fatal("a Poll that returned something called its wake")
		}
		steps = append(steps, stepOf(evs, gap, err))
		if err != nil {
			return steps
		}
	}
}

// nextAll reads sub by Next until it ends.
func nextAll(ctx context.Context, sub sse.Subscription, limit int) []step {
	var steps []step
	for {
		evs, gap, err := sub.Next(ctx, nil, nil, limit)
		steps = append(steps, stepOf(evs, gap, err))
		if err != nil {
			return steps
		}
	}
}

func bothModes(t *testing.T, f func(t *testing.T, mode sse.Mode)) {
	for _, mode := range []sse.Mode{sse.FanOut, sse.Queue} {
		t.Run(mode.String(), func(t *testing.T) { f(t, mode) })
	}
}

// TestPollWakesOnPublish: a Poll that finds nothing returns nothing and
// keeps its wake, which the key's next event calls, once; the next Poll
// returns the event.
func TestPollWakesOnPublish(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(mode))
		ctx := within(t, 60*time.Second)
		if err := b.Open(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		w := newWake()
		evs, gap, err := sub.(poller).Poll(ctx, nil, 1<<20, w.f)
		if len(evs) != 0 || gap != (sse.Gap{}) || err != nil {
			t.Fatalf("Poll of an idle key: %v %v %v", evs, gap, err)
		}
		time.Sleep(50 * time.Millisecond)
		if w.called() {
			t.Fatal("the wake was called before an event")
		}
		if err := b.Enqueue(ctx, "k", "a"); err != nil {
			t.Fatal(err)
		}
		w.wait(t, 10*time.Second)
		evs, gap, err = sub.(poller).Poll(ctx, nil, 1<<20, newWake().f)
		if err != nil || gap != (sse.Gap{}) || len(evs) != 1 || evs[0].Data != "a" {
			t.Fatalf("Poll after the wake: %v %v %v", evs, gap, err)
		}
	})
}

// TestPollRace: a reader that polls while events are published one by one
// gets every event, in order, each once: a publish that races a Poll's
// registration never leaves the reader asleep.
func TestPollRace(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(mode))
		ctx := within(t, 120*time.Second)
		if err := b.Open(ctx, "k"); err != nil {
			t.Fatal(err)
		}
		sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		const n = 300
		published := make(chan error, 1)
		go func() {
			for i := 1; i <= n; i++ {
				if err := b.Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
					published <- err
					return
				}
			}
			published <- b.Close(ctx, "k")
		}()
		steps := pollAll(t, ctx, sub, 1<<20)
		if err := <-published; err != nil {
			t.Fatal(err)
		}
		var ids []uint64
		for _, s := range steps {
			if s.gap != (sse.Gap{}) {
				t.Fatalf("gap %v", s.gap)
			}
			ids = append(ids, s.ids...)
		}
		if last := steps[len(steps)-1]; last.err != io.EOF.Error() {
			t.Fatalf("ended with %q, want EOF", last.err)
		}
		want := make([]uint64, n)
		for i := range want {
			want[i] = uint64(i + 1)
		}
		if !slices.Equal(ids, want) {
			t.Fatalf("got %d events %v..., want 1..%d", len(ids), ids[:min(len(ids), 10)], n)
		}
	})
}

// TestPollEnds: a pending Poll is woken by what ends the subscription, and
// the next Poll returns the end: the key's close (io.EOF), Shutdown
// (ErrShutdown), NATS unreachable (ErrUnavailable), and in Queue mode a
// takeover (ErrReplaced).
func TestPollEnds(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	pending := func(t *testing.T, ctx context.Context, sub sse.Subscription) *wake {
		t.Helper()
		w := newWake()
		evs, gap, err := sub.(poller).Poll(ctx, nil, 1<<20, w.f)
		if len(evs) != 0 || gap != (sse.Gap{}) || err != nil {
			t.Fatalf("Poll: %v %v %v, want nothing", evs, gap, err)
		}
		return w
	}
	end := func(t *testing.T, ctx context.Context, sub sse.Subscription, w *wake, want error) {
		t.Helper()
		// Another process's takeover is seen at the lease's renewal; a wake
		// may be spurious.
		w.wait(t, 30*time.Second)
		for range 10 {
			evs, gap, err := sub.(poller).Poll(ctx, nil, 1<<20, newWake().f)
			if len(evs) != 0 || gap != (sse.Gap{}) {
				t.Fatalf("Poll: %v %v, want no event", evs, gap)
			}
			if err != nil {
				if !errors.Is(err, want) {
					t.Fatalf("Poll: %v, want %v", err, want)
				}
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("Poll did not return %v", want)
	}
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		t.Run("close", func(t *testing.T) {
			b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(mode))
			ctx := within(t, 60*time.Second)
			b.Open(ctx, "k")
			sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			w := pending(t, ctx, sub)
			if err := b.Close(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			end(t, ctx, sub, w, io.EOF)
		})
		t.Run("shutdown", func(t *testing.T) {
			b, err := ssejs.New[string](context.Background(), js, ssejs.WithName(uniqueName()), ssejs.WithMode(mode))
			if err != nil {
				t.Fatal(err)
			}
			ctx := within(t, 60*time.Second)
			b.Open(ctx, "k")
			sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			w := pending(t, ctx, sub)
			stopped := make(chan error, 1)
			go func() { stopped <- b.Shutdown(ctx) }()
			end(t, ctx, sub, w, sse.ErrShutdown)
			sub.Close()
			if err := <-stopped; err != nil {
				t.Fatal(err)
			}
		})
		t.Run("unreachable", func(t *testing.T) {
			srv := startServer(t) // its own, stopped
			_, js := connect(t, srv.ClientURL(), nats.MaxReconnects(-1))
			b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(mode))
			ctx := within(t, 60*time.Second)
			b.Open(ctx, "k")
			sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			w := pending(t, ctx, sub)
			srv.Shutdown()
			end(t, ctx, sub, w, ssejs.ErrUnavailable)
		})
		if mode != sse.Queue {
			return
		}
		t.Run("takeover", func(t *testing.T) {
			name := uniqueName()
			b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
			other := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
			ctx := within(t, 60*time.Second)
			b.Open(ctx, "k")
			for _, taker := range []*ssejs.Broker[string]{b, other} { // this process, and another
				sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
				if err != nil {
					t.Fatal(err)
				}
				w := pending(t, ctx, sub)
				sub2, err := taker.Subscribe(ctx, "k", sse.SubscribeRequest{Takeover: true})
				if err != nil {
					t.Fatal(err)
				}
				end(t, ctx, sub, w, sse.ErrReplaced)
				sub.Close()
				sub2.Close()
			}
		})
	})
}

// TestPollSameAsNext: Poll returns what Next returns for the same
// scenario, on two keys with the same history: a resume into history
// that no longer holds its first events (a gap; in Queue mode after a
// reader took them all, then a replay), events in several calls (a small
// limit), and the key's close.
func TestPollSameAsNext(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	bothModes(t, func(t *testing.T, mode sse.Mode) {
		opts := []ssejs.Option{ssejs.WithName(uniqueName()), ssejs.WithMode(mode), ssejs.WithHistoryMessages(4), ssejs.WithReplayEvents(4)}
		b := newBroker[string](t, js, opts...)
		ctx := within(t, 60*time.Second)
		keys := []string{"next", "poll"}
		for _, k := range keys {
			for i := range 10 {
				if err := b.Enqueue(ctx, k, strconv.Itoa(i), strconv.Itoa(i)+"b"); err != nil {
					t.Fatal(err)
				}
			}
			if err := b.Close(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
		var got [2][]step
		for i, read := range []func(sse.Subscription) []step{
			func(s sse.Subscription) []step { return nextAll(ctx, s, 1) },
			func(s sse.Subscription) []step { return pollAll(t, ctx, s, 1) },
		} {
			first, err := b.Subscribe(ctx, keys[i], sse.SubscribeRequest{})
			if err != nil {
				t.Fatal(err)
			}
			epoch := first.Epoch()
			if mode == sse.Queue {
				nextAll(ctx, first, 1<<20) // takes them all
			}
			first.Close()
			// Another process's connection resumes after the first event.
			r := newBroker[string](t, js, opts...)
			sub, err := r.Subscribe(ctx, keys[i], sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: 1, Takeover: true})
			if err != nil {
				t.Fatal(err)
			}
			got[i] = read(sub)
			sub.Close()
		}
		if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
			t.Fatalf("Next: %v\nPoll: %v", got[0], got[1])
		}
		if len(got[0]) < 3 || got[0][0].gap == (sse.Gap{}) {
			t.Fatalf("the scenario has no gap or too few steps: %v", got[0])
		}
	})
}
