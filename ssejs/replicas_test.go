package ssejs_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/conformance"
	"github.com/rocketqueue/sse/sseclient"
	"github.com/rocketqueue/sse/ssejs"
)

// TestReplicas: two replicas, each an http.Server with its own NATS
// connection and broker, and a producer on a third connection. A client
// whose connection is cut again and again, and that reconnects to each
// replica in turn, gets every event exactly once, in order, then "close".
func TestReplicas(t *testing.T) {
	srv := startServer(t)
	for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
		t.Run(mode.String(), func(t *testing.T) { replicas(t, srv.ClientURL(), mode, nil) })
	}
}

// TestExternal runs the conformance suite and the replicas test against
// the NATS server at $NATS_URL, which must have JetStream enabled. Its
// streams and buckets are deleted at the end.
func TestExternal(t *testing.T) {
	natsURL := os.Getenv("NATS_URL")
	if natsURL == "" {
		t.Skip("NATS_URL is not set")
	}
	_, js := connect(t, natsURL)
	var mu sync.Mutex
	var made []string
	track := func(name string) {
		mu.Lock()
		made = append(made, name)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, name := range made {
			js.DeleteStream(ctx, "SSE_"+name)
			js.DeleteKeyValue(ctx, "SSE_"+name+"_keys")
		}
	})
	t.Run("Conformance", func(t *testing.T) {
		conformance.Run(t, func(t *testing.T, c conformance.Config) conformance.Impl[string] {
			name := "x" + uniqueName() + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
			track(name)
			opts := []ssejs.Option{ssejs.WithName(name), ssejs.WithMode(c.Mode), ssejs.WithStorage(jetstream.MemoryStorage)}
			if c.Retain > 0 {
				if c.Mode == sse.FanOut {
					opts = append(opts, ssejs.WithHistoryMessages(c.Retain))
				} else {
					opts = append(opts, ssejs.WithReplayEvents(c.Retain))
				}
			}
			b := newBroker[string](t, js, opts...)
			return conformance.Impl[string]{Publisher: b, Reader: b, Source: b}
		}, strconv.Itoa)
	})
	for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
		t.Run("Replicas"+mode.String(), func(t *testing.T) { replicas(t, natsURL, mode, track) })
	}
}

// cutter dials connections that it can cut all at once.
type cutter struct {
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	cuts  atomic.Int64
}

func (c *cutter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.conns[conn] = struct{}{}
	c.mu.Unlock()
	return conn, nil
}

func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn := range c.conns {
		conn.Close()
		delete(c.conns, conn)
		c.cuts.Add(1)
	}
}

