package ssejs_test

import (
	"errors"
	"fmt"
	"io"
	"iter"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestStaleOwner: a process that lost a Queue key's lease to another never
// hands out another event of it: its reader ends with ErrReplaced, and
// every event is read once, across both. The new owner's reader may first
// be told, by a gap, of the old owner's last take, which it cannot know
// was handed out (see lease.Pend): here the old owner did hand it out.
func TestStaleOwner(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	_, jsP := connect(t, srv.ClientURL())
	a := newBroker[string](t, jsA, ssejs.WithName(name))
	b := newBroker[string](t, jsB, ssejs.WithName(name))
	p := newBroker[string](t, jsP, ssejs.WithName(name))
	ctx := within(t, 60*time.Second)

	const total = 200
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if err := p.Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(1, 50)
	// A reads some, and stops taking while it still holds the lease.
	nextA, stopA := iter.Pull2(a.Events(ctx, "k"))
	defer stopA()
	var gotA []sse.Event
	for len(gotA) < 20 {
		ev, err, ok := nextA()
		if !ok || err != nil {
			t.Fatalf("A: %v", err)
		}
		gotA = append(gotA, ev)
	}
	// B takes the key over: its reader takes the rest.
	var gotB []sse.Event
	var gapsB []sse.Gap
	var wg sync.WaitGroup
	started := make(chan struct{})
	wg.Go(func() {
		next, stop := iter.Pull2(b.Events(ctx, "k"))
		defer stop()
		close(started)
		for {
			ev, err, ok := next()
			if !ok {
				return
			}
			if gap := (*sse.GapError)(nil); errors.As(err, &gap) && len(gotB) == 0 && len(gapsB) == 0 {
				gapsB = append(gapsB, gap.Gap)
				continue
			}
			if err != nil {
				t.Errorf("B: %v", err)
				return
			}
			countMu.Lock()
			gotB = append(gotB, ev)
			countMu.Unlock()
		}
	})
	<-started
	// Wait until B owns the key: it has taken an event.
	publish(51, 60)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n := countOf(&wg, &gotB); n > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	publish(61, total)
	p.Close(ctx, "k")
	// A, the stale owner, must not hand out anything more.
	for {
		ev, err, ok := nextA()
		if !ok {
			t.Fatal("A's range ended without an error")
		}
		if err != nil {
			if !errors.Is(err, sse.ErrReplaced) {
				t.Fatalf("A ended with %v, want ErrReplaced", err)
			}
			break
		}
		// Events A had fetched before B took over may still come only if
		// A's floor write for them succeeded, that is, before B's takeover.
		gotA = append(gotA, ev)
	}
	wg.Wait()
	seen := make(map[uint64]int)
	for _, ev := range append(gotA, gotB...) {
		seen[ev.ID]++
	}
	for id := uint64(1); id <= total; id++ {
		if seen[id] != 1 {
			t.Fatalf("event %d read %d times (A read %d, B %d)", id, seen[id], len(gotA), len(gotB))
		}
	}
	for _, g := range gapsB {
		for id := g.From; id <= g.To; id++ {
			if !slices.ContainsFunc(gotA, func(ev sse.Event) bool { return ev.ID == id }) {
				t.Fatalf("B's gap %+v names event %d, which A did not read", g, id)
			}
		}
	}
	for i := 1; i < len(gotB); i++ {
		if gotB[i].ID != gotB[i-1].ID+1 {
			t.Fatalf("B read %d after %d", gotB[i].ID, gotB[i-1].ID)
		}
	}
}

var countMu sync.Mutex

func countOf(_ *sync.WaitGroup, evs *[]sse.Event) int {
	countMu.Lock()
	defer countMu.Unlock()
	return len(*evs)
}

// TestBusy: a connection that does not take over gets ErrBusy while
// another process's connection holds the key; one that does takes it over,
// and the older connection ends with ErrReplaced.
func TestBusy(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	a := newBroker[string](t, jsA, ssejs.WithName(name))
	b := newBroker[string](t, jsB, ssejs.WithName(name))
	ctx := within(t, 60*time.Second)
	if err := a.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	subA, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	evs, _, err := subA.Next(ctx, nil, nil, 1<<20)
	if err != nil || len(evs) != 3 {
		t.Fatalf("A: %v, %v", evs, err)
	}
	if _, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{}); !errors.Is(err, sse.ErrBusy) {
		t.Fatalf("B without takeover: %v, want ErrBusy", err)
	}
	if _, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{}); !errors.Is(err, sse.ErrBusy) {
		t.Fatalf("A's second connection without takeover: %v, want ErrBusy", err)
	}
	// The client got 1 and resumes on B: it gets 2 and 3 again, once.
	subB, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: subA.Epoch(), LastID: 1, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()
	if subB.Epoch() != subA.Epoch() {
		t.Fatalf("epochs %q and %q", subA.Epoch(), subB.Epoch())
	}
	evs, gap, err := subB.Next(ctx, nil, nil, 1<<20)
	if err != nil || gap != (sse.Gap{}) || len(evs) != 2 || evs[0].ID != 2 || evs[1].ID != 3 {
		t.Fatalf("B: %v %v %v, want 2 and 3", evs, gap, err)
	}
	if err := a.Enqueue(ctx, "k", "4"); err != nil {
		t.Fatal(err)
	}
	// A's connection learns it was replaced when it next takes, at the latest.
	if _, _, err := subA.Next(ctx, nil, nil, 1<<20); !errors.Is(err, sse.ErrReplaced) {
		t.Fatalf("A after the takeover: %v, want ErrReplaced", err)
	}
	evs, _, err = subB.Next(ctx, nil, nil, 1<<20)
	if err != nil || len(evs) != 1 || evs[0].ID != 4 {
		t.Fatalf("B: %v %v, want 4", evs, err)
	}
}

