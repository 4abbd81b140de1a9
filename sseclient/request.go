package sseclient

import (
	"context"
	"net/http"
	"net/http/httptrace"
	"sync/atomic"
)

// A RequestFunc returns the request for one attempt to open the stream:
// [Stream] calls it before each connection, so that it can carry a fresh
// token, or resume in its own way. ctx ends when the attempt does (the
// sequence's context ended, or the connection was idle too long): make the
// request with it, with http.NewRequestWithContext; a request made with
// another context is given this one. lastEventID is the ID the attempt
// resumes from, "" for none (see the package documentation): the client
// sends it in a Last-Event-ID header unless the request has one already.
//
// An error from the function ends the sequence with that error.
type RequestFunc func(ctx context.Context, lastEventID string) (*http.Request, error)

// get returns the RequestFunc of [Events]: a plain GET of url.
func get(url string) RequestFunc {
	return func(ctx context.Context, _ string) (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	}
}

// attemptKey marks the context of an attempt, so that prepare can tell a
// request made with it (or a context derived from it) from one made with
// another context.
type attemptKey struct{}

// prepare returns a copy of the caller's request for one attempt: made with
// the attempt's context ctx (unless the request's context derives from it),
// traced so that wrote reports whether the request went out whole, and with
// the headers of an EventSource's request that it lacks: Accept,
// Cache-Control, and Last-Event-ID when lastID is not "".
func prepare(ctx context.Context, req *http.Request, lastID string, wrote *atomic.Bool) *http.Request {
	if req.Context().Value(attemptKey{}) == ctx.Value(attemptKey{}) {
		ctx = req.Context()
	}
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	})
	req = req.Clone(ctx)
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	setDefault(req.Header, "Accept", "text/event-stream")
	setDefault(req.Header, "Cache-Control", "no-cache")
	if lastID != "" {
		setDefault(req.Header, "Last-Event-ID", lastID)
	}
	return req
}

// setDefault sets a header that h lacks.
func setDefault(h http.Header, key, value string) {
	if _, ok := h[http.CanonicalHeaderKey(key)]; !ok {
		h.Set(key, value)
	}
}
