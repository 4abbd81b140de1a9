package sseclient

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// maxErrorBody is the most of a refused response's body that a
// [StatusError] keeps.
const maxErrorBody = 64 << 10

// maxErrorBodyTime is the longest the client reads a refused response's
// body, in all, when the idle timeout is longer or off. The idle timeout
// alone bounds each read, not their sum: a body trickling in a byte at a
// time would hold the client for 64 KiB of them, 34 days at the defaults,
// before it retried or returned the error. An explanation arrives with the
// headers or just after; one cut short only loses text.
const maxErrorBodyTime = 5 * time.Second

// errSlowErrorBody is the cause with which the client stops reading a
// refused response's body after [config.errorBodyTime]; the StatusError
// keeps what arrived.
var errSlowErrorBody = errors.New("sseclient: the error body is too slow")

// A StatusError is a response that is not an event stream: a status other
// than 200 and 204, or a 200 whose Content-Type is not text/event-stream.
// [Stream] ends with one, except for 429, 502, 503 and 504, after which it
// waits (at least the RetryAfter, up to the [WithMaxServerDelay] cap) and
// reconnects, reporting the error to the [WithOnReconnect] function.
type StatusError struct {
	// StatusCode is the response's status code.
	StatusCode int
	// ContentType is the response's Content-Type header.
	ContentType string
	// Body is the start of the response's body: the server's explanation,
	// if it gave one. The client keeps at most 64 KiB, and reads for at
	// most the idle timeout ([WithIdleTimeout]) or 5 s, whichever is
	// shorter, from when the headers arrived: a body that trickles in is
	// cut there.
	Body []byte
	// RetryAfter is what the response's Retry-After header asked for, as a
	// delay from when it arrived; 0 without one. It is the server's value:
	// the client waits no longer than the [WithMaxServerDelay] cap.
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	if e.StatusCode == http.StatusOK {
		return fmt.Sprintf("sseclient: Content-Type %q, not text/event-stream", e.ContentType)
	}
	msg := fmt.Sprintf("sseclient: %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	if s := summary(e.Body); s != "" {
		msg += ": " + s
	}
	return msg
}

// summary returns the first line of a refused response's body, trimmed and
// short, if it is text.
func summary(body []byte) string {
	line, _, _ := strings.Cut(string(body), "\n")
	line = strings.TrimSpace(line)
	if len(line) > 200 {
		line = line[:200]
		for !utf8.ValidString(line) {
			line = line[:len(line)-1]
		}
		line += "…"
	}
	if !utf8.ValidString(line) {
		return ""
	}
	return line
}

var (
	// ErrIdleTimeout is the transient error of a connection on which
	// nothing arrived for the idle timeout ([WithIdleTimeout]): it is
	// closed, as half-open, and the client reconnects.
	ErrIdleTimeout = errors.New("sseclient: no data within the idle timeout")
	// ErrStreamEnded is the transient error of a response that ended: the
	// client reconnects, as an EventSource does. With this library's
	// handler it means that the stream was cut short (a close event ends it
	// for good), or that the handler had no room for it and asked, with a
	// retry field, to come back later.
	ErrStreamEnded = errors.New("sseclient: the server ended the stream")
)
