package ssejs

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rocketqueue/sse"
)

// A lease is a Queue key's entry in the bucket: who owns the key, until
// when, and how far its events were handed out. Every write is a compare
// and set on the entry's revision, so a process that lost the lease cannot
// write it, and so cannot hand out another event. A value: qkey.lease is
// guarded by qkey.lmu.
type lease struct {
	Owner    string `json:"o,omitempty"` // the owning broker's ID; "" when free
	Until    int64  `json:"u,omitempty"` // Unix milliseconds: owned until then unless renewed
	Epoch    string `json:"e,omitempty"` // the key's life that Floor counts in
	Floor    uint64 `json:"f,omitempty"` // the last event ID handed out to a reader or connection
	FloorSeq uint64 `json:"s,omitempty"` // the stream sequence of the message that holds Floor
	Local    uint64 `json:"l,omitempty"` // the last event ID an in-process reader took
	// Pend is how many events below Floor the owner's last take covers
	// while the owner has written nothing since: it may not have handed
	// them out (the write's ack lost, the owner gone before it could
	// repair the floor). A later write of the owner, made only after the
	// take succeeded, sets it to 0. The next owner names them in a gap to
	// its first reader that does not resume over them (see qkey.owed).
	Pend      uint64 `json:"p,omitempty"`
	PrevSeq   uint64 `json:"q,omitempty"`  // with Pend: FloorSeq before that take, so that its own process can undo it
	PrevLocal uint64 `json:"pl,omitempty"` // with Pend: Local before that take
	// OwedFrom and OwedTo are the owner's owed events (see qkey.owed),
	// and the events its in-process readers took and may not have yielded
	// yet (see qkey.held): every write of the owner records them, so that
	// the next owner names them in a gap if the owner goes first, even
	// when the owner could not write again (its connection gone, its
	// server restarted) after a reader stopped mid-take.
	OwedFrom uint64 `json:"of,omitempty"`
	OwedTo   uint64 `json:"ot,omitempty"`
	Nonce    string `json:"n,omitempty"` // random per write: tells a write whose ack was lost
}

// errLost is what a lease write returns when another process owns the key.
var errLost = errors.New("ssejs: the key's lease was taken over")

