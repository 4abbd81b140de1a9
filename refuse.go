package sse

import (
	"errors"
	"log/slog"
	"net/http"
	"time"
)

var errTooManyStreams = errors.New("sse: too many streams")

// tryLater answers a request that the handler has no room for with an
// empty stream that tells the client when to come back: any status but 200
// would make a browser give up for good.
func (h *handler[K]) tryLater(w http.ResponseWriter, r *http.Request, err error) {
	h.cfg.metrics.refuse(RefusedRetryLater)
	h.log(r.Context(), slog.LevelWarn, "sse: request refused for now", r, slog.Any("error", err))
	retry := h.cfg.retry
	if retry <= 0 {
		retry = DefaultBusyRetry
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(appendRetry(nil, retry))
}

// DefaultBusyRetry is the reconnection delay [Handler] asks of clients it
// has no room for, unless [WithRetry] sets one.
const DefaultBusyRetry = 5 * time.Second

var (
	errBadEpoch    = errors.New("sse: the source's epoch is not 1 to 64 ASCII letters and digits")
	errOnlyGet     = errors.New("sse: only GET streams events")
	errCannotFlush = errors.New("sse: the ResponseWriter cannot flush: a middleware that wraps it must implement Unwrap() http.ResponseWriter, or Flush")
)

// refuse answers a request that gets no stream, and logs why. The client
// sees the error's public message, if it has one, or the library's own
// text for the library's errors; for any other error, which the key
// function may have built from a database address or the like, only the
// status text. The logger gets the whole error.
func (h *handler[K]) refuse(w http.ResponseWriter, r *http.Request, status int, reason Reason, err error) {
	h.cfg.metrics.refuse(reason)
	level := slog.LevelInfo
	if status >= 500 {
		level = slog.LevelError
	}
	h.log(r.Context(), level, "sse: request refused", r, slog.Int("status", status), slog.String("reason", reason.String()), slog.Any("error", err))
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, publicMessage(err, status), status)
}

// A PublicError is an error whose message may be shown to clients. An
// error the key function returns reaches the client only through its
// PublicMessage: anything else the error says stays in the server's log.
type PublicError interface {
	error
	PublicMessage() string
}

// publicMessage is what a client may read of err.
func publicMessage(err error, status int) string {
	var pub PublicError
	switch {
	case errors.As(err, &pub):
		return pub.PublicMessage()
	case ours(err) != nil:
		return ours(err).Error()
	}
	return http.StatusText(status)
}

// ours returns the library's own error that err is, if any: its text says
// nothing of the application (what wraps it might).
func ours(err error) error {
	for _, e := range []error{errOnlyGet, errCannotFlush, ErrBusy, ErrUnknownKey, ErrInvalidKey, ErrFinished} {
		if errors.Is(err, e) {
			return e
		}
	}
	return nil
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

// admit returns what the key function f (Handler's, or MultiHandler's)
// makes of a GET request, or answers the request (405, or the key
// function's refusal) and returns false.
func admit[K comparable, T any](h *handler[K], w http.ResponseWriter, r *http.Request, f func(*http.Request) (T, error)) (T, bool) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		h.refuse(w, r, http.StatusMethodNotAllowed, RefusedMethod, errOnlyGet)
		var none T
		return none, false
	}
	v, err := keyOf(f, r)
	if err != nil {
		h.refuseKey(w, r, err)
		return v, false
	}
	return v, true
}

// refuseKey answers a request whose key function failed: 400, or the
// status the error carries (500 for a panic).
func (h *handler[K]) refuseKey(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err, http.StatusBadRequest)
	reason := RefusedByKey
	switch {
	case status == http.StatusBadRequest:
		reason = RefusedBadRequest
	case errors.As(err, new(panicError)):
		reason = RefusedInternal
	}
	h.refuse(w, r, status, reason, err)
}

// refuseSubscribe answers a request that [Source.Subscribe] refused with
// err; takeover is whether the request asked to take the key over.
func (h *handler[K]) refuseSubscribe(w http.ResponseWriter, r *http.Request, err error, takeover bool) {
	switch {
	case errors.Is(err, ErrFinished):
		h.cfg.metrics.refuse(RefusedFinished)
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrBusy) && !takeover:
		h.refuse(w, r, http.StatusConflict, RefusedConflict, err)
	case errors.Is(err, ErrUnknownKey):
		h.refuse(w, r, http.StatusNotFound, RefusedNotFound, err)
	case errors.Is(err, ErrInvalidKey):
		h.refuse(w, r, http.StatusBadRequest, RefusedBadRequest, err)
	case errors.Is(err, ErrBusy), errors.Is(err, ErrShutdown), errors.Is(err, ErrTooManyKeys), r.Context().Err() != nil:
		// A newer takeover won, the source is going away or full, or the
		// wait for a takeover ended (the client left, or the server is
		// shutting down): come back later, perhaps to another server.
		h.tryLater(w, r, err)
	default:
		status := statusOf(err, http.StatusInternalServerError)
		reason := RefusedByKey
		if status == http.StatusInternalServerError {
			reason = RefusedInternal
		}
		h.refuse(w, r, status, reason, err)
	}
}
