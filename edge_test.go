package sse

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestEmptyCallsAreNoOps: Enqueue and Publish with nothing to append return
// nil and do nothing, in both modes: no key is created, and the loop goes on
// (in FanOut mode an empty batch used to crash it).
func TestEmptyCallsAreNoOps(t *testing.T) {
	for _, mode := range []Mode{Queue, FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			b := newBroker[string](t, WithMode(mode))
			ctx := context.Background()
			must(t, b.Enqueue(ctx, "k"))
			must(t, b.Publish(ctx, "k"))
			must(t, b.Enqueue(ctx, "k", []string{}...))
			must(t, b.Publish(ctx, "k", []Event{}...))
			if s := b.Stats(); s.Keys != 0 || s.Enqueued != 0 {
				t.Fatalf("after empty calls: %+v, want no key and nothing enqueued", s)
			}
			enqueueSeq(t, b, "k", 1, 2)
			must(t, b.Publish(ctx, "k"))
			must(t, b.Close(ctx, "k"))
			var got []string
			for ev, err := range b.Events(ctx, "k") {
				must(t, err)
				got = append(got, ev.Data)
			}
			if len(got) != 2 || got[0] != "1" || got[1] != "2" {
				t.Fatalf("read %q, want 1 2", got)
			}
		})
	}
}

// TestQueueTailGapBeforeNoContent: events read in process, then the key
// closed: a client resuming from before them is told of them by a gap, then
// close, rather than 204, which would say it has them.
func TestQueueTailGapBeforeNoContent(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	enqueueSeq(t, b, "k", 1, 3)
	recv(t, b.Stream("k"), 3) // read once, in process
	must(t, b.Close(context.Background(), "k"))
	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", "0")
	if ev := c.next(t); ev.Type != EventGap || ev.Data != `{"from":1,"to":3}` || ev.ID != "3" {
		t.Fatalf("got %+v, want the gap 1-3", ev)
	}
	c.expectClose(t)

	// With the gap's ID, the client has everything: 204.
	resp, err := srv.Client().Do(func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"?key=k", nil)
		req.Header.Set("Last-Event-ID", c.wireID(3))
		return req
	}())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("a client past the gap: %d, want 204", resp.StatusCode)
	}
}

// TestQueueTailGapAfterDropNewest: DropNewest drops the last events of a
// key; its client gets what was kept, then a gap for the dropped tail, then
// close.
func TestQueueTailGapAfterDropNewest(t *testing.T) {
	b := newBroker[string](t, WithBuffer(1), WithMaxPending(1, DropNewest))
	srv, _ := serve(t, b)
	enqueueSeq(t, b, "k", 1, 8)
	must(t, b.Close(context.Background(), "k"))
	c := open(t, srv.Client(), srv.URL, "k")
	last := 0
	for {
		ev := c.next(t)
		switch ev.Type {
		case "":
			n, _ := strconv.Atoi(ev.ID)
			if n != last+1 || ev.Data != ev.ID {
				t.Fatalf("got %+v after %d", ev, last)
			}
			last = n
			continue
		case EventGap:
			if want := `{"from":` + strconv.Itoa(last+1) + `,"to":8}`; ev.Data != want || ev.ID != "8" {
				t.Fatalf("got gap %+v after %d, want %s", ev, last, want)
			}
			c.expectClose(t)
			return
		}
		t.Fatalf("got %+v after event %d, want the dropped tail's gap first", ev, last)
	}
}

// TestQueueReplayNamesItsHoles: the replay window holds what connections
// took; events read in process or dropped between them are holes in it,
// and the replay names each with a gap.
func TestQueueReplayNamesItsHoles(t *testing.T) {
	b := newBroker[string](t)
	srv, _ := serve(t, b)
	enqueueSeq(t, b, "k", 1, 2)
	take(t, b, "k", SubscribeRequest{}, 2) // taken by a connection, never seen
	enqueueSeq(t, b, "k", 3, 4)
	recv(t, b.Stream("k"), 2) // read in process
	enqueueSeq(t, b, "k", 5, 6)
	take(t, b, "k", SubscribeRequest{}, 2)
	c := open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", "0")
	c.expectSeq(t, 1, 2)
	if ev := c.next(t); ev.Type != EventGap || ev.Data != `{"from":3,"to":4}` || ev.ID != "4" {
		t.Fatalf("got %+v, want the gap 3-4", ev)
	}
	c.expectSeq(t, 5, 6)
}

