package sse

import (
	"fmt"
	"strconv"
	"strings"
)

// The wire encoding of a multi-key stream (MultiHandler; docs/protocol.md,
// "Several keys on one connection"): every ID is "<i>:<vector>", the index
// of the event's key in the request's list, then one entry per key, comma
// separated: empty (nothing yet), "<epoch>-<seq>", "." (its sse.close was
// sent) or "!" (the server does not know: the key restarts with a gap).
// When the source is a [CursorStore], an ID is "<i>:~<cursor>:<delta>"
// instead: the name of a stored [Cursor], then the entries of the keys that
// moved since it was stored, each "<j>_<entry>", comma separated.

// The names of a multi-key stream's control events of one key. Producers
// cannot publish them: they start with [ReservedPrefix].
const (
	// EventKeyGap names the event that tells a multi-key stream's client
	// of events of one key it will never get. Its data is
	// {"key":i,"from":F,"to":T}: i is the key's position in the request's
	// list, F to T the missing IDs.
	EventKeyGap = ReservedPrefix + "gap"
	// EventKeyClose names the event that tells a multi-key stream's client
	// that one key is closed and every one of its events was sent. Its
	// data is {"key":i}. The stream ends with [EventClose] after the last
	// key's.
	EventKeyClose = ReservedPrefix + "close"
)

// closedEntry is a key's entry in the vector once its sse.close was sent;
// resetEntry, once the server no longer knows where the client is in the
// key (its cursor was forgotten): the key restarts with a gap.
const (
	closedEntry = "."
	resetEntry  = "!"
)

// CursorDelta is how many keys may move, on a multi-key stream whose IDs
// name a stored [Cursor], before the stream stores a new cursor: an ID
// carries the cursor's name and the entries of at most CursorDelta keys, so
// at most about 400 bytes however many keys the stream has, and the stream
// writes to the [CursorStore] once per CursorDelta keys that move.
const CursorDelta = 16

// maxCursorName bounds a cursor's name (see CursorStore.SaveCursor).
const maxCursorName = 40

// A position is what a multi-key request's ID says of one key.
type position struct {
	closed bool   // "." : the client was sent the key's sse.close
	reset  bool   // "!" : where the client is in the key is not known
	guess  bool   // a one-key stream's ID, which may be of another key (see oneKeyID)
	raw    string // the entry as the client sent it, "" for none
	epoch  string // parsed out of raw: "" for a plain number
	id     uint64
}

// parseEntry reads one entry of a vector or a delta.
func parseEntry(entry string) (position, bool) {
	p := position{raw: entry}
	switch entry {
	case "":
	case closedEntry:
		p.closed = true
	case resetEntry:
		p.reset = true
	default:
		var ok bool
		if p.epoch, p.id, ok = parseID(entry); !ok {
			return p, false
		}
	}
	return p, true
}

// A requestError is a multi-key request's mistake, which the client is
// shown (it is a [PublicError]).
type requestError struct{ msg string }

func (e requestError) Error() string         { return "sse: " + e.msg }
func (e requestError) PublicMessage() string { return e.Error() }

// parseMultiID reads a multi-key request's ID for n keys: "0" (nothing of
// any key yet), or an index below n, a colon and exactly n entries.
func parseMultiID(v string, n int) ([]position, error) {
	pos := make([]position, 0, n)
	if v == "0" {
		return pos[:n], nil
	}
	colon := strings.IndexByte(v, ':')
	if colon < 0 {
		return nil, requestError{fmt.Sprintf("the Last-Event-ID %.40q is not an ID of a stream of %d keys (no colon)", v, n)}
	}
	index := v[:colon]
	if i, err := strconv.ParseUint(index, 10, 32); err != nil || i >= uint64(n) {
		return nil, requestError{fmt.Sprintf("the Last-Event-ID's key index %.20q is not one of the request's %d keys", index, n)}
	}
	for rest, more := v[colon+1:], true; more; {
		var entry string
		entry, rest, more = strings.Cut(rest, ",")
		if len(pos) == n {
			return nil, requestError{fmt.Sprintf("the Last-Event-ID has more positions than the request's %d keys", n)}
		}
		p, ok := parseEntry(entry)
		if !ok {
			return nil, requestError{fmt.Sprintf("position %d of the Last-Event-ID, %.40q, is not an event ID", len(pos), entry)}
		}
		pos = append(pos, p)
	}
	if len(pos) != n {
		return nil, requestError{fmt.Sprintf("the Last-Event-ID has %d positions, the request names %d keys", len(pos), n)}
	}
	return pos, nil
}

