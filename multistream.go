package sse

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// A multiStream is one multi-key response: the request's goroutine writes
// it, from what one pump goroutine per key reads.
type multiStream[K comparable] struct {
	h      *handler[K]
	r      *http.Request
	c      *conn
	v      *vector
	subs   []Subscription // the keys attached, nil for the others
	epochs []string       // the attached keys' epochs
	// finished lists the keys that were closed, with every event sent,
	// when the request came: their sse.close comes first.
	finished []int
	// resets holds the gaps of the keys whose position the request's ID
	// no longer told (see drain): they come first of all.
	resets []keyGap

	buf    []byte
	retry  bool // WithRetry's field is still to be written
	events uint64
	gaps   uint64
}

// closeSubs closes the subscriptions of a request refused before its
// stream started.
func (s *multiStream[K]) closeSubs() {
	for _, sub := range s.subs {
		if sub != nil {
			sub.Close()
		}
	}
}

// A keyBatch is what one call of a key's Next returned.
type keyBatch struct {
	key    int
	events []Event
	gap    Gap
	err    error
	back   chan struct{} // the writer is done with events: Next may reuse them
}

// pump reads sub into out, one batch at a time, until Next fails or ends,
// or ctx does; then it closes sub (a closed key is detached at once).
func pump(ctx context.Context, sub Subscription, b *keyBatch, out chan<- *keyBatch, limit int, wg *sync.WaitGroup) {
	defer wg.Done()
	defer sub.Close()
	var buf []Event
	for {
		// No tick: the writer keeps the heartbeat for every key.
		b.events, b.gap, b.err = sub.Next(ctx, buf, nil, limit)
		select {
		case out <- b: // never blocks: out has room for every key's batch
		case <-ctx.Done():
			return
		}
		if b.err != nil {
			return
		}
		select {
		case <-b.back:
		case <-ctx.Done():
			return
		}
		buf = b.events
	}
}

// multiEnd is how a multi-key stream goes on after a batch.
type multiEnd int

const (
	goOn    multiEnd = iota
	ended            // every key was closed: the buffer ends with "close"
	cut              // a key was cut short: write the buffer, end without "close"
	stopNow          // the client went away or the source failed: end, writing nothing
)

// stream writes every key's events until every key is closed or the
// connection ends.
func (s *multiStream[K]) stream(w http.ResponseWriter) {
	ctx := s.r.Context()
	cfg := &s.h.cfg
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // every pump has closed its subscription
	}()
	open := 0
	for _, sub := range s.subs {
		if sub != nil {
			open++
		}
	}
	out := make(chan *keyBatch, open)
	// Each key's batch is bounded so that the batches every key may hold
	// at once stay near one write's worth.
	limit := max(flushBytes/len(s.subs), 1<<10)
	for i, sub := range s.subs {
		if sub != nil {
			wg.Add(1)
			go pump(pctx, sub, &keyBatch{key: i, back: make(chan struct{}, 1)}, out, limit, &wg)
		}
	}

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache, no-transform")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	s.retry = cfg.retry > 0
	// Like a one-key stream, it holds no write buffer while it waits (see
	// writeBufs).
	bp := writeBufs.Get().(*[]byte)
	s.buf = (*bp)[:0]
	end := goOn
	for _, g := range s.resets {
		s.gap(g.key, g.gap)
	}
	for _, i := range s.finished {
		s.closeKey(i)
	}
	if open == 0 {
		s.buf, end = append(s.buf, cfg.end...), ended
	}
	if err := s.v.failed(); err != nil { // the cursor store failed: the client comes back
		s.h.log(ctx, slog.LevelWarn, "sse: storing a cursor failed: the multi-key stream ends", s.r, slog.Any("error", err))
		return
	}
	err := s.write(false) // the headers at once, and any sse.close
	keepWriteBuf(bp, s.buf)
	if err != nil || end != goOn {
		return
	}
	var heartbeat <-chan time.Time
	var beat *time.Timer
	if cfg.heartbeat > 0 {
		beat = time.NewTimer(cfg.heartbeat)
		defer beat.Stop()
		heartbeat = beat.C
	}
	for {
		var b *keyBatch
		ping := false
		select {
		case b = <-out:
		case <-heartbeat:
			ping = true
		case <-ctx.Done():
			end = stopNow
		}
		bp := writeBufs.Get().(*[]byte)
		s.buf = (*bp)[:0]
		if ping {
			s.buf = append(s.buf, ": ping\n\n"...)
		}
		if b != nil {
			end = s.take(b, &open)
			for end == goOn && len(s.buf) < flushBytes && s.v.failed() == nil {
				select {
				case b = <-out: // more is ready: into the same write
					end = s.take(b, &open)
					continue
				default:
				}
				break
			}
		}
		if err := s.v.failed(); err != nil && end != stopNow { // the cursor store failed: the client comes back
			s.h.log(ctx, slog.LevelWarn, "sse: storing a cursor failed: the multi-key stream ends", s.r, slog.Any("error", err))
			end = cut
		}
		switch {
		case end == stopNow && errors.Is(context.Cause(ctx), errServerShutdown):
			// Graceful ends the stream: the client comes back later.
			s.c.write(appendRetry(s.buf[:0], shutdownRetry()))
		case end != stopNow:
			err = s.write(ping)
		}
		keepWriteBuf(bp, s.buf) // a buffer grown past maxPooledBuf goes to the garbage collector
		s.buf = nil
		if err != nil || end != goOn {
			return
		}
		if beat != nil {
			beat.Reset(cfg.heartbeat)
		}
	}
}

