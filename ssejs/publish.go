package ssejs

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rocketqueue/sse"
)

// Enqueue appends unnamed events with the given data to key, as one batch:
// one message, stored once the server acknowledged it (see [Broker.Publish]).
// A call with no events does nothing.
func (b *Broker[K]) Enqueue(ctx context.Context, key K, data ...string) error {
	if len(data) == 0 {
		return b.nothing(key)
	}
	body, n := make([]byte, 0, 64), 0
	for i, d := range data {
		if err := sse.CheckEvent(sse.Event{Data: d}, b.cfg.maxEvent); err != nil {
			return fmt.Errorf("message %d: %w", i, err)
		}
		body = appendEvent(body, "", d)
		n++
	}
	return b.submit(ctx, key, &pubCall{kind: callEvents, body: body, n: uint64(n)})
}

// Publish appends events to key, as one batch: their IDs are the key's
// next ones, consecutive, the same on every process. It returns once the
// server has stored them (with [WithReplicas] above 1, on a majority of its
// replicas), retrying with the same message ID until ctx ends (or
// [WithTimeout] passes, if ctx has no deadline), so a retry after a lost
// acknowledgement stores nothing twice.
//
// Every event is checked first, as [sse.Broker.Publish] checks it
// ([sse.CheckEvent]): a bad one fails the call with an error wrapping
// [sse.ErrInvalidEvent] and nothing is stored. After Shutdown the error is
// [sse.ErrShutdown], and nothing is stored. A closed key refuses events
// with [sse.ErrClosed], storing nothing. An error matching [ErrNotStored]
// (a context already done, a definite refusal by the server) also means
// nothing was stored. Any other error means the outcome is unknown: the
// events may have been stored. To retry such a
// call safely, give it an idempotency key ([WithIdempotencyKey]): within
// the duplicate window ([WithDuplicateWindow]) a call with the same key
// and idempotency key is stored at most once.
//
// A batch is one message, so it is stored whole or not at all, and
// calls from every process interleave whole. A batch larger than the
// server's max payload is split into several messages, stored in order
// one after the other: it is then no longer atomic (an error may leave its
// first part stored) and other calls' batches may come between its parts.
// An error once a part is stored says so, and matches none of the errors
// above that mean nothing was stored ([sse.ErrClosed] included).
// Calls made concurrently in one process to one key are carried together
// in one message while an earlier one is in flight, in the order they
// came.
//
// A call with no events does nothing, as in [sse.Broker.Publish]: it
// stores no message and starts no life of the key; it returns nil, or
// [sse.ErrInvalidKey] or [sse.ErrShutdown].
func (b *Broker[K]) Publish(ctx context.Context, key K, events ...sse.Event) error {
	if len(events) == 0 {
		return b.nothing(key)
	}
	size := 0
	for i := range events {
		if err := sse.CheckEvent(events[i], b.cfg.maxEvent); err != nil {
			return fmt.Errorf("event %d: %w", i, err)
		}
		size += encodedSize(events[i].Name, events[i].Data)
	}
	body := make([]byte, 0, size)
	for _, ev := range events {
		body = appendEvent(body, ev.Name, ev.Data)
	}
	return b.submit(ctx, key, &pubCall{kind: callEvents, body: body, n: uint64(len(events))})
}

// Close marks key as finished: readers on every process get its events
// stored before the Close, then their range (or SSE stream, with "close")
// ends. Events published after it are refused with [sse.ErrClosed].
// Closing a closed key does nothing; closing a key that has no events
// records it as closed. Close waits for the server's acknowledgement, as
// Publish does, and an error other than [sse.ErrShutdown] or one matching
// [ErrNotStored] means the outcome is unknown.
func (b *Broker[K]) Close(ctx context.Context, key K) error {
	return b.submit(ctx, key, &pubCall{kind: callClose})
}

// Open starts key's life, if it has none, before its first event: a
// request for it is then served (with [sse.WithKnownKeysOnly], rather than
// refused with 404), and its epoch is set. It does nothing to a key that
// has events or is closed.
func (b *Broker[K]) Open(ctx context.Context, key K) error {
	return b.submit(ctx, key, &pubCall{kind: callOpen})
}

type idemKey struct{}

// WithIdempotencyKey returns a context that makes [Broker.Enqueue],
// [Broker.Publish] or [Broker.Close] with it store its batch at most once
// per key and id within the duplicate window ([WithDuplicateWindow]), even
// when the caller retries after an error, from any process. id must be
// unique for each batch the caller means to store. Such a call is stored in
// a message of its own.
func WithIdempotencyKey(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, idemKey{}, id)
}

type callKind uint8

const (
	callEvents callKind = iota // append events
	callClose                  // close the key, after events merged before it
	callOpen                   // start the key's life if it has none
)

