package ssejs

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
)

// A liveness is a process's entry in the Queue bucket, "p.<broker ID>":
// while it is fresh, the keys whose lease entries name the broker are
// its. The broker writes it when it starts, again a third of [WithLease]
// apart, one write for all its keys, and deletes it when it shuts down. A
// broker's ID is drawn anew by each [New], so an entry names one
// incarnation of a process: a restarted process owns none of its previous
// keys.
type liveness struct {
	Until int64 `json:"u"` // Unix milliseconds, by the writer's clock: alive until then unless renewed
}

// livenessKey returns the bucket key of the liveness of the broker id.
func livenessKey(id string) string { return "p." + id }

// putLiveness writes this process's liveness, fresh for a lease from now.
func (b *Broker[K]) putLiveness(ctx context.Context) error {
	data, _ := json.Marshal(liveness{Until: time.Now().Add(b.cfg.lease).UnixMilli()})
	_, err := b.kv.Put(ctx, livenessKey(b.id), data)
	return err
}

// holds reports whether the lease entry l holds against this process:
// whether another process owns it, and is alive. An entry written by a
// version before process leases carries its own expiry (Until) instead of
// naming a liveness, and holds until then. Expiry is judged by this
// process's clock.
func (b *Broker[K]) holds(ctx context.Context, l lease) (bool, error) {
	if l.Owner == "" || l.Owner == b.id {
		return false, nil
	}
	now := time.Now().UnixMilli()
	if l.Until != 0 {
		return l.Until > now, nil
	}
	e, err := b.kvGet(ctx, b.kv, livenessKey(l.Owner))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return false, err
	default:
		var lv liveness
		if json.Unmarshal(e.Value(), &lv) == nil && lv.Until > now {
			return true, nil
		}
	}
	// The owner looks dead (shut down, or expired): ask the bucket's
	// leader, since a replica that lags may not have its last renewal,
	// and a live owner taken for dead loses its key to a request that
	// should have got ErrBusy.
	v, found, err := b.kvAtLeader(ctx, b.kv.Bucket(), livenessKey(l.Owner))
	if err != nil || !found {
		return false, err
	}
	var lv liveness
	if json.Unmarshal(v, &lv) != nil {
		return false, nil
	}
	return lv.Until > now, nil
}

// keepAlive renews this process's liveness a third of the lease time
// apart, and deletes it when Shutdown begins, so that its keys are free at
// once. It writes once per period, whatever the number of keys held.
func (b *Broker[K]) keepAlive() {
	defer b.bg.Done()
	t := time.NewTicker(b.cfg.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.quit:
			b.notices.Unsubscribe()
			ctx, cancel := context.WithTimeout(context.Background(), b.attemptTimeout())
			b.kv.Delete(ctx, livenessKey(b.id))
			cancel()
			return
		}
		if !b.nc.IsConnected() {
			continue
		}
		// A slow write still counts (Until is from its start): it may
		// take up to the lease, or one attempt's time.
		ctx, cancel := context.WithTimeout(context.Background(), min(b.cfg.lease, b.attemptTimeout()))
		b.putLiveness(ctx)
		cancel()
	}
}

// noticeSubject returns the subject on which the process with broker ID
// id is told that another process took one of its keys over.
func (b *Broker[K]) noticeSubject(id string) string {
	return "sse." + b.cfg.name + ".l." + id
}

// notify tells the process owner that this one took the key token over
// at the entry's revision rev: a core NATS message, so it may be lost;
// then the owner learns it at its next write of the key, which fails.
func (b *Broker[K]) notify(owner, token string, rev uint64) {
	b.nc.Publish(b.noticeSubject(owner), []byte(token+" "+strconv.FormatUint(rev, 10)))
}

// noticed handles a notice that another process took a key over: the key
// is lost here if this process last wrote it at an earlier revision, so
// that its readers end (with sse.ErrReplaced) without waiting for an
// event. A notice of an older takeover, since taken back, is ignored.
func (b *Broker[K]) noticed(m *nats.Msg) {
	token, revText, ok := strings.Cut(string(m.Data), " ")
	rev, err := strconv.ParseUint(revText, 10, 64)
	if !ok || err != nil {
		return
	}
	b.mu.Lock()
	qk := b.qkeys[token]
	b.mu.Unlock()
	if qk == nil {
		return
	}
	qk.lmu.Lock()
	taken := qk.owned && qk.rev < rev
	qk.lmu.Unlock()
	if taken {
		qk.markLost()
	}
}

// settleLater schedules qk for settle: its entry records what its next
// write would change (see settle).
func (b *Broker[K]) settleLater(qk *qkey[K]) {
	b.smu.Lock()
	b.settles[qk] = struct{}{}
	b.smu.Unlock()
}

// settleKeys writes, a third of the lease time apart, the entries of the
// keys that settleLater scheduled since, once each: a key's entry is
// written again only after its events were taken or yielded, never
// periodically while it is idle.
func (b *Broker[K]) settleKeys() {
	defer b.bg.Done()
	t := time.NewTicker(b.cfg.lease / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-b.quit:
			return
		}
		b.smu.Lock()
		keys := b.settles
		b.settles = make(map[*qkey[K]]struct{})
		b.smu.Unlock()
		for qk := range keys {
			select {
			case <-b.quit:
				return
			default:
			}
			if !b.nc.IsConnected() {
				b.settleLater(qk) // at the next tick
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), b.cfg.lease/3)
			qk.settle(ctx)
			cancel()
		}
	}
}

// settle writes qk's entry if it says more than is so: that the owner's
// last take may not have been handed out (Pend), though it was, or that
// its readers hold events they have since yielded (OwedFrom, OwedTo).
// Such an entry would make the next owner, were this process to die, name
// in a gap events that were read. An entry that still says what is so,
// but records owed events, is looked at again at the next tick (in
// memory: the write waits until they are yielded or named).
func (qk *qkey[K]) settle(ctx context.Context) {
	qk.lmu.Lock()
	live := qk.owned && !qk.released && !qk.isLost()
	stale := qk.lease.Pend != 0 || qk.owes() != qk.lease.owed()
	again := qk.lease.owed() != (sse.Gap{})
	qk.lmu.Unlock()
	switch {
	case !live:
	case stale:
		qk.write(ctx, false, nil) // schedules the next settle if it must
	case again:
		qk.b.settleLater(qk)
	}
}
