package sse

import (
	"errors"
	"net/http"
	"sync"
	"time"
)

// A conn is the handler's side of one response. It writes in pieces of at
// most flushBytes, each under a fresh deadline, so that a client that stops
// reading is dropped while a long stream is never cut by an absolute
// deadline; and it lets a later request for the key abort it, so that a
// takeover does not wait for a write blocked on a dead client.
type conn struct {
	w       http.ResponseWriter // immutable
	timeout time.Duration       // immutable: the deadline of each write; 0: none

	mu       sync.Mutex
	aborted  bool // guarded by mu: every write fails from now on
	finished bool // guarded by mu: the handler has returned; abort does nothing
}

func newConn(w http.ResponseWriter, timeout time.Duration) *conn {
	return &conn{w: w, timeout: timeout}
}

// rc returns a controller of the response. It is made for each use, on the
// stack, rather than held: a conn lives as long as its stream, and an idle
// stream should hold little.
func (c *conn) rc() *http.ResponseController { return http.NewResponseController(c.w) }

// errAborted is the error of writes after abort.
var errAborted = errors.New("sse: stream taken over by a newer connection")

// longAgo is a deadline that has passed.
var longAgo = time.Unix(1, 0)

// abort makes the pending write, if any, and every later one fail at once,
// by setting a write deadline in the past. Another request's goroutine
// calls it (see [SubscribeRequest].Abort); after the handler has returned it
// does nothing, as the ResponseWriter may no longer be used. A
// ResponseWriter that cannot set deadlines cannot be aborted: its handler
// stops at its next write.
func (c *conn) abort() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted || c.finished {
		return
	}
	c.aborted = true
	c.rc().SetWriteDeadline(longAgo)
}

// finish is called when the handler is about to return.
func (c *conn) finish() {
	c.mu.Lock()
	c.finished = true
	c.mu.Unlock()
}

// deadline sets the write deadline (the zero time lifts it), unless the
// conn was aborted: then it fails, and the past deadline stays.
func (c *conn) deadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return errAborted
	}
	if c.timeout > 0 {
		if err := c.rc().SetWriteDeadline(t); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
	}
	return nil
}

// write writes buf in pieces of at most flushBytes, each under its own
// deadline, then flushes, and lifts the deadline so that an idle stream is
// not cut.
func (c *conn) write(buf []byte) error {
	for {
		if err := c.deadline(time.Now().Add(c.timeout)); err != nil {
			return err
		}
		n := min(len(buf), flushBytes)
		if n > 0 {
			if _, err := c.w.Write(buf[:n]); err != nil {
				return err
			}
		}
		if buf = buf[n:]; len(buf) == 0 {
			break
		}
	}
	if err := c.rc().Flush(); err != nil {
		return err
	}
	return c.deadline(time.Time{})
}
