package sse

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Event is one message in a key's queue.
type Event struct {
	// ID is set by the broker: 1, 2, 3, ... per key, in queue order. It is
	// ignored on input.
	ID uint64
	// Name is the optional event type (the SSE "event" field). It must be
	// valid UTF-8 without CR, LF or NUL, and not one of the names the
	// library sends itself ([EventClose], [EventGap], [ReservedPrefix]).
	Name string
	// Data is the payload: valid UTF-8 text, line breaks allowed. Over SSE a
	// line break arrives as LF whether it was LF, CR or CRLF: the format
	// cannot carry the difference.
	Data string
}

// Size is what ev counts against the bounds in bytes: [Subscription].Next's
// limit (what [Handler] writes at once), the replay window ([WithReplay]),
// the history ([WithHistory]) and the budget ([WithReplayBudget]). It is
// 48 bytes plus the lengths of its Name and Data: about its size on the
// wire, and about what it costs in memory. A [Source] of another backend
// counts with it too, so that Next's limit means the same everywhere.
func (ev Event) Size() int { return eventOverhead + len(ev.Name) + len(ev.Data) }

// eventOverhead is what an event counts beyond its Name and Data: the
// 40-byte Event in a window's ring and 8 bytes for the ring's slack, which
// is also at least what frames a one-line event on the wire ("id: ", the
// ID, "event: ", "data: " and the line ends, for IDs below 10^12).
const eventOverhead = 48

// The names and data the library writes itself. A producer cannot send an
// event that a client would take for one of them: [Broker.Publish] and
// [Broker.Enqueue] refuse it with [ErrInvalidEvent].
const (
	// EventClose names the event [Handler] sends after a closed key's last
	// event: every event was handed over, and the client should stop.
	EventClose = "close"
	// EventGap names the event [Handler] sends when a client resumes after
	// events that can no longer be sent to it (see [Gap]).
	EventGap = "gap"
	// ReservedPrefix starts the names of events that later versions of the
	// library may send. Names that start with it are refused.
	ReservedPrefix = "sse."
	// TerminateData is the data of the unnamed event that ends a stream
	// under [WithTerminateMessage], as Rocket.Libraries.ServerSentEvents
	// ends it. An unnamed event with exactly this data is refused, whatever
	// the handler's options, so that no client written for that library
	// stops early.
	TerminateData = "---terminate---"
)

// CheckEvent reports whether ev may be published, as [Broker.Publish]
// checks each of its events (and [Broker.Enqueue] each unnamed one): nil,
// or an error wrapping [ErrInvalidEvent] with the reason. maxSize bounds its
// Name and Data together, as [WithMaxEventSize] does. Other implementations
// of [Publisher] call it to refuse exactly what the Broker refuses.
func CheckEvent(ev Event, maxSize int) error {
	if err := validate(&ev, maxSize); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidEvent, err)
	}
	return nil
}

// validate checks an event before it enters the inbox: its Name, and its
// Data as validateData does.
func validate(ev *Event, maxSize int) error {
	ascii := true
	for i := 0; i < len(ev.Name); i++ {
		switch c := ev.Name[i]; {
		case c == '\r' || c == '\n' || c == 0:
			return fmt.Errorf("name %q contains CR, LF or NUL", ev.Name)
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	if !ascii && !utf8.ValidString(ev.Name) {
		return errors.New("name is not valid UTF-8")
	}
	if reserved(ev.Name) {
		return fmt.Errorf("name %q is reserved for the library's own events", ev.Name)
	}
	return validateData(ev.Name, ev.Data, maxSize)
}

// validateData checks the Data of an event named name, and the event's
// size against maxSize.
func validateData(name, data string, maxSize int) error {
	if n := len(name) + len(data); n > maxSize {
		return fmt.Errorf("%d bytes of Name and Data, more than WithMaxEventSize allows (%d)", n, maxSize)
	}
	if !utf8.ValidString(data) {
		return errors.New("data is not valid UTF-8")
	}
	if name == "" && data == TerminateData {
		return fmt.Errorf("an unnamed event with data %q would end a stream", TerminateData)
	}
	return nil
}

// sendable reports whether [Handler] can write ev as it is: a Name with
// CR, LF or NUL would end its line and inject fields, a reserved Name or
// an unnamed TerminateData would be taken for the library's own events.
// Publish refuses such events; a Source other than the Broker may still
// give them.
func sendable(ev Event) bool {
	if ev.Name == "" {
		return ev.Data != TerminateData
	}
	return !strings.ContainsAny(ev.Name, "\r\n\x00") && !reserved(ev.Name)
}

// reserved reports whether name is one the library sends itself.
func reserved(name string) bool {
	return name == EventClose || name == EventGap || strings.HasPrefix(name, ReservedPrefix)
}
