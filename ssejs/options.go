package ssejs

import (
	"fmt"
	"reflect"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
)

// An Option configures [New].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// Defaults of [New]'s options.
const (
	// DefaultName is the name of the broker's stream and bucket unless
	// [WithName] says otherwise.
	DefaultName = "sse"
	// DefaultHistoryMessages is how many messages a FanOut key's history
	// holds (see [WithHistoryMessages]).
	DefaultHistoryMessages = 10_000
	// DefaultReplayEvents is how many events a Queue key keeps below its
	// floor, to send again to a client that resumes (see
	// [WithReplayEvents]).
	DefaultReplayEvents = 10_000
	// DefaultQueueAge is how long a Queue key's events are kept (see
	// [WithMaxAge]); a FanOut key's default is [sse.DefaultHistoryAge].
	DefaultQueueAge = 24 * time.Hour
	// DefaultDuplicateWindow is the stream's duplicate window, and the
	// least [WithDuplicateWindow] accepts: an idempotency key is honoured
	// for that long.
	DefaultDuplicateWindow = 10 * time.Minute
	// DefaultTimeout bounds a call whose context has no deadline.
	DefaultTimeout = 5 * time.Second
	// DefaultMaxReaders is the stream's bound on consumers unless
	// [WithMaxReaders] says otherwise.
	DefaultMaxReaders = 100_000
	// DefaultLease is how long a process owns its Queue keys without
	// renewing its liveness (see [WithLease]).
	DefaultLease = 15 * time.Second
)

type config struct {
	name       string
	mode       sse.Mode
	history    int64
	replay     uint64
	maxAge     time.Duration // 0: the mode's default
	storage    jetstream.StorageType
	replicas   int
	dupWindow  time.Duration
	timeout    time.Duration
	lease      time.Duration
	maxReaders int
	maxBytes   int64 // the stream's MaxBytes when New creates it; 0: none
	maxEvent   int
	codec      any // a Codec[K], or nil
}

func defaults() config {
	return config{
		name:       DefaultName,
		mode:       sse.Queue,
		history:    DefaultHistoryMessages,
		replay:     DefaultReplayEvents,
		storage:    jetstream.FileStorage,
		replicas:   1,
		dupWindow:  DefaultDuplicateWindow,
		timeout:    DefaultTimeout,
		lease:      DefaultLease,
		maxReaders: DefaultMaxReaders,
		maxEvent:   sse.DefaultMaxEventSize,
	}
}

// age returns the stream's MaxAge.
func (c *config) age() time.Duration {
	switch {
	case c.maxAge > 0:
		return c.maxAge
	case c.mode == sse.FanOut:
		return sse.DefaultHistoryAge
	}
	return DefaultQueueAge
}

// configure applies opts to the defaults. It panics, as the options do,
// for the program's errors that no option can see alone: a nil option, a
// key type K that needs a codec and has none, or a codec of another key
// type, and options that contradict each other.
func configure[K comparable](opts []Option) (config, Codec[K]) {
	cfg := defaults()
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("ssejs: New: option %d is nil", i))
		}
		o.apply(&cfg)
	}
	var codec Codec[K]
	switch c := cfg.codec.(type) {
	case nil:
		if codec = defaultCodec[K](); codec == nil {
			panic(fmt.Sprintf("ssejs: New: keys of type %v need WithCodec", reflect.TypeFor[K]()))
		}
	case Codec[K]:
		codec = c
	default:
		panic(fmt.Sprintf("ssejs: New: WithCodec's key type is not %v", reflect.TypeFor[K]()))
	}
	if cfg.age() < cfg.dupWindow {
		panic(fmt.Sprintf("ssejs: New: max age %v is less than the duplicate window %v", cfg.age(), cfg.dupWindow))
	}
	return cfg, codec
}

