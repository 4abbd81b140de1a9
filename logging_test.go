package sse

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// lines is a slog handler that keeps each record's message and attributes
// as one line, and may be made to block.
type lines struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	block chan struct{} // if not nil, Handle waits for it
}

func (l *lines) Enabled(context.Context, slog.Level) bool { return true }
func (l *lines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *lines) WithGroup(string) slog.Handler            { return l }
func (l *lines) Handle(_ context.Context, r slog.Record) error {
	if l.block != nil {
		<-l.block
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		l.buf.WriteString(" " + a.String())
		return true
	})
	l.buf.WriteByte('\n')
	return nil
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// TestBrokerLogs: the broker logs a dropping episode in two lines, a key
// forgotten with events nobody took, and events dropped at Shutdown.
func TestBrokerLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log lines
		b := New[string](WithLogger(slog.New(&log)), WithBuffer(1), WithMaxPending(2, DropOldest), WithRetention(time.Minute))
		ctx := context.Background()
		ch := b.Stream("k")
		enqueueSeq(t, b, "k", 1, 100) // drops many, one episode
		synctest.Wait()
		recvAll := func() {
			for len(ch) > 0 || b.Stats().Pending > 0 {
				<-ch
				synctest.Wait()
			}
		}
		recvAll() // the overflow drains: the episode ends
		enqueueSeq(t, b, "k", 101, 200)
		must(t, b.Close(ctx, "k"))
		synctest.Wait()
		time.Sleep(3 * time.Minute) // forgotten with its overflow unread
		synctest.Wait()
		b.Stream("stalled")
		enqueueSeq(t, b, "stalled", 1, 10)
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		b.Shutdown(short)
		got := log.String()
		for _, want := range []string{
			"sse: key started dropping events key=k policy=DropOldest\n",
			"sse: key stopped dropping events key=k dropped=97\n",
			"sse: key forgotten with events its readers never took key=k dropped=2\n",
			"sse: key started dropping events key=stalled policy=DropOldest\n",
			"sse: Shutdown's deadline passed, events dropped dropped=2\n", // its overflow's 2
		} {
			if !strings.Contains(got, want) {
				t.Errorf("log lacks %q:\n%s", want, got)
			}
		}
		if n := strings.Count(got, "started dropping"); n != 3 {
			t.Errorf("%d episodes started, want 3 (one for each burst of k, one for stalled):\n%s", n, got)
		}
	})
}

// TestSlowLoggerDoesNotSlowTheLoop: a logger that blocks holds no event
// back; the records it could not take are counted and said.
func TestSlowLoggerDoesNotSlowTheLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := lines{block: make(chan struct{})}
		b := New[int](WithLogger(slog.New(&log)), WithBuffer(1), WithMaxPending(0, DropNewest))
		ctx := context.Background()
		for k := range 1000 { // 1,000 episodes: far more than 256 records
			b.Stream(k)
			must(t, b.Enqueue(ctx, k, "1", "2"))
		}
		b.Stats() // the loop has handled them all, with the logger blocked
		if s := b.Stats(); s.Dropped != 1000 || s.Enqueued != 2000 {
			t.Fatalf("stats %+v", s)
		}
		close(log.block)
		must(t, b.Shutdown(ctx))
		if got := log.String(); !strings.Contains(got, "sse: log records lost") {
			t.Errorf("no word of the lost records:\n%.500s", got)
		}
	})
}
