package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssetest"
)

// BenchmarkHandlerWrite measures sse.Handler's write path alone: a Source
// whose Next hands over events without waiting or allocating, in batches
// of 1, of 64, or of 1 and 64 in turn ("batch=1,64"), until b.N events are
// handed over, and a ResponseWriter that discards what it is given (with
// Flush and SetWriteDeadline, as net/http's). Each event has an ID and 50
// bytes of data, or 100 KiB one at a time (larger than the write buffers
// the handler pools). An op is one event: ns/op, B/op and allocs/op are
// per event, the request's setup spread over them; MB/s counts what the
// handler wrote.
func BenchmarkHandlerWrite(b *testing.B) {
	for _, c := range []struct {
		batches []int
		size    int
	}{{[]int{1}, 50}, {[]int{64}, 50}, {[]int{1, 64}, 50}, {[]int{1}, 100 << 10}} {
		batches := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(c.batches)), ","), "[]")
		b.Run(fmt.Sprintf("batch=%s/data=%d", batches, c.size), func(b *testing.B) {
			src := &writeSource{n: b.N, batches: c.batches, ev: sse.Event{Data: strings.Repeat("x", c.size)}}
			h := sse.Handler[string](src, func(*http.Request) (string, error) { return "k", nil })
			w := &discardWriter{header: make(http.Header)}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			b.ReportAllocs()
			b.ResetTimer()
			h.ServeHTTP(w, r)
			b.StopTimer()
			if src.handed != b.N {
				b.Fatalf("%d events handed over, want %d", src.handed, b.N)
			}
			b.SetBytes(int64(w.bytes / max(1, b.N)))
		})
	}
}

// writeSource is a Source of one key whose Next hands over copies of one
// event, in batches of the sizes of batches in turn, n in all, then io.EOF.
type writeSource struct {
	n, handed, calls int
	batches          []int // the sizes of the batches, in turn
	ev               sse.Event
}

func (s *writeSource) Mode() sse.Mode { return sse.FanOut }

func (s *writeSource) Subscribe(context.Context, string, sse.SubscribeRequest) (sse.Subscription, error) {
	return s, nil
}

func (s *writeSource) Epoch() string { return "e" }

func (s *writeSource) Next(_ context.Context, buf []sse.Event, _ <-chan time.Time, _ int) ([]sse.Event, sse.Gap, error) {
	buf = buf[:0]
	k := s.batches[s.calls%len(s.batches)]
	s.calls++
	for range min(k, s.n-s.handed) {
		s.handed++
		ev := s.ev
		ev.ID = uint64(s.handed)
		buf = append(buf, ev)
	}
	if s.handed == s.n {
		return buf, sse.Gap{}, io.EOF
	}
	return buf, sse.Gap{}, nil
}

// Poll is Next: every batch is ready.
func (s *writeSource) Poll(ctx context.Context, buf []sse.Event, limit int, _ func()) ([]sse.Event, sse.Gap, error) {
	return s.Next(ctx, buf, nil, limit)
}

func (s *writeSource) Close() {}

// discardWriter is a ResponseWriter that counts and discards.
type discardWriter struct {
	header http.Header
	bytes  int
}

func (w *discardWriter) Header() http.Header              { return w.header }
func (w *discardWriter) WriteHeader(int)                  {}
func (w *discardWriter) Write(p []byte) (int, error)      { w.bytes += len(p); return len(p), nil }
func (w *discardWriter) Flush()                           {}
func (w *discardWriter) SetWriteDeadline(time.Time) error { return nil }

// TestHandlerBuffers: the handler's pooled write buffers and room for
// events, which streams share, carry every event whole and in order while
// several streams write at once, through small batches, large ones (which
// take room from a pool), events larger than a pooled buffer (which a
// stream keeps), and heartbeats (which give them back).
func TestHandlerBuffers(t *testing.T) {
	b := sse.New[string](sse.WithMode(sse.FanOut))
	defer b.Shutdown(context.Background())
	srv := httptest.NewServer(sse.Handler(b, func(r *http.Request) (string, error) {
		return r.URL.Query().Get("key"), nil
	}, sse.WithHeartbeat(2*time.Millisecond)))
	defer srv.Close()

	// dataOf is event id's data on key: its key and ID, then a run of
	// one letter, 100 KiB long for every 7th.
	dataOf := func(key string, id int) string {
		size := 10 + id%90
		if id%7 == 0 {
			size = 100 << 10
		}
		return key + "/" + strconv.Itoa(id) + "/" + strings.Repeat(string(rune('a'+id%26)), size)
	}
	batches := []int{1, 20, 1, 3, 50, 2, 9}
	const keys, rounds = 4, 3
	total := rounds * 86 // the sum of batches, per round
	var wg sync.WaitGroup
	for k := range keys {
		key := "k" + strconv.Itoa(k)
		resp, err := http.Get(srv.URL + "/?key=" + key)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := ssetest.CheckResponse(resp); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			events := ssetest.NewReader(resp.Body)
			for id := 1; id <= total; id++ {
				ev, err := events.Next()
				if err != nil {
					t.Errorf("%s, event %d: %v", key, id, err)
					return
				}
				if !strings.HasSuffix(ev.ID, "-"+strconv.Itoa(id)) || ev.Data != dataOf(key, id) {
					t.Errorf("%s: event %s with %d bytes of data, want event %d", key, ev.ID, len(ev.Data), id)
					return
				}
			}
			if ev, err := events.Next(); err != nil || ev.Type != sse.EventClose {
				t.Errorf("%s: %+v, %v after the last event, want close", key, ev, err)
			}
		})
		wg.Go(func() {
			id := 0
			for i := range rounds * len(batches) {
				evs := make([]sse.Event, batches[i%len(batches)])
				for j := range evs {
					id++
					evs[j] = sse.Event{Data: dataOf(key, id)}
				}
				if err := b.Publish(context.Background(), key, evs...); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					time.Sleep(5 * time.Millisecond) // a heartbeat is due
				}
			}
			if err := b.Close(context.Background(), key); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}
