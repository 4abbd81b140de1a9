package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"time"
)

// Handler returns an http.Handler that streams one key's queue to a client
// as Server-Sent Events (the text/event-stream format that a browser's
// EventSource reads). key picks the key from the request, typically from
// its path or query. The wire protocol is written down in docs/protocol.md.
//
// Each request, in order:
//   - Methods other than GET get 405.
//   - If key returns an error, the response is 400, or the error's own status
//     if it has a method StatusCode() int that returns a 4xx or 5xx code (use
//     it for 401, 403 or 404). The body is the status text, or the error's
//     PublicMessage if it is a [PublicError]: the rest of what the error
//     says (a database address, say) goes only to the logger
//     ([WithLogger]), and so does a recovered panic's value.
//   - If the ResponseWriter cannot flush, the response is 500, saying that
//     a middleware that wraps the ResponseWriter must implement Unwrap() (as
//     [http.ResponseController] expects), and the key is not touched.
//   - Beyond [WithMaxStreams] the answer is an empty stream with a "retry"
//     field: come back later. A request that takes a key over from a
//     stream of this handler inherits that stream's place; in FanOut mode a
//     reconnecting client may have one of a few spare places (see
//     WithMaxStreams).
//   - The request attaches to the key ([Source.Subscribe]): a closed key
//     whose events the client has all received gets 204, which makes a
//     browser stop reconnecting; in Queue mode a key another connection
//     holds gets 409 or is taken over (see [WithTakeover]), while in FanOut
//     mode every request gets its own stream; a key the server did not
//     create gets 404 with [WithKnownKeysOnly]; a key the source cannot hold
//     gets 400; a shut down or full source gets the empty stream with a
//     "retry" field, so that the client comes back, perhaps to another
//     server.
//   - Otherwise the response is 200 with the headers flushed at once. Each
//     event is written whole, as "id" ("<epoch>-<ID>", see
//     [Subscription].Epoch), "event" (if it has a Name) and one "data" line
//     per line of Data (a CR or CRLF in Data reaches the client
//     as LF: the format cannot tell them apart); everything that is ready is
//     written before one flush, up to 32 KiB or the replay window's size,
//     in writes of at most 32 KiB. An event from a Source other than the
//     Broker that cannot be written as it is (a Name with CR, LF or NUL,
//     a reserved Name, an unnamed [TerminateData]) is sent as the "gap" of
//     its ID, and logged. After a closed key's last event comes an
//     event named "close" with empty data, and the response ends.
//
// Responses that are not a stream (204, 4xx, 5xx, and the "retry" answers)
// carry Cache-Control: no-store; streams carry no-cache, no-transform and
// X-Accel-Buffering: no, so that proxies neither cache, compress nor hold
// them back.
//
// A request that carries a Last-Event-ID header, or a lastEventId query
// parameter (the header wins), resumes: in Queue mode it first gets the
// events after that ID that an earlier connection took but the client did
// not confirm, then the live queue; in FanOut mode, the key's history after
// that ID, then the live events. An ID of another life of the key (another
// epoch, or a plain number other than 0) counts as 0. Whenever the client
// would otherwise see a jump in IDs (events no longer retained, events an
// overflow policy dropped, or events another reader took), an event named
// "gap" comes first: its data is {"from":F,"to":T}, the missing IDs, and its
// id is T's. That holds at the end too: "close", or 204, comes only after
// every event of the key or its gap. A value that is not an event ID is
// ignored.
//
// While idle, the stream carries a comment line as a heartbeat. Every write
// has its own deadline, so a client that stops reading is dropped, while
// the server's WriteTimeout does not cut a healthy stream. The handler
// returns when the client goes away, the key ends, a write fails or
// another connection takes the key over (which makes a write blocked on a
// dead client fail at once); events it did not take stay queued. A stream
// cut short (see [ErrTruncated]) ends without "close", so that the client
// reconnects and learns what happened. The handler starts no goroutine
// per stream (its streams share one heartbeat timer, see [WithHeartbeat]),
// and an idle stream holds no write buffer and no event it has written:
// about 1 KB beyond what net/http holds for a streaming response, plus
// about 350 bytes for its key if the request created it (see the README's
// connection density).
//
// http.Server.Shutdown waits for handlers, and a stream never finishes by
// itself: call [Graceful] before Serve, and the function it returns to
// stop. It ends the streams (clients see them end without a "close" event,
// with a jittered retry, and reconnect, perhaps to another replica), then
// stops the server, then the brokers. Done by hand: give the server a
// BaseContext cancelled in RegisterOnShutdown, and shut the server down
// before the [Broker], since Broker.Shutdown closes every key and its
// clients get "close" after their last event, which tells them the keys
// are done.
//
// Handler panics if src or key is nil, as options out of range make it
// panic (see each option), so that a mistake shows when the server starts
// rather than as a 500 on every request.
func Handler[K comparable](src Source[K], key func(*http.Request) (K, error), opts ...HandlerOption) http.Handler {
	if src == nil || key == nil {
		panic("sse: Handler: nil source or key function")
	}
	if v := reflect.ValueOf(src); v.Kind() == reflect.Pointer && v.IsNil() {
		panic("sse: Handler: nil source")
	}
	_, ours := src.(*Broker[K]) // the Broker checks events as they are published
	h := &handler[K]{src: src, key: key, cfg: handlerDefaults(), checkKeys: keysNeedCheck(reflect.TypeFor[K]()), checkEvents: !ours}
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("sse: Handler: option %d is nil", i))
		}
		o.applyHandler(&h.cfg)
	}
	h.streams = newStreams[K](h.cfg.maxStreams)
	h.beats = newBeats(h.cfg.heartbeat)
	return h
}

