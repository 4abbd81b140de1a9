package ssejs

import (
	"context"

	"github.com/rocketqueue/sse"
)

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
