// This file is the example-based suite, Run; the randomized history
// checker, Check, is in checker.go (see the package documentation).

package conformance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"math"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

// Patience bounds every wait of the suite.
const Patience = 20 * time.Second

// Config is what a test of the suite asks of a new instance.
type Config struct {
	// Mode is the mode the instance must run in.
	Mode sse.Mode
	// Retain, if not 0, is how many events a key keeps to send again: its
	// history's bound in FanOut mode, its replay window's in Queue mode.
	// 0 leaves the implementation's default, which must hold the few
	// hundred events of a test.
	Retain int
}

// Impl is one instance of an implementation, seen through the root
// package's interfaces.
type Impl[K comparable] struct {
	Publisher sse.Publisher[K]
	Reader    sse.Reader[K]
	Source    sse.Source[K]
}

// Run runs the suite: every test in both modes, each with a fresh instance
// from newImpl (which registers its own cleanup on the t it gets), and keys
// from key, which must return distinct keys for distinct i.
func Run[K comparable](t *testing.T, newImpl func(t *testing.T, c Config) Impl[K], key func(i int) K) {
	for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			s := suite[K]{newImpl: newImpl, key: key, mode: mode}
			t.Run("Order", s.order)
			t.Run("Readers", s.readers)
			t.Run("CloseEndsReaders", s.closeEnds)
			t.Run("BadInput", s.badInput)
			t.Run("Resume", s.resume)
			t.Run("Gap", s.gap)
			t.Run("Epoch", s.epoch)
			t.Run("Finished", s.finished)
			t.Run("Takeover", s.takeover)
			t.Run("Known", s.known)
			if mode == sse.FanOut {
				t.Run("MultiKey", s.multiKey)
			}
		})
	}
}

type suite[K comparable] struct {
	newImpl func(t *testing.T, c Config) Impl[K]
	key     func(int) K
	mode    sse.Mode
	// vectors hides the Source's [sse.CursorStore] from MultiHandler, so
	// that multi-key IDs are of the vector form, as a third-party Source
	// without a store gets them.
	vectors bool
}

func (s suite[K]) impl(t *testing.T, retain int) Impl[K] {
	t.Helper()
	im := s.newImpl(t, Config{Mode: s.mode, Retain: retain})
	if im.Source != nil && im.Source.Mode() != s.mode {
		t.Fatalf("asked for mode %s, the Source says %s", s.mode, im.Source.Mode())
	}
	return im
}

// ctx returns a context that ends after Patience, or with the test.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), Patience)
	t.Cleanup(cancel)
	return c
}

// readAll ranges over key's events until the range ends, and fails the
// test on an error. A GapError is kept as an Event named "gap" with the
// range in Data.
func readAll[K comparable](t *testing.T, r sse.Reader[K], key K, from ...sse.ReadOption) []sse.Event {
	t.Helper()
	var evs []sse.Event
	for ev, err := range r.Events(ctx(t), key, from...) {
		var gap *sse.GapError
		switch {
		case errors.As(err, &gap):
			evs = append(evs, sse.Event{Name: "gap", Data: fmt.Sprintf("%d-%d", gap.From, gap.To)})
		case err != nil:
			t.Fatalf("reading %v after %d events: %v", key, len(evs), err)
		default:
			evs = append(evs, ev)
		}
	}
	return evs
}