type handler[K comparable] struct {
	src       Source[K]
	key       func(*http.Request) (K, error)
	cfg       handlerConfig // immutable after Handler
	streams   *streams[K]   // with WithMaxStreams: the streams being served
	checkKeys bool          // immutable: K can hold keys that no map can (see keysNeedCheck)
	// checkEvents is set, for a Source other than the Broker, so that an
	// event that would break the stream's framing (see sendable) is sent
	// as the gap of its ID. Immutable.
	checkEvents bool
	beats       *beats // immutable after Handler: the streams' heartbeat clock; nil without heartbeats
}

func (h *handler[K]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if key, ok := admit(h, w, r, h.key); ok {
		h.serve(w, r, key)
	}
}

// serve streams key, which the key function gave, to the request.
func (h *handler[K]) serve(w http.ResponseWriter, r *http.Request, key K) {
	if h.checkKeys {
		// Before anything indexes by the key: a NaN would be a new map
		// entry each time, and a slice in an interface would panic.
		if err := checkKey(key); err != nil {
			h.refuse(w, r, http.StatusBadRequest, RefusedBadRequest, err)
			return
		}
	}
	if !canFlush(w) {
		h.refuse(w, r, http.StatusInternalServerError, RefusedInternal, errCannotFlush)
		return
	}
	req := SubscribeRequest{Takeover: h.cfg.takeover == TakeoverAlways, Known: h.cfg.known}
	reconnected := false // a Last-Event-ID header: the client reconnects
	if epoch, id, header, ok := lastEventID(r); ok {
		reconnected = header
		// Only the header shows a reconnection: a browser sends it itself.
		// The query parameter is in every request of a page's EventSource,
		// so a second tab must not take the key over with it.
		req.Resume, req.Epoch, req.LastID = true, epoch, id
		req.Takeover = req.Takeover || header
	}
	sl, ok := h.streams.acquire(key, req.Takeover && h.src.Mode() == Queue)
	// At the bound, a FanOut client that reconnects may have a spare slot
	// once its ID shows that it reads the key's current life (see streams).
	spare := !ok && reconnected && h.src.Mode() == FanOut && h.streams.serves(key)
	if !ok && !spare {
		h.tryLater(w, r, errTooManyStreams)
		return
	}
	defer func() { h.streams.release(key, sl) }()
	c := newConn(w, h.cfg.writeTimeout)
	defer c.finish()
	req.Abort = c.abort
	sub, err := h.src.Subscribe(r.Context(), key, req)
	if err != nil {
		h.refuseSubscribe(w, r, err, req.Takeover)
		return
	}
	defer sub.Close()
	epoch := sub.Epoch()
	if err := checkEpoch(epoch); err != nil {
		h.refuse(w, r, http.StatusInternalServerError, RefusedInternal, err)
		return
	}
	if spare {
		if req.Epoch != epoch {
			h.tryLater(w, r, errTooManyStreams)
			return
		}
		if sl, ok = h.streams.acquireSpare(key); !ok {
			h.tryLater(w, r, errTooManyStreams)
			return
		}
	}
	defer h.cfg.metrics.served(req.Resume)()
	h.stream(w, r, c, sub, epoch)
}

