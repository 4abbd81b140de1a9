package sse

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"time"
)

// A multiStream is one multi-key response: the request's goroutine reads
// every key and writes it.
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
	writes int // the writes so far
}

// closeSubs closes the subscriptions still open: a request's refused
// before its stream started, or a stream's when it ends.
func (s *multiStream[K]) closeSubs() {
	for _, sub := range s.subs {
		if sub != nil {
			sub.Close()
		}
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
// connection ends. The request's goroutine reads every key, through a
// [multiPoll]: it starts no goroutine.
func (s *multiStream[K]) stream(w http.ResponseWriter) {
	ctx := s.r.Context()
	cfg := &s.h.cfg
	p := newMultiPoll(s.subs) // it closes a key in s.subs when the key ends
	defer s.closeSubs()
	open := p.turn.n
	// Each key's batch is bounded so that every key has its turn within
	// about one write's worth.
	limit := max(flushBytes/len(s.subs), 1<<10)

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
		keepWriteBuf(bp, s.buf[:0])
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
	// The buffer is taken from the pool when a key has something, and
	// given back when no key has anything more: the stream writes then,
	// or when the buffer is full (see take).
	hold := func() {
		if s.buf == nil {
			bp = writeBufs.Get().(*[]byte)
			s.buf = (*bp)[:0]
		}
	}
	release := func() {
		if s.buf != nil {
			keepWriteBuf(bp, s.buf) // a buffer grown past maxPooledBuf goes to the garbage collector
			s.buf = nil
		}
	}
	s.buf = nil
	defer release()
	wrote := func() {
		if beat != nil {
			beat.Reset(cfg.heartbeat)
		}
	}
	var events []Event // what the last Poll returned: the room for the next
	for end == goOn {
		if i, evs, gap, err, ok := p.next(ctx, events, limit); ok {
			hold()
			writes := s.writes
			end = s.take(p, i, evs, gap, err, &open)
			clear(evs) // hold no event's data while waiting
			events = evs
			if err := s.v.failed(); err != nil && end != stopNow { // the cursor store failed: the client comes back
				s.h.log(ctx, slog.LevelWarn, "sse: storing a cursor failed: the multi-key stream ends", s.r, slog.Any("error", err))
				end = cut
			}
			if s.writes != writes {
				wrote()
				if end == goOn && ctx.Err() != nil {
					end = stopNow // keys that are always ready do not hold off the end
				}
			}
			continue
		}
		// No key has anything: write what the buffer holds, then wait.
		if s.buf != nil {
			err := s.write(false)
			release()
			if err != nil {
				return
			}
			wrote()
		}
		select {
		case <-p.signal:
		case <-heartbeat:
			hold()
			s.buf = append(s.buf, ": ping\n\n"...)
			err := s.write(true)
			release()
			if err != nil {
				return
			}
			wrote()
		case <-ctx.Done():
			end = stopNow
		}
	}
	switch {
	case end == stopNow && errors.Is(context.Cause(ctx), errServerShutdown):
		// Graceful ends the stream: the client comes back later.
		hold()
		s.c.write(appendRetry(s.buf[:0], shutdownRetry()))
	case end != stopNow:
		s.write(false) // the last keys' sse.close and "close", or a cut's last events
	}
}

// take appends what key i's Poll returned to the buffer, writing it
// whenever it holds a write's worth, and tells how the stream goes on;
// open counts the keys not closed yet.
func (s *multiStream[K]) take(p *multiPoll, i int, evs []Event, gap Gap, err error, open *int) multiEnd {
	if gap != (Gap{}) {
		n, events, gaps := len(s.buf), s.events, s.gaps
		s.gap(i, gap)
		if s.fit(n, events, gaps) != nil {
			return stopNow
		}
	}
	for _, ev := range evs {
		n, events, gaps := len(s.buf), s.events, s.gaps
		s.event(i, ev)
		if s.fit(n, events, gaps) != nil {
			return stopNow
		}
	}
	switch {
	case err == nil:
		return goOn
	case errors.Is(err, io.EOF):
		n, events, gaps := len(s.buf), s.events, s.gaps
		s.closeKey(i)
		p.close(i) // detached at once
		end := goOn
		if *open--; *open == 0 {
			s.buf, end = append(s.buf, s.h.cfg.end...), ended
		}
		if s.fit(n, events, gaps) != nil {
			return stopNow
		}
		return end
	case errors.Is(err, ErrTruncated):
		// Cut short: no "close", so that the client comes back and
		// learns what happened.
		s.h.log(s.r.Context(), slog.LevelWarn, "sse: stream cut short", s.r, slog.Int("key", i), slog.Any("error", err))
		return cut
	default:
		if s.r.Context().Err() == nil {
			s.h.log(s.r.Context(), slog.LevelWarn, "sse: a key's stream failed: the multi-key stream ends", s.r, slog.Int("key", i), slog.Any("error", err))
		}
		return stopNow
	}
}

// fit writes the buffer's first n bytes, which held events events and
// gaps gaps, if the block appended after them took the buffer past
// flushBytes; the block stays for the next write. So a write stays within
// flushBytes, which conn.write sends whole, unless one block is larger.
func (s *multiStream[K]) fit(n int, events, gaps uint64) error {
	if len(s.buf) <= flushBytes || n == 0 {
		return nil
	}
	block, blockEvents, blockGaps := s.buf[n:], s.events-events, s.gaps-gaps
	s.buf, s.events, s.gaps = s.buf[:n], events, gaps
	if err := s.write(false); err != nil {
		return err
	}
	s.buf = append(s.buf, block...) // s.buf is empty: the block moves to the front
	s.events, s.gaps = blockEvents, blockGaps
	return nil
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
	s.writes++
	return nil
}
