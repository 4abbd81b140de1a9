package sseclient

import (
	"encoding/json"
	"strings"
)

// An Event is one event of a stream, as a browser's EventSource dispatches
// it to its listeners.
type Event struct {
	// ID is the stream's last event ID when the event was dispatched: the
	// value of the latest id field before the event's blank line, in this
	// event or an earlier one. [Stream] carries it over to the next
	// connection, as Chromium does (the standard's text starts each
	// connection with an empty one, which would make a resumed stream that
	// sends no id forget where it was). It is the opaque string the server
	// wrote ("3w5e11264s-42" from this library's handler), never parsed,
	// and what the client sends back in Last-Event-ID when it reconnects.
	ID string
	// Name is the value of the event's event field, or "" if it had none:
	// a browser dispatches such an event as "message".
	Name string
	// Data is the values of the event's data fields joined by LF.
	Data string
}

// The names and data that github.com/rocketqueue/sse's handler writes
// itself, which [Stream] treats as control events unless [WithPlain] is
// given (see the package documentation).
const (
	// EventClose names the event that ends a closed key's stream: every
	// event was sent. It ends the sequence, without being yielded.
	EventClose = "close"
	// EventGap names the event that tells of events the client will never
	// get (see [Event.Gap]). It is yielded like any other event.
	EventGap = "gap"
	// ReservedPrefix starts the names of control events that later versions
	// of the handler may send. Events whose name starts with it are
	// skipped, so that this client keeps working with them.
	ReservedPrefix = "sse."
	// EventKeyGap names, on a stream of several keys (the handler's
	// MultiHandler), the gap of one key: its data is
	// {"key":i,"from":F,"to":T} ([Event.Gap] reads it, [Event.Key] tells
	// the key). It is yielded like [EventGap].
	EventKeyGap = ReservedPrefix + "gap"
	// EventKeyClose names, on a stream of several keys, the event that
	// says one key is closed and every one of its events was sent: its
	// data is {"key":i} ([Event.Key] tells the key). It is yielded; the
	// sequence goes on until [EventClose], after the last key's.
	EventKeyClose = ReservedPrefix + "close"
	// TerminateData is the data of the unnamed event that ends a stream
	// instead of [EventClose] when the handler has WithTerminateMessage, as
	// Rocket.Libraries.ServerSentEvents ends it. It ends the sequence too.
	TerminateData = "---terminate---"
)

// Gap reports the range of event numbers, from and to (inclusive, in the
// key's current life), that a "gap" event says the client will never
// receive: in this library's Queue mode they were lost
// beyond the replay window, dropped by an overflow policy or taken by
// another reader; in FanOut mode the history no longer holds them. On a
// stream of several keys it reads an "sse.gap" event, whose key
// [Event.Key] tells. ok is false if e is neither, or its data is not
// {"from":F,"to":T}.
func (e Event) Gap() (from, to uint64, ok bool) {
	if e.Name != EventGap && e.Name != EventKeyGap || !strings.HasPrefix(e.Data, "{") {
		return 0, 0, false
	}
	var g struct {
		From *uint64 `json:"from"`
		To   *uint64 `json:"to"`
	}
	if json.Unmarshal([]byte(e.Data), &g) != nil || g.From == nil || g.To == nil || *g.From > *g.To {
		return 0, 0, false
	}
	return *g.From, *g.To, true
}

// Key reports, for an event of a stream of several keys (this library's
// MultiHandler), the position of its key in the request's list, from 0:
// the number before the colon of its ID, "<i>:<where the client is in
// every key>".
// ok is false for an ID of another form, such as a one-key stream's.
func (e Event) Key() (i int, ok bool) {
	index, _, found := strings.Cut(e.ID, ":")
	if !found || index == "" || len(index) > 9 {
		return 0, false
	}
	for _, c := range index {
		if c < '0' || c > '9' {
			return 0, false
		}
		i = i*10 + int(c-'0')
	}
	return i, true
}
