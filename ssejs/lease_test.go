package ssejs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestLeaseExpiry: the lease of a process that died unnoticed expires
// after WithLease: until then a request that does not take over gets
// ErrBusy, then it gets the key.
func TestLeaseExpiry(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	ncA, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	const lease = 600 * time.Millisecond
	a := newBroker[string](t, jsA, ssejs.WithName(name), ssejs.WithLease(lease))
	b := newBroker[string](t, jsB, ssejs.WithName(name), ssejs.WithLease(lease))
	ctx := within(t, 30*time.Second)
	sub, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ncA.Close() // A is gone, without releasing its lease
	dead := time.Now()
	if _, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{}); !errors.Is(err, sse.ErrBusy) {
		t.Fatalf("B while A's lease runs: %v, want ErrBusy", err)
	}
	for {
		s, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
		if err == nil {
			s.Close()
			break
		}
		if !errors.Is(err, sse.ErrBusy) || time.Since(dead) > 20*time.Second {
			t.Fatalf("B after A died: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(dead); d < lease/2 {
		t.Errorf("B got the key %v after A died, before its lease of %v ran out", d, lease)
	}
}

// TestReplacedWhileIdle: a connection whose key another process took
// over learns it from its lease renewal, without an event, and ends.
func TestReplacedWhileIdle(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	const lease = 600 * time.Millisecond
	a := newBroker[string](t, jsA, ssejs.WithName(name), ssejs.WithLease(lease))
	b := newBroker[string](t, jsB, ssejs.WithName(name), ssejs.WithLease(lease))
	ctx := within(t, 30*time.Second)
	subA, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	ended := make(chan error, 1)
	go func() {
		_, _, err := subA.Next(ctx, nil, nil, 1<<20)
		ended <- err
	}()
	subB, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: subA.Epoch(), Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()
	took := time.Now()
	select {
	case err := <-ended:
		if !errors.Is(err, sse.ErrReplaced) {
			t.Fatalf("A: %v, want ErrReplaced", err)
		}
		t.Logf("A ended %v after the takeover", time.Since(took))
	case <-time.After(20 * time.Second):
		t.Fatal("A's idle connection did not end")
	}
}

// TestLocalTakeover: in one process, a connection that takes the key over
// aborts the older one's writes and ends it.
func TestLocalTakeover(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 30*time.Second)
	var aborted atomic.Bool
	first, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Abort: func() { aborted.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: first.Epoch(), Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if !aborted.Load() {
		t.Error("the older connection was not aborted")
	}
	if _, _, err := first.Next(ctx, nil, nil, 1<<20); !errors.Is(err, sse.ErrReplaced) {
		t.Errorf("the older connection: %v, want ErrReplaced", err)
	}
	b.Enqueue(ctx, "k", "x")
	if evs, _, err := second.Next(ctx, nil, nil, 1<<20); err != nil || len(evs) != 1 {
		t.Errorf("the newer connection: %v, %v", evs, err)
	}
}

// TestHandlerStatuses: through sse.Handler, an unknown key gets 404 with
// WithKnownKeysOnly, a key opened by the server is served, and a client
// that has every event of a closed key gets 204, on a replica other than
// the one that served it.
func TestHandlerStatuses(t *testing.T) {
	srv := startServer(t)
	for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			name := uniqueName()
			var urls []string
			var bs []*ssejs.Broker[string]
			for range 2 {
				_, js := connect(t, srv.ClientURL())
				b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
				hs := httptest.NewServer(sse.Handler[string](b, func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil }, sse.WithKnownKeysOnly()))
				t.Cleanup(hs.Close)
				urls, bs = append(urls, hs.URL), append(bs, b)
			}
			get := func(url, lastID string) int {
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				if lastID != "" {
					req.Header.Set("Last-Event-ID", lastID)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body) // to the end of the stream
				resp.Body.Close()
				return resp.StatusCode
			}
			if code := get(urls[0]+"/?key=nope", ""); code != http.StatusNotFound {
				t.Errorf("unknown key: %d, want 404", code)
			}
			ctx := within(t, 30*time.Second)
			if err := bs[0].Open(ctx, "job"); err != nil {
				t.Fatal(err)
			}
			bs[0].Enqueue(ctx, "job", "1", "2")
			bs[0].Close(ctx, "job")
			if code := get(urls[0]+"/?key=job", ""); code != http.StatusOK {
				t.Errorf("opened key: %d, want 200", code)
			}
			sub, err := bs[1].Subscribe(ctx, "job", sse.SubscribeRequest{Resume: true})
			if err != nil && !errors.Is(err, sse.ErrFinished) {
				t.Fatal(err)
			}
			var epoch string
			if sub != nil {
				epoch = sub.Epoch()
				sub.Close()
			} else {
				probe, err := bs[1].Subscribe(ctx, "job", sse.SubscribeRequest{Resume: true, Epoch: "x"})
				if err != nil {
					t.Fatal(err)
				}
				epoch = probe.Epoch()
				probe.Close()
			}
			if code := get(urls[1]+"/?key=job", epoch+"-"+strconv.Itoa(2)); code != http.StatusNoContent {
				t.Errorf("a client with every event: %d, want 204", code)
			}
		})
	}
}

