package sseclient

import (
	"bytes"
	"errors"
	"io"
	"math"
	"time"
)

// DefaultMaxLineSize and DefaultMaxEventSize are a [Decoder]'s limits when
// its MaxLineSize and MaxEventSize are zero, and [Stream]'s unless
// [WithLimits] sets others.
const (
	DefaultMaxLineSize  = 1 << 20
	DefaultMaxEventSize = 4 << 20
)

var (
	// ErrLineTooLong is returned by [Decoder.Next], and ends a [Stream],
	// when a line is longer than the limit. The standard sets none; the
	// limit keeps a runaway or hostile server from exhausting memory.
	ErrLineTooLong = errors.New("sseclient: line too long")
	// ErrEventTooLong is returned by [Decoder.Next], and ends a [Stream],
	// when an event's data is larger than the limit.
	ErrEventTooLong = errors.New("sseclient: event too long")
)

// bom is U+FEFF in UTF-8: the decoder skips it once, at the stream's start.
const bom = "\xEF\xBB\xBF"

// minBuffer is the size of a Decoder's first read buffer: it grows, up to
// the line limit, for longer lines.
const minBuffer = 32 << 10

// A Decoder parses a text/event-stream from any io.Reader, as the WHATWG
// HTML standard's "Interpreting an event stream" says: the stream is UTF-8
// (an ill-formed sequence becomes U+FFFD, a byte order mark at its start is
// skipped), lines end at CRLF, LF or CR, a line that starts with a colon is
// a comment, one space after a field's colon is dropped, the fields data,
// event, id (ignored if it contains NUL) and retry (ASCII digits only) are
// kept and others ignored, a blank line dispatches the event if it has data,
// and an event the stream ends before its blank line is dropped.
//
// It departs from the standard in one rule: an id field is also ignored if
// it holds any other control byte (U+0001 to U+001F, CR and LF aside since
// they end lines, and U+007F DEL), as one holding NUL is, and the last event
// ID stays as it was. Go's net/http refuses those bytes in a header value,
// so a client could never send such an ID back in Last-Event-ID.
//
// It has no notion of HTTP or of reconnecting: [Stream] uses one per
// connection. Use it directly to parse a recorded stream, or a stream from
// another transport.
//
// A Decoder allocates only the strings of the events it returns: it reuses
// its buffers, and an ID or event name that repeats is returned as the same
// string. Set the exported fields before the first call to Next.
type Decoder struct {
	// MaxLineSize is the longest line, in bytes and without its line
	// terminator, that Next accepts before failing with [ErrLineTooLong];
	// 0 means [DefaultMaxLineSize].
	MaxLineSize int
	// MaxEventSize is the most data, in bytes (the data fields' values and
	// an LF after each), that one event may carry before Next fails with
	// [ErrEventTooLong]; 0 means [DefaultMaxEventSize].
	MaxEventSize int

	// The rest is owned by the goroutine that calls Next.
	src     io.Reader
	buf     []byte // the read buffer: buf[r:w] is read and not yet parsed
	r, w    int
	scanned int   // bytes from r on known to hold no line terminator
	lf      int   // where the last search for LF stopped: at an LF, or at w (none before it)
	readErr error // the source's error, returned once buf holds no line
	err     error // returned by every call of Next once set
	started bool  // the byte order mark check is done
	afterCR bool  // the last line ended in CR: an LF next belongs to it

	data     []byte        // the data buffer: each data value, then an LF
	typ      string        // the event type buffer
	idBuf    string        // the last event ID buffer
	lastID   string        // the last event ID, as of the last blank line
	retry    time.Duration // the latest valid retry field
	retrySet bool          // there was one
	names    [8]string     // recent event names, returned again rather than copied
	nextName int           // the slot of names to replace next
}

// NewDecoder returns a [Decoder] that reads an event stream from r, from
// its first byte.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{src: r} }