// TestShutdownDuringReplay: once Shutdown began, a Queue connection that
// still has events to replay ends with ErrShutdown rather than replaying
// them.
func TestShutdownDuringReplay(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 30*time.Second)
	if err := b.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	subA, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	evs, _, err := subA.Next(ctx, nil, nil, 1<<20)
	if err != nil || len(evs) != 3 {
		t.Fatalf("A: %v, %v", evs, err)
	}
	subA.Close()
	// The client got none of them: B replays them.
	subB, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: subA.Epoch(), LastID: 0})
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- b.Shutdown(ctx) }()
	select {
	case <-ssejs.Quit(b):
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not begin")
	}
	evs, _, err = subB.Next(ctx, nil, nil, 1<<20)
	subB.Close()
	if !errors.Is(err, sse.ErrShutdown) || len(evs) != 0 {
		t.Errorf("B after Shutdown began: %v, %v, want ErrShutdown", evs, err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
}

// TestConnectionGapsForOthersTakes: in one process, a key's connection
// competes with an in-process reader for its events. What the reader takes
// reaches the connection as a gap, before the connection's next event and
// before the end: never a silent jump, never close after a silent loss;
// and not before the reader has yielded or forfeit what it took.
func TestConnectionGapsForOthersTakes(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 30*time.Second)
	enqueue := func(data string) {
		t.Helper()
		if err := b.Enqueue(ctx, "k", data); err != nil {
			t.Fatal(err)
		}
	}
	conn, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	next := func(wantGap sse.Gap, wantIDs ...uint64) error {
		t.Helper()
		evs, gap, err := conn.Next(ctx, nil, nil, 1<<20)
		var ids []uint64
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
		if gap != wantGap || !slices.Equal(ids, wantIDs) {
			t.Fatalf("the connection got gap %+v and %v, want %+v and %v", gap, ids, wantGap, wantIDs)
		}
		return err
	}
	enqueue("1")
	next(sse.Gap{}, 1)
	reader, stop := iter.Pull2(b.Events(ctx, "k"))
	defer stop()
	enqueue("2")
	if ev, err, _ := reader(); err != nil || ev.ID != 2 {
		t.Fatalf("the reader got %+v, %v, want event 2", ev, err)
	}
	enqueue("3")
	next(sse.Gap{From: 2, To: 2}, 3)
	enqueue("4")
	if ev, err, _ := reader(); err != nil || ev.ID != 4 {
		t.Fatalf("the reader got %+v, %v, want event 4", ev, err)
	}
	if err := b.Close(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	// The connection is told of 4; the reader still holds it (it may
	// yet stop before its caller has it, and forfeit it): the connection
	// does not end before the reader has asked for more or stopped, and
	// only beats meanwhile.
	if err := next(sse.Gap{From: 4, To: 4}); err != nil {
		t.Fatalf("with the gap, while the reader holds 4: %v, want no end yet", err)
	}
	tick := make(chan time.Time, 1)
	tick <- time.Time{}
	if evs, gap, err := conn.Next(ctx, nil, tick, 1<<20); len(evs) > 0 || gap != (sse.Gap{}) || err != nil {
		t.Fatalf("while the reader holds 4: %v, %+v, %v; want a heartbeat", evs, gap, err)
	}
	stop() // it had yielded 4: nothing is forfeit
	err = next(sse.Gap{})
	if err != io.EOF {
		t.Fatalf("the connection's end: %v, want io.EOF after the gap", err)
	}
}

// TestStoppedReaderForfeits: an in-process reader takes events from the
// key in batches, its floor past them; when it stops before it yielded
// them all, the rest are named in a gap to the key's next reader, here or
// in another process, rather than skipped in silence.
func TestStoppedReaderForfeits(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	_, js2 := connect(t, srv.ClientURL())
	name := uniqueName()
	a := newBroker[string](t, js, ssejs.WithName(name))
	b := newBroker[string](t, js2, ssejs.WithName(name))
	ctx := within(t, 30*time.Second)
	if err := a.Enqueue(ctx, "k", "1", "2", "3", "4", "5", "6"); err != nil {
		t.Fatal(err)
	}
	next := func(r *ssejs.Broker[string], want string) {
		t.Helper()
		for ev, err := range r.Events(ctx, "k") {
			var gap *sse.GapError
			got := ev.Data
			if errors.As(err, &gap) {
				got = fmt.Sprintf("gap %d-%d", gap.From, gap.To)
			} else if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("read %q, want %q", got, want)
			}
			return // stop: the rest of what it took is forfeit
		}
	}
	next(a, "1")
	next(a, "gap 2-6") // the next reader here
	if err := a.Enqueue(ctx, "k", "7", "8", "9"); err != nil {
		t.Fatal(err)
	}
	next(a, "7")
	next(b, "gap 8-9") // in another process: a's lease, free now, tells of them
}

