package sse

import (
	"log/slog"
	"time"
)

// A HandlerOption configures [Handler].
type HandlerOption interface{ applyHandler(*handlerConfig) }

type handlerOptionFunc func(*handlerConfig)

func (f handlerOptionFunc) applyHandler(c *handlerConfig) { f(c) }

// handlerConfig is a handler's configuration, fixed by Handler.
type handlerConfig struct {
	heartbeat    time.Duration
	retry        time.Duration
	writeTimeout time.Duration
	end          string // written after a closed key's last event
	takeover     Takeover
	logger       *slog.Logger // nil: silent
	metrics      *Metrics     // nil: nothing counted
	maxStreams   int          // 0: no bound
	known        bool         // refuse keys the source does not have
	maxKeys      int          // MultiHandler: the most keys a request may name; 0: DefaultKeysPerRequest
}

// DefaultHeartbeat and DefaultWriteTimeout are [Handler]'s heartbeat
// interval and write deadline unless [WithHeartbeat] and [WithWriteTimeout]
// say otherwise.
const (
	DefaultHeartbeat    = 15 * time.Second
	DefaultWriteTimeout = 30 * time.Second
)

func handlerDefaults() handlerConfig {
	return handlerConfig{
		heartbeat:    DefaultHeartbeat,
		writeTimeout: DefaultWriteTimeout,
		end:          "event: close\ndata: \n\n",
	}
}

// WithHeartbeat sets how long a stream may be idle before the handler
// writes a comment line, so that proxies and load balancers do not cut it.
// The default is [DefaultHeartbeat]; 0 turns heartbeats off. It panics if d
// is negative. A handler's streams share one heartbeat clock, which ticks
// every eighth of d, rather than a timer each: a heartbeat comes up to an
// eighth of d early, never late.
func WithHeartbeat(d time.Duration) HandlerOption {
	nonNegative("WithHeartbeat", d)
	return handlerOptionFunc(func(c *handlerConfig) { c.heartbeat = d })
}

// WithRetry sends a "retry" field when a stream starts: how long the client
// waits before it reconnects. By default none is sent and the browser picks
// (a few seconds). It panics if d is negative.
func WithRetry(d time.Duration) HandlerOption {
	nonNegative("WithRetry", d)
	return handlerOptionFunc(func(c *handlerConfig) { c.retry = d })
}

// WithWriteTimeout bounds each write to the client, so that a client that
// stops reading is dropped rather than holding the handler. The default is
// [DefaultWriteTimeout]; 0 means no bound. It panics if d is negative.
func WithWriteTimeout(d time.Duration) HandlerOption {
	nonNegative("WithWriteTimeout", d)
	return handlerOptionFunc(func(c *handlerConfig) { c.writeTimeout = d })
}

// nonNegative panics, as make does for a negative size, if d is negative.
func nonNegative(option string, d time.Duration) {
	if d < 0 {
		panic("sse: " + option + ": negative duration")
	}
}

// WithTerminateMessage ends a closed key's stream with the data line
// "---terminate---", as Rocket.Libraries.ServerSentEvents does, instead of
// the "close" event, for clients written for that library.
func WithTerminateMessage() HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.end = "data: ---terminate---\n\n" })
}

// WithMaxStreams bounds how many streams the handler serves at once. A
// request beyond the bound is answered at once, without touching its
// queue: status 200, a "retry" field ([WithRetry], or [DefaultBusyRetry])
// and the end of the stream, so that a browser tries again later. A request
// that takes a key over (see [Takeover]) from a stream this handler serves
// is admitted at the bound and inherits that stream's place: a client can
// always replace its own stale connection. In [FanOut] mode nothing is
// taken over, and the handler cannot tell a client's stale connection from
// another client's: there, a request with a Last-Event-ID header of the
// key's current life (a browser reconnecting) is admitted beyond the
// bound, by at most n/8 + 1 streams in all, so that the handler serves at
// most n + n/8 + 1 streams; its stale connection gives its place back when
// a heartbeat's write fails. By default there is no bound; 0 means none.
// It panics if n is negative.
func WithMaxStreams(n int) HandlerOption {
	if n < 0 {
		panic("sse: WithMaxStreams: negative bound")
	}
	return handlerOptionFunc(func(c *handlerConfig) { c.maxStreams = n })
}

// WithKnownKeysOnly serves only server keys: keys the server created with
// Enqueue, Publish, Stream or Close (see [Broker.Subscribe]); any other key
// gets 404. Use it when clients choose the URL: otherwise a request for a
// random key creates an empty queue and waits on it.
func WithKnownKeysOnly() HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.known = true })
}

// WithTakeover sets what happens when a request arrives for a key that
// another connection is streaming. See [Takeover]. It panics for a value
// that is not one of Takeover's constants.
func WithTakeover(t Takeover) HandlerOption {
	if t != TakeoverOnResume && t != TakeoverAlways {
		panic("sse: WithTakeover: unknown Takeover policy")
	}
	return handlerOptionFunc(func(c *handlerConfig) { c.takeover = t })
}

// Takeover is the handler's policy for a second connection to a key that
// has one.
//
// Keys are meant per client. A client that lost its connection reconnects
// with Last-Event-ID, often before the server has noticed the old
// connection is dead: that request must win. A request without an ID is
// more likely a second reader, such as another tab: if it won, the first
// tab would reconnect with its ID and win back, and the two would take the
// key from each other forever.
type Takeover int

const (
	// TakeoverOnResume, the default, lets a request that carries a
	// Last-Event-ID header, as a reconnecting browser sends, take the key
	// over: the older response ends first (a write of it blocked on a dead
	// client fails at once), then the new one streams. A lastEventId query
	// parameter does not take a key over: every request of a page's
	// EventSource carries it, another tab's too. A request without the
	// header gets 409 Conflict, which makes a browser stop instead of
	// competing.
	TakeoverOnResume Takeover = iota
	// TakeoverAlways lets every new request take the key over, the newest
	// connection winning. Use it when a client may lose its connection before
	// it has received any event, and so reconnects without an ID; two tabs
	// on one key will then take it from each other.
	TakeoverAlways
)