// keyOf calls a key function (Handler's, or MultiHandler's), turning a
// panic into an error, except http.ErrAbortHandler, which aborts the
// request as it should.
func keyOf[T any](f func(*http.Request) (T, error), r *http.Request) (key T, err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			err = panicError{p}
		}
	}()
	return f(r)
}

type panicError struct{ value any }

func (e panicError) Error() string   { return fmt.Sprintf("sse: key function panicked: %v", e.value) }
func (e panicError) StatusCode() int { return http.StatusInternalServerError }

// flushBytes is the most the handler takes, and writes, at once: it writes
// even if more events are ready, so that a long backlog does not build one
// huge buffer, and splits a larger replay or event into writes of this
// size, each under its own deadline.
const flushBytes = 32 << 10

// stream writes the subscription's events until the key ends or the
// connection does.
func (h *handler[K]) stream(w http.ResponseWriter, r *http.Request, c *conn, sub Subscription, epoch string) {
	ctx := r.Context()
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache, no-transform")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	// With WithRetry, the field goes at the start of the stream's first
	// event's block (see appendRetry): a block of its own, or one left
	// open while heartbeats pile up in it, is not read alike by every
	// client.
	retry := h.cfg.retry > 0
	if err := c.write(nil); err != nil { // the headers, at once
		h.failed(ctx, r, err)
		return
	}
	var heartbeat <-chan time.Time
	var next beat
	if h.beats != nil {
		heartbeat = h.beats.wait(&next)
	}
	m := h.cfg.metrics
	// A stream holds no write buffer while it waits (see writeBufs), and
	// room for keptEvents events, emptied after each write, so that it
	// holds no event's data either. A batch larger than that takes its
	// room from eventBufs, which the stream keeps, so that it does not
	// allocate again for the next large batch, until a heartbeat is due:
	// a stream that waited that long is idle.
	var evs []Event
	var large *[]Event
	var big *[]byte // a write buffer grown beyond maxPooledBuf, kept likewise
	defer func() {
		if large != nil {
			putEvents(large)
		}
	}()
	for {
		in := evs
		if large != nil {
			in = *large
		}
		got, gap, err := sub.Next(ctx, in, heartbeat, flushBytes)
		bp := big
		if bp == nil {
			bp = writeBufs.Get().(*[]byte)
		}
		buf := (*bp)[:0]
		if retry && (gap != (Gap{}) || len(got) > 0 || errors.Is(err, io.EOF)) {
			buf, retry = appendRetry(buf, h.cfg.retry), false
		}
		if gap != (Gap{}) {
			buf = appendGap(buf, epoch, gap)
			h.log(ctx, slog.LevelWarn, "sse: client missed events that can no longer be sent", r, slog.Uint64("from", gap.From), slog.Uint64("to", gap.To))
		}
		for _, ev := range got {
			if h.checkEvents && !sendable(ev) {
				buf = appendGap(buf, epoch, Gap{From: ev.ID, To: ev.ID})
				h.log(ctx, slog.LevelError, "sse: the source gave an event that cannot be sent: sent as a gap", r, slog.Uint64("id", ev.ID), slog.String("name", ev.Name))
				continue
			}
			buf = appendEvent(buf, epoch, ev)
		}
		ping := false
		done := true // the stream ends after this write, if any
		switch {
		case err == nil:
			if ping = len(buf) == 0; ping {
				buf = append(buf, ": ping\n\n"...)
			}
			done = false
		case errors.Is(err, io.EOF):
			buf = append(buf, h.cfg.end...)
		case errors.Is(err, ErrTruncated):
			// Cut short: no "close", so that the client comes back and
			// learns what happened.
			h.log(ctx, slog.LevelWarn, "sse: stream cut short", r, slog.Any("error", err))
		case errors.Is(err, ErrReplaced):
			h.takenOver(ctx, r)
			keepWriteBuf(bp, buf)
			return
		case errors.Is(context.Cause(ctx), errServerShutdown):
			// Graceful ends the stream: tell the client when to come back,
			// each a different time, so that they do not all come at once.
			buf = appendRetry(buf[:0], shutdownRetry())
			c.write(buf)
			keepWriteBuf(bp, buf)
			return
		default: // the client went away
			keepWriteBuf(bp, buf)
			return
		}
		werr := c.write(buf)
		n := len(buf)
		big = keepWriteBuf(bp, buf)
		if werr != nil {
			if errors.Is(werr, errAborted) {
				// The takeover aborted this write before Next could
				// say so: the same end.
				h.takenOver(ctx, r)
				return
			}
			if m != nil {
				m.dropped.Add(1)
			}
			h.failed(ctx, r, werr)
			return
		}
		if m != nil {
			m.bytes.Add(uint64(n))
			m.events.Add(uint64(len(got)))
			if gap != (Gap{}) {
				m.gaps.Add(1)
			}
			if ping {
				m.heartbeats.Add(1)
			}
		}
		clear(got)
		if done {
			return
		}
		switch {
		case len(got) > keptEvents: // a large batch: keep large room
			if large == nil {
				large = eventBufs.Get().(*[]Event)
			}
			if cap(got) >= cap(*large) {
				*large = got[:0]
			}
		case ping && large != nil: // the stream waited a whole heartbeat
			putEvents(large)
			large = nil
		case large == nil && got != nil && cap(got) <= keptEvents:
			evs = got[:0]
		}
		if ping {
			big = nil // the stream waited a whole heartbeat
		}
		if h.beats != nil {
			heartbeat = h.beats.wait(&next)
		}
	}
}

