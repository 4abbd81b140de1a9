package ssejs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rocketqueue/sse"
)

// A Broker keeps keyed streams of events in NATS JetStream, shared by
// every process that makes a Broker with the same name: any of them may
// publish to a key, and any of them may serve it to readers and SSE
// clients. Create one with [New]; the zero value is not usable. All
// methods are safe for concurrent use.
//
// A Broker implements [sse.Publisher], [sse.Reader] and [sse.Source], so
// that [sse.Handler] serves it unchanged.
type Broker[K comparable] struct {
	cfg     config              // immutable after New
	codec   Codec[K]            // immutable
	js      jetstream.JetStream // immutable
	nc      *nats.Conn          // immutable
	stream  jetstream.Stream    // immutable
	kv      jetstream.KeyValue  // immutable; nil in FanOut mode
	cursors cursors             // sse.MultiHandler's cursors (cursor.go); its own lock
	prefix  string              // immutable: "sse.<name>.e."
	id      string              // immutable: this broker's name in Queue leases
	maxBody int                 // immutable: the most body bytes of one message

	stats counters // what Stats reports (stats.go)

	mu      sync.Mutex
	refused atomic.Uint64       // publish attempts refused because another message of their key came first
	pubs    map[string]*pubKey  // guarded by mu: each key's publishing state, by token
	pubSize int                 // guarded by mu: what pubs holds, as pubCost counts
	qkeys   map[string]*qkey[K] // guarded by mu: Queue keys this process reads, by token
	// unsure holds, for Queue keys this process stopped reading, the
	// nonces of lease writes whose outcome is unknown, which no later write
	// repaired: one may have been stored though its ack was lost, and if
	// it is a take's, none of its events were handed out (see
	// qkey.acquire). Guarded by mu; bounded by maxUnsure keys.
	unsure  map[string][]string
	hubs    map[string]*hub[K] // guarded by mu: FanOut keys this process reads, by token
	feed    *feed[K]           // guarded by mu: the process's feed, if a key has readers here (feed.go)
	down    chan struct{}      // guarded by mu: closed while NATS is unreachable
	subs    int                // guarded by mu: open subscriptions
	subsEnd chan struct{}      // guarded by mu: closed when subs drops to 0 after Shutdown began
	stopped bool               // guarded by mu: Shutdown has begun

	// In Queue mode only: the process's liveness and its keys' entries
	// (see liveness.go).
	notices *nats.Subscription    // immutable after New: takeovers of this process's keys (see noticed)
	smu     sync.Mutex            // guards settles
	settles map[*qkey[K]]struct{} // Queue keys whose entries settleKeys looks at next

	quit  chan struct{}  // closed when Shutdown begins
	calls sync.WaitGroup // flushers, purges and other goroutines of calls
	bg    sync.WaitGroup // the status watcher, the liveness renewer and settleKeys

	stopOnce sync.Once

	// dropAcks, in tests, makes the next publishes act as if their
	// acknowledgement was lost after the server stored them; afterDrop
	// runs then.
	dropAcks  int          // guarded by mu
	afterDrop func(*batch) // guarded by mu
	// afterPart, in tests, runs after each part of a split batch but the
	// last is stored.
	afterPart func() // guarded by mu
	// dropLeaseAcks, in tests, makes the next lease writes act as if their
	// acknowledgement was lost after the bucket stored them.
	dropLeaseAcks atomic.Int32
	// dropAcquireAcks, in tests, makes the next writes that take a lease
	// act as if their acknowledgement was lost after the bucket stored
	// them.
	dropAcquireAcks atomic.Int32
	// loseLeaseWrites, in tests, makes the next lease writes fail as if
	// the connection dropped before the bucket got them.
	loseLeaseWrites atomic.Int32
	// staleGets, in tests, makes the next direct gets of nextFrom find
	// nothing, as a replica that lags the stream's leader answers.
	staleGets atomic.Int32
	// staleKVGets, in tests, makes the next direct gets of a bucket's
	// entries (cursors, liveness) find nothing, as a lagging replica can.
	staleKVGets atomic.Int32
	// feedGiveUp is how long the feed's consumer may fail to recover
	// before the feed checks its stream (see feed.watch): feedGiveUp,
	// shortened by tests. Immutable after New, but for tests, which set it
	// before the first reader.
	feedGiveUp time.Duration
}