// isCursorID reports whether v, a multi-key ID, names a cursor: "<i>:~…".
func isCursorID(v string) bool {
	_, rest, _ := strings.Cut(v, ":")
	return strings.HasPrefix(rest, "~")
}

// A cursorID is what an ID of the cursor form says: a cursor, and the
// entries of the keys, by their index in the cursor's list, that moved
// since it was stored.
type cursorID struct {
	index int // the index of the event's key in the cursor's list
	name  string
	delta []int      // the keys that moved, in the ID's order
	pos   []position // their entries
}

// parseCursorID reads a multi-key ID of the cursor form,
// "<i>:~<name>:<j>_<entry>,…" (the delta may be empty).
func parseCursorID(v string) (cursorID, error) {
	var c cursorID
	bad := func(why string) (cursorID, error) {
		return cursorID{}, requestError{fmt.Sprintf("the Last-Event-ID %.60q is not an ID of a cursor (%s)", v, why)}
	}
	index, rest, _ := strings.Cut(v, ":~")
	i, err := strconv.ParseUint(index, 10, 31)
	if err != nil {
		return bad("its key index")
	}
	c.index = int(i)
	name, rest, ok := strings.Cut(rest, ":")
	if !ok || name == "" || len(name) > maxCursorName || !alphanumeric(name) {
		return bad("its cursor's name")
	}
	c.name = name
	if rest == "" {
		return c, nil
	}
	seen := make(map[int]bool)
	for _, d := range strings.Split(rest, ",") {
		j, entry, ok := strings.Cut(d, "_")
		k, err := strconv.ParseUint(j, 10, 31)
		if !ok || err != nil || seen[int(k)] {
			return bad(fmt.Sprintf("the moved key %.20q", j))
		}
		p, ok := parseEntry(entry)
		if !ok || entry == "" {
			return bad(fmt.Sprintf("the position %.40q", entry))
		}
		seen[int(k)] = true
		c.delta, c.pos = append(c.delta, int(k)), append(c.pos, p)
	}
	return c, nil
}

// A vector is the positions a multi-key stream's IDs carry, kept as their
// text so that each ID copies it rather than formats every key again. Its
// owner is the goroutine that writes the stream.
type vector struct {
	text    []byte // the entries, comma separated
	ends    []int  // ends[i]: where entry i ends in text
	scratch []byte // an entry being formatted

	// With a CursorStore, the IDs name a stored cursor and carry the
	// entries of the keys moved since.
	save  func(positions string) (string, error) // stores a cursor of the entries; nil: the IDs carry every entry
	name  string                                 // the cursor the IDs name; "" while none is stored
	delta []int                                  // the keys moved since it was stored, in order
	moved []bool                                 // moved[i]: i is in delta
	err   error                                  // a store that failed: the stream must end (see failed)
}

// newVector returns the vector of the positions a request resumes from:
// each entry as the client sent it.
func newVector(pos []position) *vector {
	v := &vector{ends: make([]int, len(pos))}
	for i, p := range pos {
		if i > 0 {
			v.text = append(v.text, ',')
		}
		v.text = append(v.text, p.raw...)
		v.ends[i] = len(v.text)
	}
	return v
}

// set replaces entry i. With a cursor store, when i would be one key more
// than CursorDelta moved since the last cursor, it stores a cursor of the
// entries first: i is then the first key moved since.
func (v *vector) set(i int, entry []byte) {
	if v.save != nil && !v.moved[i] && len(v.delta) >= CursorDelta {
		v.store()
	}
	start := 0
	if i > 0 {
		start = v.ends[i-1] + 1
	}
	end := v.ends[i]
	if d := len(entry) - (end - start); d != 0 {
		// The entry grows or shrinks (a seq with one more digit): move
		// what follows, rarely.
		n := len(v.text)
		if d > 0 {
			v.text = append(v.text, entry[:d]...)
		}
		copy(v.text[end+d:], v.text[end:n])
		v.text = v.text[:n+d]
		for j := i; j < len(v.ends); j++ {
			v.ends[j] += d
		}
	}
	copy(v.text[start:], entry)
	if v.save != nil && !v.moved[i] {
		v.moved[i] = true
		v.delta = append(v.delta, i)
	}
}

