package ssejs_test

// Review of the issue-19 changes: each test fails on the HEAD it was
// written against, and names the guarantee it breaks.

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// r19Reader reads an in-process range as a list of items: an event's ID,
// or a gap.
type r19Item struct {
	id  uint64
	gap sse.Gap
}

func (it r19Item) String() string {
	if it.gap != (sse.Gap{}) {
		return fmt.Sprintf("gap %d-%d", it.gap.From, it.gap.To)
	}
	return fmt.Sprintf("event %d", it.id)
}

// r19Next returns the next item of a pulled range, failing the test on
// any error but a gap.
func r19Next(t *testing.T, next func() (sse.Event, error, bool)) r19Item {
	t.Helper()
	ev, err, ok := next()
	if !ok {
		t.Fatal("the range ended")
	}
	var g *sse.GapError
	if errors.As(err, &g) {
		return r19Item{gap: g.Gap}
	}
	if err != nil {
		t.Fatal(err)
	}
	return r19Item{id: ev.ID}
}

// TestReview19OwedGapBehindConnection: a connection C got event 4; an
// in-process reader R of the same process had taken 1-3 before and stops
// after yielding 1. C's next Next gives the gap 2-3, behind C's position
// (out of order), and the handler writes it with id 3, so the browser's
// Last-Event-ID goes back from 4 to 3; when it reconnects with it, the
// replay sends event 4 again. Breaks: no event read twice; an exact gap, in
// order.
func TestReview19OwedGapBehindConnection(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	a := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 30*time.Second)
	conn, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { conn.Close() }()
	epoch := conn.Epoch()
	if err := a.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	r, stop := iter.Pull2(a.Events(ctx, "k"))
	defer stop()
	if it := r19Next(t, r); it.id != 1 {
		t.Fatalf("R: %+v, want event 1", it)
	}
	if err := a.Enqueue(ctx, "k", "4"); err != nil {
		t.Fatal(err)
	}
	// The client, as a browser: its Last-Event-ID is the id of the last
	// event or gap it got (a gap's id is its To).
	var lastID uint64
	seen := map[uint64]int{}
	recv := func(s sse.Subscription, tick <-chan time.Time) {
		t.Helper()
		evs, gap, err := s.Next(ctx, nil, tick, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if gap != (sse.Gap{}) {
			if gap.From <= lastID {
				t.Errorf("gap %+v after event %d: behind the connection's position", gap, lastID)
			}
			lastID = gap.To
		}
		for _, ev := range evs {
			if seen[ev.ID]++; seen[ev.ID] > 1 {
				t.Fatalf("event %d sent twice to the client", ev.ID)
			}
			lastID = ev.ID
		}
	}
	for seen[4] == 0 {
		recv(conn, nil)
	}
	stop() // R stops: 2 and 3 forfeit
	recv(conn, time.After(300*time.Millisecond))
	conn.Close() // the network drops; the client reconnects with its Last-Event-ID
	conn, err = a.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: lastID, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Enqueue(ctx, "k", "5"); err != nil {
		t.Fatal(err)
	}
	for seen[5] == 0 {
		recv(conn, nil)
	}
}

// TestReview19OwedCrossesLife: qkey.owed is kept in memory while the key is
// read in the process; when the key's life ends (its messages expire) and
// another begins, attach resets the lease to the new life but not owed:
// the new life's first reader is told of a gap 2-3, then reads the new
// life's events 1, 2, 3. Breaks: a gap never names events the reader
// will still receive; events in order.
func TestReview19OwedCrossesLife(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	name := uniqueName()
	a := newBroker[string](t, js, ssejs.WithName(name))
	ctx := within(t, 30*time.Second)
	conn, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{}) // keeps the key read here
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := a.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	r, stop := iter.Pull2(a.Events(ctx, "k"))
	if it := r19Next(t, r); it.id != 1 {
		t.Fatalf("R: %+v, want event 1", it)
	}
	stop() // 2 and 3 forfeit
	expireKey(t, js, name, "k")
	if err := a.Enqueue(ctx, "k", "n1", "n2", "n3"); err != nil { // the key's next life
		t.Fatal(err)
	}
	r3, stop3 := iter.Pull2(a.Events(ctx, "k"))
	defer stop3()
	var items []r19Item
	for len(items) == 0 || items[len(items)-1].id < 3 {
		items = append(items, r19Next(t, r3))
	}
	for _, it := range items {
		if it.gap != (sse.Gap{}) {
			t.Fatalf("the new life's reader got %+v: a gap of the old life, then the events it names", items)
		}
	}
}

