package sse

import (
	"errors"
	"fmt"
)

var (
	// ErrShutdown is returned by Enqueue, Publish and Close once
	// [Broker.Shutdown] has been called.
	ErrShutdown = errors.New("sse: broker shut down")
	// ErrInvalidKey is returned (wrapped, with the reason) for a key the
	// broker cannot hold: one that is not equal to itself, such as a NaN, or
	// an interface holding a value that cannot be compared, such as a slice.
	// Only key types that can hold such values (floats, complex numbers,
	// interfaces, or arrays and structs of them) are checked.
	ErrInvalidKey = errors.New("sse: invalid key")
	// ErrClosed is returned by [Broker.Open] for a key that is closed and
	// still remembered (see [WithRetention]).
	ErrClosed = errors.New("sse: key closed")
	// ErrDropped is wrapped by the error [Broker.Shutdown] returns when its
	// context ended before every event had reached a channel.
	ErrDropped = errors.New("sse: events dropped at shutdown")
	// ErrTooManyKeys is returned by Enqueue and Publish for a new key when
	// the broker holds as many keys as [WithMaxKeys] allows.
	ErrTooManyKeys = errors.New("sse: too many keys")
)

// ErrInvalidEvent is returned (wrapped, with the reason) for an event that
// cannot be sent: a Name with CR, LF or NUL, a Name or Data that is not
// valid UTF-8, a reserved Name ([EventClose], [EventGap], or one that starts
// with [ReservedPrefix]), an unnamed event whose Data is [TerminateData], or
// a Name and Data larger together than [WithMaxEventSize] allows. Nothing
// of the call that carried it is enqueued.
var ErrInvalidEvent = errors.New("sse: invalid event")

// ErrTruncated is the error with which [Broker.Events] and
// [Subscription].Next report a stream cut short, in Queue mode: the key's
// channel was closed before every event had been handed to it, because
// Shutdown's deadline passed or the key was forgotten with events its
// readers never took (see [WithRetention]). [Handler] then ends the
// response without the "close" event, so that the client reconnects and
// learns what happened.
var ErrTruncated = errors.New("sse: stream cut short")

var (
	// ErrBusy is returned by [Broker.Subscribe] when another connection is
	// attached to the key and the request does not take it over.
	ErrBusy = errors.New("sse: another stream is attached to the key")
	// ErrFinished is returned by [Broker.Subscribe] when the key is closed
	// and the client has received every event.
	ErrFinished = errors.New("sse: the key is closed and fully read")
	// ErrUnknownKey is returned by [Broker.Subscribe] for a key that the
	// server did not create when the request asks for a known one.
	ErrUnknownKey = errors.New("sse: unknown key")
	// ErrUnknownCursor is what a [CursorStore] returns for a cursor it does
	// not hold: never stored, expired or evicted.
	ErrUnknownCursor = errors.New("sse: unknown cursor")
	// ErrReplaced is returned by [Subscription].Next when another connection
	// took the key over.
	ErrReplaced = errors.New("sse: another connection took the key over")
)

// A GapError is what [Broker.Events] yields, in [FanOut] mode, when its
// reader fell further behind than the key's history holds: the events From
// to To are lost to it. The range goes on with the oldest event held; the
// reader should rebuild what those events carried from elsewhere.
type GapError struct{ Gap }

func (e *GapError) Error() string {
	return fmt.Sprintf("sse: events %d to %d are no longer held", e.From, e.To)
}
