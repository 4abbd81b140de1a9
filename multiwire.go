package sse

import (
	"fmt"
	"strconv"
	"strings"
)

// The wire encoding of a multi-key stream (MultiHandler; docs/protocol.md,
// "Several keys on one connection"): every ID is "<i>:<vector>", the index
// of the event's key in the request's list, then one entry per key, comma
// separated: empty (nothing yet), "<epoch>-<seq>", or "." (its sse.close
// was sent).

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

// closedEntry is a key's entry in the vector once its sse.close was sent.
const closedEntry = "."

// A position is what a multi-key request's ID says of one key.
type position struct {
	closed bool   // "." : the client was sent the key's sse.close
	raw    string // the entry as the client sent it, "" for none
	epoch  string // parsed out of raw: "" for a plain number
	id     uint64
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
		p := position{raw: entry}
		switch entry {
		case "":
		case closedEntry:
			p.closed = true
		default:
			var ok bool
			if p.epoch, p.id, ok = parseID(entry); !ok {
				return nil, requestError{fmt.Sprintf("position %d of the Last-Event-ID, %.40q, is not an event ID", len(pos), entry)}
			}
		}
		pos = append(pos, p)
	}
	if len(pos) != n {
		return nil, requestError{fmt.Sprintf("the Last-Event-ID has %d positions, the request names %d keys", len(pos), n)}
	}
	return pos, nil
}

// A vector is the positions a multi-key stream's IDs carry, kept as their
// text so that each ID copies it rather than formats every key again.
type vector struct {
	text    []byte // the entries, comma separated
	ends    []int  // ends[i]: where entry i ends in text
	scratch []byte // an entry being formatted
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

// set replaces entry i.
func (v *vector) set(i int, entry []byte) {
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
	buf = append(buf, v.text...)
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