// TestPurge: in Queue mode, the messages more than the replay window below
// the floor are purged, and a client that resumes before them is told of
// the gap, then gets the window.
func TestPurge(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithReplayEvents(10))
	ctx := within(t, 60*time.Second)
	for i := 1; i <= 200; i++ {
		if err := b.Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	epoch := sub.Epoch()
	for got := 0; got < 200; {
		evs, _, err := sub.Next(ctx, nil, nil, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got += len(evs)
	}
	sub.Close() // its last reader gone, the key's purge runs
	if n := subjectMessages(t, js, name, "k"); n > 60 {
		t.Errorf("%d messages kept with a replay window of 10", n)
	}
	sub, err = b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: 150, Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	evs, gap, err := sub.Next(ctx, nil, nil, 1<<20)
	if err != nil || gap != (sse.Gap{From: 151, To: 190}) {
		t.Fatalf("resumed after 150: %v %v %v, want the gap 151-190", evs, gap, err)
	}
	if len(evs) == 0 {
		evs, _, err = sub.Next(ctx, nil, nil, 1<<20)
	}
	if err != nil || len(evs) != 10 || evs[0].ID != 191 || evs[9].ID != 200 {
		t.Fatalf("then %v %v, want 191-200", evs, err)
	}
}

// TestLostLeaseAck: a floor write whose acknowledgement was lost fails the
// take, which hands out none of its events; the next lease write (here,
// the release) recognises the stored write as its own and writes the
// floor it had before, so that the next connection gets those events.
func TestLostLeaseAck(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	_, js2 := connect(t, srv.ClientURL())
	name := uniqueName()
	a := newBroker[string](t, js, ssejs.WithName(name))
	b := newBroker[string](t, js2, ssejs.WithName(name))
	ctx := within(t, 30*time.Second)
	if err := a.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	sub, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ssejs.DropLeaseAcks(a, 1)
	evs, _, err := sub.Next(ctx, nil, nil, 1<<20)
	if err == nil || len(evs) != 0 {
		t.Fatalf("a take whose floor write failed: %v, %v, want an error and no event", evs, err)
	}
	sub.Close() // releases the lease
	sub, err = b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := b.Enqueue(ctx, "k", "4"); err != nil {
		t.Fatal(err)
	}
	var ids []uint64
	for len(ids) < 4 {
		evs, _, err := sub.Next(ctx, nil, nil, 1<<20)
		if err != nil {
			t.Fatalf("after %v: %v", ids, err)
		}
		for _, ev := range evs {
			ids = append(ids, ev.ID)
		}
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("read %v, want 1 to 4", ids)
		}
	}
}

