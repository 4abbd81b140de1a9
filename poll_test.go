package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A testWake counts the calls of its wake and signals each on ch.
type testWake struct {
	calls atomic.Int64
	ch    chan struct{}
}

func newTestWake() *testWake { return &testWake{ch: make(chan struct{}, 64)} }

func (w *testWake) wake() {
	w.calls.Add(1)
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

// await fails the test unless wake is called within patience.
func (w *testWake) await(t testing.TB, what string) {
	t.Helper()
	select {
	case <-w.ch:
	case <-time.After(patience):
		t.Fatalf("%s: wake not called within %v", what, patience)
	}
}

// pollNothing fails the test unless sub's Poll finds nothing and keeps w's
// wake.
func pollNothing(t testing.TB, sub Subscription, w *testWake) {
	t.Helper()
	evs, gap, err := sub.Poll(context.Background(), nil, math.MaxInt, w.wake)
	if len(evs) != 0 || gap != (Gap{}) || err != nil {
		t.Fatalf("Poll: %v, %v, %v; want nothing", evs, gap, err)
	}
}

// TestPollWakes: a Poll that finds nothing keeps its wake until something
// may be ready, in either mode: an event, the key's close, a takeover
// (Queue mode), the broker's Shutdown; it is called once, and the next
// Poll returns what came.
func TestPollWakes(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []Mode{Queue, FanOut} {
		for _, c := range []struct {
			name    string
			trigger func(t *testing.T, b *Broker[string]) (done func())
			check   func(evs []Event, err error) bool
		}{
			{"publish", func(t *testing.T, b *Broker[string]) func() {
				must(t, b.Publish(ctx, "k", Event{Data: "1"}))
				return func() {}
			}, func(evs []Event, err error) bool { return err == nil && len(evs) == 1 && evs[0].ID == 1 }},
			{"close", func(t *testing.T, b *Broker[string]) func() {
				must(t, b.Close(ctx, "k"))
				return func() {}
			}, func(evs []Event, err error) bool { return err == io.EOF && len(evs) == 0 }},
			{"shutdown", func(t *testing.T, b *Broker[string]) func() {
				done := make(chan error, 1)
				go func() { done <- b.Shutdown(ctx) }()
				return func() {
					if err := <-done; err != nil {
						t.Errorf("Shutdown: %v", err)
					}
				}
			}, func(evs []Event, err error) bool { return err == io.EOF && len(evs) == 0 }},
			{"takeover", func(t *testing.T, b *Broker[string]) func() {
				if mode == FanOut {
					t.Skip("FanOut keys are not taken over")
				}
				done := make(chan error, 1)
				go func() {
					sub, err := b.Subscribe(ctx, "k", SubscribeRequest{Takeover: true})
					if err == nil {
						sub.Close()
					}
					done <- err
				}()
				return func() {
					if err := <-done; err != nil {
						t.Errorf("takeover: %v", err)
					}
				}
			}, func(evs []Event, err error) bool { return errors.Is(err, ErrReplaced) && len(evs) == 0 }},
		} {
			t.Run(fmt.Sprintf("%v/%s", mode, c.name), func(t *testing.T) {
				b := newBroker[string](t, WithMode(mode))
				must(t, b.Open(ctx, "k"))
				sub, err := b.Subscribe(ctx, "k", SubscribeRequest{})
				must(t, err)
				w := newTestWake()
				pollNothing(t, sub, w)
				done := c.trigger(t, b)
				w.await(t, c.name)
				evs, _, err := sub.Poll(ctx, nil, math.MaxInt, w.wake)
				if !c.check(evs, err) {
					t.Errorf("Poll after the wake: %v, %v", evs, err)
				}
				sub.Close()
				done()
				if n := w.calls.Load(); n != 1 {
					t.Errorf("wake called %d times, want once", n)
				}
			})
		}
	}
}

// TestPollRacingPublish: a publish that races a Poll finding nothing never
// leaves the reader asleep: either that Poll returns the event, or its
// wake is called. Every event comes once, in order.
func TestPollRacingPublish(t *testing.T) {
	const rounds = 2000
	ctx := context.Background()
	for _, mode := range []Mode{Queue, FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			b := newBroker[string](t, WithMode(mode))
			must(t, b.Open(ctx, "k"))
			sub, err := b.Subscribe(ctx, "k", SubscribeRequest{})
			must(t, err)
			defer sub.Close()
			w := newTestWake()
			go_, stop := make(chan struct{}), make(chan struct{})
			published := make(chan error, 1)
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 1; i <= rounds; i++ {
					select {
					case <-go_:
					case <-stop: // the test failed
						return
					}
					published <- b.Publish(ctx, "k", Event{Data: strconv.Itoa(i)})
				}
			}()
			defer wg.Wait()
			defer close(stop)
			var buf []Event
			for i := 1; i <= rounds; i++ {
				go_ <- struct{}{} // the publish races this Poll
				var evs []Event
				for len(evs) == 0 {
					evs, _, err = sub.Poll(ctx, buf, math.MaxInt, w.wake)
					must(t, err)
					if len(evs) == 0 {
						w.await(t, fmt.Sprintf("round %d", i))
					}
				}
				must(t, <-published)
				if len(evs) != 1 || evs[0].ID != uint64(i) || evs[0].Data != strconv.Itoa(i) {
					t.Fatalf("round %d: %v, want event %d alone", i, evs, i)
				}
				buf = evs
			}
		})
	}
}

// A readStep is what one call of Next or Poll returned.
type readStep struct {
	ids []uint64
	gap Gap
	err error
}

func (r readStep) String() string { return fmt.Sprintf("%v %v %v", r.ids, r.gap, r.err) }

