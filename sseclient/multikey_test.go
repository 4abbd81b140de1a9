package sseclient_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/cutproxy"
	"github.com/rocketqueue/sse/sseclient"
)

// TestKeyControlEvents: on a stream of several keys, sse.gap and sse.close
// are yielded (other sse. names are still skipped), Gap reads sse.gap, and
// Key tells each event's key from its ID.
func TestKeyControlEvents(t *testing.T) {
	body := "id: 1:e-5,\nevent: sse.gap\ndata: {\"key\":1,\"from\":3,\"to\":5}\n\n" +
		"id: 0:e-5,f-1\nevent: sse.future\ndata: x\n\n" +
		"id: 0:e-6,f-1\ndata: a\n\n" +
		"id: 1:e-6,.\nevent: sse.close\ndata: {\"key\":1}\n\n" +
		"id: 0:.,.\nevent: sse.close\ndata: {\"key\":0}\n\n" + closing
	s := script(t, sends(body), status(http.StatusNoContent, ""))
	events, err := collect(t, sseclient.Events(bounded(t), s.URL, fast(s)...))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range events {
		i, ok := e.Key()
		got = append(got, e.Name, e.Data, strconv.Itoa(i)+strconv.FormatBool(ok))
	}
	want := []string{
		sseclient.EventKeyGap, `{"key":1,"from":3,"to":5}`, "1true",
		"", "a", "0true",
		sseclient.EventKeyClose, `{"key":1}`, "1true",
		sseclient.EventKeyClose, `{"key":0}`, "0true",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if from, to, ok := events[0].Gap(); !ok || from != 3 || to != 5 {
		t.Fatalf("Gap() = %d, %d, %v", from, to, ok)
	}
	for _, id := range []string{"e-5", "", ":e-1", "x:e-1", "1234567890:", "-1:"} {
		if i, ok := (sseclient.Event{ID: id}).Key(); ok {
			t.Errorf("Key() of ID %q = %d, true", id, i)
		}
	}
}

// TestExactlyOnceSeveralKeys: the client follows 50 keys of a FanOut
// broker on one connection (the library's MultiHandler) through a proxy
// that cuts it at random byte offsets, while a producer publishes; each
// key's events arrive once, in order, then its sse.close, and the sequence
// ends after every key's.
func TestExactlyOnceSeveralKeys(t *testing.T) { exactlyOnceKeys(t, 50, 60) }

// TestExactlyOnce1000Keys: the same with 1,000 keys, whose IDs name the
// broker's cursors, and stay small.
func TestExactlyOnce1000Keys(t *testing.T) { exactlyOnceKeys(t, 1000, 8) }

// exactlyOnceKeys is TestExactlyOnceSeveralKeys with nkeys keys of total
// events each.
func exactlyOnceKeys(t *testing.T, nkeys, total int) {
	b := sse.New[string](sse.WithMode(sse.FanOut))
	keys := func(r *http.Request) ([]string, error) { return strings.Split(r.URL.Query().Get("keys"), ","), nil }
	srv := serveBroker(t, b, sse.MultiHandler(b, keys, sse.WithMaxKeysPerRequest(max(nkeys, sse.DefaultKeysPerRequest))))
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	p, err := cutproxy.Start(srv.Listener.Addr().String(), cutproxy.Options{
		Cut: func(n int) int64 { return 1 + rand.New(rand.NewPCG(seed, uint64(n))).Int64N(64<<10) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	names := make([]string, nkeys)
	for i := range names {
		names[i] = "k" + strconv.Itoa(i)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*patience)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 1; n <= total; n++ {
			for _, k := range names {
				if err := b.Publish(ctx, k, sse.Event{Data: k + "/" + strconv.Itoa(n)}); err != nil {
					t.Error(err)
					return
				}
			}
		}
		for _, k := range names {
			if err := b.Close(ctx, k); err != nil {
				t.Error(err)
			}
		}
	}()
	defer func() { <-done }()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	next := make([]int, nkeys) // per key: the events received
	closed := make([]bool, nkeys)
	reconnections, longest := 0, 0
	seq := sseclient.Events(ctx, "http://"+p.Addr()+"?keys="+strings.Join(names, ","),
		sseclient.WithHTTPClient(&http.Client{Transport: tr}),
		sseclient.WithBackoff(0, 0),
		sseclient.WithOnReconnect(func(error, time.Duration) { reconnections++ }))
	for e, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		longest = max(longest, len(e.ID))
		i, ok := e.Key()
		if !ok || i >= nkeys || closed[i] {
			t.Fatalf("event %+v: key %d, %v (closed: %v)", e, i, ok, ok && i < nkeys && closed[i])
		}
		switch e.Name {
		case sseclient.EventKeyClose:
			if next[i] != total {
				t.Fatalf("key %d closed after %d events", i, next[i])
			}
			closed[i] = true
		case "":
			next[i]++
			if want := names[i] + "/" + strconv.Itoa(next[i]); e.Data != want {
				t.Fatalf("key %d: got %q, want %q: each event once, in order", i, e.Data, want)
			}
		default:
			t.Fatalf("unexpected %+v", e)
		}
	}
	for i, c := range closed {
		if !c {
			t.Fatalf("key %d not closed: %d events", i, next[i])
		}
	}
	t.Logf("%d keys × %d events, %d reconnections, the longest ID %d bytes", nkeys, total, reconnections, longest)
	if longest > 500 {
		t.Fatalf("an ID of %d bytes", longest)
	}
	if reconnections < 3 {
		t.Fatalf("%d reconnections: the stream was hardly cut", reconnections)
	}
}