// Compile-time checks: a Broker is what sse.Handler and application code
// expect.
var (
	_ sse.Publisher[string] = (*Broker[string])(nil)
	_ sse.Reader[string]    = (*Broker[string])(nil)
	_ sse.Source[string]    = (*Broker[string])(nil)
	_ sse.Stopper           = (*Broker[string])(nil)
)

// metaMode is the stream metadata entry that records the broker's mode.
const metaMode = "ssejs.mode"

// New returns a Broker on js: it creates, with opts, the stream
// "SSE_<name>" and, in [sse.Queue] mode, the KV bucket "SSE_<name>_keys",
// if they are missing, and never changes them if they exist (see the
// package documentation). ctx bounds those calls. New fails only for what
// depends on the environment: NATS unreachable, a server whose max payload
// is too small, or a stream or bucket that breaks the guarantees (another
// mode among them). What is the program's error panics, as in the options:
// a nil option, a key type K other than strings and integers without
// [WithCodec], a codec of another key type, or options that contradict
// each other ([WithMaxAge] below [WithDuplicateWindow]). Call
// [Broker.Shutdown] to stop it; the connection stays the caller's.
func New[K comparable](ctx context.Context, js jetstream.JetStream, opts ...Option) (*Broker[K], error) {
	cfg, codec := configure[K](opts)
	b := &Broker[K]{
		cfg:    cfg,
		codec:  codec,
		js:     js,
		nc:     js.Conn(),
		prefix: "sse." + cfg.name + ".e.",
		id:     nuid.Next(),
		pubs:   make(map[string]*pubKey),
		qkeys:  make(map[string]*qkey[K]),
		unsure: make(map[string][]string),
		hubs:   make(map[string]*hub[K]),
		down:   make(chan struct{}),
		quit:   make(chan struct{}),

		feedGiveUp: feedGiveUp,
	}
	// A message's headers take a few hundred bytes; the rest is its body.
	b.maxBody = int(b.nc.MaxPayload()) - 1024
	if b.maxBody < 4096 {
		return nil, fmt.Errorf("ssejs: the server's max payload (%d) is too small", b.nc.MaxPayload())
	}
	if b.cfg.maxEvent > b.maxBody-16 {
		b.cfg.maxEvent = b.maxBody - 16
	}
	name := "SSE_" + cfg.name
	sc := jetstream.StreamConfig{
		Name:              name,
		Description:       "Server-Sent Events keys of github.com/rocketqueue/sse/ssejs",
		Subjects:          []string{b.prefix + ">"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           cfg.storage,
		Replicas:          cfg.replicas,
		MaxAge:            cfg.age(),
		MaxMsgsPerSubject: -1,
		MaxConsumers:      cfg.maxReaders,
		Duplicates:        cfg.dupWindow,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		Metadata:          map[string]string{metaMode: cfg.mode.String()},
	}
	if cfg.mode == sse.FanOut {
		// One more, so that the Close's message does not push an
		// event's out.
		sc.MaxMsgsPerSubject = cfg.history + 1
	}
	if cfg.maxBytes > 0 {
		sc.MaxBytes = cfg.maxBytes
		if cfg.mode == sse.Queue {
			sc.Discard = jetstream.DiscardNew // refuse new events, never drop unread ones
		}
	}
	// Create what is missing; never change what exists, whose limits an
	// operator may have set (see the package doc).
	s, err := js.Stream(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, sc)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = js.Stream(ctx, name) // another replica created it meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("ssejs: creating stream %s: %w", name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("ssejs: looking up stream %s: %w", name, err)
	}
	if err := checkStream(s.CachedInfo().Config, b.prefix, cfg.mode); err != nil {
		return nil, err
	}
	b.stream = s
	if cfg.mode == sse.Queue {
		bucket := name + "_keys"
		kv, err := js.KeyValue(ctx, bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			kv, err = js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
				Bucket:      bucket,
				Description: "Queue leases and read floors of stream " + name,
				History:     1,
				// An entry outlives the events it covers (see leases).
				TTL:      cfg.age() + time.Minute,
				Storage:  cfg.storage,
				Replicas: cfg.replicas,
			})
			if errors.Is(err, jetstream.ErrBucketExists) {
				kv, err = js.KeyValue(ctx, bucket)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("ssejs: creating bucket %s: %w", bucket, err)
		}
		// A read floor must outlive the events it covers, or they are
		// read again.
		st, err := kv.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("ssejs: looking up bucket %s: %w", bucket, err)
		}
		if age := s.CachedInfo().Config.MaxAge; st.TTL() > 0 && (age == 0 || st.TTL() < age) {
			return nil, fmt.Errorf("ssejs: bucket %s cannot hold read floors: its entries expire after %v, before the events of stream %s (max age %v)", bucket, st.TTL(), name, age)
		}
		b.kv = kv
		// The process's liveness before any key's lease names it, and
		// its notices before any key is taken from it.
		b.settles = make(map[*qkey[K]]struct{})
		if b.notices, err = b.nc.Subscribe(b.noticeSubject(b.id), b.noticed); err != nil {
			return nil, fmt.Errorf("ssejs: subscribing to lease notices: %w", err)
		}
		if err := b.putLiveness(ctx); err != nil {
			b.notices.Unsubscribe()
			return nil, fmt.Errorf("ssejs: writing this process's liveness in bucket %s: %w", bucket, err)
		}
	}
	// The listener first, then the state: a change in between reaches
	// watch.
	status := b.nc.StatusChanged(nats.CONNECTED, nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	if !b.nc.IsConnected() {
		close(b.down)
	}
	b.bg.Add(1)
	go b.watch(status)
	if cfg.mode == sse.Queue {
		b.bg.Add(2)
		go b.keepAlive()
		go b.settleKeys()
	}
	return b, nil
}

