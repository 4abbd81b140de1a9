package sseclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Events returns the events of the text/event-stream at url, read with GET
// requests; it is [Stream] with a request function that makes them. See
// [Stream] for the sequence and the package documentation for the
// protocol.
func Events(ctx context.Context, url string, opts ...Option) iter.Seq2[Event, error] {
	return Stream(ctx, get(url), opts...)
}

// Stream returns the events of the streams that newRequest's requests open,
// in order, reconnecting as an EventSource does when a connection fails or
// ends, and resuming after the last event ID received, so that against
// this library's handler each event is yielded once.
//
// The sequence ends:
//   - with no error after a "close" event or a "---terminate---" one (both
//     not yielded; see [WithPlain]), or a 204 No Content answer;
//   - with ctx.Err() when ctx ends;
//   - with a [*StatusError] for a response that is not a stream and not
//     worth retrying (see [StatusError]);
//   - with [ErrLineTooLong] or [ErrEventTooLong] when the server exceeds
//     the limits ([WithLimits]), or with newRequest's error.
//
// Every other failure is transient: a network error, a response that ends
// ([ErrStreamEnded]), a connection silent for the idle timeout
// ([ErrIdleTimeout]), or a 429, 502, 503 or 504. The client then waits (see
// [WithBackoff]) and reconnects, telling the [WithOnReconnect] function. So
// the sequence yields an error at most once, as its last value, and never
// yields an event with an error. Stopping the range closes the connection.
//
// Each range over the sequence starts anew, from [WithLastEventID]'s ID or
// none; ranges may run at once. A range closes its connections, and leaves
// no goroutine behind, by the time it ends.
func Stream(ctx context.Context, newRequest RequestFunc, opts ...Option) iter.Seq2[Event, error] {
	cfg := newConfig(opts)
	return func(yield func(Event, error) bool) {
		f := &follower{cfg: cfg, newRequest: newRequest, lastID: cfg.lastID}
		f.dec.MaxLineSize, f.dec.MaxEventSize = cfg.maxLine, cfg.maxEvent
		if err := f.follow(ctx, yield); err != nil && err != errStopped {
			yield(Event{}, err)
		}
	}
}

// errStopped is how follow tells that the caller stopped the range.
var errStopped = errors.New("sseclient: the range stopped")

// follower is one range over a Stream's sequence: the state an EventSource
// keeps across connections.
type follower struct {
	cfg        *config     // immutable
	newRequest RequestFunc // immutable

	// Owned by the ranging goroutine.
	dec      Decoder       // reused by each connection
	lastID   string        // the last event ID: sent when reconnecting
	sent     bool          // a request went out whole, or was answered: the server may know this client
	retry    time.Duration // the server's latest retry field
	failures int           // attempts in a row without an event
}

// An ending is how one attempt ended.
type ending struct {
	err        error         // nil: the stream is over, no error
	again      bool          // err is transient: reconnect
	retryAfter time.Duration // the response's Retry-After
}

