package ssejs

import (
	"errors"

	"github.com/rocketqueue/sse"
)

// ErrUnavailable is wrapped by the errors of calls that could not reach
// NATS: a subscription's Next when the connection dropped, and Subscribe
// while it is down. Subscribe's error also matches [sse.ErrShutdown], so
// that [sse.Handler] answers "retry later" and the client comes back,
// perhaps to another replica.
var ErrUnavailable = errors.New("ssejs: NATS is unreachable")

// ErrNotStored is wrapped by the errors of [Broker.Enqueue],
// [Broker.Publish], [Broker.Close] and [Broker.Open] that the broker knows
// stored nothing: a context that ended before the call was sent (the
// context's error is wrapped too), or a definite refusal by the server
// (its *jetstream.APIError is wrapped too). Like [sse.ErrClosed] and the
// others that say so, it means the call may be retried without a
// duplicate; any error that matches none of them means the outcome is
// unknown.
var ErrNotStored = errors.New("ssejs: nothing was stored")

// unavailable is Subscribe's error while NATS is unreachable.
type unavailable struct{ cause error }

func (e unavailable) Error() string {
	if e.cause != nil {
		return ErrUnavailable.Error() + ": " + e.cause.Error()
	}
	return ErrUnavailable.Error()
}

func (e unavailable) Is(target error) bool {
	return target == ErrUnavailable || target == sse.ErrShutdown
}

func (e unavailable) Unwrap() error { return e.cause }

// errLost is what a lease write returns when another process owns the key.
var errLost = errors.New("ssejs: the key's lease was taken over")

// errYield is what takeHeld returns when it stopped waiting for events
// because an attach or an unref waits for sem.
var errYield = errors.New("ssejs: sem wanted")

// errAmbiguousClosed is returned when a key turned out closed after an
// attempt whose outcome is unknown.
var errAmbiguousClosed = errors.New("ssejs: outcome unknown: the key is closed, and an earlier attempt may have been stored before the close")

// errBadMessage is what decoding a stored message that this package did
// not write (its headers or body) returns.
var errBadMessage = errors.New("ssejs: a stored message is not one of this package's")