// publishSeq publishes events from..to to key, one per call, with data
// "<ID>".
func publishSeq[K comparable](t *testing.T, p sse.Publisher[K], key K, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		if err := p.Enqueue(ctx(t), key, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
}

// checkSeq fails unless evs are events from.. in order, data "<ID>".
func checkSeq(t *testing.T, evs []sse.Event, from uint64) {
	t.Helper()
	for i, ev := range evs {
		if want := from + uint64(i); ev.ID != want || ev.Data != strconv.FormatUint(want, 10) {
			t.Fatalf("event %d is %+v, want ID and data %d", i, ev, want)
		}
	}
}

// order: one producer's calls keep their order; one call's events stay
// contiguous with consecutive IDs; concurrent producers interleave whole
// calls; IDs are 1, 2, 3, … in key order.
func (s suite[K]) order(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(0)
	const producers, calls = 3, 40
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for c := range calls {
				batch := make([]sse.Event, 1+c%4)
				for j := range batch {
					batch[j] = sse.Event{Name: "p" + strconv.Itoa(p), Data: fmt.Sprintf("%d/%d", c, j)}
				}
				if err := im.Publisher.Publish(ctx(t), k, batch...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	evs := readAll(t, im.Reader, k)
	total := producers * calls * 10 / 4 // batches of 1 to 4
	if len(evs) != total {
		t.Fatalf("read %d events, want %d", len(evs), total)
	}
	next := make(map[string]int)
	for i := 0; i < len(evs); {
		if evs[i].ID != uint64(i+1) {
			t.Fatalf("event %d has ID %d, want %d", i, evs[i].ID, i+1)
		}
		var c, j int
		fmt.Sscanf(evs[i].Data, "%d/%d", &c, &j)
		p := evs[i].Name
		if c != next[p] || j != 0 {
			t.Fatalf("event %d: %s's batch %d from %d, want batch %d from 0", i, p, c, j, next[p])
		}
		next[p]++
		for j := range 1 + c%4 {
			if ev := evs[i+j]; ev.Name != p || ev.Data != fmt.Sprintf("%d/%d", c, j) {
				t.Fatalf("event %d is %+v: batch %d of %s interleaved", i+j, ev, c, p)
			}
		}
		i += 1 + c%4
	}
}

// readers: in Queue mode readers compete and each event is read once; in
// FanOut mode every reader gets every event.
func (s suite[K]) readers(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(1)
	const readers, total = 3, 300
	got := make([][]sse.Event, readers)
	var wg sync.WaitGroup
	started := make(chan struct{}, readers)
	for r := range readers {
		wg.Go(func() {
			next, stop := iter.Pull2(im.Reader.Events(ctx(t), k))
			defer stop()
			started <- struct{}{}
			for {
				ev, err, ok := next()
				if !ok {
					return
				}
				if err != nil {
					t.Errorf("reader %d: %v", r, err)
					return
				}
				got[r] = append(got[r], ev)
			}
		})
	}
	for range readers {
		<-started
	}
	publishSeq(t, im.Publisher, k, 1, total)
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if s.mode == sse.FanOut {
		for r := range readers {
			checkSeq(t, got[r], 1)
			if len(got[r]) != total {
				t.Fatalf("reader %d got %d events, want all %d", r, len(got[r]), total)
			}
		}
		return
	}
	seen := make(map[uint64]int)
	for r := range readers {
		for i, ev := range got[r] {
			if i > 0 && ev.ID <= got[r][i-1].ID {
				t.Fatalf("reader %d: ID %d after %d", r, ev.ID, got[r][i-1].ID)
			}
			seen[ev.ID]++
		}
	}
	for id := uint64(1); id <= total; id++ {
		if seen[id] != 1 {
			t.Fatalf("event %d read %d times, want once", id, seen[id])
		}
	}
}

// closeEnds: readers get every event published before Close, then their
// range ends with no error; a reader that comes after the Close gets what
// is left (Queue mode) or the history (FanOut mode), then the end.
func (s suite[K]) closeEnds(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(2)
	done := make(chan []sse.Event, 1)
	go func() { done <- readAll(t, im.Reader, k) }()
	publishSeq(t, im.Publisher, k, 1, 20)
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	var first []sse.Event
	select {
	case first = <-done:
	case <-time.After(Patience):
		t.Fatal("the reader did not end after the Close")
	}
	late := readAll(t, im.Reader, k)
	switch s.mode {
	case sse.Queue:
		if len(first) != 20 || len(late) != 0 {
			t.Fatalf("the reader got %d, a late one %d; want 20 and none", len(first), len(late))
		}
	case sse.FanOut:
		checkSeq(t, late, 1)
		if len(first) != 20 || len(late) != 20 {
			t.Fatalf("the reader got %d, a late one %d; want 20 each", len(first), len(late))
		}
	}
	checkSeq(t, first, 1)
	// Events sent to a closed key are not read.
	if err := im.Publisher.Enqueue(ctx(t), k, "after"); err != nil && !errors.Is(err, sse.ErrClosed) {
		t.Fatalf("Enqueue to a closed key: %v", err)
	}
	if evs := readAll(t, im.Reader, k); s.mode == sse.FanOut && len(evs) != 20 || s.mode == sse.Queue && len(evs) != 0 {
		t.Fatalf("after an Enqueue to the closed key, a reader got %v", evs)
	}
}

// badInput: an event that cannot be sent fails the whole call with
// ErrInvalidEvent, and nothing of it is published.
func (s suite[K]) badInput(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(3)
	for _, evs := range [][]sse.Event{
		{{Data: "ok"}, {Name: "a\nb"}},
		{{Name: sse.EventClose}},
		{{Name: sse.EventGap}},
		{{Name: sse.ReservedPrefix + "x"}},
		{{Data: sse.TerminateData}},
		{{Data: "ok"}, {Data: "\xff"}},
	} {
		if err := im.Publisher.Publish(ctx(t), k, evs...); !errors.Is(err, sse.ErrInvalidEvent) {
			t.Errorf("Publish(%+v): %v, want ErrInvalidEvent", evs, err)
		}
	}
	if err := im.Publisher.Enqueue(ctx(t), k, "ok", "\xff"); !errors.Is(err, sse.ErrInvalidEvent) {
		t.Errorf("Enqueue of invalid UTF-8: %v, want ErrInvalidEvent", err)
	}
	publishSeq(t, im.Publisher, k, 1, 1)
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	evs := readAll(t, im.Reader, k)
	checkSeq(t, evs, 1)
	if len(evs) != 1 {
		t.Fatalf("got %v: something of a refused call was published", evs)
	}
}

// next reads what sub hands out next, failing the test on an error other
// than io.EOF.
func next(t *testing.T, sub sse.Subscription) ([]sse.Event, sse.Gap, bool) {
	t.Helper()
	evs, gap, err := sub.Next(ctx(t), nil, nil, math.MaxInt)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return evs, gap, err == io.EOF
}

// collect reads sub to its end (the key must be closed).
func collect(t *testing.T, sub sse.Subscription) (sse.Gap, []sse.Event) {
	t.Helper()
	var all []sse.Event
	var first sse.Gap
	for {
		evs, gap, end := next(t, sub)
		if gap != (sse.Gap{}) && first == (sse.Gap{}) && len(all) == 0 {
			first = gap
		}
		all = append(all, evs...)
		if end {
			return first, all
		}
	}
}

// resume: a connection that resumes after an ID of the key's life gets
// the events after it: in Queue mode those an earlier connection took
// (then the rest), in FanOut mode the history after it.
func (s suite[K]) resume(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(4)
	publishSeq(t, im.Publisher, k, 1, 10)
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	first, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, evs := collect(t, first) // in Queue mode it takes them all, and dies
	first.Close()
	checkSeq(t, evs, 1)
	epoch := first.Epoch()
	if epoch == "" {
		t.Fatal("no epoch")
	}
	sub, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	gap, evs := collect(t, sub)
	if gap != (sse.Gap{}) || len(evs) != 6 {
		t.Fatalf("resumed after 4: gap %+v and %v, want 5-10", gap, evs)
	}
	checkSeq(t, evs, 5)
	if sub.Epoch() != epoch {
		t.Fatalf("epoch %q, then %q, in one life of the key", epoch, sub.Epoch())
	}
}

// gap: a client that resumes after events no longer retained is told
// exactly which it lost, then gets the rest.
func (s suite[K]) gap(t *testing.T) {
	im := s.impl(t, 5)
	k := s.key(5)
	var epoch string
	if s.mode == sse.Queue {
		publishSeq(t, im.Publisher, k, 1, 30)
		first, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 30; { // it takes all 30, the window keeps 26-30
			evs, _, _ := next(t, first)
			got += len(evs)
		}
		epoch = first.Epoch()
		first.Close()
	} else {
		publishSeq(t, im.Publisher, k, 1, 30) // the history keeps 26-30
	}
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	req := sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: 2}
	if s.mode == sse.FanOut {
		probe, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		req.Epoch = probe.Epoch()
		probe.Close()
	}
	sub, err := im.Source.Subscribe(ctx(t), k, req)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	gap, evs := collect(t, sub)
	if gap != (sse.Gap{From: 3, To: 25}) {
		t.Fatalf("gap %+v, want 3-25", gap)
	}
	checkSeq(t, evs, 26)
	if len(evs) != 5 {
		t.Fatalf("after the gap: %v, want 26-30", evs)
	}
}

// epoch: an ID from another life of the key (another epoch, or a plain ID
// other than 0) counts as 0: the client gets the current life from its
// start (in Queue mode, the second request gets again, from the replay
// window, what the first took and never confirmed).
func (s suite[K]) epoch(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(6)
	publishSeq(t, im.Publisher, k, 1, 5)
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	for _, req := range []sse.SubscribeRequest{
		{Resume: true, Epoch: "otherlife", LastID: 3},
		{Resume: true, LastID: 3},
	} {
		sub, err := im.Source.Subscribe(ctx(t), k, req)
		if err != nil {
			t.Fatal(err)
		}
		gap, evs := collect(t, sub)
		sub.Close()
		checkSeq(t, evs, 1)
		if gap != (sse.Gap{}) || len(evs) != 5 {
			t.Fatalf("resumed with %+v: gap %+v and %v, want the life from 1", req, gap, evs)
		}
	}
}

// finished: a client whose last ID is the closed key's last gets
// ErrFinished, which the handler answers with 204.
func (s suite[K]) finished(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(7)
	publishSeq(t, im.Publisher, k, 1, 3)
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	sub, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, evs := collect(t, sub)
	epoch := sub.Epoch()
	sub.Close()
	checkSeq(t, evs, 1)
	_, err = im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: 3})
	if !errors.Is(err, sse.ErrFinished) {
		t.Fatalf("a client with every event of the closed key: %v, want ErrFinished", err)
	}
}

