package sse

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Handler returns an http.Handler that streams one key's queue to a client
// as Server-Sent Events (the text/event-stream format that a browser's
// EventSource reads). key picks the key from the request, typically from
// its path or query. The wire protocol is written down in docs/protocol.md.
//
// Each request, in order:
//   - Methods other than GET get 405.
//   - If key returns an error, the response is 400 with the error's text,
//     or the error's own status if it has a method StatusCode() int that
//     returns a 4xx or 5xx code (use it for 401, 403 or 404).
//   - If the ResponseWriter cannot flush, the response is 500 and the queue
//     is not touched.
//   - Beyond [WithMaxStreams] the answer is an empty stream with a "retry"
//     field: come back later. A request that takes a key over from a
//     stream of this handler inherits that stream's place.
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
//     in writes of at most 32 KiB. After a closed key's last event comes an
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
// id is T's. A value that is not an event ID is ignored.
//
// While idle, the stream carries a comment line as a heartbeat. Every write
// has its own deadline, so a client that stops reading is dropped, while
// the server's WriteTimeout does not cut a healthy stream. The handler
// returns when the client goes away, the key ends, a write fails or
// another connection takes the key over (which makes a write blocked on a
// dead client fail at once); events it did not take stay queued. A stream
// cut short (see [ErrTruncated]) ends without "close", so that the client
// reconnects and learns what happened. The handler starts no goroutine.
//
// To end streams when an http.Server shuts down (Shutdown waits for
// handlers, and a stream never finishes by itself), give the server a
// BaseContext and cancel it in RegisterOnShutdown: clients then see their
// stream end without a "close" event, and reconnect. Shut the server down
// before the [Broker]: Broker.Shutdown closes every key, and its clients
// get "close" after their last event, which tells them the keys are done.
func Handler[K comparable](src Source[K], key func(*http.Request) (K, error), opts ...HandlerOption) http.Handler {
	h := &handler[K]{src: src, key: key, cfg: handlerDefaults()}
	for _, o := range opts {
		o.applyHandler(&h.cfg)
	}
	h.streams = newStreams[K](h.cfg.maxStreams)
	return h
}

type handler[K comparable] struct {
	src     Source[K]
	key     func(*http.Request) (K, error)
	cfg     handlerConfig // immutable after Handler
	streams *streams[K]   // with WithMaxStreams: the streams being served
}

var errTooManyStreams = errors.New("sse: too many streams")

// tryLater answers a request that the handler has no room for with an
// empty stream that tells the client when to come back: any status but 200
// would make a browser give up for good.
func (h *handler[K]) tryLater(w http.ResponseWriter, r *http.Request, err error) {
	h.log(r.Context(), slog.LevelWarn, "sse: request refused for now", r, slog.Any("error", err))
	retry := h.cfg.retry
	if retry <= 0 {
		retry = DefaultBusyRetry
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", retryMillis(retry))
}

// DefaultBusyRetry is the reconnection delay [Handler] asks of clients it
// has no room for, unless [WithRetry] sets one.
const DefaultBusyRetry = 5 * time.Second

func (h *handler[K]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		h.refuse(w, r, http.StatusMethodNotAllowed, errors.New("sse: only GET streams events"))
		return
	}
	key, err := h.keyOf(r)
	if err != nil {
		h.refuse(w, r, statusOf(err, http.StatusBadRequest), err)
		return
	}
	if !canFlush(w) {
		h.refuse(w, r, http.StatusInternalServerError, errors.New("sse: the ResponseWriter cannot flush"))
		return
	}
	req := SubscribeRequest{Takeover: h.cfg.takeover == TakeOverAlways, Known: h.cfg.known}
	if epoch, id, header, ok := lastEventID(r); ok {
		// Only the header shows a reconnection: a browser sends it itself.
		// The query parameter is in every request of a page's EventSource,
		// so a second tab must not take the key over with it.
		req.Resume, req.Epoch, req.LastID = true, epoch, id
		req.Takeover = req.Takeover || header
	}
	sl, ok := h.streams.acquire(key, req.Takeover && h.src.Mode() == Queue)
	if !ok {
		h.tryLater(w, r, errTooManyStreams)
		return
	}
	defer h.streams.release(key, sl)
	c := newConn(w, h.cfg.writeTimeout)
	defer c.finish()
	req.Abort = c.abort
	sub, err := h.src.Subscribe(r.Context(), key, req)
	switch {
	case err == nil:
	case errors.Is(err, ErrFinished):
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return
	case errors.Is(err, ErrBusy) && !req.Takeover:
		h.refuse(w, r, http.StatusConflict, err)
		return
	case errors.Is(err, ErrUnknownKey):
		h.refuse(w, r, http.StatusNotFound, err)
		return
	case errors.Is(err, ErrInvalidKey):
		h.refuse(w, r, http.StatusBadRequest, err)
		return
	case errors.Is(err, ErrBusy), errors.Is(err, ErrShutdown), errors.Is(err, ErrTooManyKeys), r.Context().Err() != nil:
		// A newer takeover won, the source is going away or full, or the
		// wait for a takeover ended (the client left, or the server is
		// shutting down): come back later, perhaps to another server.
		h.tryLater(w, r, err)
		return
	default:
		h.refuse(w, r, statusOf(err, http.StatusInternalServerError), err)
		return
	}
	defer sub.Close()
	h.stream(w, r, c, sub)
}

