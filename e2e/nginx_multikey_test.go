package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/cutproxy"
	"github.com/rocketqueue/sse/sseclient"
)

// A stream of 100 keys (sse.MultiHandler's default bound) through nginx
// configured with docs/nginx.conf, with every connection between nginx and
// the server cut after 40 KB (a proxy between them): nginx ends the
// client's response short, and the Go client comes back through nginx
// with a Last-Event-ID that names the stream's cursor and the keys moved
// since (docs/protocol.md, "Cursors"), which holds every key's position.
// Every key's events arrive exactly once, in order, with no gap, and every
// key gets its sse.close, then the stream its close. The same with 256
// keys, whose request line (some 2.6 KB) nginx takes in one of its
// large_client_header_buffers.
func TestNginxMultiKeyResume(t *testing.T) {
	nginx := findNginx(t)
	for _, keys := range []int{sse.DefaultKeysPerRequest, 256} {
		t.Run(fmt.Sprintf("keys=%d", keys), func(t *testing.T) { nginxMultiKeyResume(t, nginx, keys) })
	}
}

func nginxMultiKeyResume(t *testing.T, nginx string, keys int) {
	const (
		events = 10 // a key
		cut    = 40_000
	)
	b := sse.New[string](sse.WithMode(sse.FanOut))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	multi := sse.MultiHandler[string](b, func(r *http.Request) ([]string, error) {
		return r.URL.Query()["k"], nil
	}, sse.WithMaxKeysPerRequest(keys))
	var (
		mu      sync.Mutex
		served  int // guarded by mu: requests for the stream
		resumed int // guarded by mu: those with a Last-Event-ID header
		longest int // guarded by mu: the longest Last-Event-ID header
	)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {}) // nginx is up once it answers 200
	mux.HandleFunc("GET /events", func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get("Last-Event-ID")
		mu.Lock()
		served++
		if id != "" {
			resumed++
			longest = max(longest, len(id))
		}
		mu.Unlock()
		multi.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	proxy, err := cutproxy.Start(srv.Listener.Addr().String(), cutproxy.Options{
		Cut: func(int) int64 { return cut },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	front := startNginx(t, nginx, &demo{url: "http://" + proxy.Addr() + "/"})

	names := make([]string, keys)
	q := make([]string, keys)
	for i := range names {
		names[i] = "key" + strconv.Itoa(i)
		q[i] = "k=" + names[i]
		if err := b.Open(context.Background(), names[i]); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The keys' events are published while the client reads: a round of
	// every key every 20 ms, then every key closes.
	published := make(chan struct{})
	var publishErr error // set before published is closed
	go func() {
		defer close(published)
		publishErr = func() error {
			for n := 1; n <= events; n++ {
				for _, k := range names {
					if err := b.Publish(ctx, k, sse.Event{Name: "step", Data: fmt.Sprintf("%s:%d", k, n)}); err != nil {
						return err
					}
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, k := range names {
				if err := b.Close(ctx, k); err != nil {
					return err
				}
			}
			return nil
		}()
	}()
	t.Cleanup(func() { <-published }) // before Shutdown; ctx ends it

	got := make([][]string, keys)
	closes := make([]int, keys)
	reconnects := 0
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	for ev, err := range sseclient.Events(ctx, front+"/events?"+strings.Join(q, "&")+"&lastEventId=0",
		sseclient.WithHTTPClient(&http.Client{Transport: tr}),
		sseclient.WithBackoff(10*time.Millisecond, 100*time.Millisecond),
		sseclient.WithOnReconnect(func(error, time.Duration) { reconnects++ }),
	) {
		if err != nil {
			t.Fatalf("after %d reconnections: %v", reconnects, err)
		}
		i, ok := ev.Key()
		if !ok || i >= keys {
			t.Fatalf("event %s %q has no key of the request's", ev.Name, ev.ID)
		}
		switch ev.Name {
		case "step":
			got[i] = append(got[i], ev.Data)
		case sseclient.EventKeyClose:
			closes[i]++
		default:
			t.Fatalf("event %s %q %q, want only the keys' events and their sse.close", ev.Name, ev.ID, ev.Data)
		}
	}
	<-published
	if publishErr != nil {
		t.Fatal(publishErr)
	}

	for i, k := range names {
		want := make([]string, events)
		for n := range want {
			want[n] = fmt.Sprintf("%s:%d", k, n+1)
		}
		if strings.Join(got[i], " ") != strings.Join(want, " ") || closes[i] != 1 {
			t.Errorf("key %d: events %q and %d sse.close; want %q each once, in order, and one sse.close", i, got[i], closes[i], want)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if reconnects < 2 || resumed != reconnects || served != reconnects+1 {
		t.Errorf("%d reconnections, %d requests for the stream of which %d resumed: want 2 reconnections or more, each a request that resumes", reconnects, served, resumed)
	}
	// The header nginx passed on named a cursor and at most CursorDelta
	// keys' entries: it stays short whatever the number of keys.
	if longest == 0 || longest > 512 {
		t.Errorf("the longest Last-Event-ID is %d bytes, want a cursor ID of 512 bytes at most for %d keys", longest, keys)
	}
	t.Logf("%d keys × %d events through nginx in %d connections to it (%d to the server), Last-Event-ID up to %d bytes",
		keys, events, reconnects+1, proxy.Conns(), longest)
}
