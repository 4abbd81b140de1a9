package ssejs_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// readClosed reads a closed key to its end, failing on an error.
func readClosed[K comparable](t *testing.T, b *ssejs.Broker[K], key K) []sse.Event {
	t.Helper()
	var evs []sse.Event
	for ev, err := range b.Events(within(t, 30*time.Second), key) {
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// checkIDs fails unless evs have IDs 1, 2, 3, … and the data want.
func checkIDs(t *testing.T, evs []sse.Event, want ...string) {
	t.Helper()
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %v", len(evs), len(want), evs)
	}
	for i, ev := range evs {
		if ev.ID != uint64(i+1) || ev.Data != want[i] {
			t.Fatalf("event %d is %+v, want ID %d data %q", i, ev, i+1, want[i])
		}
	}
}

// subjectMessages counts the messages stored for the broker's key.
func subjectMessages(t *testing.T, js jetstream.JetStream, name, key string) uint64 {
	t.Helper()
	s, err := js.Stream(within(t, 10*time.Second), "SSE_"+name)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := ssejs.Token[string](stringCodec{}, key)
	info, err := s.Info(within(t, 10*time.Second), jetstream.WithSubjectFilter("sse."+name+".e."+tok))
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// TestLostAck: a publish whose acknowledgement is lost is retried with the
// same message ID and stored once, whether the subject moved on meanwhile
// or not. (The server checks the expected last subject sequence before the
// message ID: the retry learns that its first attempt was stored from the
// subject's last message, or, if another message came after it, from the
// duplicate answer to an attempt with the new expected sequence.)
func TestLostAck(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	_, js2 := connect(t, srv.ClientURL())
	for _, other := range []bool{false, true} {
		t.Run(fmt.Sprintf("other producer %v", other), func(t *testing.T) {
			name := uniqueName()
			b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
			b2 := newBroker[string](t, js2, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
			ctx := within(t, 30*time.Second)
			if err := b.Enqueue(ctx, "k", "a"); err != nil {
				t.Fatal(err)
			}
			var after func()
			if other {
				after = func() {
					if err := b2.Enqueue(ctx, "k", "c"); err != nil {
						t.Error(err)
					}
				}
			}
			ssejs.DropAcks(b, 1, after)
			if err := b.Enqueue(ctx, "k", "b"); err != nil {
				t.Fatal(err)
			}
			if err := b.Close(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			want := []string{"a", "b"}
			if other {
				want = append(want, "c")
			}
			checkIDs(t, readClosed(t, b, "k"), want...)
			if n, w := subjectMessages(t, js, name, "k"), uint64(len(want)+1); n != w {
				t.Errorf("%d messages stored, want %d", n, w)
			}
		})
	}
}

// TestIdempotencyKey: a call retried with the same idempotency key, from
// another process too, is stored once.
func TestIdempotencyKey(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	_, js2 := connect(t, srv.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	b2 := newBroker[string](t, js2, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 30*time.Second)
	for _, p := range []*ssejs.Broker[string]{b, b2, b} {
		if err := p.Publish(ssejs.WithIdempotencyKey(ctx, "order-1"), "k", sse.Event{Name: "n", Data: "once"}); err != nil {
			t.Fatal(err)
		}
	}
	// The same idempotency key on another key is another batch.
	if err := b.Enqueue(ssejs.WithIdempotencyKey(ctx, "order-1"), "k2", "other"); err != nil {
		t.Fatal(err)
	}
	b.Close(ctx, "k")
	b.Close(ctx, "k2")
	checkIDs(t, readClosed(t, b2, "k"), "once")
	checkIDs(t, readClosed(t, b2, "k2"), "other")
}

// TestProducers: producers in several processes, many goroutines each,
// get contiguous IDs, each batch whole.
func TestProducers(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	var bs []*ssejs.Broker[string]
	for range 3 {
		_, js := connect(t, srv.ClientURL())
		bs = append(bs, newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut)))
	}
	ctx := within(t, 60*time.Second)
	var wg sync.WaitGroup
	const goroutines, calls = 4, 25
	for p, b := range bs {
		for g := range goroutines {
			wg.Go(func() {
				for c := range calls {
					data := make([]string, 1+c%3)
					for i := range data {
						data[i] = fmt.Sprintf("%d/%d/%d/%d", p, g, c, i)
					}
					if err := b.Enqueue(ctx, "k", data...); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	bs[0].Close(ctx, "k")
	evs := readClosed(t, bs[1], "k")
	if want := len(bs) * goroutines * (calls/3*6 + 1); len(evs) != want {
		t.Fatalf("%d events, want %d", len(evs), want)
	}
	next := make(map[string]int)
	for i := 0; i < len(evs); {
		var p, g, c, j int
		fmt.Sscanf(evs[i].Data, "%d/%d/%d/%d", &p, &g, &c, &j)
		who := strconv.Itoa(p) + "/" + strconv.Itoa(g)
		if c != next[who] || j != 0 {
			t.Fatalf("event %d is %q: want %s's call %d from its start", i, evs[i].Data, who, next[who])
		}
		next[who]++
		for j := range 1 + c%3 {
			if ev := evs[i+j]; ev.ID != uint64(i+j+1) || ev.Data != fmt.Sprintf("%d/%d/%d/%d", p, g, c, j) {
				t.Fatalf("event %d is %+v", i+j, ev)
			}
		}
		i += 1 + c%3
	}
}

// TestSplit: a batch larger than the server's max payload is split into
// several messages, in order, with contiguous IDs.
func TestSplit(t *testing.T) {
	s := startServerWith(t, func(o *server.Options) { o.MaxPayload = 16 << 10 })
	_, js := connect(t, s.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 30*time.Second)
	var data []string
	for i := range 40 {
		data = append(data, fmt.Sprintf("%d:%s", i, strings.Repeat("x", 1000)))
	}
	if err := b.Enqueue(ctx, "k", data...); err != nil {
		t.Fatal(err)
	}
	if err := b.Enqueue(ctx, "k", strings.Repeat("y", 20<<10)); !errors.Is(err, sse.ErrInvalidEvent) {
		t.Errorf("an event larger than the max payload: %v, want ErrInvalidEvent", err)
	}
	b.Close(ctx, "k")
	checkIDs(t, readClosed(t, b, "k"), data...)
	if n := subjectMessages(t, js, name, "k"); n < 4 {
		t.Errorf("%d messages: the batch was not split", n)
	}
}

// TestClosedKey: after a Close, from any process, events are refused with
// ErrClosed, even when they come with another Close, and a Close again is
// no error.
func TestClosedKey(t *testing.T) {
	srv := startServer(t)
	name := uniqueName()
	_, js := connect(t, srv.ClientURL())
	_, js2 := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	b2 := newBroker[string](t, js2, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 30*time.Second)
	b.Enqueue(ctx, "k", "1")
	if err := b2.Close(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() {
			if i%2 == 0 {
				errs[i] = b.Enqueue(ctx, "k", "late")
			} else {
				errs[i] = b.Close(ctx, "k")
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i%2 == 0 && !errors.Is(err, sse.ErrClosed) || i%2 == 1 && err != nil {
			t.Errorf("call %d: %v", i, err)
		}
	}
	checkIDs(t, readClosed(t, b2, "k"), "1")
}

// TestSplitClosed: a split batch whose later part is refused because
// another process closed the key in between fails with an error that does
// not match ErrClosed (which says nothing was stored): its first part is.
func TestSplitClosed(t *testing.T) {
	s := startServerWith(t, func(o *server.Options) { o.MaxPayload = 16 << 10 })
	_, js := connect(t, s.ClientURL())
	_, js2 := connect(t, s.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	b2 := newBroker[string](t, js2, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 30*time.Second)
	var data []string
	for i := range 40 {
		data = append(data, fmt.Sprintf("%d:%s", i, strings.Repeat("x", 1000)))
	}
	var closeErr error
	ssejs.AfterPart(b, func() {
		ssejs.AfterPart(b, nil)
		closeErr = b2.Close(ctx, "k")
	})
	err := b.Enqueue(ctx, "k", data...)
	if closeErr != nil {
		t.Fatal(closeErr)
	}
	if err == nil || errors.Is(err, sse.ErrClosed) {
		t.Fatalf("a split batch whose second part met a Close: %v, want an error that is not ErrClosed", err)
	}
	evs := readClosed(t, b, "k")
	if len(evs) == 0 || len(evs) >= len(data) {
		t.Fatalf("%d events stored, want the first part's", len(evs))
	}
	checkIDs(t, evs, data[:len(evs)]...)
}

// TestIdempotencyKeyLongKey: a call with an idempotency key to a key of
// the longest length, whose batch is near the max payload, is stored
// (once): its message ID does not grow with the key.
func TestIdempotencyKeyLongKey(t *testing.T) {
	s := startServerWith(t, func(o *server.Options) { o.MaxPayload = 16 << 10 })
	_, js := connect(t, s.ClientURL())
	name := uniqueName()
	b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 30*time.Second)
	key := strings.Repeat("k", 1<<10)
	// 3 × 5,003 encoded bytes: within the 15,360 bytes of body a message
	// of a 16 KiB max payload holds.
	data := []string{strings.Repeat("a", 5000), strings.Repeat("b", 5000), strings.Repeat("c", 5000)}
	for range 2 {
		cctx, cancel := context.WithTimeout(ssejs.WithIdempotencyKey(ctx, strings.Repeat("i", 200)), 5*time.Second)
		err := b.Enqueue(cctx, key, data...)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	b.Close(ctx, key)
	checkIDs(t, readClosed(t, b, key), data...)
	if n := subjectMessages(t, js, name, key); n != 2 {
		t.Errorf("%d messages stored, want 2 (the batch, whole, and the Close)", n)
	}
}

// TestCancelledContextStoresNothing: a call whose context is done before
// it starts stores nothing, and says so: its error wraps ErrNotStored and
// the context's error, never "outcome unknown".
func TestCancelledContextStoresNothing(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut))
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 300 {
		err := b.Enqueue(done, "k", strconv.Itoa(i))
		if !errors.Is(err, ssejs.ErrNotStored) || !errors.Is(err, context.Canceled) {
			t.Fatalf("call %d: %v, want ErrNotStored and context.Canceled", i, err)
		}
	}
	ctx := within(t, 30*time.Second)
	if err := b.Enqueue(ctx, "k", "kept"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	var got []sse.Event
	for ev, err := range b.Events(ctx, "k") {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, ev)
	}
	if len(got) != 1 || got[0].ID != 1 || got[0].Data != "kept" {
		t.Fatalf("the key holds %+v, want only the call whose context was live", got)
	}
}

// expireKey does to key, now, what MaxAge does once all its messages are
// older: they are gone.
func expireKey(t *testing.T, js jetstream.JetStream, name, key string) {
	t.Helper()
	ctx := within(t, 10*time.Second)
	st, err := js.Stream(ctx, "SSE_"+name)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ssejs.Token[string](stringCodec{}, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSubject("sse."+name+".e."+tok)); err != nil {
		t.Fatal(err)
	}
}

// TestExpiredKeyStartsAfresh: a process that published to a key, and
// closed it, keeps what it knew of the key; once the key's messages have
// all expired, that must not make it refuse the key's next life: Subscribe
// starts one (it used to say "the key's life keeps ending" for ever),
// Enqueue stores into one another process started (it used to return
// ErrClosed), and Open starts one (it used to do nothing).
func TestExpiredKeyStartsAfresh(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	_, js2 := connect(t, srv.ClientURL())
	name := uniqueName()
	a := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	other := newBroker[string](t, js2, ssejs.WithName(name), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 30*time.Second)
	for _, k := range []string{"sub", "enq", "open"} {
		if err := a.Enqueue(ctx, k, "old"); err != nil {
			t.Fatal(err)
		}
		if err := a.Close(ctx, k); err != nil {
			t.Fatal(err)
		}
		expireKey(t, js, name, k)
	}

	sub, err := a.Subscribe(ctx, "sub", sse.SubscribeRequest{})
	if err != nil {
		t.Fatalf("Subscribe to an expired key: %v, want a new life", err)
	}
	sub.Close()

	if err := other.Enqueue(ctx, "enq", "1"); err != nil { // another process starts the new life
		t.Fatal(err)
	}
	if err := a.Enqueue(ctx, "enq", "2"); err != nil {
		t.Fatalf("Enqueue to the new life: %v", err)
	}

	if err := a.Open(ctx, "open"); err != nil {
		t.Fatal(err)
	}
	known := sse.Handler[string](a, func(r *http.Request) (string, error) { return "open", nil }, sse.WithKnownKeysOnly())
	rec := httptest.NewRecorder()
	rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	known.ServeHTTP(rec, httptest.NewRequestWithContext(rctx, http.MethodGet, "/", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("a key opened after it expired: %d, want 200 (a new life)", rec.Code)
	}
}

// TestFullStore: at the stream's bound (WithMaxBytes, below the server's
// store), Enqueue fails at once with the server's definite refusal
// (matching ErrNotStored, and a *jetstream.APIError), not after its
// timeout as "outcome unknown"; and a Queue key's reader can still read,
// so that the queue drains and the stream has room again.
func TestFullStore(t *testing.T) {
	srv := startServerWith(t, func(o *server.Options) { o.JetStreamMaxStore = 8 << 20 })
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithReplayEvents(4), ssejs.WithMaxBytes(4<<20))
	ctx := within(t, 60*time.Second)
	data := strings.Repeat("x", 64<<10)
	stored := 0
	var err error
	for stored < 1000 {
		start := time.Now()
		if err = b.Enqueue(ctx, "k", data); err != nil {
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("the refusal took %v", d)
			}
			break
		}
		stored++
	}
	var api *jetstream.APIError
	if !errors.Is(err, ssejs.ErrNotStored) || !errors.As(err, &api) {
		t.Fatalf("after %d events, a full store: %v, want ErrNotStored and the server's APIError", stored, err)
	}
	t.Logf("%d events of 64 KiB stored, then: %v", stored, err)
	read := 0
	for ev, err := range b.Events(ctx, "k") {
		if err != nil {
			t.Fatalf("reading a full store after %d events: %v", read, err)
		}
		if read++; ev.ID != uint64(read) {
			t.Fatalf("event %d has ID %d", read, ev.ID)
		}
		if read == stored {
			break
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for { // read events are purged: the store has room again
		if err = b.Enqueue(ctx, "k", data); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the queue drained: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEmptyCallsStoreNothing: Enqueue and Publish with no events do
// nothing, as the in-process broker's do: no message (which a FanOut
// history would count, and a reader from its start would meet with no
// events), no life started; the key is still checked, and Shutdown still
// refuses.
func TestEmptyCallsStoreNothing(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	ctx := within(t, 30*time.Second)
	for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
		name := uniqueName()
		b := newBroker[string](t, js, ssejs.WithName(name), ssejs.WithMode(mode))
		key := "k" + strconv.Itoa(int(mode))
		if err := b.Enqueue(ctx, key); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, key); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Subscribe(ctx, key, sse.SubscribeRequest{Known: true}); !errors.Is(err, sse.ErrUnknownKey) {
			t.Fatalf("%v: after empty calls, Subscribe(Known): %v, want ErrUnknownKey (no life started)", mode, err)
		}
		if err := b.Enqueue(ctx, strings.Repeat("x", 2000)); !errors.Is(err, sse.ErrInvalidKey) {
			t.Fatalf("%v: an empty call on a key too long: %v, want ErrInvalidKey", mode, err)
		}
		if err := b.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		if err := b.Publish(ctx, key); !errors.Is(err, sse.ErrShutdown) {
			t.Fatalf("%v: an empty call after Shutdown: %v, want ErrShutdown", mode, err)
		}
		st, err := js.Stream(ctx, "SSE_"+name)
		if err != nil {
			t.Fatal(err)
		}
		if n := st.CachedInfo().State.Msgs; n != 0 {
			t.Fatalf("%v: the stream holds %d messages after empty calls, want 0", mode, n)
		}
	}
}