// keyOf calls the key function, turning a panic into an error, except
// http.ErrAbortHandler, which aborts the request as it should.
func (h *handler[K]) keyOf(r *http.Request) (key K, err error) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			err = panicError{p}
		}
	}()
	return h.key(r)
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
func (h *handler[K]) stream(w http.ResponseWriter, r *http.Request, c *conn, sub Subscription) {
	ctx := r.Context()
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-cache, no-transform")
	hdr.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	buf := make([]byte, 0, 4<<10)
	if h.cfg.retry > 0 {
		buf = append(buf, "retry: "...)
		buf = strconv.AppendInt(buf, retryMillis(h.cfg.retry), 10)
		buf = append(buf, "\n\n"...)
	}
	if err := c.write(buf); err != nil { // the headers, at once
		h.failed(ctx, r, err)
		return
	}
	var heartbeat <-chan time.Time
	var beat *time.Timer
	if h.cfg.heartbeat > 0 {
		beat = time.NewTimer(h.cfg.heartbeat)
		defer beat.Stop()
		heartbeat = beat.C
	}
	epoch := sub.Epoch()
	var evs []Event
	for {
		var gap Gap
		var err error
		evs, gap, err = sub.Next(ctx, evs, heartbeat, flushBytes)
		buf = buf[:0]
		if gap != (Gap{}) {
			buf = appendGap(buf, epoch, gap)
			h.log(ctx, slog.LevelWarn, "sse: client missed events that can no longer be sent", r, slog.Uint64("from", gap.From), slog.Uint64("to", gap.To))
		}
		for _, ev := range evs {
			buf = appendEvent(buf, epoch, ev)
		}
		switch {
		case err == nil:
			if len(buf) == 0 {
				buf = append(buf, ": ping\n\n"...)
			}
		case errors.Is(err, io.EOF):
			buf = append(buf, h.cfg.end...)
		case errors.Is(err, ErrTruncated):
			// Cut short: no "close", so that the client comes back and
			// learns what happened.
			h.log(ctx, slog.LevelWarn, "sse: stream cut short", r, slog.Any("error", err))
		case errors.Is(err, ErrReplaced):
			h.log(ctx, slog.LevelInfo, "sse: stream taken over by a newer connection", r)
			return
		default: // the client went away, or the server is shutting down
			return
		}
		if werr := c.write(buf); werr != nil {
			h.failed(ctx, r, werr)
			return
		}
		if err != nil {
			return
		}
		if beat != nil {
			beat.Reset(h.cfg.heartbeat)
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

// refuse answers a request that gets no stream, and logs why.
func (h *handler[K]) refuse(w http.ResponseWriter, r *http.Request, status int, err error) {
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	h.log(r.Context(), level, "sse: request refused", r, slog.Int("status", status), slog.Any("error", err))
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, err.Error(), status)
}

func (h *handler[K]) log(ctx context.Context, level slog.Level, msg string, r *http.Request, attrs ...slog.Attr) {
	if h.cfg.logger == nil || !h.cfg.logger.Enabled(ctx, level) {
		return
	}
	attrs = append(attrs, slog.String("path", r.URL.Path), slog.String("remote", r.RemoteAddr))
	h.cfg.logger.LogAttrs(ctx, level, msg, attrs...)
}

// statusOf returns the status an error carries, or def.
func statusOf(err error, def int) int {
	var sc interface{ StatusCode() int }
	if errors.As(err, &sc) {
		if code := sc.StatusCode(); code >= 400 && code <= 599 {
			return code
		}
	}
	return def
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

// lastEventID returns the ID a request resumes from: its Last-Event-ID
// header or, without one, its lastEventId query parameter, split into its
// epoch (empty for a plain decimal ID) and event ID.
func lastEventID(r *http.Request) (epoch string, id uint64, header, ok bool) {
	v, header := r.Header["Last-Event-Id"]
	if !header {
		v = r.URL.Query()["lastEventId"]
	}
	if len(v) == 0 {
		return "", 0, header, false
	}
	epoch, id, ok = parseID(v[0])
	return epoch, id, header, ok
}

// parseID splits a wire ID, "<epoch>-<id>" or a plain "<id>", into its
// parts: an epoch of ASCII letters and digits, and a decimal event ID.
func parseID(v string) (epoch string, id uint64, ok bool) {
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		epoch, v = v[:i], v[i+1:]
		if epoch == "" {
			return "", 0, false
		}
		for j := 0; j < len(epoch); j++ {
			if c := epoch[j]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return "", 0, false
			}
		}
	}
	if v == "" || v[0] < '0' || v[0] > '9' {
		return "", 0, false
	}
	id, err := strconv.ParseUint(v, 10, 64)
	return epoch, id, err == nil
}

// retryMillis is d in whole milliseconds, at least 1: a "retry: 0" would
// make clients reconnect at once, again and again.
func retryMillis(d time.Duration) int64 { return max(1, d.Milliseconds()) }

// appendID appends a wire ID: the epoch, a dash, and the event ID.
func appendID(buf []byte, epoch string, id uint64) []byte {
	buf = append(buf, "id: "...)
	buf = append(buf, epoch...)
	buf = append(buf, '-')
	buf = strconv.AppendUint(buf, id, 10)
	return append(buf, '\n')
}

// appendGap appends a gap event: its id is that of g.To, so that a client
// that resumes after it does not ask for the gap again.
func appendGap(buf []byte, epoch string, g Gap) []byte {
	buf = appendID(buf, epoch, g.To)
	buf = append(buf, "event: "+EventGap+"\ndata: {\"from\":"...)
	buf = strconv.AppendUint(buf, g.From, 10)
	buf = append(buf, ",\"to\":"...)
	buf = strconv.AppendUint(buf, g.To, 10)
	return append(buf, "}\n\n"...)
}

// appendEvent appends ev in the text/event-stream format: an id line with
// the epoch, an event line if it has a Name, one data line per line of
// Data (a line ends at CRLF, LF or CR, as the client's parser splits them),
// and a blank line. An empty Data still gets one data line, so that the
// client dispatches it.
func appendEvent(buf []byte, epoch string, ev Event) []byte {
	buf = appendID(buf, epoch, ev.ID)
	if ev.Name != "" {
		buf = append(buf, "event: "...)
		buf = append(buf, ev.Name...)
		buf = append(buf, '\n')
	}
	data := ev.Data
	for {
		i := strings.IndexAny(data, "\r\n")
		if i < 0 {
			break
		}
		buf = append(buf, "data: "...)
		buf = append(buf, data[:i]...)
		buf = append(buf, '\n')
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
	buf = append(buf, "data: "...)
	buf = append(buf, data...)
	return append(buf, "\n\n"...)
}

// A HandlerOption configures [Handler].
type HandlerOption interface{ applyHandler(*handlerConfig) }

type handlerOptionFunc func(*handlerConfig)

func (f handlerOptionFunc) applyHandler(c *handlerConfig) { f(c) }

// handlerConfig is a handler's configuration, fixed by Handler.
type handlerConfig struct {
	heartbeat    time.Duration
	retry        time.Duration
	writeTimeout time.Duration
	end          string // written after a closed key's last event
	takeover     Takeover
	logger       *slog.Logger // nil: silent
	maxStreams   int          // 0: no bound
	known        bool         // refuse keys the source does not have
}

// DefaultHeartbeat and DefaultWriteTimeout are [Handler]'s heartbeat
// interval and write deadline unless [WithHeartbeat] and [WithWriteTimeout]
// say otherwise.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultWriteTimeout = 30 * time.Second
)

func handlerDefaults() handlerConfig {
	return handlerConfig{
		heartbeat:    DefaultHeartbeat,
		writeTimeout: DefaultWriteTimeout,
		end:          "event: close\ndata: \n\n",
	}
}

// WithHeartbeat sets how long a stream may be idle before the handler
// writes a comment line, so that proxies and load balancers do not cut it.
// The default is [DefaultHeartbeat]; 0 turns heartbeats off.
func WithHeartbeat(d time.Duration) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.heartbeat = max(d, 0) })
}