// withCursor makes the vector's IDs name cursors that save stores: from
// the cursor name, with the keys of delta moved since it was stored, or, if
// name is "", from the first that store saves.
func (v *vector) withCursor(save func(string) (string, error), name string, delta []int) {
	v.save, v.name = save, name
	v.moved = make([]bool, len(v.ends))
	for _, i := range delta {
		v.moved[i] = true
		v.delta = append(v.delta, i)
	}
}

// store stores a cursor of the entries, which the IDs then name. On a
// failure they go on naming the last one stored (or carry every entry, if
// none was) and failed reports the error: the caller ends the stream.
func (v *vector) store() {
	if v.save == nil || v.err != nil {
		return
	}
	name, err := v.save(string(v.text))
	if err == nil && (name == "" || len(name) > maxCursorName || !alphanumeric(name)) {
		err = fmt.Errorf("sse: the cursor store returned the name %.60q: not 1 to %d ASCII letters and digits", name, maxCursorName)
	}
	if err != nil {
		v.err = err
		return
	}
	v.name = name
	for _, i := range v.delta {
		v.moved[i] = false
	}
	v.delta = v.delta[:0]
}

// failed returns the error of a store that failed.
func (v *vector) failed() error { return v.err }

// entry returns entry i.
func (v *vector) entry(i int) []byte {
	start := 0
	if i > 0 {
		start = v.ends[i-1] + 1
	}
	return v.text[start:v.ends[i]]
}

// setID makes entry i the ID "<epoch>-<id>".
func (v *vector) setID(i int, epoch string, id uint64) {
	v.scratch = append(append(v.scratch[:0], epoch...), '-')
	v.scratch = strconv.AppendUint(v.scratch, id, 10)
	v.set(i, v.scratch)
}

// setClosed marks entry i as closed.
func (v *vector) setClosed(i int) { v.set(i, []byte(closedEntry)) }

// appendID appends the id line of an event of key i.
func (v *vector) appendID(buf []byte, i int) []byte {
	buf = append(buf, "id: "...)
	buf = strconv.AppendInt(buf, int64(i), 10)
	buf = append(buf, ':')
	if v.name == "" {
		buf = append(buf, v.text...)
		return append(buf, '\n')
	}
	buf = append(append(append(buf, '~'), v.name...), ':')
	for n, j := range v.delta {
		if n > 0 {
			buf = append(buf, ',')
		}
		buf = strconv.AppendInt(buf, int64(j), 10)
		buf = append(append(buf, '_'), v.entry(j)...)
	}
	return append(buf, '\n')
}

// appendKeyGap appends the sse.gap of key i, whose entry the caller has
// set to g.To's ID.
func appendKeyGap(buf []byte, v *vector, i int, g Gap) []byte {
	buf = v.appendID(buf, i)
	buf = append(buf, "event: "+EventKeyGap+"\ndata: {\"key\":"...)
	buf = strconv.AppendInt(buf, int64(i), 10)
	buf = append(buf, ",\"from\":"...)
	buf = strconv.AppendUint(buf, g.From, 10)
	buf = append(buf, ",\"to\":"...)
	buf = strconv.AppendUint(buf, g.To, 10)
	return append(buf, "}\n\n"...)
}

// appendKeyClose appends the sse.close of key i, whose entry the caller
// has marked closed.
func appendKeyClose(buf []byte, v *vector, i int) []byte {
	buf = v.appendID(buf, i)
	buf = append(buf, "event: "+EventKeyClose+"\ndata: {\"key\":"...)
	buf = strconv.AppendInt(buf, int64(i), 10)
	return append(buf, "}\n\n"...)
}
