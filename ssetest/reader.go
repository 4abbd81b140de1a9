package ssetest

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"time"
)

// DefaultMaxLineSize is the longest line, in bytes and without its line
// terminator, that a [Reader] accepts when its MaxLineSize is zero. It bounds
// the memory a test spends on a runaway or hostile stream while leaving room
// for any event a handler test would plausibly send on one line.
const DefaultMaxLineSize = 1 << 20

// ErrLineTooLong is returned by [Reader.Next] when a line is longer than the
// reader's limit (see [Reader.MaxLineSize]). Browsers have no such limit; it
// exists so that a test fails instead of exhausting memory.
var ErrLineTooLong = errors.New("ssetest: line too long")

// bom is the UTF-8 encoding of U+FEFF, which the UTF-8 decoder skips once at
// the start of the stream.
var bom = []byte("\uFEFF")

// maxRetryMillis is the largest reconnection time, in milliseconds, that fits
// in a [time.Duration].
const maxRetryMillis = math.MaxInt64 / int64(time.Millisecond)

// An Event is one dispatched event: what a browser delivers to listeners as a
// MessageEvent.
type Event struct {
	// ID is the event's lastEventId: the value of the most recent valid id
	// field of the stream so far, which need not be in this event's block.
	ID string

	// Type is the value of the last event field in the event's block, or ""
	// if it had none. A browser dispatches an event with an empty Type as
	// "message"; see [Event.EffectiveType]. Keeping the raw value lets tests
	// tell an omitted event field from an explicit "event: message".
	Type string

	// Data is the values of the block's data fields joined by LF.
	Data string
}

// EffectiveType returns the type a browser dispatches e with, the name to
// pass to addEventListener: e.Type, or "message" if that is empty.
func (e Event) EffectiveType() string {
	if e.Type == "" {
		return "message"
	}
	return e.Type
}

// A Reader reads events from a text/event-stream incrementally, so that a
// test can check each event of a live response as it arrives. It also
// records what a browser keeps besides events: the reconnection time and the
// last event ID, and reports comments, which browsers ignore but which
// servers send as heartbeats.
//
// Set the exported fields before the first call to [Reader.Next].
type Reader struct {
	// MaxLineSize is the longest line, in bytes and without its line
	// terminator, that Next accepts before failing with [ErrLineTooLong].
	// If it is zero or negative, [DefaultMaxLineSize] is used.
	MaxLineSize int

	// OnComment, if not nil, is called with the text of each comment line,
	// everything after its leading colon and nothing removed: " ping" for
	// ": ping". It is called from Next, in stream order.
	OnComment func(text string)

	src     *bufio.Reader
	err     error // returned by every call of Next once set
	started bool  // the first line was read, so no byte order mark follows
	afterCR bool  // the last line ended in CR: an LF next ends no line

	line     []byte // the line being read, reused
	data     []byte // the data buffer
	typ      string // the event type buffer
	idBuf    string // the last event ID buffer
	lastID   string // the event source's last event ID string
	retry    time.Duration
	retrySet bool
}

// NewReader returns a [Reader] that reads an event stream from r, the body
// of a response, from its first byte.
func NewReader(r io.Reader) *Reader {
	return &Reader{src: bufio.NewReader(r)}
}

// Next returns the next event a browser would dispatch. It reads only as far
// as the blank line that ends that event, so it does not wait for the rest
// of a live stream.
//
// At the end of the stream Next returns [io.EOF], discarding any event that
// was not ended by a blank line, as browsers do. If reading fails, or a line
// is too long ([ErrLineTooLong]), Next returns that error. Once Next has
// returned an error, it returns the same error on every later call.
func (r *Reader) Next() (Event, error) {
	for {
		if r.err != nil {
			return Event{}, r.err
		}
		line, err := r.readLine()
		if err != nil {
			r.err = err
			continue
		}
		if ev, ok := r.processLine(line); ok {
			return ev, nil
		}
	}
}

// LastEventID returns the event source's last event ID string: the last
// event ID buffer as it was at the most recent blank line. It is what a
// browser sends in the Last-Event-ID header when it reconnects. An id field
// changes it only once a blank line follows, even if that line dispatches no
// event, so "id: 7\n\n" sets it to "7".
func (r *Reader) LastEventID() string { return r.lastID }