// WithRetry sends a "retry" field when a stream starts: how long the client
// waits before it reconnects. By default none is sent and the browser picks
// (a few seconds).
func WithRetry(d time.Duration) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.retry = max(d, 0) })
}

// WithWriteTimeout bounds each write to the client, so that a client that
// stops reading is dropped rather than holding the handler. The default is
// [DefaultWriteTimeout]; 0 means no bound.
func WithWriteTimeout(d time.Duration) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.writeTimeout = max(d, 0) })
}

// WithTerminateMessage ends a closed key's stream with the data line
// "---terminate---", as Rocket.Libraries.ServerSentEvents does, instead of
// the "close" event, for clients written for that library.
func WithTerminateMessage() HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.end = "data: ---terminate---\n\n" })
}

// WithLogger sends the handler's refusals (4xx and 5xx answers), write
// errors and takeovers to l. By default the handler logs nothing.
func WithLogger(l *slog.Logger) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.logger = l })
}

// WithMaxStreams bounds how many streams the handler serves at once. A
// request beyond the bound is answered at once, without touching its
// queue: status 200, a "retry" field ([WithRetry], or [DefaultBusyRetry])
// and the end of the stream, so that a browser tries again later. A request
// that takes a key over (see [Takeover]) from a stream this handler serves
// is admitted at the bound and inherits that stream's place: a client can
// always replace its own stale connection. By default there is no bound;
// n ≤ 0 means none.
func WithMaxStreams(n int) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.maxStreams = n })
}