// A pubCall is one Enqueue, Publish, Close or Open waiting to be stored.
// Its fields are set by the caller before it is queued, then read by the
// key's flusher; the outcome comes back on done.
type pubCall struct {
	kind callKind
	body []byte // the encoded events
	n    uint64 // how many
	idem string // the caller's idempotency key, or ""
	ctx  context.Context
	done chan error // capacity 1: the outcome
}

// A pubKey is one key's publishing state in this process.
type pubKey struct {
	token, subject string // immutable

	queue   []*pubCall // guarded by Broker.mu: calls waiting for the flusher
	running bool       // guarded by Broker.mu: a flusher goroutine runs

	// Owned by the running flusher; guarded by Broker.mu between two.
	known bool // st is known to match the subject's last message
	st    keyState
}

// keyState is what a key's last stored message says; a value, owned by
// whoever holds it.
type keyState struct {
	seq    uint64 // its stream sequence; 0: the subject holds nothing
	epoch  string
	next   uint64 // the ID the next event gets
	closed bool
}

func stateOf(last *batch) keyState {
	if last == nil {
		return keyState{next: 1}
	}
	return keyState{seq: last.seq, epoch: last.epoch, next: last.next(), closed: last.closed}
}

// maxPubs and maxPubBytes bound the idle keys' states the broker caches:
// how many, and their bytes (pubCost), so that long keys cannot make the
// cache hold hundreds of MiB.
const (
	maxPubs     = 1 << 16
	maxPubBytes = 16 << 20
)

// pubCost is what pk costs the cache: its strings and its struct, with
// the map's share.
func pubCost(pk *pubKey) int { return len(pk.token) + len(pk.subject) + 256 }

// submit hands c to key's flusher and waits for its outcome.
// nothing is Enqueue and Publish with no events: it checks the key and
// whether the broker is shut down, and stores nothing.
func (b *Broker[K]) nothing(key K) error {
	if _, _, err := b.subject(key); err != nil {
		return err
	}
	b.mu.Lock()
	stopped := b.stopped
	b.mu.Unlock()
	if stopped {
		return sse.ErrShutdown
	}
	return nil
}

func (b *Broker[K]) submit(ctx context.Context, key K, c *pubCall) error {
	token, subject, err := b.subject(key)
	if err != nil {
		return err
	}
	ctx, cancel := b.callCtx(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrNotStored, err) // a call whose context is done stores nothing
	}
	c.ctx, c.done = ctx, make(chan error, 1)
	if id, ok := ctx.Value(idemKey{}).(string); ok {
		c.idem = id
	}
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return sse.ErrShutdown
	}
	pk := b.pubs[token]
	if pk == nil {
		pk = &pubKey{token: token, subject: subject}
		for t, p := range b.pubs { // evict idle keys at random
			if len(b.pubs) < maxPubs && b.pubSize+pubCost(pk) <= maxPubBytes {
				break
			}
			if !p.running {
				delete(b.pubs, t)
				b.pubSize -= pubCost(p)
			}
		}
		b.pubs[token] = pk
		b.pubSize += pubCost(pk)
	}
	pk.queue = append(pk.queue, c)
	if !pk.running {
		pk.running = true
		b.calls.Add(1)
		go b.flush(pk)
	}
	b.mu.Unlock()
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		b.mu.Lock()
		queued := false
		for i, q := range pk.queue {
			if q == c { // not sent: nothing of it is stored
				pk.queue = append(pk.queue[:i], pk.queue[i+1:]...)
				queued = true
				break
			}
		}
		b.mu.Unlock()
		if queued {
			return fmt.Errorf("%w: %w", ErrNotStored, ctx.Err())
		}
		select {
		case err := <-c.done: // the flusher answered meanwhile
			return err
		default:
		}
		return fmt.Errorf("ssejs: outcome unknown: %w", ctx.Err())
	}
}

