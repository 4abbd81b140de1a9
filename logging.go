package sse

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// WithLogger sends what an operator must know to l. Give it to [New] and
// the broker logs, at level Warn:
//
//   - "sse: key started dropping events", when an overflow policy
//     ([DropOldest], [DropNewest]) first drops one of a key's events, and
//     "sse: key stopped dropping events", with how many it dropped, when
//     the key's overflow has drained or the key is closed: one line each,
//     however many events it drops in between;
//   - "sse: key forgotten with events its readers never took", with how
//     many (see [WithRetention]);
//   - "sse: Shutdown's deadline passed, events dropped", with how many.
//
// The broker never calls l from its loop, so that a slow logger cannot
// slow it: a goroutine of its own, started only with a logger, writes the
// records, and if it falls 256 records behind, the loop drops the newest
// and the goroutine says how many it lost. Give it to [Handler] and the
// handler logs its refusals (4xx and 5xx answers, with the whole error),
// write errors and takeovers. By default neither logs anything.
func WithLogger(l *slog.Logger) LoggerOption { return LoggerOption{l} }

// LoggerOption is [WithLogger]'s option: both an [Option] for [New] and a
// [HandlerOption] for [Handler].
type LoggerOption struct{ l *slog.Logger }

func (o LoggerOption) apply(c *config)               { c.logger = o.l }
func (o LoggerOption) applyHandler(c *handlerConfig) { c.logger = o.l }

// A logRecord is a line the loop asks its log goroutine to write.
type logRecord struct {
	msg   string
	attrs []slog.Attr
}

// A brokerLog writes the loop's records from its own goroutine.
type brokerLog struct {
	l       *slog.Logger   // immutable
	records chan logRecord // written by the loop, which closes it when it returns
	lost    atomic.Uint64  // records the loop dropped because records was full
	done    chan struct{}  // closed when the goroutine has returned
}

func newBrokerLog(l *slog.Logger) *brokerLog {
	bl := &brokerLog{l: l, records: make(chan logRecord, 256), done: make(chan struct{})}
	go bl.run()
	return bl
}

func (bl *brokerLog) run() {
	defer close(bl.done)
	for rec := range bl.records {
		bl.l.LogAttrs(context.Background(), slog.LevelWarn, rec.msg, rec.attrs...)
		if n := bl.lost.Swap(0); n > 0 {
			bl.l.LogAttrs(context.Background(), slog.LevelWarn, "sse: log records lost: the logger was too slow", slog.Uint64("lost", n))
		}
	}
}

// emit hands a record to the goroutine without waiting. A nil brokerLog
// (no logger) does nothing.
func (bl *brokerLog) emit(msg string, attrs ...slog.Attr) {
	if bl == nil {
		return
	}
	select {
	case bl.records <- logRecord{msg, attrs}:
	default:
		bl.lost.Add(1)
	}
}

// stop ends the goroutine once it has written every record, and waits.
func (bl *brokerLog) stop() {
	if bl != nil {
		close(bl.records)
		<-bl.done
	}
}

// noteDropped records that an overflow policy dropped n of t's events: the
// count, and the first line of an episode.
func (l *loop[K]) noteDropped(t *topic[K], n int) {
	l.stats.Dropped += uint64(n)
	if l.b.log == nil || n == 0 {
		return
	}
	if t.dropping == 0 {
		l.b.log.emit("sse: key started dropping events", slog.Any("key", t.key), slog.String("policy", l.b.cfg.policy.String()))
	}
	t.dropping += n
}

// endDropping writes the summary of t's dropping episode, if it had one.
func (l *loop[K]) endDropping(t *topic[K]) {
	if t.dropping > 0 {
		l.b.log.emit("sse: key stopped dropping events", slog.Any("key", t.key), slog.Int("dropped", t.dropping))
		t.dropping = 0
	}
}