// failed logs a write that failed.
func (h *handler[K]) failed(ctx context.Context, r *http.Request, err error) {
	level := slog.LevelInfo
	if errors.Is(err, errAborted) {
		level = slog.LevelDebug
	}
	h.log(ctx, level, "sse: write failed", r, slog.Any("error", err))
}

// takenOver counts and logs a stream that a newer connection took over,
// whether Next said so or the takeover aborted a write first.
func (h *handler[K]) takenOver(ctx context.Context, r *http.Request) {
	if m := h.cfg.metrics; m != nil {
		m.takeovers.Add(1)
	}
	h.log(ctx, slog.LevelInfo, "sse: stream taken over by a newer connection", r)
}

func (h *handler[K]) log(ctx context.Context, level slog.Level, msg string, r *http.Request, attrs ...slog.Attr) {
	if h.cfg.logger == nil || !h.cfg.logger.Enabled(ctx, level) {
		return
	}
	attrs = append(attrs, slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr))
	h.cfg.logger.LogAttrs(ctx, level, msg, attrs...)
}

// canFlush reports whether w, or a ResponseWriter it wraps, can flush. It
// unwraps as http.ResponseController does, without writing anything, so
// that the handler can still answer 500.
func canFlush(w http.ResponseWriter) bool {
	for {
		switch w.(type) {
		case http.Flusher, interface{ FlushError() error }:
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
}