// follow connects, and reconnects, until the stream is over, then returns
// the error that ends the sequence: nil, errStopped, or another.
func (f *follower) follow(ctx context.Context, yield func(Event, error) bool) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		end := f.connect(ctx, yield)
		if !end.again {
			return end.err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		wait := f.cfg.delay(f.failures, f.retry, end.retryAfter)
		f.failures++
		if f.cfg.onReconnect != nil {
			f.cfg.onReconnect(end.err, wait)
		}
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// resumeID returns the ID an attempt resumes from. With this library's
// protocol, a client that has no ID yet but whose earlier request may have
// reached the server says "0" (it has nothing yet): in Queue mode that
// replays what a connection that died before its first event took, and
// takes the key over from that connection if the server still holds it.
func (f *follower) resumeID() string {
	if f.lastID == "" && f.sent && !f.cfg.plain {
		return "0"
	}
	return f.lastID
}

// connect makes one attempt: it sends a request and yields the events of
// the stream it opens, until the stream or the attempt ends.
func (f *follower) connect(ctx context.Context, yield func(Event, error) bool) ending {
	actx, cancel := context.WithCancelCause(context.WithValue(ctx, attemptKey{}, new(byte)))
	defer cancel(nil)
	var idle *time.Timer
	if f.cfg.idle > 0 {
		idle = time.AfterFunc(f.cfg.idle, func() { cancel(ErrIdleTimeout) })
		defer idle.Stop()
	}
	id := f.resumeID()
	req, err := f.newRequest(actx, id)
	if err == nil && req == nil {
		err = errors.New("no request and no error")
	}
	if err != nil {
		return ending{err: fmt.Errorf("sseclient: making the request: %w", err)}
	}
	var wrote atomic.Bool
	resp, err := f.cfg.client.Do(prepare(actx, req, id, &wrote))
	if wrote.Load() || err == nil {
		f.sent = true
	}
	if err != nil {
		return f.failed(ctx, actx, err)
	}
	defer resp.Body.Close()
	var body io.Reader = resp.Body
	if idle != nil {
		body = &idleReader{r: resp.Body, t: idle, d: f.cfg.idle}
	}
	switch code := resp.StatusCode; {
	case code == http.StatusNoContent:
		return ending{} // the server has nothing more for this client
	case code == http.StatusOK && isEventStream(resp.Header.Get("Content-Type")):
	case code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout:
		se := refused(resp, body, f.cfg.errorBodyTime(), cancel)
		return ending{err: se, again: true, retryAfter: se.RetryAfter}
	default:
		return ending{err: refused(resp, body, f.cfg.errorBodyTime(), cancel)}
	}
	return f.read(ctx, actx, body, yield)
}

// read yields the events of one connection's stream.
func (f *follower) read(ctx, actx context.Context, body io.Reader, yield func(Event, error) bool) ending {
	f.dec.reset(body, f.lastID)
	defer func() {
		f.lastID = f.dec.LastEventID()
		if r, ok := f.dec.Retry(); ok {
			f.retry = r
		}
	}()
	for {
		ev, err := f.dec.Next()
		if err != nil {
			if errors.Is(err, ErrLineTooLong) || errors.Is(err, ErrEventTooLong) {
				return ending{err: err}
			}
			if err == io.EOF {
				err = ErrStreamEnded
			}
			return f.failed(ctx, actx, err)
		}
		f.failures = 0
		if !f.cfg.plain {
			switch {
			case ev.Name == EventClose, ev.Name == "" && ev.Data == TerminateData:
				return ending{}
			case ev.Name == EventKeyGap, ev.Name == EventKeyClose:
			case strings.HasPrefix(ev.Name, ReservedPrefix):
				continue
			}
		}
		if !yield(ev, nil) {
			return ending{err: errStopped}
		}
	}
}

// failed returns the ending of an attempt that failed with err: ctx's error
// if ctx ended, else transient.
func (f *follower) failed(ctx, actx context.Context, err error) ending {
	if cerr := ctx.Err(); cerr != nil {
		return ending{err: cerr}
	}
	if context.Cause(actx) == ErrIdleTimeout {
		err = ErrIdleTimeout
	}
	return ending{err: err, again: true}
}

// isEventStream reports whether a Content-Type is text/event-stream,
// whatever its parameters.
func isEventStream(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return (err == nil || err == mime.ErrInvalidMediaParameter) && mt == "text/event-stream"
}

// refused returns the error of a response that is not a stream, with the
// start of its body: what arrives within the time given, after which it
// ends the attempt, with cancel, to stop the read.
func refused(resp *http.Response, body io.Reader, within time.Duration, cancel context.CancelCauseFunc) *StatusError {
	t := time.AfterFunc(within, func() { cancel(errSlowErrorBody) })
	b, _ := io.ReadAll(io.LimitReader(body, maxErrorBody))
	t.Stop()
	return &StatusError{
		StatusCode:  resp.StatusCode,
		ContentType: resp.Header.Get("Content-Type"),
		Body:        b,
		RetryAfter:  parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
}

// idleReader reads a response's body under the idle timeout: the timer
// runs while a read waits, and only then, so that a caller slow to take
// the events is not taken for a dead connection.
type idleReader struct {
	r io.Reader     // immutable: the body
	t *time.Timer   // immutable: fires the timeout
	d time.Duration // immutable: the idle timeout
}

func (r *idleReader) Read(p []byte) (int, error) {
	r.t.Reset(r.d)
	n, err := r.r.Read(p)
	r.t.Stop()
	return n, err
}