// TestBlockNewLifeWithAnEndedFlow: a producer's call counted in a key's
// flow reaches the loop after the key's Close ended that flow and after the
// key was forgotten (no retention), so that it starts a new life of the
// key. That life must not keep the ended flow: the feeder would give back
// to it what producers counted in the new one, and they would wait forever.
func TestBlockNewLifeWithAnEndedFlow(t *testing.T) {
	b := build[string](WithBuffer(1), WithMaxPending(2, Block), WithRetention(0))
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	l := &b.loop
	must(t, b.Enqueue(ctx, "k", "1"))
	l.drain()                         // the key's first life, its flow
	must(t, b.Enqueue(ctx, "k", "2")) // counted in that flow, not yet seen
	l.close("k")                      // as if the Close came in the batch before
	l.expire()                        // no retention: forgotten at once
	l.drain()                         // "2" starts a new life
	go l.run()
	t.Cleanup(func() { must(t, b.Shutdown(context.Background())) })

	// The reader takes the whole new life before the Close: with
	// WithRetention(0), a reader still behind at the Close is cut short
	// at once (as WithRetention says), which is not what this tests.
	all, read := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		for range b.Stream("k") {
			if n++; n == 99 {
				close(all)
			}
		}
		read <- n
	}()
	for i := 3; i <= 100; i++ {
		if err := b.Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatal("the reader did not get the new life's 99 events: Block hangs")
	}
	must(t, b.Close(ctx, "k"))
	if n := <-read; n != 99 {
		t.Fatalf("read %d events of the new life, want 99", n)
	}
}

// TestHugeDurationsMeanNever: durations near math.MaxInt64 are "never"
// rather than an overflow: a history age that large trims nothing, an idle
// timeout that large closes nothing and leaves the timer to forget closed
// keys, and a retention that large forgets nothing.
func TestHugeDurationsMeanNever(t *testing.T) {
	const huge = time.Duration(math.MaxInt64)
	t.Run("HistoryAge", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker[string](t, WithMode(FanOut), WithHistory(100, 1<<20, huge))
			ctx := context.Background()
			time.Sleep(time.Hour) // a clock far from 0, where the sum overflows
			enqueueSeq(t, b, "k", 1, 5)
			time.Sleep(time.Hour)
			enqueueSeq(t, b, "k", 6, 6)
			must(t, b.Close(ctx, "k"))
			n := 0
			for ev, err := range b.Events(ctx, "k") {
				must(t, err)
				if n++; ev.ID != uint64(n) {
					t.Fatalf("event %d has ID %d", n, ev.ID)
				}
			}
			if n != 6 {
				t.Fatalf("read %d events, want 6", n)
			}
		})
	})
	t.Run("IdleTimeout", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker[string](t, WithIdleTimeout(huge), WithRetention(time.Minute))
			ctx := context.Background()
			time.Sleep(time.Hour)
			enqueueSeq(t, b, "open", 1, 1)
			must(t, b.Close(ctx, "closed"))
			time.Sleep(time.Hour)
			if s := b.Stats(); s.Keys != 1 || s.Closed != 0 {
				t.Fatalf("after an hour: %+v, want the open key only", s)
			}
		})
	})
	t.Run("Retention", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			b := newBroker[string](t, WithRetention(huge))
			time.Sleep(time.Hour)
			must(t, b.Close(context.Background(), "k"))
			time.Sleep(time.Hour)
			if s := b.Stats(); s.Closed != 1 {
				t.Fatalf("after an hour: %+v, want the closed key remembered", s)
			}
		})
	})
}

// TestNilOption: a nil option makes New and Handler panic with a message
// that names it, not with a nil pointer dereference.
func TestNilOption(t *testing.T) {
	b := newBroker[string](t)
	for name, f := range map[string]func(){
		"New":     func() { New[string](WithBuffer(1), nil) },
		"Handler": func() { Handler(b, queryKey, nil) },
	} {
		func() {
			defer func() {
				msg := fmt.Sprint(recover())
				if !strings.Contains(msg, "option 1 is nil") && !strings.Contains(msg, "option 0 is nil") {
					t.Errorf("%s: panic %q, want one that names the nil option", name, msg)
				}
			}()
			f()
		}()
	}
}