// takeover: in Queue mode a key has one connection: another request gets
// ErrBusy unless it takes the key over, which ends the older connection
// (its Abort is called, its Next returns ErrReplaced) and hands the newer
// one what the older took and the client did not confirm. In FanOut mode
// every request gets its own stream.
func (s suite[K]) takeover(t *testing.T) {
	im := s.impl(t, 0)
	k := s.key(8)
	publishSeq(t, im.Publisher, k, 1, 3)
	aborted := make(chan struct{}, 1)
	first, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{Abort: func() {
		select {
		case aborted <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	checkSeq(t, nextN(t, first, 3), 1)
	second, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{})
	if s.mode == sse.FanOut {
		if err != nil {
			t.Fatalf("a second connection in FanOut mode: %v", err)
		}
		checkSeq(t, nextN(t, second, 3), 1)
		second.Close()
		return
	}
	if !errors.Is(err, sse.ErrBusy) {
		if err == nil {
			second.Close()
		}
		t.Fatalf("a second connection without takeover: %v, want ErrBusy", err)
	}
	// The older connection waits for events, as a handler does, and
	// closes when it is replaced; the takeover may wait for that.
	ended := make(chan error, 1)
	go func() {
		_, _, err := first.Next(ctx(t), nil, nil, math.MaxInt)
		first.Close()
		ended <- err
	}()
	// The client received 1, and resumes.
	third, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{Resume: true, Epoch: first.Epoch(), LastID: 1, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	select {
	case <-aborted:
	case <-time.After(Patience):
		t.Fatal("the older connection was not aborted")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, sse.ErrReplaced) {
			t.Fatalf("the older connection after the takeover: %v, want ErrReplaced", err)
		}
	case <-time.After(Patience):
		t.Fatal("the older connection did not end")
	}
	publishSeq(t, im.Publisher, k, 4, 4)
	if err := im.Publisher.Close(ctx(t), k); err != nil {
		t.Fatal(err)
	}
	gap, evs := collect(t, third)
	checkSeq(t, evs, 2)
	if gap != (sse.Gap{}) || len(evs) != 3 {
		t.Fatalf("the newer connection: gap %+v and %v, want 2-4", gap, evs)
	}
}

// known: a request that asks for a known key gets ErrUnknownKey for a key
// the server never created, and a stream for one it did.
func (s suite[K]) known(t *testing.T) {
	im := s.impl(t, 0)
	if _, err := im.Source.Subscribe(ctx(t), s.key(9), sse.SubscribeRequest{Known: true}); !errors.Is(err, sse.ErrUnknownKey) {
		t.Fatalf("a key nobody created: %v, want ErrUnknownKey", err)
	}
	k := s.key(10)
	publishSeq(t, im.Publisher, k, 1, 1)
	sub, err := im.Source.Subscribe(ctx(t), k, sse.SubscribeRequest{Known: true})
	if err != nil {
		t.Fatalf("a key the server created: %v", err)
	}
	defer sub.Close()
	checkSeq(t, nextN(t, sub, 1), 1)
}

// nextN reads n events from sub, failing the test on a gap, an error or
// the end.
func nextN(t *testing.T, sub sse.Subscription, n int) []sse.Event {
	t.Helper()
	var all []sse.Event
	for len(all) < n {
		evs, gap, end := next(t, sub)
		if gap != (sse.Gap{}) {
			t.Fatalf("gap %+v after %v", gap, all)
		}
		all = append(all, evs...)
		if end && len(all) < n {
			t.Fatalf("the stream ended after %v, want %d events", all, n)
		}
	}
	if len(all) != n {
		t.Fatalf("got %v, want %d events", all, n)
	}
	return all
}
