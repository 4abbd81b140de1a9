package ssejs_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestIdleReaders: several in-process readers of a Queue key that has no
// event yet all attach, and all take events once they come, each event
// once: a reader waiting for the key's next message does not keep the
// others from attaching.
func TestIdleReaders(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	const timeout = 2 * time.Second
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithTimeout(timeout))
	// No deadline: the readers' subscriptions are bounded by the broker's
	// timeout.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const readers = 3
	var (
		mu   sync.Mutex
		got  [readers][]uint64
		errs []error
		wg   sync.WaitGroup
	)
	for r := range readers {
		wg.Go(func() {
			for ev, err := range b.Events(ctx, "jobs") {
				mu.Lock()
				if err != nil {
					if ctx.Err() == nil {
						errs = append(errs, err)
					}
				} else {
					got[r] = append(got[r], ev.ID)
				}
				mu.Unlock()
			}
		})
		time.Sleep(300 * time.Millisecond) // the readers before wait for events
	}
	// Longer than a subscription's timeout: the readers that did not get
	// the key's sem at once would have failed by now.
	time.Sleep(timeout + time.Second)
	published := 0
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		all, n, failed := true, 0, len(errs) > 0
		for r := range readers {
			all = all && len(got[r]) > 0
			n += len(got[r])
		}
		mu.Unlock()
		if failed || all && n == published || time.Now().After(deadline) {
			break
		}
		if n == published { // one at a time, so that each reader gets a turn
			published++
			if err := b.Enqueue(ctx, "jobs", strconv.Itoa(published)); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("readers failed: %v", errs)
	}
	seen := make(map[uint64]int)
	for r := range readers {
		if len(got[r]) == 0 {
			t.Errorf("reader %d got no event of %d", r, published)
		}
		for _, id := range got[r] {
			seen[id]++
		}
	}
	for id := uint64(1); id <= uint64(published); id++ {
		if seen[id] != 1 {
			t.Errorf("event %d read %d times", id, seen[id])
		}
	}
}

// TestIdleTakeover: a connection that takes over, in the same process, a
// key whose connection waits for events gets it promptly, not after the
// older connection's heartbeat, and the older one ends with ErrReplaced.
func TestIdleTakeover(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 60*time.Second)
	if err := b.Enqueue(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	old, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	evs, _, err := old.Next(ctx, nil, nil, 1<<20)
	if err != nil || len(evs) != 1 {
		t.Fatalf("old: %v, %v", evs, err)
	}
	heartbeat := time.NewTimer(time.Minute)
	defer heartbeat.Stop()
	ended := make(chan error, 1)
	go func() {
		for {
			evs, _, err := old.Next(ctx, nil, heartbeat.C, 1<<20)
			if err != nil || len(evs) > 0 {
				ended <- err
				return
			}
		}
	}()
	time.Sleep(200 * time.Millisecond) // old waits for events
	start := time.Now()
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	sub, err := b.Subscribe(sctx, "k", sse.SubscribeRequest{Resume: true, Epoch: old.Epoch(), LastID: 1, Takeover: true})
	if err != nil {
		t.Fatalf("takeover after %v: %v", time.Since(start), err)
	}
	defer sub.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, sse.ErrReplaced) {
			t.Fatalf("old after the takeover: %v, want ErrReplaced", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("old did not end")
	}
	if err := b.Enqueue(ctx, "k", "2"); err != nil {
		t.Fatal(err)
	}
	evs, _, err = sub.Next(ctx, nil, nil, 1<<20)
	if err != nil || len(evs) != 1 || evs[0].ID != 2 {
		t.Fatalf("new: %v %v, want 2", evs, err)
	}
}

// TestNewLifeUnderReader: when every message of a Queue key expires under
// a reader and the key's next event starts a new life (IDs from 1), the
// reader's range ends with ErrTruncated rather than dropping the new
// life's events or handing them out under the old life's floor, and the
// next reader reads the new life from its start.
func TestNewLifeUnderReader(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name))
	ctx := within(t, 60*time.Second)
	if err := b.Enqueue(ctx, "k", "a", "b", "c"); err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	next, stop := iter.Pull2(b.Events(rctx, "k"))
	defer stop()
	for want := uint64(1); want <= 3; want++ {
		ev, err, ok := next()
		if !ok || err != nil || ev.ID != want {
			t.Fatalf("old life: %v %v %v, want event %d", ev, err, ok, want)
		}
	}
	// The key's messages expire. WithMaxAge cannot be shorter than the
	// duplicate window's 10 minutes, so the test removes them as MaxAge
	// would: all of them.
	stream, err := js.Stream(ctx, "SSE_"+name)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSubject("sse."+name+".e.k"+base64.RawURLEncoding.EncodeToString([]byte("k")))); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Known: true}); !errors.Is(err, sse.ErrUnknownKey) {
		t.Fatalf("the key after its messages expired: %v, want ErrUnknownKey", err)
	}
	if err := b.Enqueue(ctx, "k", "x", "y"); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		ev, err, ok := next()
		switch {
		case !ok:
			got <- errors.New("the range ended with no error")
		case err == nil:
			got <- fmt.Errorf("event %v", ev)
		default:
			got <- err
		}
	}()
	select {
	case err := <-got:
		if !errors.Is(err, sse.ErrTruncated) {
			t.Fatalf("the old life's reader got %v, want ErrTruncated", err)
		}
	case <-time.After(10 * time.Second):
		rcancel()
		t.Fatalf("the old life's reader got nothing, then %v", <-got)
	}
	stop()
	var ids []uint64
	for ev, err := range b.Events(ctx, "k") {
		if err != nil {
			t.Fatalf("new life: %v", err)
		}
		if ids = append(ids, ev.ID); len(ids) == 2 {
			break
		}
	}
	if ids[0] != 1 || ids[1] != 2 {
		t.Fatalf("new life: %v, want 1 and 2", ids)
	}
}
