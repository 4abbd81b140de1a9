package sse

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strconv"
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
// forgotten with events nobody took, and events dropped at Shutdown. Under
// DropOldest a key holds its buffer, its bound and, if the feeder took one
// before the burst came, one event in the feeder's hands: so the counts
// are checked against each other, not against one schedule.
func TestBrokerLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log lines
		b := New[string](WithLogger(slog.New(&log)), WithBuffer(1), WithMaxPending(2, DropOldest), WithRetention(time.Minute))
		ctx := context.Background()
		ch := b.Stream("k")
		enqueueSeq(t, b, "k", 1, 100) // drops many, one episode
		synctest.Wait()
		recvAll := func() (n int) {
			for len(ch) > 0 || b.Stats().Pending > 0 {
				<-ch
				n++
				synctest.Wait()
			}
			return n
		}
		took := recvAll() // the overflow drains: the episode ends
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
		count := func(pattern string) []int {
			t.Helper()
			var ns []int
			for _, m := range regexp.MustCompile(pattern).FindAllStringSubmatch(got, -1) {
				n, _ := strconv.Atoi(m[1])
				ns = append(ns, n)
			}
			return ns
		}
		starts := count(`(?m)^sse: key started dropping events key=(k|stalled) policy=DropOldest$`)
		stops := count(`(?m)^sse: key stopped dropping events key=k dropped=(\d+)$`)
		forgot := count(`(?m)^sse: key forgotten with events its readers never took key=k dropped=(\d+)$`)
		atShutdown := count(`(?m)^sse: Shutdown's deadline passed, events dropped dropped=(\d+)$`)
		if len(starts) != 3 || len(stops) != 2 || len(forgot) != 1 || len(atShutdown) != 1 {
			t.Fatalf("want 3 episodes started (two of k, one of stalled), 2 stopped, 1 key forgotten, 1 Shutdown line:\n%s", got)
		}
		// First burst: what was not dropped was read.
		if d := stops[0]; d+took != 100 || d < 96 || d > 97 {
			t.Errorf("first burst: %d dropped and %d read, want 100 in all, with 96 or 97 dropped", d, took)
		}
		// Second burst: one event stays in the channel's buffer; the rest
		// was dropped, or forgotten with the key (its bound, and perhaps the
		// one in the feeder's hands).
		if d, f := stops[1], forgot[0]; d+f != 99 || f < 2 || f > 3 {
			t.Errorf("second burst: %d dropped and %d forgotten, want 99 in all, with 2 or 3 forgotten", d, f)
		}
		// The stalled key: its overflow and perhaps the feeder's one.
		if s := atShutdown[0]; s < 2 || s > 3 {
			t.Errorf("Shutdown dropped %d, want 2 or 3", s)
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