// checkStream refuses a stream whose settings would break the guarantees:
// one of another mode, one that does not take every key's subject, one
// whose retention deletes messages as they are consumed (a key's metadata
// is its last message), a sealed one, and one that does not acknowledge
// publishes (a call could not know its events were stored).
func checkStream(c jetstream.StreamConfig, prefix string, mode sse.Mode) error {
	if m := c.Metadata[metaMode]; m != "" && m != mode.String() {
		return fmt.Errorf("ssejs: stream %s holds %s keys, not %s", c.Name, m, mode)
	}
	var problems []string
	if !slices.Contains(c.Subjects, prefix+">") {
		problems = append(problems, fmt.Sprintf("its subjects %q do not include %q", c.Subjects, prefix+">"))
	}
	if c.Retention != jetstream.LimitsPolicy {
		problems = append(problems, fmt.Sprintf("its retention is %s, not limits", c.Retention))
	}
	if c.Sealed {
		problems = append(problems, "it is sealed")
	}
	if c.NoAck {
		problems = append(problems, "it does not acknowledge publishes")
	}
	if len(problems) > 0 {
		return fmt.Errorf("ssejs: stream %s cannot hold keys: %s", c.Name, strings.Join(problems, "; "))
	}
	return nil
}

// Mode returns the broker's mode; it implements [sse.Source].
func (b *Broker[K]) Mode() sse.Mode { return b.cfg.mode }

// watch follows the connection's status: while it is not connected, down
// is closed, so that open subscriptions end and new ones are refused.
func (b *Broker[K]) watch(status chan nats.Status) {
	defer b.bg.Done()
	for {
		select {
		case st := <-status:
			b.setDown(st != nats.CONNECTED || !b.nc.IsConnected())
		case <-b.quit:
			b.nc.RemoveStatusListener(status)
			return
		}
	}
}

func (b *Broker[K]) setDown(down bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case <-b.down:
		if !down {
			b.down = make(chan struct{})
		}
	default:
		if down {
			close(b.down)
		}
	}
}

// downChan returns the channel closed while NATS is unreachable.
func (b *Broker[K]) downChan() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.down
}

// bounded returns ctx bounded by one attempt's time ([WithTimeout], at
// most 2 s) and ended as soon as NATS becomes unreachable (down closes) or
// Shutdown begins: for the requests a subscription makes inside Next,
// whose caller's context (a request's) may have no deadline at all, so
// that its stream ends, or writes its heartbeat, rather than waiting out
// an outage.
func (b *Broker[K]) bounded(ctx context.Context, down <-chan struct{}) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
	go func() {
		select {
		case <-down:
			cancel()
		case <-b.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// callCtx bounds ctx by the broker's timeout if it has no deadline.
func (b *Broker[K]) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.cfg.timeout)
}