// TestLostLeaseAckOwnerGone: a floor write whose acknowledgement was lost
// fails the take, which hands out none of its events, and then the owner's
// connection is gone, so that no later write of its repairs the floor. The
// next owner's reader, which carries no ID, must not skip those events
// silently: it gets them named in a gap (it cannot know whether the old
// owner handed them out; sending them would risk a duplicate).
func TestLostLeaseAckOwnerGone(t *testing.T) {
	b, ctx := ownerGoneMidTake(t)
	var sub2 sse.Subscription
	var err error
	for { // a's lease expires
		if sub2, err = b.Subscribe(ctx, "k", sse.SubscribeRequest{}); !errors.Is(err, sse.ErrBusy) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	readOrNamed(t, ctx, sub2, 4)
}

// ownerGoneMidTake makes a Queue key "k" whose owner, a, took events 1-3
// with its floor write stored and its ack lost, then lost its connection;
// it returns b, another process of the same name on a 1 s lease, which
// has published event 4.
func ownerGoneMidTake(t *testing.T) (*ssejs.Broker[string], context.Context) {
	t.Helper()
	srv := startServer(t)
	nca, js := connect(t, srv.ClientURL())
	_, js2 := connect(t, srv.ClientURL())
	name := uniqueName()
	a := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithLease(time.Second))
	b := newBroker[string](t, js2, ssejs.WithName(name), ssejs.WithLease(time.Second))
	ctx := within(t, 30*time.Second)
	if err := a.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
		t.Fatal(err)
	}
	sub, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ssejs.DropLeaseAcks(a, 1)
	if evs, _, err := sub.Next(ctx, nil, nil, 1<<20); err == nil || len(evs) != 0 {
		t.Fatalf("a take whose floor write failed: %v, %v, want an error and no event", evs, err)
	}
	nca.Close() // a's connection is gone: nothing of a's repairs the floor
	sub.Close()
	if err := b.Enqueue(ctx, "k", "4"); err != nil {
		t.Fatal(err)
	}
	return b, ctx
}

// readOrNamed reads sub up to event last, failing the test if an event
// is skipped without a gap that names it.
func readOrNamed(t *testing.T, ctx context.Context, sub sse.Subscription, last uint64) {
	t.Helper()
	next := uint64(1)
	for next <= last {
		evs, gap, err := sub.Next(ctx, nil, nil, 1<<20)
		if err != nil {
			t.Fatalf("after %d: %v", next-1, err)
		}
		if gap != (sse.Gap{}) {
			if gap.From != next {
				t.Fatalf("gap %+v after %d", gap, next-1)
			}
			next = gap.To + 1
		}
		for _, ev := range evs {
			if ev.ID != next {
				t.Fatalf("event %d after %d: a silent skip", ev.ID, next-1)
			}
			next++
		}
	}
}

// leaseKeys is how many keys TestLeasesManyKeys holds: LEASE_KEYS, or
// 3,000.
func leaseKeys(t *testing.T) int {
	n := 3000
	if v := os.Getenv("LEASE_KEYS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 200 {
			t.Fatalf("LEASE_KEYS=%q: want a number of at least 200", v)
		}
	}
	return n
}

// TestLeasesManyKeys: a process holds many keys, each with a reader, on a
// short lease; after several lease times, requests of another process
// that do not take over get ErrBusy for every key tried. With a write per
// key per third of the lease, one round trip at a time, the leases
// lapsed: requests without an ID took 49 and 102 of 200 keys (issue 22).
// It logs the holder's heap and goroutines per key; LEASE_KEYS=100000
// runs it at that scale (with LEASE_NATS_URL, against that server
// rather than one in the test's process).
func TestLeasesManyKeys(t *testing.T) {
	n := leaseKeys(t)
	url := os.Getenv("LEASE_NATS_URL")
	if url == "" {
		url = startServer(t).ClientURL()
	}
	name := uniqueName()
	_, jsA := connect(t, url)
	_, jsB := connect(t, url)
	const lease = 300 * time.Millisecond
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()
	a := newBroker[int](t, jsA, ssejs.WithName(name), ssejs.WithLease(lease), ssejs.WithMaxReaders(n+1000))
	b := newBroker[int](t, jsB, ssejs.WithName(name), ssejs.WithLease(lease))
	ctx := within(t, 10*time.Minute)
	subs := make([]sse.Subscription, n)
	t.Cleanup(func() {
		for _, s := range subs {
			if s != nil {
				s.Close()
			}
		}
	})
	var (
		wg     sync.WaitGroup
		next   atomic.Int64
		failed atomic.Value
	)
	for range 32 {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= n || failed.Load() != nil {
					return
				}
				s, err := a.Subscribe(ctx, k, sse.SubscribeRequest{})
				if err != nil {
					failed.Store(fmt.Errorf("key %d: %w", k, err))
					return
				}
				subs[k] = s
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(err)
	}
	held := time.Now()
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	t.Logf("%d keys held, each with a reader: per key %.1f KiB of heap in use, %.1f KiB of goroutine stacks, %.1f goroutines (in this process; the NATS server's too unless LEASE_NATS_URL)",
		n, float64(after.HeapInuse-before.HeapInuse)/1024/float64(n), float64(after.StackInuse-before.StackInuse)/1024/float64(n),
		float64(runtime.NumGoroutine()-g0)/float64(n))
	_, _, from := bucketWrites(t, ctx, jsB, name, 0)
	time.Sleep(5 * lease) // several lease times, renewed or lapsed
	keys, others, _ := bucketWrites(t, ctx, jsB, name, from)
	if keys > 0 {
		t.Errorf("%d writes of the entries of idle keys: their upkeep writes per key", keys)
	}
	t.Logf("over 5 lease times: %d writes of the keys' entries, %d of the processes' liveness (counted as TestLeaseUpkeepWrites counts)", keys, others)
	took := 0
	for i := range 200 {
		k := i * (n / 200)
		s, err := b.Subscribe(ctx, k, sse.SubscribeRequest{})
		switch {
		case err == nil:
			took++
			s.Close()
		case !errors.Is(err, sse.ErrBusy):
			t.Fatalf("key %d: %v", k, err)
		}
	}
	t.Logf("200 keys tried %v after the last was taken", time.Since(held).Round(time.Millisecond))
	if took > 0 {
		t.Errorf("requests without an ID took %d of 200 keys another process held and read: its leases lapsed", took)
	}
}

