package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"sync"
	"time"
)

// DefaultKeysPerRequest is how many keys a [MultiHandler] request may name
// unless [WithMaxKeysPerRequest] says otherwise; MaxKeysPerRequest is the
// most that option allows. Every event of a multi-key stream carries every
// key's position in its ID, at most 18 bytes a key while the keys' event
// numbers stay below a million (21 below a billion): 1.8 KB at 100 keys,
// 4.6 KB at 256, sent back in the Last-Event-ID header when the client
// reconnects, which proxies commonly cap at 8 KiB.
const (
	DefaultKeysPerRequest = 100
	MaxKeysPerRequest     = 256
)

// WithMaxKeysPerRequest bounds how many keys a [MultiHandler] request may
// name, from 1 to [MaxKeysPerRequest]; a request with more gets 400. The
// default is [DefaultKeysPerRequest]. It panics for n out of range. The
// bound keeps the IDs, which carry every key's position, and the
// Last-Event-ID header that sends one back, small (see
// docs/protocol.md).
func WithMaxKeysPerRequest(n int) HandlerOption {
	if n < 1 || n > MaxKeysPerRequest {
		panic(fmt.Sprintf("sse: WithMaxKeysPerRequest: %d is not from 1 to %d", n, MaxKeysPerRequest))
	}
	return handlerOptionFunc(func(c *handlerConfig) { c.maxKeys = n })
}

// MultiHandler returns an http.Handler that streams several keys of a
// [FanOut] source on one response, so that a page follows them with one
// EventSource (a browser opens at most six HTTP/1.1 connections per site).
// keys picks the request's keys, as a list; each key is shown on the wire
// by its position in that list, from 0. The protocol is written down in
// docs/protocol.md, "Several keys on one connection".
//
// A request whose list holds one key is served exactly as [Handler] serves
// it. With two keys or more:
//   - keys' error refuses the whole request, with the status [Handler]
//     gives a key function's error; so do an empty list, a key listed
//     twice, or more keys than [WithMaxKeysPerRequest] allows (400), and,
//     with [WithKnownKeysOnly], any key the server did not create (404).
//   - Every event's id is "<i>:<vector>": i is the position of the event's
//     key, the vector holds every key's position, so that a browser that
//     reconnects with its Last-Event-ID resumes every key, each exactly
//     once or with a gap. A Last-Event-ID that is not such an ID of this
//     request's keys (nor "0") gets 400.
//   - A key's events come in order; the keys' are interleaved. Events the
//     client missed that can no longer be sent come as an "sse.gap" event
//     ([EventKeyGap]), {"key":i,"from":F,"to":T}; a closed key whose
//     events were all sent gets an "sse.close" ([EventKeyClose]),
//     {"key":i}, and is detached from the connection at once. After the
//     last key's comes "close", and the response ends; a client that
//     resumes with every key closed gets 204.
//   - The connection counts as one stream under [WithMaxStreams]. At the
//     bound, a request with a Last-Event-ID header that resumes the
//     current life of its first key not closed may have one of the spare
//     places a reconnecting one-key FanOut client may have.
//
// Heartbeats, the retry field, write deadlines, metrics and logging are
// Handler's. While it streams, the handler runs one goroutine per key,
// which reads the key's [Subscription] into a channel the request's
// goroutine writes from; they end before the handler returns.
//
// MultiHandler panics if src or keys is nil, if src is in [Queue] mode
// (several keys on one connection need FanOut), or for an option out of
// range.
func MultiHandler[K comparable](src Source[K], keys func(*http.Request) ([]K, error), opts ...HandlerOption) http.Handler {
	if src == nil || keys == nil {
		panic("sse: MultiHandler: nil source or key function")
	}
	if v := reflect.ValueOf(src); v.Kind() == reflect.Pointer && v.IsNil() {
		panic("sse: MultiHandler: nil source")
	}
	if src.Mode() != FanOut {
		panic("sse: MultiHandler: the source is in Queue mode; several keys on one connection need FanOut")
	}
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("sse: MultiHandler: option %d is nil", i))
		}
	}
	h := Handler(src, noKey[K], opts...).(*handler[K])
	return &multiHandler[K]{h: h, keys: keys, max: cmp0(h.cfg.maxKeys, DefaultKeysPerRequest)}
}

// noKey is the key function of a MultiHandler's handler, which is never
// called: MultiHandler calls its own and hands the handler the key.
func noKey[K comparable](*http.Request) (k K, err error) {
	return k, errors.New("sse: MultiHandler calls its own key function")
}

// cmp0 returns v, or def if v is 0.
func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

type multiHandler[K comparable] struct {
	h    *handler[K] // immutable: the configuration, the WithMaxStreams bound; serves one-key requests
	keys func(*http.Request) ([]K, error)
	max  int // immutable: the most keys a request may name
}

var errNoKeys = requestError{"the request names no key"}