// TestForfeitNeverWritten: an in-process reader of process A takes 1-3
// and yields 1; A renews its lease, then loses its NATS connection, and
// only then the reader stops: the forfeit of 2-3 cannot reach the bucket.
// Every write since the take must have said that the reader held 1-3, so
// that B, which takes the key once A's lease expires, names them (a gap
// may name 1 too: A cannot know, when it writes, how far its reader got);
// it used to read 4 first, skipping 2-3 in silence (the checker's seeds
// 2559794569802867842 on ssejs, 19 on a cluster).
func TestForfeitNeverWritten(t *testing.T) {
	srv := startServer(t)
	nca, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	name := uniqueName()
	const lease = 1500 * time.Millisecond // renewed every 500 ms
	a := newBroker[string](t, jsA, ssejs.WithName(name), ssejs.WithLease(lease))
	b := newBroker[string](t, jsB, ssejs.WithName(name), ssejs.WithLease(lease))
	ctx := within(t, 30*time.Second)
	if err := a.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	r, stop := iter.Pull2(a.Events(ctx, "k"))
	defer stop()
	if it := r19Next(t, r); it.id != 1 {
		t.Fatalf("A's reader: %+v, want event 1", it)
	}
	kv, err := jsB.KeyValue(ctx, "SSE_"+name+"_keys")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ssejs.Token[string](stringCodec{}, "k")
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	for rev := e.Revision(); ; time.Sleep(20 * time.Millisecond) { // A renews
		if e, err := kv.Get(ctx, tok); err == nil && e.Revision() != rev {
			break
		}
	}
	nca.Close()
	stop() // 2 and 3 forfeit, and A cannot write it
	if err := b.Enqueue(ctx, "k", "4"); err != nil {
		t.Fatal(err)
	}
	var rb func() (sse.Event, error, bool)
	for { // A's lease expires
		next, stopb := iter.Pull2(b.Events(ctx, "k"))
		ev, err, _ := next()
		var g *sse.GapError
		switch {
		case errors.Is(err, sse.ErrBusy):
			stopb()
			time.Sleep(50 * time.Millisecond)
			continue
		case errors.As(err, &g):
			if g.From > 2 || g.To < 3 {
				t.Fatalf("B: gap %+v, want one naming 2 and 3", g.Gap)
			}
		case err != nil:
			t.Fatal(err)
		default:
			t.Fatalf("B read %d first: 2 and 3, taken by A's reader and never yielded, skipped with no gap", ev.ID)
		}
		defer stopb()
		rb = next
		break
	}
	if it := r19Next(t, rb); it.id != 4 {
		t.Fatalf("B after the gap: %+v, want event 4", it)
	}
}

// TestReplayOnALaggingReplica: a Queue replay reads the events to send
// again by direct gets, which any replica answers, one that lags the
// stream's leader included. Such a replica finds no message after the
// client's position: the replay used to end there, as if the window were
// done, and since the connection starts at the key's floor, the events
// between were neither sent nor named (issue 19, item 2, found by its
// review). A direct get that finds less than the floor says is stored is
// asked again at the leader.
func TestReplayOnALaggingReplica(t *testing.T) {
	srv := startServer(t)
	_, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	name := uniqueName()
	a := newBroker[string](t, jsA, ssejs.WithName(name))
	b := newBroker[string](t, jsB, ssejs.WithName(name))
	ctx := within(t, 30*time.Second)
	if err := a.Enqueue(ctx, "k", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"); err != nil {
		t.Fatal(err)
	}
	conn, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	epoch := conn.Epoch()
	for got := uint64(0); got < 10; { // the floor is 10; the client got 1-5
		evs, _, err := conn.Next(ctx, nil, nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) > 0 {
			got = evs[len(evs)-1].ID
		}
	}
	conn.Close()
	if err := a.Enqueue(ctx, "k", "11"); err != nil {
		t.Fatal(err)
	}
	ssejs.StaleGets(b, 2) // locate's first read, and the replay's
	s, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	next := uint64(6)
	for next <= 11 {
		evs, gap, err := s.Next(ctx, nil, nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if gap != (sse.Gap{}) {
			t.Fatalf("gap %+v after %d: the replay window holds 6-10", gap, next-1)
		}
		for _, ev := range evs {
			if ev.ID != next {
				t.Fatalf("event %d after %d: the replay was cut short", ev.ID, next-1)
			}
			next++
		}
	}
}