// take appends b to the buffer, writing it whenever it holds a write's
// worth, and tells how the stream goes on; open counts the keys not
// closed yet.
func (s *multiStream[K]) take(b *keyBatch, open *int) multiEnd {
	if b.gap != (Gap{}) {
		s.gap(b.key, b.gap)
	}
	for _, ev := range b.events {
		if len(s.buf) >= flushBytes {
			if s.write(false) != nil {
				return stopNow
			}
		}
		s.event(b.key, ev)
	}
	switch err := b.err; {
	case err == nil:
		clear(b.events)      // hold no event's data while waiting
		b.back <- struct{}{} // Next may reuse the room
		return goOn
	case errors.Is(err, io.EOF):
		s.closeKey(b.key)
		if *open--; *open > 0 {
			return goOn
		}
		s.buf = append(s.buf, s.h.cfg.end...)
		return ended
	case errors.Is(err, ErrTruncated):
		// Cut short: no "close", so that the client comes back and
		// learns what happened.
		s.h.log(s.r.Context(), slog.LevelWarn, "sse: stream cut short", s.r, slog.Int("key", b.key), slog.Any("error", err))
		return cut
	default:
		if s.r.Context().Err() == nil {
			s.h.log(s.r.Context(), slog.LevelWarn, "sse: a key's stream failed: the multi-key stream ends", s.r, slog.Int("key", b.key), slog.Any("error", err))
		}
		return stopNow
	}
}

// block starts a block: with WithRetry, the stream's first starts with
// the retry field (see appendRetry).
func (s *multiStream[K]) block() {
	if s.retry {
		s.buf, s.retry = appendRetry(s.buf, s.h.cfg.retry), false
	}
}

// gap appends key i's sse.gap.
func (s *multiStream[K]) gap(i int, g Gap) {
	s.block()
	s.v.setID(i, s.epochs[i], g.To)
	s.buf = appendKeyGap(s.buf, s.v, i, g)
	s.gaps++
	s.h.log(s.r.Context(), slog.LevelWarn, "sse: client missed events that can no longer be sent", s.r, slog.Int("key", i), slog.Uint64("from", g.From), slog.Uint64("to", g.To))
}

// event appends an event of key i, or its gap if it cannot be sent as it
// is (see sendable).
func (s *multiStream[K]) event(i int, ev Event) {
	if s.h.checkEvents && !sendable(ev) {
		s.gap(i, Gap{From: ev.ID, To: ev.ID})
		s.h.log(s.r.Context(), slog.LevelError, "sse: the source gave an event that cannot be sent: sent as a gap", s.r, slog.Int("key", i), slog.Uint64("id", ev.ID), slog.String("name", ev.Name))
		return
	}
	s.block()
	s.v.setID(i, s.epochs[i], ev.ID)
	s.buf = appendBody(s.v.appendID(s.buf, i), ev)
	s.events++
}

// closeKey appends key i's sse.close.
func (s *multiStream[K]) closeKey(i int) {
	s.block()
	s.v.setClosed(i)
	s.buf = appendKeyClose(s.buf, s.v, i)
}

// write writes and flushes the buffer, and counts it; ping is whether it
// is a heartbeat.
func (s *multiStream[K]) write(ping bool) error {
	m := s.h.cfg.metrics
	if err := s.c.write(s.buf); err != nil {
		if m != nil && !errors.Is(err, errAborted) {
			m.dropped.Add(1)
		}
		s.h.failed(s.r.Context(), s.r, err)
		return err
	}
	if m != nil {
		m.bytes.Add(uint64(len(s.buf)))
		m.events.Add(s.events)
		m.gaps.Add(s.gaps)
		if ping {
			m.heartbeats.Add(1)
		}
	}
	s.buf, s.events, s.gaps = s.buf[:0], 0, 0
	return nil
}