// WithKnownKeysOnly serves only server keys: keys the server created with
// Enqueue, Publish, Stream or Close (see [Broker.Subscribe]); any other key
// gets 404. Use it when clients choose the URL: otherwise a request for a
// random key creates an empty queue and waits on it.
func WithKnownKeysOnly() HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.known = true })
}

// WithTakeover sets what happens when a request arrives for a key that
// another connection is streaming. See [Takeover].
func WithTakeover(t Takeover) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.takeover = t })
}

// Takeover is the handler's policy for a second connection to a key that
// has one.
//
// Keys are meant per client. A client that lost its connection reconnects
// with Last-Event-ID, often before the server has noticed the old
// connection is dead: that request must win. A request without an ID is
// more likely a second reader, such as another tab: if it won, the first
// tab would reconnect with its ID and win back, and the two would take the
// key from each other forever.
type Takeover int

const (
	// TakeOverOnResume, the default, lets a request that carries a
	// Last-Event-ID header, as a reconnecting browser sends, take the key
	// over: the older response ends first (a write of it blocked on a dead
	// client fails at once), then the new one streams. A lastEventId query
	// parameter does not take a key over: every request of a page's
	// EventSource carries it, another tab's too. A request without the
	// header gets 409 Conflict, which makes a browser stop instead of
	// competing.
	TakeOverOnResume Takeover = iota
	// TakeOverAlways lets every new request take the key over, the newest
	// connection winning. Use it when a client may lose its connection before
	// it has received any event, and so reconnects without an ID; two tabs
	// on one key will then take it from each other.
	TakeOverAlways
)