// TestReview19AccountLimitNotARefusal: at the account's JetStream limit (any
// hosted NATS account has one) the server refuses a publish with 10002
// "resource limits exceeded for account", which refusal() does not know:
// Enqueue retries it until its timeout and returns "outcome unknown",
// though nothing was stored. The doc says a store full to "the account's
// own limit" is a definite refusal. Breaks: ErrNotStored for a definite
// refusal; no "outcome unknown" when the library knows nothing was stored.
func TestReview19AccountLimitNotARefusal(t *testing.T) {
	srv := startServer(t)
	if err := srv.GlobalAccount().UpdateJetStreamLimits(map[string]server.JetStreamAccountLimits{
		"": {MaxMemory: -1, MaxStore: 4 << 20, MaxStreams: -1, MaxConsumers: -1},
	}); err != nil {
		t.Fatal(err)
	}
	_, js := connect(t, srv.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut), ssejs.WithTimeout(3*time.Second))
	ctx := within(t, 60*time.Second)
	data := strings.Repeat("x", 64<<10)
	var err error
	var took time.Duration
	for i := 0; i < 200; i++ {
		start := time.Now()
		if err = b.Enqueue(context.Background(), "k", data); err != nil { // bounded by WithTimeout
			took = time.Since(start)
			break
		}
	}
	_, perr := js.Publish(ctx, "sse."+name+".e.x", []byte(data))
	t.Logf("raw publish: %v", perr)
	var api *jetstream.APIError
	if !errors.Is(err, ssejs.ErrNotStored) || !errors.As(err, &api) {
		t.Fatalf("at the account's limit: %v (after %v), want ErrNotStored and the server's APIError", err, took)
	}
}

// TestReview19ClosedConnectionNotStored: once the NATS connection is closed,
// every publish attempt fails before anything is sent
// (nats.ErrConnectionClosed); Enqueue still retries until its timeout and
// says "outcome unknown". Breaks: no "outcome unknown" when the library
// knows nothing was stored.
func TestReview19ClosedConnectionNotStored(t *testing.T) {
	srv := startServer(t)
	nc, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut), ssejs.WithTimeout(time.Second))
	ctx := within(t, 30*time.Second)
	if err := b.Enqueue(ctx, "k", "1"); err != nil { // the key's state is cached
		t.Fatal(err)
	}
	nc.Close()
	err := b.Enqueue(context.Background(), "k", "2") // bounded by WithTimeout
	if !errors.Is(err, ssejs.ErrNotStored) {
		t.Fatalf("Enqueue on a closed connection: %v, want ErrNotStored", err)
	}
}

// TestReview19UnsureKeptTooLate: a reader's take is stored but its floor
// write's ack is lost; the reader ends, and its key's last reference goes
// (unref). unref removes the qkey from the map at once, but records the
// unsure nonce for the next qkey (keepUnsure) only at its end, after its
// release write. A reader of the same key arriving meanwhile makes a new
// qkey whose acquire sees the unsure write as this process's own (no owed
// gap) and no unsure nonce (no undo): it starts after the floor, and 1-3
// are skipped with no gap. Breaks: every acknowledged event is read or
// named in a gap.
func TestReview19UnsureKeptTooLate(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	a := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 60*time.Second)
	skips := 0
	const rounds = 30
	for i := range rounds {
		key := "k" + strings.Repeat("x", i)
		if err := a.Enqueue(ctx, key, "1", "2", "3"); err != nil {
			t.Fatal(err)
		}
		ssejs.DropLeaseAcks(a, 1)
		r, stop := iter.Pull2(a.Events(ctx, key))
		if _, err, _ := r(); err == nil {
			t.Fatal("the take whose floor write's ack was lost did not fail")
		}
		stopped := make(chan struct{})
		go func() { stop(); close(stopped) }()
		time.Sleep(50 * time.Microsecond) // unref has removed the qkey, and is writing its release
		if err := a.Enqueue(ctx, key, "4"); err != nil {
			t.Fatal(err)
		}
		next, stop2 := iter.Pull2(a.Events(ctx, key))
		ev, err, _ := next()
		var g *sse.GapError
		switch {
		case errors.As(err, &g):
		case err != nil:
			t.Fatal(err)
		case ev.ID == 4:
			skips++
		}
		stop2()
		<-stopped
	}
	if skips > 0 {
		t.Fatalf("%d of %d rounds read 4 first: 1-3 skipped with no gap", skips, rounds)
	}
}

// TestUnsureTakeThenLostRelease (checker seed 18016640663608309394): an
// in-process reader's take writes the floor over events 1-3, stored but
// its ack lost, so the take fails and hands out none of them; the reader
// stops, and its qkey's release write is lost before the bucket gets it.
// The process remembered only its last write of unknown outcome, the
// release, which is no take's, and forgot the take: the next reader here
// found the stored floor as this process's own, with nothing to undo and
// nothing owed, and 1-3 were skipped with no gap. Breaks: every
// acknowledged event is read or named in a gap.
func TestUnsureTakeThenLostRelease(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	a := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 60*time.Second)
	if err := a.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	ssejs.DropLeaseAcks(a, 1)
	r, stop := iter.Pull2(a.Events(ctx, "k"))
	if _, err, _ := r(); err == nil {
		t.Fatal("the take whose floor write's ack was lost did not fail")
	}
	ssejs.LoseLeaseWrites(a, 1) // the release
	stop()
	if err := a.Enqueue(ctx, "k", "4"); err != nil {
		t.Fatal(err)
	}
	next, stop2 := iter.Pull2(a.Events(ctx, "k"))
	defer stop2()
	var ids []uint64
	for len(ids) == 0 || ids[len(ids)-1] < 4 {
		ev, err, _ := next()
		var g *sse.GapError
		switch {
		case errors.As(err, &g):
			t.Logf("gap %d-%d", g.From, g.To) // named: allowed
			ids = append(ids, g.To)
			continue
		case err != nil:
			t.Fatal(err)
		}
		ids = append(ids, ev.ID)
	}
	if ids[0] == 4 {
		t.Fatalf("read %v: 1-3 skipped with no gap", ids)
	}
}