// flush stores pk's calls, a message at a time, until none waits.
func (b *Broker[K]) flush(pk *pubKey) {
	defer b.calls.Done()
	for {
		b.mu.Lock()
		calls := b.nextCalls(pk)
		if len(calls) == 0 {
			pk.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		err := b.store(pk, calls)
		b.stats.count(calls, err)
		for _, c := range calls {
			c.done <- err
		}
	}
}

// nextCalls takes from pk's queue the calls of its next message: a call
// with an idempotency key, an Open or a Close alone (their outcome on a
// closed key differs from an Enqueue's), or else Enqueue and Publish calls
// without one, in order, up to the server's max payload.
func (b *Broker[K]) nextCalls(pk *pubKey) []*pubCall {
	var calls []*pubCall
	size := 0
	for len(pk.queue) > 0 {
		c := pk.queue[0]
		if err := c.ctx.Err(); err != nil {
			// Its caller gave up before it was sent: send nothing of it.
			pk.queue = pk.queue[1:]
			c.done <- fmt.Errorf("%w: %w", ErrNotStored, err)
			continue
		}
		alone := c.idem != "" || c.kind != callEvents
		if len(calls) > 0 && (alone || size+len(c.body) > b.maxBody) {
			break
		}
		calls = append(calls, c)
		pk.queue = pk.queue[1:]
		size += len(c.body)
		if alone {
			break
		}
	}
	if len(pk.queue) == 0 {
		pk.queue = nil
	}
	return calls
}

// store stores calls as one message, or several if they are larger than
// the server's max payload, with retries; it returns their outcome.
func (b *Broker[K]) store(pk *pubKey, calls []*pubCall) error {
	// The attempts go on while any caller waits.
	var deadline time.Time
	for _, c := range calls {
		if d, ok := c.ctx.Deadline(); ok && d.After(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	waiting := func() bool {
		for _, c := range calls {
			if c.ctx.Err() == nil {
				return true
			}
		}
		return false
	}
	kind := calls[len(calls)-1].kind
	id := calls[0].idem
	if id == "" {
		id = nuid.Next()
	} else {
		id = idemMsgID(pk.token, id)
	}
	var body []byte
	var n uint64
	if len(calls) == 1 {
		body, n = calls[0].body, calls[0].n
	} else {
		for _, c := range calls {
			body = append(body, c.body...)
			n += c.n
		}
	}
	parts := split(body, n, b.maxBody)
	for i, p := range parts {
		pid := id
		if len(parts) > 1 {
			pid = id + "." + strconv.Itoa(i)
		}
		k := callEvents
		if i == len(parts)-1 {
			k = kind
		}
		if err := b.storeOne(ctx, waiting, pk, p.body, p.n, k, pid); err != nil {
			if i > 0 {
				// Not %w: ErrClosed and the others say nothing was stored.
				return fmt.Errorf("ssejs: part %d of %d of a split batch failed, the parts before it stored: %v", i+1, len(parts), err)
			}
			return err
		}
		b.mu.Lock()
		after := b.afterPart
		b.mu.Unlock()
		if after != nil && i < len(parts)-1 {
			after()
		}
	}
	return nil
}

// idemMsgID is the message ID of a call with idempotency key id to the
// key whose token is token: "i" and a hash of both, 44 bytes, so that the headers
// stay within what New reserves for them whatever the key's and id's
// lengths (a token alone may be 1,367 bytes).
func idemMsgID(token, id string) string {
	h := sha256.Sum256([]byte(token + ":" + id))
	return "i" + base64.RawURLEncoding.EncodeToString(h[:])
}

// A part is a piece of a batch split at the max payload (a value).
type part struct {
	body []byte
	n    uint64
}

// split cuts body, n encoded events, into parts of at most max bytes, at
// event boundaries.
func split(body []byte, n uint64, max int) []part {
	if len(body) <= max {
		return []part{{body, n}}
	}
	var parts []part
	start, p := 0, body
	var k uint64
	for i := uint64(0); i < n; i++ {
		_, rest, _ := field(p)
		_, rest, _ = field(rest)
		end := len(body) - len(rest)
		if end-start > max && k > 0 {
			cut := len(body) - len(p)
			parts = append(parts, part{body[start:cut], k})
			start, k = cut, 0
		}
		k++
		p = rest
	}
	return append(parts, part{body[start:], k})
}

// storeOne publishes one message on pk's subject: the events' IDs follow
// the subject's last message, which the publish expects (compare and set
// on the subject's last sequence), with message ID id for every attempt.
func (b *Broker[K]) storeOne(ctx context.Context, waiting func() bool, pk *pubKey, body []byte, n uint64, kind callKind, id string) error {
	ambiguous := false
	backoff := 5 * time.Millisecond
	var lastErr error
	fresh := false              // pk.st was read by this call
	var contended time.Duration // the bound of the wait after losing a race (see wrongLastSeq below)
	for attempt := 0; ; attempt++ {
		if attempt > 0 && !waiting() {
			if lastErr == nil {
				lastErr = context.DeadlineExceeded
			}
			if !ambiguous { // every attempt was refused, or never sent
				return fmt.Errorf("%w: %w", ErrNotStored, lastErr)
			}
			return fmt.Errorf("ssejs: outcome unknown: %w", lastErr)
		}
		if !pk.known {
			last, err := b.last(ctx, pk.subject)
			if err != nil {
				lastErr = err
				b.sleep(ctx, backoff)
				backoff = min(2*backoff, 500*time.Millisecond)
				continue
			}
			pk.st, pk.known, fresh = stateOf(last), true, true
		}
		st := pk.st
		if !fresh && (st.closed || kind == callOpen && st.seq != 0) {
			// Read the key again before refusing or skipping the call: its
			// messages may all have expired since, and another life begun.
			pk.known = false
			continue
		}
		switch {
		case kind == callOpen && st.seq != 0:
			return nil
		case st.closed && kind == callClose:
			return nil
		case st.closed && ambiguous:
			return errAmbiguousClosed
		case st.closed:
			return sse.ErrClosed
		}
		epoch := st.epoch
		if st.seq == 0 {
			epoch = sse.NewEpoch()
		}
		m := &nats.Msg{Subject: pk.subject, Data: body, Header: nats.Header{}}
		m.Header.Set(hdrEpoch, epoch)
		m.Header.Set(hdrFirst, strconv.FormatUint(st.next, 10))
		m.Header.Set(hdrCount, strconv.FormatUint(n, 10))
		if kind == callClose {
			m.Header.Set(hdrClose, "1")
		}
		actx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
		ack, err := b.js.PublishMsg(actx, m, jetstream.WithMsgID(id), jetstream.WithExpectLastSequencePerSubject(st.seq), jetstream.WithRetryAttempts(0))
		cancel()
		if err == nil && b.dropAck(pk) {
			err = context.DeadlineExceeded
		}
		switch {
		case err == nil:
			if ack.Duplicate {
				pk.known = false // stored by an earlier attempt, or another process
			} else {
				pk.st = keyState{seq: ack.Sequence, epoch: epoch, next: st.next + n, closed: kind == callClose}
			}
			return nil
		case wrongLastSeq(err):
			// Another message came first, or an earlier attempt of this
			// one was stored (its acknowledgement lost): the server checks
			// the expected sequence before the message ID.
			b.refused.Add(1)
			pk.known = false
			last, gerr := b.last(ctx, pk.subject)
			if gerr != nil {
				lastErr = gerr
				continue
			}
			pk.st, pk.known, fresh = stateOf(last), true, true
			if last != nil && last.msgID == id {
				return nil
			}
			backoff = 5 * time.Millisecond
			// Other processes' calls won the race. The first time, try
			// again at once; after that, wait a random time below a bound
			// that doubles, so that P racing processes spread out rather
			// than each losing about P/2 times.
			if contended > 0 {
				b.sleep(ctx, rand.N(contended))
			}
			contended = min(max(2*contended, time.Millisecond), maxContention)
		case refusal(err) && !ambiguous:
			// The server stored nothing and will not, whatever the retry:
			// its store is full, say.
			return fmt.Errorf("%w: %w", ErrNotStored, err)
		case refusal(err):
			return fmt.Errorf("ssejs: outcome unknown: an earlier attempt may have been stored: %w", err)
		default:
			lastErr, ambiguous = err, true
			pk.known = false
			b.sleep(ctx, backoff)
			backoff = min(2*backoff, 500*time.Millisecond)
		}
	}
}

// maxContention bounds the random wait of a call that keeps losing the
// race for its key to other processes' calls.
const maxContention = 32 * time.Millisecond

// attemptTimeout bounds one publish attempt, so that a lost
// acknowledgement is retried while the caller still waits.
func (b *Broker[K]) attemptTimeout() time.Duration { return min(b.cfg.timeout, 2*time.Second) }

// refusal reports whether err is a definite refusal of a publish, one
// that a retry would meet again: no room in the store (the account's or
// the server's limit), a message larger than the stream allows, a store
// that failed to write it, or a connection closed for good.
func refusal(err error) bool {
	if errors.Is(err, nats.ErrConnectionClosed) {
		return true // closed for good: nothing was sent, nor will be
	}
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode {
	case errCodeAccountResources, errCodeInsufficientResources, jetstream.JSErrCodeStreamMessageExceedsMaximum, errCodeStreamStoreFailed:
		return true
	}
	return false
}

// JetStream's error codes that nats.go does not name.
const (
	errCodeAccountResources      jetstream.ErrorCode = 10002 // resource limits exceeded for account
	errCodeInsufficientResources jetstream.ErrorCode = 10023
	errCodeStreamStoreFailed     jetstream.ErrorCode = 10077
)

func wrongLastSeq(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// dropAck reports, in tests, that an acknowledgement is to be taken as
// lost.
func (b *Broker[K]) dropAck(pk *pubKey) bool {
	b.mu.Lock()
	if b.dropAcks == 0 {
		b.mu.Unlock()
		return false
	}
	b.dropAcks--
	f := b.afterDrop
	b.mu.Unlock()
	if f != nil {
		last, _ := b.last(context.Background(), pk.subject)
		f(last)
	}
	return true
}
