package ssejs

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rocketqueue/sse"
)

// A qkey is a Queue key that this process reads: its lease, and the hub
// its connection and in-process readers take events from, in turn.
type qkey[K comparable] struct {
	b              *Broker[K]    // immutable
	token, subject string        // immutable
	sem            chan struct{} // one slot: held while setting up, and while taking events (see lock)
	lost           chan struct{} // closed when another process took the lease
	lostOnce       sync.Once

	lmu      sync.Mutex
	lease    lease  // guarded by lmu
	rev      uint64 // guarded by lmu: the entry's revision that lease was written at
	owned    bool   // guarded by lmu
	released bool   // guarded by lmu: the last reader left; no more renewals
	// unknown is guarded by lmu: the nonces of this qkey's writes whose
	// outcome is not known, since its last confirmed one, at most
	// maxUnknown. Each was taken as failed: if the entry holds one of them
	// with Pend, a take's, none of its events were handed out (see
	// acquire).
	unknown []string
	// owed is guarded by lmu: events whose floor is written that may not
	// have been handed out (see lease.Pend): a take of the previous owner,
	// or what a reader here stopped before it took. The next take names
	// them first, and while they are owed, every lease write keeps them in
	// Pend for the next owner.
	owed sse.Gap
	// held is guarded by lmu: per in-process reader of this process, the
	// events of its last take that it may not have yielded yet (set by the
	// take's own lease write, until the reader's next Next, its forfeit or
	// its Close). Every later lease write adds those of the lease's life
	// to OwedFrom and OwedTo: a forfeit may never reach the bucket. A
	// connection does not finish (close, 204) while some are held.
	held map[*queueSub[K]]sse.Gap
	// unheld is guarded by lmu: closed, and replaced, when a reader's held
	// events are released (yielded or forfeit).
	unheld chan struct{}

	// polls holds the wakes of the key's subscriptions that polled and
	// found nothing ready (see queueSub.Poll).
	polls wakeSet

	// Guarded by sem.
	hub     *hub[K]  // the key's messages, from the process's feed
	rseq    uint64   // the stream sequence of the next message to read into batches
	batches []*batch // messages read that still have events to take
	off     uint64   // the ID of the next event to take (Floor+1)
	ended   bool     // the key's Close was taken
	stale   bool     // the hub reached another life's messages: the next attach starts afresh
	spans   []span   // messages wholly taken, not yet purged
	purging atomic.Bool

	// Guarded by Broker.mu.
	refs    int           // subscriptions using it, and those setting up
	conn    *queueSub[K]  // the attached SSE connection, if any
	wanting int           // attaches and unrefs waiting for sem
	want    chan struct{} // closed while wanting > 0: a take waiting idle gives sem up
}

// lock takes qk's sem for an attach or an unref. A take holds sem while it
// waits for the key's next message, which may be long; so lock tells it to
// give sem up (see wanted) rather than wait behind it.
//
// It wakes the key's polling readers once it holds sem (an attach, an
// unref or a forfeit may make something ready for them): their Poll then
// waits for sem until the holder is done. A wake never needs sem.
func (qk *qkey[K]) lock(ctx context.Context) error {
	defer qk.polls.fire()
	return qk.enter(ctx)
}

// enter is lock without waking the polling readers: a Poll takes sem so.
func (qk *qkey[K]) enter(ctx context.Context) error {
	select {
	case qk.sem <- struct{}{}:
		return nil
	default:
	}
	b := qk.b
	b.mu.Lock()
	if qk.wanting++; qk.wanting == 1 {
		close(qk.want)
	}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		if qk.wanting--; qk.wanting == 0 {
			qk.want = make(chan struct{})
		}
		b.mu.Unlock()
	}()
	select {
	case qk.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wanted returns the channel that is closed while an attach or an unref
// waits for sem.
func (qk *qkey[K]) wanted() <-chan struct{} {
	qk.b.mu.Lock()
	defer qk.b.mu.Unlock()
	return qk.want
}

// A span is a message wholly taken: its sequence and last event ID (a
// value, in qkey.spans under sem).
type span struct{ seq, last uint64 }

func (qk *qkey[K]) isLost() bool {
	select {
	case <-qk.lost:
		return true
	default:
		return false
	}
}

func (qk *qkey[K]) markLost() {
	qk.lostOnce.Do(func() {
		close(qk.lost)
		// Polling readers are woken outside the lease's lock, which the
		// caller may hold.
		qk.b.calls.Add(1)
		go func() {
			defer qk.b.calls.Done()
			qk.polls.fire()
		}()
	})
}

// qkeyFor returns this process's qkey for token, holding a reference.
func (b *Broker[K]) qkeyFor(token, subject string) *qkey[K] {
	b.mu.Lock()
	defer b.mu.Unlock()
	qk := b.qkeys[token]
	if qk == nil || qk.isLost() {
		qk = &qkey[K]{b: b, token: token, subject: subject, sem: make(chan struct{}, 1), lost: make(chan struct{}), want: make(chan struct{})}
		b.qkeys[token] = qk
	}
	qk.refs++
	return qk
}

// unref drops a reference to qk: the last one closes its hub and releases
// its lease.
func (b *Broker[K]) unref(qk *qkey[K]) {
	b.mu.Lock()
	qk.refs--
	if qk.refs > 0 {
		b.mu.Unlock()
		return
	}
	if b.qkeys[qk.token] == qk {
		delete(b.qkeys, qk.token)
	}
	// A qkey of the key made from now on must know of writes whose outcome
	// is unknown at once (see keepUnsure), not after the release below.
	qk.lmu.Lock()
	if len(qk.unknown) > 0 {
		b.unsure[qk.token] = slices.Clone(qk.unknown)
	}
	qk.lmu.Unlock()
	b.mu.Unlock()
	qk.lock(context.Background())
	defer func() { <-qk.sem }()
	if qk.hub != nil {
		qk.hub.close()
		qk.hub = nil
	}
	defer b.keepUnsure(qk)
	if !b.nc.IsConnected() {
		return // the lease expires by itself
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	qk.purge(ctx, false, 1)
	qk.lmu.Lock()
	owned := qk.owned && !qk.isLost()
	qk.released = true
	qk.lmu.Unlock()
	if owned {
		qk.write(ctx, true, func(l *lease) { l.Owner, l.Until = "", 0 })
	}
}