// Retry returns the reconnection time set by the most recent valid retry
// field, and whether there was one. A retry field takes effect when its line
// ends, whether or not a blank line follows. A valid value is one or more
// ASCII digits, a number of milliseconds; any other value, including one too
// large for a [time.Duration], is ignored.
func (r *Reader) Retry() (time.Duration, bool) { return r.retry, r.retrySet }

// ReadAll reads the event stream r to its end and returns the events a
// browser would dispatch, with a nil error at a clean end. If reading fails
// it returns the events read so far and the error. It uses a [Reader] with
// its default settings, ignoring comments, the reconnection time and the
// last event ID.
func ReadAll(r io.Reader) ([]Event, error) {
	sr := NewReader(r)
	var events []Event
	for {
		ev, err := sr.Next()
		if err == io.EOF {
			return events, nil
		}
		if err != nil {
			return events, err
		}
		events = append(events, ev)
	}
}

// readLine returns the next line, without its terminator, in r.line. At the
// end of the stream it returns io.EOF, dropping an unterminated last line.
func (r *Reader) readLine() ([]byte, error) {
	limit := r.MaxLineSize
	if limit <= 0 {
		limit = DefaultMaxLineSize
	}
	r.line = r.line[:0]
	for {
		c, err := r.src.ReadByte()
		if err != nil {
			return nil, err
		}
		if r.afterCR {
			r.afterCR = false
			if c == '\n' {
				continue // the rest of a CRLF
			}
		}
		switch c {
		case '\r':
			r.afterCR = true
			return r.line, nil
		case '\n':
			return r.line, nil
		}
		if len(r.line) == limit {
			return nil, ErrLineTooLong
		}
		r.line = append(r.line, c)
	}
}

// processLine interprets one line of the stream and returns the event it
// dispatches, if any.
func (r *Reader) processLine(line []byte) (Event, bool) {
	if !r.started {
		r.started = true
		line = bytes.TrimPrefix(line, bom)
	}
	if len(line) == 0 {
		return r.dispatch()
	}
	text := decodeUTF8(line)
	if text[0] == ':' {
		if r.OnComment != nil {
			r.OnComment(text[1:])
		}
		return Event{}, false
	}
	name, value, found := strings.Cut(text, ":")
	if found {
		value = strings.TrimPrefix(value, " ")
	}
	switch name {
	case "event":
		r.typ = value
	case "data":
		r.data = append(r.data, value...)
		r.data = append(r.data, '\n')
	case "id":
		if !strings.ContainsFunc(value, isControl) {
			r.idBuf = value
		}
	case "retry":
		if d, ok := parseRetry(value); ok {
			r.retry, r.retrySet = d, true
		}
	}
	return Event{}, false
}

// isControl reports whether an id field holding c is ignored: NUL, as the
// standard says, and, unlike the standard, the other C0 controls (CR and LF
// end lines before they get here) and DEL, which Go's net/http refuses in
// a header value, so that this parser agrees with sseclient's Decoder.
func isControl(c rune) bool { return c < 0x20 || c == 0x7f }

// dispatch handles a blank line: it returns the pending event, if there is
// data for one, and starts a new one.
func (r *Reader) dispatch() (Event, bool) {
	r.lastID = r.idBuf
	typ := r.typ
	r.typ = ""
	if len(r.data) == 0 {
		return Event{}, false
	}
	// Every data field appended an LF; the standard drops the last one.
	ev := Event{ID: r.lastID, Type: typ, Data: string(r.data[:len(r.data)-1])}
	r.data = r.data[:0]
	return ev, true
}

// parseRetry parses the value of a retry field: one or more ASCII digits
// giving milliseconds. It reports false for anything else, and for values
// that do not fit in a time.Duration.
func parseRetry(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	var ms int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		ms = ms*10 + int64(c-'0')
		if ms > maxRetryMillis {
			return 0, false
		}
	}
	return time.Duration(ms) * time.Millisecond, true
}