func (m *multiHandler[K]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := m.h
	keys, ok := admit(h, w, r, m.keys)
	if !ok {
		return
	}
	var err error
	switch n := len(keys); {
	case n == 1:
		h.serve(w, r, keys[0])
		return
	case n == 0:
		err = errNoKeys
	case n > m.max:
		err = requestError{fmt.Sprintf("the request names %d keys, more than the %d a request may name", n, m.max)}
	default:
		err = m.checkKeys(keys)
	}
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, RefusedBadRequest, err)
		return
	}
	if !canFlush(w) {
		h.refuse(w, r, http.StatusInternalServerError, RefusedInternal, errCannotFlush)
		return
	}
	pos := make([]position, len(keys))
	v, header, resume := rawLastEventID(r)
	if resume = resume && v != ""; resume { // an empty ID is none, as for one key
		if pos, err = parseMultiID(v, len(keys)); err != nil {
			h.refuse(w, r, http.StatusBadRequest, RefusedBadRequest, err)
			return
		}
		if allClosed(pos) {
			h.refuseSubscribe(w, r, ErrFinished, false) // 204
			return
		}
	}
	// The stream counts as one, under its first key not closed: a client
	// that reconnects with the same list is counted under the same key.
	first := slices.IndexFunc(pos, func(p position) bool { return !p.closed })
	sl, ok := h.streams.acquire(keys[first], false)
	// At the bound, a client that reconnects may have a spare place, as a
	// one-key FanOut client may, once its ID shows that it reads the
	// current life of that key (see streams).
	spare := !ok && header && resume && h.streams.serves(keys[first])
	if !ok && !spare {
		h.tryLater(w, r, errTooManyStreams)
		return
	}
	defer func() { h.streams.release(keys[first], sl) }()
	c := newConn(w, h.cfg.writeTimeout)
	defer c.finish()
	s := &multiStream[K]{h: h, r: r, c: c, v: newVector(pos), subs: make([]Subscription, len(keys)), epochs: make([]string, len(keys))}
	if err := m.subscribe(s, keys, pos, resume); err != nil {
		s.closeSubs()
		h.refuseSubscribe(w, r, err, false) // a bad epoch is the source's mistake: 500
		return
	}
	if spare {
		if s.subs[first] == nil || pos[first].epoch != s.epochs[first] {
			ok = false
		} else {
			sl, ok = h.streams.acquireSpare(keys[first])
		}
		if !ok {
			s.closeSubs()
			h.tryLater(w, r, errTooManyStreams)
			return
		}
	}
	defer h.cfg.metrics.served(resume)()
	s.stream(w)
}

// checkKeys refuses keys that no map can hold (see keysNeedCheck), and a
// key listed twice.
func (m *multiHandler[K]) checkKeys(keys []K) error {
	check := func(K) error { return nil }
	if m.h.checkKeys {
		check = checkKey[K]
	}
	i, err := duplicate(keys, check)
	if err == nil && i >= 0 {
		err = requestError{fmt.Sprintf("key %d of the request is listed twice", i)}
	}
	return err
}

// duplicate returns the position of the first key of keys that an earlier
// one equals, or -1; but first, the error of check for any key, which
// refuses keys before the map sees them (a NaN would never be found twice,
// and a slice in an interface would panic).
func duplicate[K comparable](keys []K, check func(K) error) (int, error) {
	seen := make(map[K]struct{}, len(keys))
	for i, k := range keys {
		if err := check(k); err != nil {
			return -1, err
		}
		if _, dup := seen[k]; dup {
			return i, nil
		}
		seen[k] = struct{}{}
	}
	return -1, nil
}

// allClosed reports whether a request's ID marks every key closed.
func allClosed(pos []position) bool {
	for _, p := range pos {
		if !p.closed {
			return false
		}
	}
	return true
}

// subscribe attaches the connection to every key that pos does not mark
// closed; a key closed with every event sent (ErrFinished) gets its
// sse.close. Any other refusal refuses the request: the caller closes what
// was attached.
func (m *multiHandler[K]) subscribe(s *multiStream[K], keys []K, pos []position, resume bool) error {
	h := m.h
	for i, key := range keys {
		if pos[i].closed {
			continue
		}
		req := SubscribeRequest{Known: h.cfg.known, Abort: s.c.abort}
		if resume {
			// An empty entry is "0": the client has nothing of the key,
			// and gets a gap for what the history no longer holds.
			req.Resume, req.Epoch, req.LastID = true, pos[i].epoch, pos[i].id
		}
		sub, err := h.src.Subscribe(s.r.Context(), key, req)
		switch {
		case errors.Is(err, ErrFinished):
			s.finished = append(s.finished, i)
			continue
		case err != nil:
			return err
		}
		s.subs[i], s.epochs[i] = sub, sub.Epoch()
		if err := checkEpoch(s.epochs[i]); err != nil {
			return err
		}
	}
	return nil
}

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
	for _, i := range s.finished {
		s.closeKey(i)
	}
	if open == 0 {
		s.buf, end = append(s.buf, cfg.end...), ended
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
			for end == goOn && len(s.buf) < flushBytes {
				select {
				case b = <-out: // more is ready: into the same write
					end = s.take(b, &open)
					continue
				default:
				}
				break
			}
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