// A qkey is a Queue key that this process reads: its lease, and the feed
// its connection and in-process readers take events from, in turn.
type qkey[K comparable] struct {
	b              *Broker[K]    // immutable
	token, subject string        // immutable
	sem            chan struct{} // one slot: held while setting up, and while taking events (see lock)
	lost           chan struct{} // closed when another process took the lease
	lostOnce       sync.Once

	lmu        sync.Mutex
	lease      lease  // guarded by lmu
	rev        uint64 // guarded by lmu: the entry's revision that lease was written at
	owned      bool   // guarded by lmu
	released   bool   // guarded by lmu: the last reader left; no more renewals
	unsure     string // guarded by lmu: the nonce of a write that failed and may have been stored
	unsureTake bool   // guarded by lmu: that write was a take's, whose events were not handed out
	// unknown is guarded by lmu: the nonces of this qkey's writes whose
	// outcome is not known, since its last confirmed one (unsure is the
	// last of them), at most maxUnknown.
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

	// Guarded by sem.
	feed    *feed
	batches []*batch // messages read from feed that still have events to take
	off     uint64   // the ID of the next event to take (Floor+1)
	ended   bool     // the key's Close was taken
	stale   bool     // the feed reached another life's messages: the next attach starts afresh
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
func (qk *qkey[K]) lock(ctx context.Context) error {
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

func (qk *qkey[K]) markLost() { qk.lostOnce.Do(func() { close(qk.lost) }) }

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

// unref drops a reference to qk: the last one stops its feed and releases
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
	// A qkey of the key made from now on must know of an unsure take at
	// once (see keepUnsure), not after the release below.
	qk.lmu.Lock()
	if qk.unsure != "" && qk.unsureTake {
		b.unsure[qk.token] = qk.unsure
	}
	qk.lmu.Unlock()
	b.mu.Unlock()
	qk.lock(context.Background())
	defer func() { <-qk.sem }()
	b.closeFeed(qk.feed)
	qk.feed = nil
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

// forfeit records that the events from to to, which a reader of this
// process took, were never handed to its caller: the next take of the key
// here names them in a gap first, and if this process lets the key go
// before that, its release write leaves them to the next owner as the
// lease's Pend.
func (qk *qkey[K]) forfeit(s *queueSub[K], from, to uint64) {
	qk.lmu.Lock()
	qk.owe(from, to)
	qk.unhold(s)
	qk.lmu.Unlock()
	if qk.lock(context.Background()) != nil {
		return
	}
	defer func() { <-qk.sem }()
	// Recorded in the lease at once, so that the next owner learns of them
	// if this process goes before its next write.
	ctx, cancel := context.WithTimeout(context.Background(), qk.b.attemptTimeout())
	defer cancel()
	qk.write(ctx, false, nil)
}

// owe adds the events from to to to what qk owes. The caller holds lmu.
func (qk *qkey[K]) owe(from, to uint64) {
	qk.owed = union(qk.owed, sse.Gap{From: from, To: to})
}

// union returns the smallest range of IDs that holds a and b; the zero
// Gap is empty.
func union(a, b sse.Gap) sse.Gap {
	switch {
	case a == (sse.Gap{}):
		return b
	case b == (sse.Gap{}):
		return a
	}
	return sse.Gap{From: min(a.From, b.From), To: max(a.To, b.To)}
}

// hold records, for the in-process reader s, the events from to to of
// its last take, which it has not yielded yet. The caller holds lmu, so
// that no lease write comes between the take's and the record.
func (qk *qkey[K]) hold(s *queueSub[K], from, to uint64) {
	if qk.held == nil {
		qk.held = make(map[*queueSub[K]]sse.Gap)
	}
	qk.held[s] = sse.Gap{From: from, To: to}
}

// unhold records that the in-process reader s yielded, or forfeit, what
// it held. The caller holds lmu.
func (qk *qkey[K]) unhold(s *queueSub[K]) {
	if _, ok := qk.held[s]; !ok {
		return
	}
	delete(qk.held, s)
	if qk.unheld != nil {
		close(qk.unheld)
		qk.unheld = nil
	}
}

// heldElse returns, if a reader other than s holds events of the life
// epoch, a channel closed when some reader's held events are released;
// nil if none does. The caller holds lmu.
func (qk *qkey[K]) heldElse(s *queueSub[K], epoch string) <-chan struct{} {
	for r := range qk.held {
		if r != s && r.epoch == epoch {
			if qk.unheld == nil {
				qk.unheld = make(chan struct{})
			}
			return qk.unheld
		}
	}
	return nil
}

// maxUnknown bounds qkey.unknown: writes in a row whose outcome is not
// known, each after its attempt's time, beyond which the qkey is taken as
// lost.
const maxUnknown = 16

// maxUnsure bounds Broker.unsure.
const maxUnsure = 4096

// keepUnsure remembers, as qk goes, the nonce of its floor write that may
// have been stored without its events handed out, if no write repaired
// it, for the next qkey of the key in this process.
func (b *Broker[K]) keepUnsure(qk *qkey[K]) {
	qk.lmu.Lock()
	nonce, take := qk.unsure, qk.unsureTake
	qk.lmu.Unlock()
	if nonce == "" || !take {
		b.mu.Lock()
		if b.qkeys[qk.token] == nil {
			delete(b.unsure, qk.token) // repaired by the release
		}
		b.mu.Unlock()
		return
	}
	b.mu.Lock()
	for t := range b.unsure {
		if len(b.unsure) < maxUnsure {
			break
		}
		delete(b.unsure, t)
	}
	b.unsure[qk.token] = nonce
	b.mu.Unlock()
}

// write writes qk's lease, changed by change, if the entry is still at the
// revision qk last wrote; it fails with errLost, and marks qk lost, if
// another process wrote it since. release is set for the write that
// releases the lease; other writes do nothing once it is done.
func (qk *qkey[K]) write(ctx context.Context, release bool, change func(*lease)) error {
	qk.lmu.Lock()
	defer qk.lmu.Unlock()
	if qk.released && !release {
		return errLost
	}
	for attempt := 0; ; attempt++ {
		nl := qk.lease
		nl.Owner = qk.b.id
		nl.Until = time.Now().Add(qk.b.cfg.lease).UnixMilli()
		nl.Nonce = nuid.Next()
		// This process lived past its last take, and handed it out (a
		// take's change sets Pend anew); what it owes goes with every
		// write.
		nl.Pend = 0
		owes := qk.owed
		for r, g := range qk.held {
			if r.epoch == nl.Epoch { // not a life that ended
				owes = union(owes, g)
			}
		}
		nl.OwedFrom, nl.OwedTo = owes.From, owes.To
		if change != nil {
			change(&nl)
		}
		data, _ := json.Marshal(nl)
		rev, err := qk.b.kv.Update(ctx, qk.token, data, qk.rev)
		if err == nil && qk.b.dropLeaseAcks.Load() > 0 && qk.b.dropLeaseAcks.Add(-1) >= 0 {
			err = context.DeadlineExceeded // in tests: stored, its ack lost
		}
		if err == nil {
			qk.lease, qk.rev, qk.unsure, qk.unknown = nl, rev, "", qk.unknown[:0]
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !wrongLastSeq(err) {
			// It may have been written, its ack lost; a take's advanced
			// the floor over events it did not hand out.
			qk.unsure, qk.unsureTake = nl.Nonce, nl.Floor > qk.lease.Floor
			if len(qk.unknown) == maxUnknown {
				qk.unknown = qk.unknown[1:]
			}
			qk.unknown = append(qk.unknown, nl.Nonce)
			return err
		}
		// Someone wrote since: another process, or an earlier write of
		// this one whose ack was lost.
		e, gerr := qk.b.kv.Get(ctx, qk.token)
		if gerr != nil && !errors.Is(gerr, jetstream.ErrKeyNotFound) {
			return gerr
		}
		if gerr == nil && attempt == 0 {
			var cur lease
			// Ours if it carries this write's nonce or one of this qkey's
			// writes whose outcome was not known: the last one may have
			// been refused, and an earlier one stored.
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Nonce != "" && (cur.Nonce == nl.Nonce || slices.Contains(qk.unknown, cur.Nonce)) {
				// Ours: take it as written, and write again over it.
				if cur.Nonce == nl.Nonce {
					qk.lease, qk.rev, qk.unsure, qk.unknown = cur, e.Revision(), "", qk.unknown[:0]
					return nil
				}
				// The write that failed was stored, but its caller took
				// it as failed (a take then handed out none of the events
				// its floor covers): write over it from the lease last
				// confirmed.
				c := qk.lease
				cur.Epoch, cur.Floor, cur.FloorSeq, cur.Local, cur.Pend = c.Epoch, c.Floor, c.FloorSeq, c.Local, c.Pend
				qk.lease, qk.rev, qk.unsure, qk.unknown = cur, e.Revision(), "", qk.unknown[:0]
				continue
			}
		}
		qk.markLost()
		return errLost
	}
}

// acquire takes key's lease for this process: at once if it is free,
// expired or this process's; from another process only with takeover.
// last is the subject's last message: a lease of another life starts
// afresh.
func (qk *qkey[K]) acquire(ctx context.Context, takeover bool, last *batch) error {
	b := qk.b
	for range 16 {
		e, err := b.kv.Get(ctx, qk.token)
		var cur lease
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return err
		default:
			if json.Unmarshal(e.Value(), &cur) != nil {
				cur = lease{}
			}
			rev = e.Revision()
		}
		now := time.Now()
		if cur.Owner != "" && cur.Owner != b.id && cur.Until > now.UnixMilli() && !takeover {
			return sse.ErrBusy
		}
		nl := cur
		if nl.Epoch != last.epoch {
			nl = lease{Epoch: last.epoch}
		}
		b.mu.Lock()
		unsure := b.unsure[qk.token]
		b.mu.Unlock()
		qk.lmu.Lock()
		if qk.unsure != "" {
			unsure = ""
			if qk.unsureTake {
				unsure = qk.unsure
			}
		}
		qk.lmu.Unlock()
		undo := nl.Pend > 0 && nl.Pend <= nl.Floor && cur.Owner == b.id && cur.Nonce == unsure
		if undo {
			// This process's last take failed before it handed anything
			// out (its floor write's ack was lost): undo it, so that
			// those events are read, rather than named in a gap.
			nl.Floor, nl.FloorSeq, nl.Local = nl.Floor-nl.Pend, nl.PrevSeq, nl.PrevLocal
			nl.Pend, nl.PrevSeq, nl.PrevLocal = 0, 0, 0
		}
		// Otherwise nl keeps Pend: if this process dies before its first
		// take, the next owner owes the same gap.
		nl.Owner, nl.Until, nl.Nonce = b.id, now.Add(b.cfg.lease).UnixMilli(), nuid.Next()
		data, _ := json.Marshal(nl)
		if rev == 0 {
			rev, err = b.kv.Create(ctx, qk.token, data)
		} else {
			rev, err = b.kv.Update(ctx, qk.token, data, rev)
		}
		switch {
		case err == nil:
			qk.lmu.Lock()
			qk.lease, qk.rev, qk.owned = nl, rev, true
			qk.lmu.Unlock()
			b.mu.Lock()
			delete(b.unsure, qk.token)
			b.mu.Unlock()
			qk.lmu.Lock()
			qk.unsure, qk.unknown = "", qk.unknown[:0] // writes of another revision
			qk.lmu.Unlock()
			// The previous owner's last take may not have been handed
			// out: another process's can't be known (this process's was
			// undone above, if its write was unsure).
			qk.lmu.Lock()
			if p := min(nl.Pend, nl.Floor); p > 0 && cur.Owner != b.id {
				qk.owe(nl.Floor-p+1, nl.Floor)
			}
			if nl.OwedFrom > 0 && nl.OwedFrom <= nl.OwedTo && nl.OwedTo <= nl.Floor {
				qk.owe(nl.OwedFrom, nl.OwedTo) // recorded by the previous owner, or by this process before
			}
			qk.lmu.Unlock()
			return nil
		case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch), wrongLastSeq(err):
			continue // written meanwhile: look again
		default:
			return err
		}
	}
	return sse.ErrBusy
}

// queueSub is a subscription in Queue mode: first the replay of what
// earlier connections took and the client did not confirm, read by direct
// gets, then the key's events, taken in turn with the process's other
// readers of the key.
type queueSub[K comparable] struct {
	qk       *qkey[K]             // immutable
	req      sse.SubscribeRequest // immutable
	local    bool                 // immutable: an in-process reader, not a connection
	epoch    string               // immutable
	down     <-chan struct{}      // immutable: closed when NATS becomes unreachable
	done     chan struct{}        // closed when a newer connection of this process took the key over
	doneOnce sync.Once

	// Owned by the goroutine that calls Next and Close.
	started bool
	gap     sse.Gap // the gap before the replay
	rpos    uint64  // the next event ID to replay
	rend    uint64  // the last event ID to replay
	rseq    uint64  // the stream sequence to read the replay from
	// A connection's position: the last event ID it was sent or told of
	// by a gap, once it has one (known). The events others took since
	// (in-process readers of this process) are named by a gap before its
	// next events, or before the end. In-process readers have none.
	pos    uint64
	known  bool
	closed sync.Once
}

func (b *Broker[K]) subscribeQueue(ctx context.Context, key K, token, subject string, req sse.SubscribeRequest, local bool) (subscription, error) {
	qk := b.qkeyFor(token, subject)
	s, err := qk.attach(ctx, key, req, local)
	if err != nil {
		b.unref(qk)
		return nil, err
	}
	return s, nil
}

func (qk *qkey[K]) attach(ctx context.Context, key K, req sse.SubscribeRequest, local bool) (*queueSub[K], error) {
	b := qk.b
	if err := qk.lock(ctx); err != nil {
		return nil, err
	}
	defer func() { <-qk.sem }()
	if qk.isLost() {
		return nil, sse.ErrBusy
	}
	last, err := b.life(ctx, key, qk.subject, req.Known)
	if err == nil {
		last, err = b.settled(ctx, qk.subject, req, last, local)
	}
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	old := qk.conn
	b.mu.Unlock()
	if !local && old != nil && !req.Takeover {
		return nil, sse.ErrBusy
	}
	qk.lmu.Lock()
	owned, l := qk.owned, qk.lease
	qk.lmu.Unlock()
	switch {
	case !owned:
		if err := qk.acquire(ctx, req.Takeover || local, last); err != nil {
			return nil, err
		}
	case l.Epoch != last.epoch || qk.stale:
		// The key's life ended and another began since this process took it.
		err := qk.write(ctx, false, func(l *lease) { *l = lease{Owner: l.Owner, Until: l.Until, Nonce: l.Nonce, Epoch: last.epoch} })
		if err != nil {
			return nil, err
		}
		b.closeFeed(qk.feed)
		qk.feed, qk.batches, qk.spans, qk.ended, qk.stale = nil, nil, nil, false, false
		qk.lmu.Lock()
		qk.owed = sse.Gap{} // of the life that ended
		qk.lmu.Unlock()
	}
	qk.lmu.Lock()
	l = qk.lease
	qk.lmu.Unlock()
	if qk.feed == nil {
		if qk.feed, err = b.startFeed(ctx, qk.subject, l.FloorSeq); err != nil {
			return nil, err
		}
		qk.off, qk.batches = l.Floor+1, nil
	}
	s := &queueSub[K]{qk: qk, req: req, local: local, epoch: l.Epoch, down: b.downChan(), done: make(chan struct{})}
	s.rpos, s.rend = 1, 0
	if id, ok := resumeAt(req, last, local); ok && id < l.Floor {
		from := max(id, l.Local) + 1
		if w := b.cfg.replay; l.Floor >= w {
			from = max(from, l.Floor-w+1)
		}
		if from > id+1 {
			s.gap = sse.Gap{From: id + 1, To: from - 1}
		}
		if from <= l.Floor {
			s.rpos, s.rend = from, l.Floor
			if s.rseq, err = b.locate(ctx, qk.subject, last, from); err != nil {
				return nil, err
			}
		}
	}
	if id, ok := resumeAt(req, last, local); ok {
		qk.lmu.Lock()
		if qk.owed != (sse.Gap{}) && id < qk.owed.From {
			qk.owed = sse.Gap{} // the replay, or its gap, covers them
		}
		qk.lmu.Unlock()
		if !local {
			s.pos, s.known = max(id, l.Floor), true
		}
	}
	qk.lmu.Lock()
	owes := qk.owed != (sse.Gap{}) || qk.heldElse(nil, l.Epoch) != nil
	qk.lmu.Unlock()
	if last.closed && l.Floor+1 == last.next() && s.rpos > s.rend && s.gap == (sse.Gap{}) && !owes {
		return nil, sse.ErrFinished
	}
	if !local {
		b.mu.Lock()
		qk.conn = s
		b.mu.Unlock()
		if old != nil {
			old.replace()
			if old.req.Abort != nil {
				old.req.Abort()
			}
		}
	}
	return s, nil
}

func (s *queueSub[K]) replace() { s.doneOnce.Do(func() { close(s.done) }) }

func (s *queueSub[K]) Epoch() string { return s.epoch }

func (s *queueSub[K]) Next(ctx context.Context, buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	buf = buf[:0]
	select {
	case <-s.qk.b.quit: // the replay too stops
		return buf, sse.Gap{}, sse.ErrShutdown
	default:
	}
	if s.local {
		s.qk.lmu.Lock()
		s.qk.unhold(s) // it yielded what it took before
		s.qk.lmu.Unlock()
	}
	var gap sse.Gap
	if !s.started {
		s.started = true
		gap = s.gap
	}
	if s.rpos <= s.rend {
		return s.replay(ctx, buf, gap, limit)
	}
	if gap != (sse.Gap{}) {
		return buf, gap, nil
	}
	return s.qk.take(ctx, s, buf, tick, limit)
}

// replay reads the next events to send again out of the stream.
func (s *queueSub[K]) replay(ctx context.Context, buf []sse.Event, gap sse.Gap, limit int) ([]sse.Event, sse.Gap, error) {
	b := s.qk.b
	size := 0
	for s.rpos <= s.rend {
		bctx, cancel := b.bounded(ctx, s.down)
		bt, err := b.nextFrom(bctx, s.qk.subject, s.rseq)
		if err == nil && (bt == nil || bt.epoch != s.epoch) {
			// The floor says events up to rend are stored: a direct get
			// that finds none may have been answered by a lagging
			// replica. Ask the leader.
			bt, err = b.nextFromAtLeader(bctx, s.qk.subject, s.rseq)
		}
		cancel()
		if err != nil {
			return buf, gap, unavailable{err}
		}
		if bt == nil || bt.epoch != s.epoch {
			// Gone (expired, or the life ended): named, not skipped.
			if len(buf) > 0 || gap != (sse.Gap{}) {
				return buf, gap, nil
			}
			gap = sse.Gap{From: s.rpos, To: s.rend}
			s.rpos = s.rend + 1
			break
		}
		if bt.first > s.rpos {
			if len(buf) > 0 || gap != (sse.Gap{}) {
				return buf, gap, nil
			}
			gap = sse.Gap{From: s.rpos, To: min(bt.first-1, s.rend)}
			s.rpos = bt.first
			continue
		}
		evs, err := bt.events(nil, s.rpos)
		if err != nil {
			return buf, gap, err
		}
		for _, ev := range evs {
			if ev.ID > s.rend {
				break
			}
			if len(buf) > 0 && size+ev.Size() > limit {
				return buf, gap, nil
			}
			buf = append(buf, ev)
			size += ev.Size()
			s.rpos = ev.ID + 1
		}
		if s.rpos >= bt.next() {
			s.rseq = bt.seq + 1
		}
	}
	return buf, gap, nil
}

// take hands s the next events of the key: it waits for them, advances
// the key's floor past them in the bucket, and only then returns them.
func (qk *qkey[K]) take(ctx context.Context, s *queueSub[K], buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	b := qk.b
	for {
		select {
		case qk.sem <- struct{}{}:
		case <-tick:
			return nil, sse.Gap{}, nil
		case <-ctx.Done():
			return nil, sse.Gap{}, ctx.Err()
		case <-s.done:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-qk.lost:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-s.down:
			return nil, sse.Gap{}, ErrUnavailable
		case <-b.quit:
			return nil, sse.Gap{}, sse.ErrShutdown
		}
		evs, gap, err := qk.takeHeld(ctx, s, buf, tick, limit)
		<-qk.sem
		if err != errYield {
			return evs, gap, err
		}
		// An attach or an unref waits for sem, and is next in line for it
		// (sends on a channel are served in order).
		runtime.Gosched()
	}
}

// errYield is what takeHeld returns when it stopped waiting for events
// because an attach or an unref waits for sem.
var errYield = errors.New("ssejs: sem wanted")

// takeHeld is take with sem held; it returns errYield, and nothing else,
// when an attach or an unref wants sem while it waits.
func (qk *qkey[K]) takeHeld(ctx context.Context, s *queueSub[K], buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	b := qk.b
	for {
		select {
		case <-s.done:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-qk.lost:
			return nil, sse.Gap{}, sse.ErrReplaced
		default:
		}
		qk.lmu.Lock()
		epoch := qk.lease.Epoch
		qk.lmu.Unlock()
		if epoch != s.epoch || qk.stale {
			return nil, sse.Gap{}, sse.ErrTruncated
		}
		qk.lmu.Lock()
		g := qk.owed
		if g != (sse.Gap{}) && s.known && s.pos >= g.From {
			g = sse.Gap{} // this reader is past them: it keeps them for another
		}
		if g != (sse.Gap{}) {
			qk.owed = sse.Gap{}
		}
		qk.lmu.Unlock()
		if g != (sse.Gap{}) {
			// What the previous owner may not have handed out, or a
			// reader here stopped before it took; a connection is told
			// too of what others took before it.
			if !s.local && s.known && s.pos < g.From {
				g.From = s.pos + 1
			}
			s.saw(g.To)
			return nil, g, nil
		}
		// Wait for the key's next message; at the key's end, a connection
		// waits instead for the readers here that hold events to yield or
		// forfeit them (a forfeit is named to it), then ends.
		var msgs <-chan *batch
		var errs <-chan error
		var unheld <-chan struct{}
		switch {
		case qk.ended:
			if !s.local {
				qk.lmu.Lock()
				unheld = qk.heldElse(s, s.epoch)
				qk.lmu.Unlock()
			}
			if unheld == nil {
				// Before the end, a connection is told of the key's
				// last events that others took.
				var gap sse.Gap
				if !s.local && s.known && s.pos+1 < qk.off {
					gap = sse.Gap{From: s.pos + 1, To: qk.off - 1}
					s.saw(gap.To)
				}
				return nil, gap, io.EOF
			}
		case len(qk.batches) == 0:
			msgs, errs = qk.feed.msgs, qk.feed.errs
		}
		if msgs == nil && unheld == nil {
			break // messages to take
		}
		select {
		case <-unheld:
		case bt := <-msgs:
			qk.add(bt)
		case <-qk.wanted():
			return nil, sse.Gap{}, errYield
		case <-tick:
			return nil, sse.Gap{}, nil
		case <-ctx.Done():
			return nil, sse.Gap{}, ctx.Err()
		case <-s.done:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-qk.lost:
			return nil, sse.Gap{}, sse.ErrReplaced
		case <-s.down:
			return nil, sse.Gap{}, ErrUnavailable
		case err := <-errs:
			return nil, sse.Gap{}, unavailable{err}
		case <-b.quit:
			return nil, sse.Gap{}, sse.ErrShutdown
		}
	}
	for more := true; more; { // what else is ready
		select {
		case bt := <-qk.feed.msgs:
			qk.add(bt)
		default:
			more = false
		}
	}
	// A connection takes no more than the replay window at once, so that a
	// write that fails loses nothing the window does not hold.
	maxEvents := uint64(1<<63 - 1)
	if !s.local && b.cfg.replay > 0 {
		maxEvents = b.cfg.replay
	}
	var gap sse.Gap
	if !s.local && s.known && s.pos+1 < qk.off {
		gap = sse.Gap{From: s.pos + 1, To: qk.off - 1} // taken by others since this connection's last
	}
	off, size, used, ended := qk.off, 0, 0, false
	var floorSeq uint64
	for i, bt := range qk.batches {
		if bt.epoch != s.epoch {
			// The key's life ended (its messages expired) and another
			// began: this one's readers are cut short, and the next
			// attach starts the new life afresh.
			if len(buf) > 0 || gap != (sse.Gap{}) {
				break
			}
			qk.stale = true
			return nil, sse.Gap{}, sse.ErrTruncated
		}
		if bt.first > off && (bt.count > 0 || bt.closed) {
			if len(buf) > 0 {
				break
			}
			if gap == (sse.Gap{}) {
				gap.From = off
			}
			gap.To = bt.first - 1 // expired before anyone took them
			off, floorSeq = bt.first, bt.seq
		}
		evs, err := bt.events(nil, off)
		if err != nil {
			return nil, sse.Gap{}, err
		}
		full := false
		for _, ev := range evs {
			if len(buf) > 0 && (size+ev.Size() > limit || uint64(len(buf)) >= maxEvents) {
				full = true
				break
			}
			buf = append(buf, ev)
			size += ev.Size()
			off, floorSeq = ev.ID+1, bt.seq
		}
		if full {
			break
		}
		used = i + 1
		if bt.closed {
			ended = true
			break
		}
	}
	if off > qk.off {
		floor := off - 1
		wctx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
		err := qk.write(wctx, false, func(l *lease) {
			l.Pend, l.PrevSeq, l.PrevLocal, l.Floor, l.FloorSeq = floor-l.Floor, l.FloorSeq, l.Local, floor, floorSeq
			if s.local {
				l.Local = floor
				if len(buf) > 0 { // under lmu, as the write: no renewal between
					qk.hold(s, buf[0].ID, buf[len(buf)-1].ID)
				}
			}
		})
		cancel()
		if err != nil && s.local {
			qk.lmu.Lock()
			qk.unhold(s) // not handed out
			qk.lmu.Unlock()
		}
		switch {
		case errors.Is(err, errLost):
			return nil, sse.Gap{}, sse.ErrReplaced
		case err != nil:
			return nil, sse.Gap{}, unavailable{err}
		}
	}
	for _, bt := range qk.batches[:used] {
		qk.spans = append(qk.spans, span{bt.seq, bt.next() - 1})
	}
	qk.batches = qk.batches[used:]
	qk.off, qk.ended = off, ended
	if len(qk.spans) >= 32 {
		qk.purge(context.Background(), true, 16)
	}
	if gap != (sse.Gap{}) {
		s.saw(gap.To)
	}
	if len(buf) > 0 {
		s.saw(buf[len(buf)-1].ID)
	}
	if ended && len(buf) == 0 && gap == (sse.Gap{}) {
		return nil, sse.Gap{}, io.EOF
	}
	return buf, gap, nil
}

// saw records that s was sent events, or told of a gap, up to id. Only a
// connection is told of what others took since (see takeHeld); an
// in-process reader's position only keeps it from being given an owed
// gap behind it.
func (s *queueSub[K]) saw(id uint64) { s.pos, s.known = id, true }

// add keeps a message read from the feed if it has events not yet taken,
// or the key's Close, or is of another life than the lease's.
func (qk *qkey[K]) add(bt *batch) {
	qk.lmu.Lock()
	epoch := qk.lease.Epoch
	qk.lmu.Unlock()
	if bt.next() <= qk.off && !bt.closed && bt.epoch == epoch {
		return
	}
	qk.batches = append(qk.batches, bt)
}

// purge deletes the messages whose events are all older than the replay
// window below the floor, if at least min of them are, keeping the
// subject's last message (its metadata), in a goroutine of its own if
// background is set. It is called with sem held.
func (qk *qkey[K]) purge(ctx context.Context, background bool, min int) {
	b := qk.b
	qk.lmu.Lock()
	floor := qk.lease.Floor
	qk.lmu.Unlock()
	if floor < b.cfg.replay || len(qk.spans) < 2 {
		return
	}
	keep := floor - b.cfg.replay // events up to keep may go
	cut := 0
	for cut < len(qk.spans)-1 && qk.spans[cut].last <= keep {
		cut++
	}
	if cut < min {
		return
	}
	seq := qk.spans[cut].seq // purge below it
	if !background {
		b.stream.Purge(ctx, jetstream.WithPurgeSubject(qk.subject), jetstream.WithPurgeSequence(seq))
		qk.spans = qk.spans[cut:]
		return
	}
	if !qk.purging.CompareAndSwap(false, true) {
		return
	}
	qk.spans = append([]span(nil), qk.spans[cut:]...)
	b.calls.Add(1)
	go func() {
		defer b.calls.Done()
		defer qk.purging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b.stream.Purge(ctx, jetstream.WithPurgeSubject(qk.subject), jetstream.WithPurgeSequence(seq))
	}()
}

func (s *queueSub[K]) Close() {
	s.closed.Do(func() {
		b := s.qk.b
		b.mu.Lock()
		if s.qk.conn == s {
			s.qk.conn = nil
		}
		b.mu.Unlock()
		if s.local {
			s.qk.lmu.Lock()
			s.qk.unhold(s) // what it did not yield was forfeit (see forfeit)
			s.qk.lmu.Unlock()
		}
		b.unref(s.qk)
		b.untrack()
	})
}

// renew renews, a third of the lease time apart, the leases of the keys
// this process reads; a lease another process took marks its key lost, so
// that its readers end.
func (b *Broker[K]) renew() {
	defer b.bg.Done()
	t := time.NewTicker(b.cfg.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.quit:
			return
		}
		b.mu.Lock()
		keys := make([]*qkey[K], 0, len(b.qkeys))
		for _, qk := range b.qkeys {
			keys = append(keys, qk)
		}
		b.mu.Unlock()
		for _, qk := range keys {
			qk.lmu.Lock()
			owned := qk.owned
			qk.lmu.Unlock()
			if !owned || qk.isLost() || !b.nc.IsConnected() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.lease/3)
			qk.write(ctx, false, nil)
			cancel()
		}
	}
}