// readSteps reads sub to its end, with Next, or with Poll and its wake if
// poll is set, limit bytes a call; it records every call that returned
// something.
func readSteps(t *testing.T, sub Subscription, limit int, poll bool) []readStep {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	w := newTestWake()
	var steps []readStep
	var buf []Event
	for {
		var evs []Event
		var gap Gap
		var err error
		if poll {
			evs, gap, err = sub.Poll(ctx, buf, limit, w.wake)
			if len(evs) == 0 && gap == (Gap{}) && err == nil {
				w.await(t, "readSteps")
				continue
			}
		} else {
			evs, gap, err = sub.Next(ctx, buf, nil, limit)
		}
		s := readStep{gap: gap, err: err}
		for _, ev := range evs {
			s.ids = append(s.ids, ev.ID)
		}
		steps = append(steps, s)
		if err != nil {
			return steps
		}
		buf = evs
	}
}

// TestPollIsNext: Poll returns what Next returns, call for call: the same
// batches under the same limit, the same gaps, the same end, for a FanOut
// key resumed behind its history, and for a Queue key whose connection
// resumes with a gap, events to send again, and its close.
func TestPollIsNext(t *testing.T) {
	ctx := context.Background()
	scenarios := map[string]func(t *testing.T, b *Broker[string]) Subscription{
		"fanout": func(t *testing.T, b *Broker[string]) Subscription {
			for i := 1; i <= 30; i++ {
				must(t, b.Publish(ctx, "k", Event{Data: strconv.Itoa(i * i)}))
			}
			must(t, b.Close(ctx, "k"))
			sub, err := b.Subscribe(ctx, "k", SubscribeRequest{Resume: true, Epoch: epochOf(t, b, "k"), LastID: 3})
			must(t, err)
			return sub
		},
		"queue": func(t *testing.T, b *Broker[string]) Subscription {
			enqueueSeq(t, b, "k", 1, 20)
			first, err := b.Subscribe(ctx, "k", SubscribeRequest{})
			must(t, err)
			for range 2 { // it takes 1 to 4, then 5 to 8: the window holds 5 to 8
				if evs, _, err := first.Next(ctx, nil, nil, math.MaxInt); err != nil || len(evs) != 4 {
					t.Fatalf("first connection: %v, %v", evs, err)
				}
			}
			first.Close() // what it took is retained for the next connection
			enqueueSeq(t, b, "k", 21, 25)
			must(t, b.Close(ctx, "k"))
			sub, err := b.Subscribe(ctx, "k", SubscribeRequest{Resume: true, Epoch: first.Epoch(), LastID: 1})
			must(t, err)
			return sub
		},
	}
	opts := map[string][]Option{
		"fanout": {WithMode(FanOut), WithHistory(20, 1<<20, 0)},
		"queue":  {WithReplay(4, 1<<20), WithBuffer(64)}, // every event in the channel: no feeder
	}
	for name, scenario := range scenarios {
		for _, limit := range []int{1, 200, math.MaxInt} {
			t.Run(fmt.Sprintf("%s/limit=%d", name, limit), func(t *testing.T) {
				var got [2][]readStep
				for i, poll := range []bool{false, true} {
					b := newBroker[string](t, opts[name]...)
					got[i] = readSteps(t, scenario(t, b), limit, poll)
				}
				if fmt.Sprint(got[0]) != fmt.Sprint(got[1]) {
					t.Fatalf("Next: %v\nPoll: %v", got[0], got[1])
				}
				if len(got[0]) < 2 || got[0][0].gap == (Gap{}) {
					t.Fatalf("Next: %v: want a gap and batches", got[0])
				}
			})
		}
	}
}

// TestPollCloseDropsWake: Close drops a registered wake: a key that gets
// no event does not hold the wakes of the readers that came and went.
func TestPollCloseDropsWake(t *testing.T) {
	ctx := context.Background()
	for _, mode := range []Mode{Queue, FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			b := newBroker[string](t, WithMode(mode))
			must(t, b.Open(ctx, "k"))
			for range 3 {
				sub, err := b.Subscribe(ctx, "k", SubscribeRequest{})
				must(t, err)
				pollNothing(t, sub, newTestWake())
				s := sub.(*subscription[string])
				list := s.t.polls.Load()
				if mode == FanOut {
					list = s.t.history.polls.Load()
				}
				sub.Close()
				list.mu.Lock()
				held := list.head != nil
				list.mu.Unlock()
				if held {
					t.Fatal("the key holds the wake of a closed subscription")
				}
			}
		})
	}
}

// TestPollQueueBacklog: in Queue mode, events that wait in a key's
// overflow reach the channel from its feeder goroutine, which wakes a
// waiting Poll too, and the channel closes after the feeder's last event:
// the reader gets every event, in order, then the end.
func TestPollQueueBacklog(t *testing.T) {
	const n = 500
	ctx := context.Background()
	b := newBroker[string](t, WithBuffer(1))
	must(t, b.Open(ctx, "k"))
	sub, err := b.Subscribe(ctx, "k", SubscribeRequest{})
	must(t, err)
	defer sub.Close()
	enqueueSeq(t, b, "k", 1, n) // all but the first wait in the overflow
	must(t, b.Close(ctx, "k"))
	w := newTestWake()
	var buf []Event
	next := uint64(1)
	for {
		evs, _, err := sub.Poll(ctx, buf, 64, w.wake) // a few events a call: the overflow lasts
		checkSeq(t, evs, next)
		next += uint64(len(evs))
		if err == io.EOF {
			break
		}
		must(t, err)
		if len(evs) == 0 {
			w.await(t, fmt.Sprintf("event %d", next))
		}
		buf = evs
	}
	if next != n+1 {
		t.Fatalf("the end after %d events, want %d", next-1, n)
	}
}