// WithName names the broker's stream ("SSE_" + name), subjects
// ("sse." + name + ".e.<key>") and Queue bucket ("SSE_" + name + "_keys").
// Brokers with the same name, on any process, share their keys; they must
// have the same mode. name is 1 to 32 ASCII letters, digits, "-" and "_";
// WithName panics otherwise. The default is [DefaultName].
func WithName(name string) Option {
	if !validName.MatchString(name) {
		panic(fmt.Sprintf("ssejs: WithName: %q is not 1 to 32 ASCII letters, digits, - or _", name))
	}
	return optionFunc(func(c *config) { c.name = name })
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// WithMode chooses [sse.Queue] (the default: each event is read once,
// across every process) or [sse.FanOut] (every reader on every process
// gets every event).
func WithMode(m sse.Mode) Option {
	if m != sse.Queue && m != sse.FanOut {
		panic("ssejs: WithMode: unknown Mode")
	}
	return optionFunc(func(c *config) { c.mode = m })
}

// WithHistoryMessages bounds a [sse.FanOut] key's history to its newest n
// messages (the stream's MaxMsgsPerSubject). A message is one Enqueue,
// Publish or Close call (a batch of events), or a part of one split at the
// server's max payload, so the bound counts calls, not events: it is not
// [sse.WithHistory]'s bound in events, which JetStream cannot keep per key
// (its byte bound, [WithMaxBytes], is the whole stream's, and its age,
// [WithMaxAge], too). The default is [DefaultHistoryMessages]; n must be
// ≥ 1. Queue mode ignores it.
func WithHistoryMessages(n int) Option {
	if n < 1 {
		panic("ssejs: WithHistoryMessages: bound out of range")
	}
	return optionFunc(func(c *config) { c.history = int64(n) })
}

// WithReplayEvents sets how many events a [sse.Queue] key keeps, below the
// last one handed out, to send again to a client that resumes after a lost
// connection (on any replica): the replay window. Older events are purged.
// It counts events, as [sse.WithReplay]'s first bound does; there is no
// bound in bytes. The default is [DefaultReplayEvents]; 0 turns replay off.
// n must be ≥ 0. FanOut mode ignores it.
func WithReplayEvents(n int) Option {
	if n < 0 {
		panic("ssejs: WithReplayEvents: negative bound")
	}
	return optionFunc(func(c *config) { c.replay = uint64(n) })
}

// WithMaxAge bounds how long an event is kept (the stream's MaxAge): in
// FanOut mode, the history's age ([sse.DefaultHistoryAge] by default); in
// Queue mode, how long an event waits for its reader ([DefaultQueueAge] by
// default). A key none of whose messages is younger than that is forgotten
// with them: its next event starts a new life, with a new epoch and IDs
// from 1. d must be > 0, and [New] panics if it is less than the duplicate
// window ([WithDuplicateWindow]).
func WithMaxAge(d time.Duration) Option {
	if d <= 0 {
		panic("ssejs: WithMaxAge: age out of range")
	}
	return optionFunc(func(c *config) { c.maxAge = d })
}

// WithStorage chooses where the stream and bucket keep their messages:
// [jetstream.FileStorage], the default, or [jetstream.MemoryStorage]; it
// panics for any other value.
func WithStorage(s jetstream.StorageType) Option {
	if s != jetstream.FileStorage && s != jetstream.MemoryStorage {
		panic("ssejs: WithStorage: unknown StorageType")
	}
	return optionFunc(func(c *config) { c.storage = s })
}

// WithReplicas sets the stream's and bucket's replicas: 1, the default, or
// 3 in a production cluster (see the package documentation).
func WithReplicas(n int) Option {
	if n < 1 || n > 5 {
		panic("ssejs: WithReplicas: out of range")
	}
	return optionFunc(func(c *config) { c.replicas = n })
}

// WithDuplicateWindow sets how long the stream remembers a message ID, so
// that a call retried with the same idempotency key ([WithIdempotencyKey])
// stores its events once. It must be at least [DefaultDuplicateWindow],
// the default. The server keeps each ID for that long: about 100 bytes per
// message published in the window.
func WithDuplicateWindow(d time.Duration) Option {
	if d < DefaultDuplicateWindow {
		panic(fmt.Sprintf("ssejs: WithDuplicateWindow: less than %v", DefaultDuplicateWindow))
	}
	return optionFunc(func(c *config) { c.dupWindow = d })
}

// WithTimeout bounds each call whose context has no deadline. The default
// is [DefaultTimeout].
func WithTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("ssejs: WithTimeout: out of range")
	}
	return optionFunc(func(c *config) { c.timeout = d })
}

// WithLease sets how long a process owns its [sse.Queue] keys after its
// last renewal of its liveness: a process that died unnoticed keeps them
// that long from a request that does not take keys over (409). A process
// renews its liveness, one write for all its keys, at a third of it. The
// default is [DefaultLease].
func WithLease(d time.Duration) Option {
	if d < 100*time.Millisecond {
		panic("ssejs: WithLease: out of range")
	}
	return optionFunc(func(c *config) { c.lease = d })
}

// WithMaxEventSize bounds an event's Name and Data together, as
// [sse.WithMaxEventSize] does; the default is [sse.DefaultMaxEventSize],
// lowered at [New] to what the server's max payload can carry.
func WithMaxEventSize(n int) Option {
	if n < 1 {
		panic("ssejs: WithMaxEventSize: out of range")
	}
	return optionFunc(func(c *config) { c.maxEvent = n })
}

// WithCodec sets how keys become subject tokens, for a key type other than
// strings and integers, which need none. It panics if c is nil, and [New]
// panics if K is not the codec's key type.
func WithCodec[K comparable](c Codec[K]) Option {
	if c == nil {
		panic("ssejs: WithCodec: nil Codec")
	}
	return optionFunc(func(cfg *config) { cfg.codec = c })
}

// WithMaxReaders bounds the consumers of the broker's stream (its
// MaxConsumers), across every process. The broker makes one per process
// that has readers, its feed, whatever the keys it reads (see the package
// documentation); readers behind it catch up by direct gets, with no
// consumer. A process whose feed would go beyond the bound fails its
// readers with an error wrapping [ErrUnavailable]: the handler answers
// "retry later", or ends the stream so that the client comes back.
//
// A stream without a bound (MaxConsumers -1, the stream's default) is not
// unbounded: nats-server v2.15.3 then applies its JetStream limit
// default_max_consumers, 1,000 unless configured, which is too few for
// many keys, unless the account sets a limit; and an account limit lower
// than the stream's applies instead of it. The default is
// [DefaultMaxReaders].
func WithMaxReaders(n int) Option {
	if n < 1 {
		panic("ssejs: WithMaxReaders: out of range")
	}
	return optionFunc(func(c *config) { c.maxReaders = n })
}

// WithMaxBytes bounds the stream's store, in bytes, when New creates it
// (an operator may change it later, see the package doc). In Queue mode
// the stream then refuses new events at the bound (DiscardNew) rather than
// drop unread ones: Enqueue and Publish fail with an error matching
// [ErrNotStored] and the server's *jetstream.APIError, and readers go on
// reading, so that the queue drains and the bound has room again. Set it
// below what the server and the account allow: a store full to the
// server's or the account's own limit refuses every write, the read
// floors' too, and then readers wait until an operator makes room. In
// FanOut mode the oldest messages make room (DiscardOld), as the history
// bounds do. By default the stream has no bound of its own.
func WithMaxBytes(n int64) Option {
	if n < 1<<20 {
		panic("ssejs: WithMaxBytes: below 1 MiB")
	}
	return optionFunc(func(c *config) { c.maxBytes = n })
}