// subject returns key's token and subject.
func (b *Broker[K]) subject(key K) (token, subject string, err error) {
	token, err = Token(b.codec, key)
	return token, b.prefix + token, err
}

// last returns the last message stored for subject, or nil if none is.
func (b *Broker[K]) last(ctx context.Context, subject string) (*batch, error) {
	m, err := b.stream.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseBatch(m.Sequence, m.Header, m.Data)
}

// lastAtLeader is last, read at the stream's leader rather than by a
// direct get, which any replica may answer, one that lags included.
func (b *Broker[K]) lastAtLeader(ctx context.Context, subject string) (*batch, error) {
	return b.getAtLeader(ctx, struct {
		LastFor string `json:"last_by_subj"`
	}{subject})
}

// nextFromAtLeader is nextFrom, read at the stream's leader.
func (b *Broker[K]) nextFromAtLeader(ctx context.Context, subject string, seq uint64) (*batch, error) {
	return b.getAtLeader(ctx, struct {
		Seq     uint64 `json:"seq"`
		NextFor string `json:"next_by_subj"`
	}{max(seq, 1), subject})
}

// getAtLeader asks the stream's leader for the message that req (a
// STREAM.MSG.GET request) names; nil if there is none.
func (b *Broker[K]) getAtLeader(ctx context.Context, req any) (*batch, error) {
	m, err := b.msgAtLeader(ctx, b.stream.CachedInfo().Config.Name, req)
	if m == nil || err != nil {
		return nil, err
	}
	return parseBatch(m.seq, m.hdr, m.data)
}

// kvGet is kv.Get: a direct get, which any of the bucket's replicas may
// answer.
func (b *Broker[K]) kvGet(ctx context.Context, kv jetstream.KeyValue, key string) (jetstream.KeyValueEntry, error) {
	if b.staleKVGets.Load() > 0 && b.staleKVGets.Add(-1) >= 0 {
		return nil, jetstream.ErrKeyNotFound
	}
	return kv.Get(ctx, key)
}

// kvAtLeader reads key's value in the key-value bucket at its stream's
// leader: a bucket allows direct gets, which any replica answers, one that
// lags included; found is false for a key with no value (none, or
// deleted). Read it where a stale answer would be taken for a fact: a
// cursor just stored that a lagging replica does not have yet, a live
// owner whose last liveness write it has not seen.
func (b *Broker[K]) kvAtLeader(ctx context.Context, bucket, key string) (value []byte, found bool, err error) {
	m, err := b.msgAtLeader(ctx, "KV_"+bucket, struct {
		LastFor string `json:"last_by_subj"`
	}{"$KV." + bucket + "." + key})
	if m == nil || err != nil {
		return nil, false, err
	}
	switch m.hdr.Get("KV-Operation") {
	case "DEL", "PURGE":
		return nil, false, nil
	}
	return m.data, true, nil
}

// A rawMsg is a stored message as a STREAM.MSG.GET answer gives it.
type rawMsg struct {
	seq  uint64
	hdr  nats.Header
	data []byte
}