// reset makes d read a new stream from src, keeping its buffers and
// limits. The stream's last event ID buffer starts at lastID, as Chromium
// starts a reconnected stream, so that events without an id field carry it.
func (d *Decoder) reset(src io.Reader, lastID string) {
	*d = Decoder{
		MaxLineSize:  d.MaxLineSize,
		MaxEventSize: d.MaxEventSize,
		src:          src,
		buf:          d.buf,
		data:         d.data[:0],
		idBuf:        lastID,
		lastID:       lastID,
		names:        d.names,
	}
}

// Next returns the next event of the stream. It waits for no more of the
// stream than the blank line that ends that event, so on a live stream it
// returns each event as soon as it is complete.
//
// At the end of the stream Next returns [io.EOF], dropping an event that no
// blank line ended, as a browser does. If reading fails, or a limit is
// exceeded ([ErrLineTooLong], [ErrEventTooLong]), it returns that error.
// Once it has returned an error, it returns the same one on every call.
func (d *Decoder) Next() (Event, error) {
	if d.err != nil {
		return Event{}, d.err
	}
	for {
		line, err := d.readLine()
		if err == nil {
			if len(line) == 0 {
				if ev, ok := d.dispatch(); ok {
					return ev, nil
				}
				continue
			}
			err = d.field(line)
		}
		if err != nil {
			d.err = err
			return Event{}, err
		}
	}
}

// LastEventID returns the stream's last event ID as of its latest blank
// line: what a browser sends in Last-Event-ID when it reconnects. An id
// field counts once a blank line follows, even one that dispatches no
// event.
func (d *Decoder) LastEventID() string { return d.lastID }

// Retry returns the reconnection time of the stream's latest valid retry
// field, and whether there was one. A retry field counts when its line
// ends, blank line or not; a value that is not all ASCII digits, or too
// large for a [time.Duration], is ignored.
func (d *Decoder) Retry() (time.Duration, bool) { return d.retry, d.retrySet }

// dispatch handles a blank line: it returns the pending event, if it has
// data, and starts the next one.
func (d *Decoder) dispatch() (Event, bool) {
	d.lastID = d.idBuf
	name := d.typ
	d.typ = ""
	if len(d.data) == 0 {
		return Event{}, false
	}
	ev := Event{ID: d.lastID, Name: name, Data: text(d.data[:len(d.data)-1])}
	d.data = d.data[:0]
	return ev, true
}

// field handles a line that is not blank: a comment or a field.
func (d *Decoder) field(line []byte) error {
	if line[0] == ':' {
		return nil
	}
	name, value := line, line[len(line):]
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) {
	case "data":
		if len(d.data)+len(value)+1 > limit(d.MaxEventSize, DefaultMaxEventSize) {
			return ErrEventTooLong
		}
		d.data = append(d.data, value...)
		d.data = append(d.data, '\n')
	case "event":
		d.typ = d.name(value)
	case "id":
		if sendableID(value) && string(value) != d.idBuf {
			d.idBuf = text(value)
		}
	case "retry":
		if ms, ok := parseRetry(value); ok {
			d.retry, d.retrySet = time.Duration(ms)*time.Millisecond, true
		}
	}
	return nil
}

