package ssejs

import (
	"context"
	"encoding/json"
	"errors"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rocketqueue/sse"
)

// A lease is a Queue key's entry in the bucket: which process owns the
// key, and how far its events were handed out. The owner holds the key
// while its liveness entry is fresh (see liveness): the entry is not
// renewed. Every write is a compare and set on the entry's revision, so a
// process that lost the lease cannot write it, and so cannot hand out
// another event. A value: qkey.lease is guarded by qkey.lmu.
type lease struct {
	Owner string `json:"o,omitempty"` // the owning broker's ID; "" when free
	// Until is 0 in the entries this version writes. Versions before
	// process liveness wrote, and renewed, each key's expiry (Unix
	// milliseconds) there: such an entry holds until then (see holds).
	Until    int64  `json:"u,omitempty"`
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

// maxUnknown bounds qkey.unknown: writes in a row whose outcome is not
// known, each after its attempt's time, beyond which the qkey is taken as
// lost.
const maxUnknown = 16

// maxUnsure bounds Broker.unsure.
const maxUnsure = 4096

// keepUnsure remembers, as qk goes, the nonces of its writes whose
// outcome is unknown, if no write repaired them, for the next qkey of the
// key in this process: a take's among them may have been stored without
// its events handed out. All of them, not the last one only: a release
// that failed without being stored does not repair a take stored before.
func (b *Broker[K]) keepUnsure(qk *qkey[K]) {
	qk.lmu.Lock()
	unknown := slices.Clone(qk.unknown)
	qk.lmu.Unlock()
	if len(unknown) == 0 {
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
	b.unsure[qk.token] = unknown
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
		nl.Owner, nl.Until = qk.b.id, 0
		nl.Nonce = nuid.Next()
		// This process lived past its last take, and handed it out (a
		// take's change sets Pend anew); what it owes goes with every
		// write.
		nl.Pend = 0
		owes := qk.owes()
		nl.OwedFrom, nl.OwedTo = owes.From, owes.To
		if change != nil {
			change(&nl)
		}
		data, _ := json.Marshal(nl)
		var rev uint64
		var err error
		if qk.b.loseLeaseWrites.Load() > 0 && qk.b.loseLeaseWrites.Add(-1) >= 0 {
			err = context.DeadlineExceeded // in tests: lost before the server got it
		} else {
			rev, err = qk.b.kv.Update(ctx, qk.token, data, qk.rev)
		}
		if err == nil && qk.b.dropLeaseAcks.Load() > 0 && qk.b.dropLeaseAcks.Add(-1) >= 0 {
			err = context.DeadlineExceeded // in tests: stored, its ack lost
		}
		if err == nil {
			qk.lease, qk.rev, qk.unknown = nl, rev, qk.unknown[:0]
			if nl.Pend != 0 || nl.owed() != (sse.Gap{}) {
				qk.b.settleLater(qk)
			}
			return nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !wrongLastSeq(err) {
			// It may have been written, its ack lost; a take's advanced
			// the floor over events it did not hand out.
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
					qk.lease, qk.rev, qk.unknown = cur, e.Revision(), qk.unknown[:0]
					return nil
				}
				// The write that failed was stored, but its caller took
				// it as failed (a take then handed out none of the events
				// its floor covers): write over it from the lease last
				// confirmed.
				c := qk.lease
				cur.Epoch, cur.Floor, cur.FloorSeq, cur.Local, cur.Pend = c.Epoch, c.Floor, c.FloorSeq, c.Local, c.Pend
				qk.lease, qk.rev, qk.unknown = cur, e.Revision(), qk.unknown[:0]
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
		if !takeover {
			held, err := b.holds(ctx, cur)
			if err != nil {
				return err
			}
			if held {
				return sse.ErrBusy
			}
		}
		nl := cur
		if nl.Epoch != last.epoch {
			nl = lease{Epoch: last.epoch}
		}
		b.mu.Lock()
		unsure := slices.Clone(b.unsure[qk.token])
		b.mu.Unlock()
		qk.lmu.Lock()
		unsure = append(unsure, qk.unknown...)
		qk.lmu.Unlock()
		undo := nl.Pend > 0 && nl.Pend <= nl.Floor && cur.Owner == b.id && cur.Nonce != "" && slices.Contains(unsure, cur.Nonce)
		if undo {
			// This process's last take failed before it handed anything
			// out (its floor write's ack was lost): undo it, so that
			// those events are read, rather than named in a gap.
			nl.Floor, nl.FloorSeq, nl.Local = nl.Floor-nl.Pend, nl.PrevSeq, nl.PrevLocal
			nl.Pend, nl.PrevSeq, nl.PrevLocal = 0, 0, 0
		}
		if p := min(nl.Pend, nl.Floor); p > 0 && cur.Owner != b.id {
			// Another process's last take may not have been handed out:
			// owed, and written as owed, not as this process's Pend, so
			// that this process owes it too if it takes the key again
			// after this write's outcome was unknown to it, and the next
			// owner if this process dies before its first take.
			owed := sse.Gap{From: nl.Floor - p + 1, To: nl.Floor}
			if nl.OwedFrom > 0 && nl.OwedFrom <= nl.OwedTo && nl.OwedTo <= nl.Floor {
				owed = union(owed, nl.owed())
			}
			nl.OwedFrom, nl.OwedTo = owed.From, owed.To
			nl.Pend, nl.PrevSeq, nl.PrevLocal = 0, 0, 0
		}
		nl.Owner, nl.Until, nl.Nonce = b.id, 0, nuid.Next()
		data, _ := json.Marshal(nl)
		if rev == 0 {
			rev, err = b.kv.Create(ctx, qk.token, data)
		} else {
			rev, err = b.kv.Update(ctx, qk.token, data, rev)
		}
		if err == nil && b.dropAcquireAcks.Load() > 0 && b.dropAcquireAcks.Add(-1) >= 0 {
			err = context.DeadlineExceeded // in tests: stored, its ack lost
		}
		switch {
		case err == nil:
			if cur.Owner != "" && cur.Owner != b.id {
				b.notify(cur.Owner, qk.token, rev) // its readers end at once
			}
			qk.lmu.Lock()
			qk.lease, qk.rev, qk.owned = nl, rev, true
			qk.lmu.Unlock()
			b.mu.Lock()
			delete(b.unsure, qk.token)
			b.mu.Unlock()
			qk.lmu.Lock()
			qk.unknown = qk.unknown[:0] // writes of another revision
			// The previous owner's last take may not have been handed
			// out: another process's can't be known (this process's was
			// undone above, if its write was unsure), and is owed (see
			// above).
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

// owes returns what qk owes the key's next reader, and what its in-process
// readers hold of the lease's life: what every write records as OwedFrom
// and OwedTo. The caller holds lmu.
func (qk *qkey[K]) owes() sse.Gap {
	owes := qk.owed
	for r, g := range qk.held {
		if r.epoch == qk.lease.Epoch { // not a life that ended
			owes = union(owes, g)
		}
	}
	return owes
}

// owed returns the range of events the entry records as owed.
func (l lease) owed() sse.Gap { return sse.Gap{From: l.OwedFrom, To: l.OwedTo} }