// msgAtLeader asks the leader of stream for the message that req (a
// STREAM.MSG.GET request) names; nil if there is none.
func (b *Broker[K]) msgAtLeader(ctx context.Context, stream string, req any) (*rawMsg, error) {
	o := b.js.Options()
	prefix := o.APIPrefix
	switch {
	case o.Domain != "":
		prefix = "$JS." + o.Domain + ".API."
	case prefix == "":
		prefix = jetstream.DefaultAPIPrefix
	case !strings.HasSuffix(prefix, "."):
		prefix += "."
	}
	data, _ := json.Marshal(req)
	m, err := b.js.Conn().RequestWithContext(ctx, prefix+"STREAM.MSG.GET."+stream, data)
	if err != nil {
		return nil, err
	}
	var resp struct {
		Message *struct {
			Sequence uint64 `json:"seq"`
			Header   []byte `json:"hdrs"`
			Data     []byte `json:"data"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return nil, err
	}
	switch {
	case resp.Error != nil && resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound:
		return nil, nil
	case resp.Error != nil:
		return nil, resp.Error
	case resp.Message == nil:
		return nil, jetstream.ErrInvalidJetStreamResponse
	}
	var hdr nats.Header
	if len(resp.Message.Header) > 0 {
		if hdr, err = nats.DecodeHeadersMsg(resp.Message.Header); err != nil {
			return nil, err
		}
	}
	return &rawMsg{resp.Message.Sequence, hdr, resp.Message.Data}, nil
}

// settled returns last, the key's last message as a direct get read it,
// or, if req resumes from an ID that last says the key has not reached
// (or of another life), the last message read again at the stream's
// leader: a lagging replica may have answered the direct get, and an ID
// the key has reached must never be taken for one it has not (a FanOut
// client would be sent the key's history again). The leader is asked only
// on that rare branch, as the Queue replay asks it only when a direct get
// finds less than the key's floor says is stored.
func (b *Broker[K]) settled(ctx context.Context, subject string, req sse.SubscribeRequest, last *batch, local bool) (*batch, error) {
	if !req.Resume || (local || req.Epoch == last.epoch) && req.LastID < last.next() {
		return last, nil
	}
	l, err := b.lastAtLeader(ctx, subject)
	if err != nil || l == nil {
		return last, err
	}
	return l, nil
}

// nextFrom returns the first message stored for subject at sequence seq or
// after, or nil if none is.
func (b *Broker[K]) nextFrom(ctx context.Context, subject string, seq uint64) (*batch, error) {
	if b.staleGets.Load() > 0 && b.staleGets.Add(-1) >= 0 {
		return nil, nil // in tests: a lagging replica answered
	}
	m, err := b.stream.GetMsg(ctx, max(seq, 1), jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return parseBatch(m.Sequence, m.Header, m.Data)
}

// locate returns the sequence of the message that holds event id, or of
// the first message held if that is later; last is the subject's last
// message, whose events are after id. It asks O(log n) direct gets.
func (b *Broker[K]) locate(ctx context.Context, subject string, last *batch, id uint64) (uint64, error) {
	if last.first <= id {
		return last.seq, nil
	}
	first, err := b.nextFrom(ctx, subject, 1)
	if err == nil && first == nil {
		// last is held, so something is: a lagging replica answered.
		first, err = b.nextFromAtLeader(ctx, subject, 1)
	}
	if err != nil || first == nil {
		return last.seq, err
	}
	if first.first > id || first.next() > id {
		return first.seq, nil
	}
	lo, hi := first.seq, last.seq // the message at lo starts at or before id
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		m, err := b.nextFrom(ctx, subject, mid)
		if err != nil {
			return 0, err
		}
		if m == nil || m.first > id {
			hi = mid - 1
			continue
		}
		if m.next() > id {
			return m.seq, nil
		}
		lo = m.seq
	}
	return lo, nil
}

// Shutdown stops the broker: new calls return [sse.ErrShutdown] at once,
// calls in progress finish (their events are stored, or their outcome
// unknown), open subscriptions end (their Next returns ErrShutdown, and
// [sse.Handler] ends the stream without "close", so that clients
// reconnect, perhaps to another replica), and Queue leases are released.
// Unlike [sse.Broker.Shutdown] it closes no key: the keys belong to every
// replica. It returns ctx's error if ctx ended first; every call returns
// when the broker's own goroutines have stopped or ctx ended.
func (b *Broker[K]) Shutdown(ctx context.Context) error {
	b.stopOnce.Do(func() {
		b.mu.Lock()
		b.stopped = true
		b.subsEnd = make(chan struct{})
		if b.subs == 0 {
			close(b.subsEnd)
		}
		b.mu.Unlock()
		close(b.quit)
	})
	b.mu.Lock()
	subsEnd := b.subsEnd
	b.mu.Unlock()
	select {
	case <-subsEnd:
	case <-ctx.Done():
		return ctx.Err()
	}
	done := make(chan struct{})
	go func() {
		b.calls.Wait()
		b.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// track counts a new subscription, or fails after Shutdown.
func (b *Broker[K]) track() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return sse.ErrShutdown
	}
	b.subs++
	return nil
}

// untrack counts a subscription's end.
func (b *Broker[K]) untrack() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.subs--
	if b.subs == 0 && b.subsEnd != nil {
		close(b.subsEnd)
	}
}

// sleep waits d, or until ctx ends; it reports whether it waited d. It
// does not stop when Shutdown begins: calls in progress go on until they
// finish (see [Broker.Shutdown]).
func (b *Broker[K]) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