func replicas(t *testing.T, natsURL string, mode sse.Mode, track func(string)) {
	name := "r" + uniqueName() + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	if track != nil {
		track(name)
	}
	opts := []ssejs.Option{ssejs.WithName(name), ssejs.WithMode(mode)}
	var urls []string
	for range 2 {
		_, js := connect(t, natsURL)
		b := newBroker[string](t, js, opts...)
		h := sse.Handler[string](b, func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil })
		hs := httptest.NewUnstartedServer(h)
		ctx, cancel := context.WithCancel(context.Background())
		hs.Config.BaseContext = func(net.Listener) context.Context { return ctx }
		hs.Start()
		t.Cleanup(func() { cancel(); hs.Close() })
		urls = append(urls, hs.URL)
	}
	_, jsP := connect(t, natsURL)
	producer := newBroker[string](t, jsP, opts...)
	ctx := within(t, 90*time.Second)
	const key, total = "job 7.*>", 300

	c := &cutter{conns: make(map[net.Conn]struct{})}
	client := &http.Client{Transport: &http.Transport{DialContext: c.dial, DisableKeepAlives: true}}
	var attempt atomic.Int64
	newRequest := func(ctx context.Context, lastID string) (*http.Request, error) {
		u := urls[attempt.Add(1)%2] + "/?key=" + url.QueryEscape(key)
		return http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	}
	var got []sse.Event
	done := make(chan error, 1)
	go func() {
		var err error
		for ev, e := range sseclient.Stream(ctx, newRequest, sseclient.WithHTTPClient(client), sseclient.WithLastEventID("0"), sseclient.WithBackoff(time.Millisecond, 20*time.Millisecond)) {
			if e != nil {
				err = e
				break
			}
			if ev.Name == sseclient.EventGap {
				err = errors.New("gap: " + ev.Data)
				break
			}
			n, _ := strconv.ParseUint(ev.ID[strings.LastIndexByte(ev.ID, '-')+1:], 10, 64)
			got = append(got, sse.Event{ID: n, Data: ev.Data})
		}
		done <- err
	}()
	// Cut the client's connection every few milliseconds while events flow.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
				c.cut()
			}
		}
	})
	for i := 1; i <= total; i++ {
		if err := producer.Enqueue(ctx, key, strconv.Itoa(i)); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err := producer.Close(ctx, key); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the client ended with %v after %d events", err, len(got))
		}
	case <-ctx.Done():
		t.Fatalf("the client did not end; it has %d events", len(got))
	}
	if len(got) != total {
		t.Fatalf("got %d events, want %d", len(got), total)
	}
	for i, ev := range got {
		if ev.ID != uint64(i+1) || ev.Data != strconv.Itoa(i+1) {
			t.Fatalf("event %d is %+v", i, ev)
		}
	}
	if c.cuts.Load() < 5 || attempt.Load() < 5 {
		t.Errorf("only %d cuts and %d connections", c.cuts.Load(), attempt.Load())
	}
	t.Logf("%d connections, %d cut", attempt.Load(), c.cuts.Load())
}

// TestOperatorSettingsKept: New creates the stream and bucket it needs if
// they are missing, and never changes them once they exist: limits an
// operator set survive every replica's start. A stream whose settings
// would break the guarantees is refused.
func TestOperatorSettingsKept(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	ctx := within(t, 30*time.Second)
	name := uniqueName()
	newBroker[string](t, js, ssejs.WithName(name))
	st, err := js.Stream(ctx, "SSE_"+name)
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	c.MaxBytes, c.MaxAge = 64<<20, 36*time.Hour // the operator's
	if _, err := js.UpdateStream(ctx, c); err != nil {
		t.Fatal(err)
	}
	// and the bucket's entries outlive the events they cover, as they must
	if _, err := js.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "SSE_" + name + "_keys", History: 1, TTL: 37 * time.Hour, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	newBroker[string](t, js, ssejs.WithName(name)) // another replica starts
	if st, err = js.Stream(ctx, "SSE_"+name); err != nil {
		t.Fatal(err)
	}
	if c := st.CachedInfo().Config; c.MaxBytes != 64<<20 || c.MaxAge != 36*time.Hour {
		t.Fatalf("after a replica's New: MaxBytes %d, MaxAge %v; want the operator's 64 MiB and 36h", c.MaxBytes, c.MaxAge)
	}

	bad := uniqueName()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SSE_" + bad, Subjects: []string{"sse." + bad + ".e.>"}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := ssejs.New[string](ctx, js, ssejs.WithName(bad)); err == nil || !strings.Contains(err.Error(), "retention") {
		t.Fatalf("New on a work-queue stream: %v, want a refusal naming its retention", err)
	}
}

// TestBucketTTLChecked: a Queue bucket whose entries an operator made
// expire before the stream's events would lose read floors, and the
// events would be read again: New refuses it, naming it.
func TestBucketTTLChecked(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	ctx := within(t, 30*time.Second)
	name := uniqueName()
	newBroker[string](t, js, ssejs.WithName(name))
	if _, err := js.UpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "SSE_" + name + "_keys", History: 1, TTL: time.Second, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	if _, err := ssejs.New[string](ctx, js, ssejs.WithName(name)); err == nil || !strings.Contains(err.Error(), "read floors") {
		t.Fatalf("New with a bucket whose entries expire in a second: %v, want a refusal", err)
	}
}