// bucketWrites returns the bucket's writes from sequence from on that
// its stream still holds: to the entries of keys, and to the others (the
// processes' liveness); and the sequence to count from next. An entry's
// write replaced by a later one is gone (the bucket keeps one revision):
// a write of an entry since from leaves at least its last. From 0, it
// counts nothing.
func bucketWrites(t *testing.T, ctx context.Context, js jetstream.JetStream, name string, from uint64) (keys, others int, next uint64) {
	t.Helper()
	s, err := js.Stream(ctx, "KV_SSE_"+name+"_keys")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for seq := from; from > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // replaced by a later write of its entry
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(m.Subject, "$KV.SSE_"+name+"_keys.k") {
			keys++
		} else {
			others++
		}
	}
	return keys, others, info.State.LastSeq + 1
}

// TestLeaseUpkeepWrites: keeping the leases of idle keys writes nothing
// per key: over several lease times, a process holding N keys writes
// none of their entries, only its own liveness, whatever N; and its
// leases hold. (Every key's entry used to be written a third of the lease
// apart.)
func TestLeaseUpkeepWrites(t *testing.T) {
	srv := startServer(t)
	const lease = 300 * time.Millisecond
	for _, n := range []int{1, 50} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			name := uniqueName()
			_, jsA := connect(t, srv.ClientURL())
			_, jsB := connect(t, srv.ClientURL())
			a := newBroker[int](t, jsA, ssejs.WithName(name), ssejs.WithLease(lease))
			b := newBroker[int](t, jsB, ssejs.WithName(name), ssejs.WithLease(lease))
			ctx := within(t, 60*time.Second)
			for k := range n {
				s, err := a.Subscribe(ctx, k, sse.SubscribeRequest{})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
			}
			_, _, from := bucketWrites(t, ctx, jsB, name, 0)
			// At least 6 writes of anything: two lease times of
			// renewals, of the process or of its keys.
			var keys, others int
			for keys+others < 6 {
				time.Sleep(lease / 3)
				k, o, next := bucketWrites(t, ctx, jsB, name, from)
				keys, others, from = keys+k, others+o, next
			}
			t.Logf("%d keys held: %d writes of their entries, %d of the processes' liveness", n, keys, others)
			if keys > 0 {
				t.Errorf("%d writes of the entries of %d idle keys: their upkeep writes per key", keys, n)
			}
			if _, err := b.Subscribe(ctx, n-1, sse.SubscribeRequest{}); !errors.Is(err, sse.ErrBusy) {
				t.Errorf("another process's request for a held key: %v, want ErrBusy", err)
			}
		})
	}
}

