package sseclient

import (
	"math/rand/v2"
	"net/http"
	"time"
)

// DefaultBaseDelay, DefaultMaxDelay and DefaultIdleTimeout are [Stream]'s
// reconnection delays and idle timeout unless [WithBackoff] and
// [WithIdleTimeout] set others. The idle timeout is three of the handler's
// default heartbeats (15 s): a healthy stream of this library is never
// silent that long.
//
// DefaultMaxServerDelay is the most the client waits because the server
// asked, with a retry field or a Retry-After header, unless
// [WithMaxServerDelay] sets another cap. A minute is twice the backoff's
// ceiling and twelve times the delay this library's handler asks of a
// client it has no room for (5 s): a server asking for more is most likely
// wrong (seconds written where the retry field wants milliseconds) or a
// rate limiter, and a client that comes back after a minute costs it one
// request a minute, which it may refuse again; honouring a bad value could
// park the client for years.
const (
	DefaultBaseDelay      = time.Second
	DefaultMaxDelay       = 30 * time.Second
	DefaultIdleTimeout    = 45 * time.Second
	DefaultMaxServerDelay = time.Minute
)

// An Option configures [Stream] and [Events].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// config is a stream's configuration: immutable once Stream has built it,
// and read by every range over the sequence.
type config struct {
	client      *http.Client                         // sends every request
	base, max   time.Duration                        // the backoff's first step, and its ceiling
	maxServer   time.Duration                        // the cap on the server's retry field and Retry-After
	idle        time.Duration                        // the idle timeout; 0: none
	maxLine     int                                  // the Decoder's MaxLineSize
	maxEvent    int                                  // the Decoder's MaxEventSize
	onReconnect func(err error, delay time.Duration) // nil: none
	plain       bool                                 // no control events, no ID "0"
	lastID      string                               // the ID the first request resumes from
	jitter      func(d time.Duration) time.Duration  // a delay in [0, d]; tests make it d
}

func newConfig(opts []Option) *config {
	c := &config{
		client:    http.DefaultClient,
		base:      DefaultBaseDelay,
		max:       DefaultMaxDelay,
		maxServer: DefaultMaxServerDelay,
		idle:      DefaultIdleTimeout,
		maxLine:   DefaultMaxLineSize,
		maxEvent:  DefaultMaxEventSize,
		jitter:    fullJitter,
	}
	for _, o := range opts {
		o.apply(c)
	}
	return c
}

// fullJitter returns a delay drawn uniformly from [0, d]. The range's size,
// d+1, is counted in a uint64: for d = math.MaxInt64 it overflows an int64.
func fullJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return time.Duration(rand.Uint64N(uint64(d) + 1))
}

// WithHTTPClient sends the requests with c instead of
// http.DefaultClient. Leave its Timeout at 0: it would cut every stream
// after that long. The idle timeout ([WithIdleTimeout]) bounds a dead
// connection instead.
func WithHTTPClient(c *http.Client) Option {
	return optionFunc(func(cfg *config) {
		if c != nil {
			cfg.client = c
		}
	})
}

// WithBackoff sets the reconnection delays. Before its nth reconnection in
// a row (n from 0; a connection that delivers an event starts the count
// again) the client waits a time drawn at random between 0 and
// min(ceiling, base·2ⁿ): exponential backoff with "full jitter", so that
// clients cut at the same moment do not all come back at the same moment.
// It never waits less than the server asks, with its latest retry field or
// the Retry-After header of a 429, 502, 503 or 504, up to the cap
// [WithMaxServerDelay] sets (a minute by default). The defaults are
// [DefaultBaseDelay] and [DefaultMaxDelay]. Any values are accepted: a
// negative one counts as 0, a ceiling below base as base, and the delay
// saturates at the ceiling, math.MaxInt64 included, never overflowing.
func WithBackoff(base, ceiling time.Duration) Option {
	return optionFunc(func(c *config) {
		c.base = max(base, 0)
		c.max = max(ceiling, c.base)
	})
}

// WithMaxServerDelay caps what the client waits because the server asked:
// a retry field or a Retry-After header asking for longer than d counts as
// asking for d. One bad answer (a typo, seconds where the retry field
// wants milliseconds, a misbehaving proxy) would otherwise park the client
// for as long as it says, years if it likes. The default is
// [DefaultMaxServerDelay], a minute; 0 (or less) ignores the server's
// delays, leaving only the backoff ([WithBackoff]), and math.MaxInt64
// honours them all. The backoff's own ceiling is not capped: it is the
// caller's. [StatusError.RetryAfter] still tells what the server asked.
func WithMaxServerDelay(d time.Duration) Option {
	return optionFunc(func(c *config) { c.maxServer = max(d, 0) })
}

// WithIdleTimeout sets how long a connection may stay silent, no byte of
// the response arriving (events, or the heartbeat comments a server sends
// when idle), before the client takes it for half-open, closes it and
// reconnects. It covers the wait for the response's headers too. The
// default is [DefaultIdleTimeout]; 0 means no timeout, for a server that
// sends no heartbeats.
//
// The body of a response that is not a stream (a [*StatusError]'s) is not
// a stream either: the client reads it for one idle timeout in all, or 5 s
// if that is shorter or there is no idle timeout, and keeps what arrived.
// A body trickling in a byte at a time would otherwise hold the client for
// an idle timeout per byte.
func WithIdleTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) { c.idle = max(d, 0) })
}

// errorBodyTime is how long in all the client reads a refused response's
// body: the idle timeout, and at most maxErrorBodyTime.
func (c *config) errorBodyTime() time.Duration {
	if c.idle > 0 {
		return min(c.idle, maxErrorBodyTime)
	}
	return maxErrorBodyTime
}

// WithLimits sets the longest line and the largest event data the client
// accepts ([Decoder].MaxLineSize and MaxEventSize); beyond them the
// sequence ends with [ErrLineTooLong] or [ErrEventTooLong]. The defaults
// are [DefaultMaxLineSize] and [DefaultMaxEventSize]; 0 keeps a default.
func WithLimits(maxLine, maxEvent int) Option {
	return optionFunc(func(c *config) {
		c.maxLine = limit(maxLine, DefaultMaxLineSize)
		c.maxEvent = limit(maxEvent, DefaultMaxEventSize)
	})
}

// WithOnReconnect calls f each time the client is about to reconnect, with
// the transient error that ended the attempt (a network error,
// [ErrStreamEnded], [ErrIdleTimeout], or a [*StatusError] for 429, 502, 503
// or 504) and the delay it waits first: use it to log or count them. The
// sequence itself yields only the error that ends it. f is called from the
// goroutine ranging over the sequence, and may cancel the context to give
// up.
func WithOnReconnect(f func(err error, delay time.Duration)) Option {
	return optionFunc(func(c *config) { c.onReconnect = f })
}

// WithPlain reads the stream as plain Server-Sent Events, for servers other
// than this library's: every event is yielded, "close", "gap" and
// "---terminate---" included, and only the context or an error ends the
// sequence (or a 204, as for an EventSource); a reconnection sends
// Last-Event-ID only once the stream has set an ID, as a browser does.
func WithPlain() Option {
	return optionFunc(func(c *config) { c.plain = true })
}

// WithLastEventID makes the first request resume after id, sent as its
// Last-Event-ID header: the ID of the last event a previous run of the
// program received, for instance. With this library's handler in Queue
// mode, that request takes the key over from any connection that holds it.
func WithLastEventID(id string) Option {
	return optionFunc(func(c *config) { c.lastID = id })
}
