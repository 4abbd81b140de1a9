package sse

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// A CursorStore keeps the cursors of multi-key streams. [MultiHandler]
// uses it when its source is one ([*Broker] is; so is ssejs's broker, in a
// KV bucket every replica shares): then a multi-key stream's IDs name a
// stored [Cursor] plus the few keys that moved since it was stored, instead
// of every key's position, so that a request may follow many keys (up to
// [MaxKeysPerRequest]) with IDs of a bounded size, and a page may change the
// set of keys it follows and keep its place in the keys it had (see
// docs/protocol.md, "Cursors").
//
// A stream stores a cursor when it starts with a set of keys no stored
// cursor has, and again each time more than [CursorDelta] keys moved since
// the last: one write per many events, never one per event. A store may
// forget a cursor (an expiry, an eviction): a client that resumes from it
// then gets, for each key, an "sse.gap" from the key's first event to its
// newest, and the events after it; never events again without a gap, nor a
// key that looks finished without its "sse.close".
type CursorStore[K comparable] interface {
	// SaveCursor stores c and returns its name: 1 to 40 ASCII letters and
	// digits, unique among the cursors the store holds. The store must not
	// change c.Keys, which the caller may pass again to later calls.
	SaveCursor(ctx context.Context, c Cursor[K]) (name string, err error)
	// LoadCursor returns the cursor stored under name, or an error wrapping
	// [ErrUnknownCursor] if the store does not hold it (it never did, or it
	// expired or was evicted). Any other error is a failure of the store.
	LoadCursor(ctx context.Context, name string) (Cursor[K], error)
	// Newest returns the epoch of key's current life and the ID of its
	// newest event (0 if it has none; "" and 0 if the key has no life):
	// where a client whose cursor was forgotten restarts the key, after a
	// gap up to it. It must never be below an event a reader was sent.
	Newest(ctx context.Context, key K) (epoch string, id uint64, err error)
}

// A Cursor is where a multi-key stream's client is in each of its keys.
type Cursor[K comparable] struct {
	// Keys are the request's keys, in its order.
	Keys []K
	// Positions holds one entry per key, in Keys' order, comma separated,
	// as a multi-key ID's vector (docs/protocol.md): empty (nothing of the
	// key yet), "<epoch>-<seq>", or "." (the key's sse.close was sent).
	Positions string
}

// The bounds of the in-process [Broker]'s cursors: it holds at most
// BrokerCursors cursors and BrokerCursorBytes bytes of them (each key
// counted as 32 bytes, plus its position's text), and forgets a cursor
// BrokerCursorAge after it was stored, or earlier, oldest first, when a new
// one needs the room.
const (
	BrokerCursors     = 1 << 16
	BrokerCursorBytes = 64 << 20
	BrokerCursorAge   = 24 * time.Hour
)

// cursorKeyBytes is what a cursor's key counts for against
// BrokerCursorBytes, beyond its position.
const cursorKeyBytes = 32

// cursors is the in-process Broker's CursorStore: cursors in memory,
// evicted oldest first.
type cursors[K comparable] struct {
	mu    sync.Mutex
	byKey map[string]*storedCursor[K] // guarded by mu: the cursors held, by name
	order []*storedCursor[K]          // guarded by mu: the cursors held, oldest first; order[head:] are live
	head  int                         // guarded by mu
	bytes int                         // guarded by mu: what the cursors held count, against BrokerCursorBytes
}

type storedCursor[K comparable] struct {
	name  string
	c     Cursor[K]
	at    time.Time // when it was stored
	bytes int
}

// SaveCursor stores c in memory, under a random name of 16 characters.
// See [BrokerCursors] for how long the broker keeps it.
func (b *Broker[K]) SaveCursor(_ context.Context, c Cursor[K]) (string, error) {
	return b.cursors.save(c, time.Now()), nil
}

// LoadCursor returns the cursor stored under name, or [ErrUnknownCursor].
func (b *Broker[K]) LoadCursor(_ context.Context, name string) (Cursor[K], error) {
	return b.cursors.load(name, time.Now())
}

// Newest returns the epoch of key's current life and the ID of its newest
// event. It creates no key: one the broker did not create has no life.
func (b *Broker[K]) Newest(ctx context.Context, key K) (string, uint64, error) {
	sub, err := b.subscribe(ctx, key, SubscribeRequest{Known: true}, startHeld, true)
	switch {
	case errors.Is(err, ErrFinished), errors.Is(err, ErrUnknownKey): // closed with nothing held, or no life
		return "", 0, nil
	case err != nil:
		return "", 0, err
	}
	defer sub.Close()
	if h := sub.t.history; h != nil {
		return sub.Epoch(), h.next.Load() - 1, nil
	}
	return sub.Epoch(), 0, nil // Queue mode: MultiHandler does not serve it
}

func (s *cursors[K]) save(c Cursor[K], now time.Time) string {
	sc := &storedCursor[K]{c: c, at: now, bytes: len(c.Keys)*cursorKeyBytes + len(c.Positions)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byKey == nil {
		s.byKey = make(map[string]*storedCursor[K])
	}
	for sc.name == "" || s.byKey[sc.name] != nil {
		sc.name = cursorName()
	}
	s.expire(now, 1, sc.bytes)
	s.byKey[sc.name] = sc
	s.order = append(s.order, sc)
	s.bytes += sc.bytes
	return sc.name
}

// expire forgets the cursors older than BrokerCursorAge, then the oldest
// ones until n more cursors of size more bytes fit.
func (s *cursors[K]) expire(now time.Time, n, more int) {
	for s.head < len(s.order) {
		old := s.order[s.head]
		live := len(s.order) - s.head
		if now.Sub(old.at) < BrokerCursorAge && live+n <= BrokerCursors && s.bytes+more <= BrokerCursorBytes {
			break
		}
		delete(s.byKey, old.name)
		s.bytes -= old.bytes
		s.order[s.head] = nil
		s.head++
	}
	if s.head > len(s.order)/2 { // compact: the slice stays within twice what it holds
		s.order = append(s.order[:0], s.order[s.head:]...)
		clear(s.order[len(s.order):cap(s.order)])
		s.head = 0
	}
}

func (s *cursors[K]) load(name string, now time.Time) (Cursor[K], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.byKey[name]
	if sc == nil || now.Sub(sc.at) >= BrokerCursorAge {
		return Cursor[K]{}, ErrUnknownCursor
	}
	return sc.c, nil
}

// cursorName returns a random name of 16 base-36 digits (82 bits).
func cursorName() string {
	b := make([]byte, 0, 16)
	for range 16 {
		b = strconv.AppendUint(b, rand.Uint64N(36), 36)
	}
	return string(b)
}

// The Broker stores cursors.
var _ CursorStore[int] = (*Broker[int])(nil)