// TestShutdownFreesKeys: a process that shuts down frees its keys at
// once, even those whose readers have not ended yet (their release is
// still to come): another process's request without an ID gets the key,
// long before the lease would have expired.
func TestShutdownFreesKeys(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	a, err := ssejs.New[string](context.Background(), jsA, ssejs.WithName(name), ssejs.WithLease(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	b := newBroker[string](t, jsB, ssejs.WithName(name), ssejs.WithLease(10*time.Minute))
	ctx := within(t, 30*time.Second)
	sub, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := a.Shutdown(short); err == nil {
		t.Fatal("Shutdown returned before the open subscription ended")
	}
	s, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Errorf("another process, once the owner shut down: %v, want the key", err)
	} else {
		s.Close()
	}
	sub.Close()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestReplacedWhileIdleLongLease: a process whose key another process
// took over is told at once, and its idle connection ends, long before a
// lease time: nothing waits for a renewal of the key's lease.
func TestReplacedWhileIdleLongLease(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	const lease = 10 * time.Minute
	a := newBroker[string](t, jsA, ssejs.WithName(name), ssejs.WithLease(lease))
	b := newBroker[string](t, jsB, ssejs.WithName(name), ssejs.WithLease(lease))
	ctx := within(t, 60*time.Second)
	subA, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer subA.Close()
	ended := make(chan error, 1)
	go func() {
		_, _, err := subA.Next(ctx, nil, nil, 1<<20)
		ended <- err
	}()
	subB, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: subA.Epoch(), Takeover: true})
	if err != nil {
		t.Fatal(err)
	}
	defer subB.Close()
	select {
	case err := <-ended:
		if !errors.Is(err, sse.ErrReplaced) {
			t.Fatalf("A: %v, want ErrReplaced", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A's idle connection did not end")
	}
}

// TestLeaseOfAnOlderVersion: a key's entry written by a version before
// process liveness carries its own expiry, and no liveness names its
// owner: it holds until that expiry, and the key is free after it.
func TestLeaseOfAnOlderVersion(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(name))
	ctx := within(t, 30*time.Second)
	kv, err := js.KeyValue(ctx, "SSE_"+name+"_keys")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		key   string
		until time.Duration
		want  error
	}{
		{"held", 10 * time.Minute, sse.ErrBusy},
		{"expired", -time.Second, nil},
	} {
		tok, _ := ssejs.Token[string](stringCodec{}, c.key)
		entry := fmt.Sprintf(`{"o":"an-older-process","u":%d,"n":"x"}`, time.Now().Add(c.until).UnixMilli())
		if _, err := kv.Create(ctx, tok, []byte(entry)); err != nil {
			t.Fatal(err)
		}
		s, err := b.Subscribe(ctx, c.key, sse.SubscribeRequest{})
		if err == nil {
			s.Close()
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.key, err, c.want)
		}
	}
}

// A live owner whose liveness a lagging replica of the bucket does not
// show is asked of the bucket's leader before it is taken for dead: a
// request without an ID gets ErrBusy, not the key (found by review).
func TestLivenessOnALaggingReplica(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, jsA := connect(t, srv.ClientURL())
	_, jsB := connect(t, srv.ClientURL())
	a := newBroker[string](t, jsA, ssejs.WithName(name), ssejs.WithLease(time.Minute))
	b := newBroker[string](t, jsB, ssejs.WithName(name), ssejs.WithLease(time.Minute))
	ctx := within(t, 30*time.Second)
	sub, err := a.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ssejs.StaleKVGets(b, 1)
	if s, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{}); !errors.Is(err, sse.ErrBusy) {
		if err == nil {
			s.Close()
		}
		t.Fatalf("B, with a stale read of A's liveness: %v, want ErrBusy", err)
	}
}

// TestLostAcquireAckAfterOwnerGone: the owner's take is stored with its
// ack lost, and the owner's connection is gone (so its last take may not
// have been handed out); the next process's write that takes the key is
// stored with its ack lost too, so its first Subscribe fails. Its next
// Subscribe finds the entry its own: the previous owner's take must still
// be named in a gap, not skipped as if this process had handed it out.
func TestLostAcquireAckAfterOwnerGone(t *testing.T) {
	b, ctx := ownerGoneMidTake(t)
	ssejs.DropAcquireAcks(b, 1)
	var err error
	for { // a's lease expires; then b's write that takes it loses its ack
		_, err = b.Subscribe(ctx, "k", sse.SubscribeRequest{})
		if !errors.Is(err, sse.ErrBusy) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err == nil {
		t.Fatal("the Subscribe whose acquire's ack was lost did not fail")
	}
	sub2, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Close()
	readOrNamed(t, ctx, sub2, 4)
}