// sendableID reports whether an id field's value may become the last event
// ID. The standard ignores a value holding NUL; this client also ignores one
// holding any other byte that Go's net/http refuses in a header value: a C0
// control (CR and LF cannot be in a line) or DEL. Kept, such an ID would
// make every reconnection's request fail before it left the machine, and
// the client would retry forever without a word to its caller.
func sendableID(v []byte) bool {
	for _, c := range v {
		if c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

// name returns value as a string, the same string as for an earlier event
// with this name if it is one of the last few names seen: a stream mostly
// repeats a handful of them.
func (d *Decoder) name(value []byte) string {
	for _, s := range d.names {
		if string(value) == s {
			return s
		}
	}
	s := text(value)
	d.names[d.nextName] = s
	d.nextName = (d.nextName + 1) % len(d.names)
	return s
}

// parseRetry parses a retry field's value: one or more ASCII digits, a
// number of milliseconds that fits in a time.Duration.
func parseRetry(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	var ms int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		ms = ms*10 + int64(c-'0')
		if ms > math.MaxInt64/int64(time.Millisecond) {
			return 0, false
		}
	}
	return ms, true
}

// limit returns n, or def if n is not positive.
func limit(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// readLine returns the next line without its terminator, valid until the
// next call. At the end of the stream it returns the source's error,
// dropping an unterminated last line.
func (d *Decoder) readLine() ([]byte, error) {
	maxLine := limit(d.MaxLineSize, DefaultMaxLineSize)
	for {
		if d.afterCR && d.r < d.w {
			d.afterCR = false
			if d.buf[d.r] == '\n' {
				d.r++ // the rest of a CRLF
			}
		}
		if !d.started && !d.skipBOM() {
			if err := d.fill(maxLine); err != nil {
				return nil, err
			}
			continue
		}
		if end := d.eol(d.r + d.scanned); end >= 0 {
			line := d.buf[d.r:end]
			d.afterCR = d.buf[end] == '\r'
			d.r, d.scanned = end+1, 0
			if len(line) > maxLine {
				return nil, ErrLineTooLong
			}
			return line, nil
		}
		if d.scanned = d.w - d.r; d.scanned > maxLine {
			return nil, ErrLineTooLong
		}
		if err := d.fill(maxLine); err != nil {
			return nil, err
		}
	}
}

// skipBOM skips a byte order mark at the start of the stream, and reports
// whether that is decided: false while the bytes read so far are a proper
// prefix of one and the stream goes on.
func (d *Decoder) skipBOM() bool {
	head := d.buf[d.r:d.w]
	n := min(len(head), len(bom))
	if string(head[:n]) == bom[:n] {
		if n < len(bom) && d.readErr == nil {
			return false
		}
		if n == len(bom) {
			d.r += n
		}
	}
	d.started = true
	return true
}

// eol returns the index in buf of the first CR or LF at or after start,
// or -1. It remembers where the first LF is, so that a run of lines ended
// by CR alone does not look for the same LF again and again.
func (d *Decoder) eol(start int) int {
	from := max(start, d.lf)
	if i := bytes.IndexByte(d.buf[from:d.w], '\n'); i >= 0 {
		d.lf = from + i
	} else {
		d.lf = d.w
	}
	if j := bytes.IndexByte(d.buf[start:d.lf], '\r'); j >= 0 {
		return start + j
	}
	if d.lf < d.w {
		return d.lf
	}
	return -1
}

// fill reads more of the stream into the buffer. A full buffer first
// makes room: the unparsed bytes move to its start, into a buffer twice as
// large (up to a line of maxLine bytes and its terminator) if they fill
// half of it, so that a long line read in small pieces costs linear time.
func (d *Decoder) fill(maxLine int) error {
	if d.readErr != nil {
		return d.readErr
	}
	if d.r == d.w {
		d.r, d.w, d.lf = 0, 0, 0
	}
	if d.w == len(d.buf) {
		n := d.w - d.r
		size := len(d.buf)
		if 2*n > size || d.r == 0 {
			size = min(max(2*size, minBuffer), maxLine+1)
		}
		if size <= n { // a byte order mark's start, under a tiny limit
			size = n + len(bom)
		}
		buf := d.buf
		if size != len(buf) {
			buf = make([]byte, size)
		}
		copy(buf, d.buf[d.r:d.w])
		d.lf -= d.r
		d.buf, d.r, d.w = buf, 0, n
	}
	for range 100 {
		n, err := d.src.Read(d.buf[d.w:])
		d.w += n
		if err != nil {
			d.readErr = err
		}
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	d.readErr = io.ErrNoProgress
	return d.readErr
}
