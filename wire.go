package sse

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// lastEventID returns the ID a request resumes from: its Last-Event-ID
// header or, without one, its lastEventId query parameter, split into its
// epoch (empty for a plain decimal ID) and event ID.
func lastEventID(r *http.Request) (epoch string, id uint64, header, ok bool) {
	v, header, ok := rawLastEventID(r)
	if !ok {
		return "", 0, header, false
	}
	epoch, id, ok = parseID(v)
	return epoch, id, header, ok
}

// rawLastEventID returns the text of a request's Last-Event-ID header or,
// without one, of its lastEventId query parameter; header tells which, ok
// whether there is either.
func rawLastEventID(r *http.Request) (v string, header, ok bool) {
	vs, header := r.Header["Last-Event-Id"]
	if !header {
		vs = r.URL.Query()["lastEventId"]
	}
	if len(vs) == 0 {
		return "", header, false
	}
	return vs[0], header, true
}

// parseID splits a wire ID, "<epoch>-<id>" or a plain "<id>", into its
// parts: an epoch of ASCII letters and digits, and a decimal event ID.
func parseID(v string) (epoch string, id uint64, ok bool) {
	if i := strings.LastIndexByte(v, '-'); i >= 0 {
		epoch, v = v[:i], v[i+1:]
		if epoch == "" || !alphanumeric(epoch) {
			return "", 0, false
		}
	}
	if v == "" || v[0] < '0' || v[0] > '9' {
		return "", 0, false
	}
	id, err := strconv.ParseUint(v, 10, 64)
	return epoch, id, err == nil
}

// formatEpoch is the text of an epoch on the wire.
func formatEpoch(e uint64) string { return strconv.FormatUint(e, 36) }

// NewEpoch returns a new random epoch, for a new life of a key: 48 random
// bits in base 36, as the Broker draws its own, so that a client's ID from
// another life is taken for one of this life once in 2^48. A [Source] of
// another backend draws the epochs its [Subscription].Epoch returns with
// it; [Handler] accepts any of 1 to 64 ASCII letters and digits.
func NewEpoch() string { return formatEpoch(newEpoch()) }

// checkEpoch refuses an epoch that docs/protocol.md does not allow: one
// with any byte but an ASCII letter or digit could end the id line and
// inject fields (a "close" that stops every client), and one too long would
// make every ID a burden. It is the source's mistake: the handler answers
// 500.
func checkEpoch(epoch string) error {
	if epoch == "" || len(epoch) > maxEpoch || !alphanumeric(epoch) {
		return fmt.Errorf("%w: %q", errBadEpoch, epoch)
	}
	return nil
}

// alphanumeric reports whether s holds only ASCII letters and digits.
func alphanumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// maxEpoch is the longest epoch the handler writes.
const maxEpoch = 64

// appendRetry appends a "retry" field, with no blank line after it: a
// client applies it as it reads the line, and a blank line would end a
// block that holds no event, which some clients (go-sse, r3labs) dispatch
// as an empty message. So the field goes either at the end of a response,
// or at the start of the block of a stream's first event.
func appendRetry(buf []byte, d time.Duration) []byte {
	buf = append(buf, "retry: "...)
	buf = strconv.AppendInt(buf, retryMillis(d), 10)
	return append(buf, '\n')
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
	return appendBody(appendID(buf, epoch, ev.ID), ev)
}

// appendBody appends what follows an event's id line: its event line, its
// data lines and the blank line (see appendEvent).
func appendBody(buf []byte, ev Event) []byte {
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
