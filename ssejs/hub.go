package ssejs

import (
	"context"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/rocketqueue/sse"
)

// Bounds of what a hub keeps of its key's newest messages for readers
// that are behind: the messages, and their bodies' bytes. A reader further
// behind catches up by direct gets.
const (
	hubMessages = 1024
	hubBytes    = 4 << 20
)

// A hub is one key's live messages in this process: the process's [feed]
// hands it every message of its key from the hub's start on, and the
// process's readers of the key read them from memory. It has no goroutine
// and no consumer of its own: a reader waits on its wake channel, or, if
// it polls, in its wakeSet. A reader that starts before the hub's first
// message, or falls behind what it keeps, reads the stream by direct gets
// until it reaches the hub again. In FanOut mode the process's readers of
// a key share its hub; in Queue mode the key's qkey has one.
type hub[K comparable] struct {
	b              *Broker[K]    // immutable
	token, subject string        // immutable
	wakes          *wakeSet      // immutable: whom a message, or the hub's end, wakes
	feed           *feed[K]      // written by open, before the hub is shared
	ready          chan struct{} // FanOut: closed when the hub opened, or failed to (initErr)
	initErr        error         // written before ready is closed

	sibling *hub[K] // guarded by feed.mu: the next hub of the same subject on the feed

	mu   sync.Mutex
	msgs []*batch      // guarded by mu: the newest messages received, oldest first
	size int           // guarded by mu: their bodies' bytes
	from uint64        // guarded by mu: every message of the key from this stream sequence on is in msgs, or not yet received
	wake chan struct{} // guarded by mu: if not nil, closed (and cleared) when a message arrives or the hub ends
	err  error         // guarded by mu: why the hub ended, if it did

	refs int // guarded by Broker.mu (FanOut): its readers, and those starting
}

// errHubClosed ends a hub whose readers left.
var errHubClosed = errors.New("ssejs: the key's hub closed")

// newHub returns a hub of subject, not yet open; wakes is whom it wakes
// (nil: a set of its own).
func (b *Broker[K]) newHub(token, subject string, wakes *wakeSet) *hub[K] {
	if wakes == nil {
		wakes = new(wakeSet)
	}
	return &hub[K]{b: b, token: token, subject: subject, wakes: wakes, ready: make(chan struct{})}
}

// open registers the hub on the process's feed, starting it if needed,
// and sets where the hub starts. It starts where the feed is; then, if the
// key's last message, read at the stream's leader after that, is earlier,
// right after it: no message of the key is between, and every later one
// is the feed's to hand out. So from is exact, and a reader that starts
// at the key's last message or after reads from the hub at once.
func (h *hub[K]) open(ctx context.Context) error {
	b := h.b
	f, err := b.feedFor(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	from, err := f.register(h)
	h.from, h.feed = from, f
	h.mu.Unlock()
	if err != nil {
		b.unrefFeed(f)
		return err
	}
	last, err := b.lastAtLeader(ctx, h.subject)
	if err != nil {
		return nil // from, as the feed said, is exact too
	}
	low := uint64(1)
	if last != nil {
		low = last.seq + 1
	}
	h.mu.Lock()
	if h.from == from && low < from { // nothing dropped yet
		h.from = low
	}
	h.mu.Unlock()
	return nil
}

// close takes the hub off the feed, and ends it.
func (h *hub[K]) close() {
	h.feed.unregister(h)
	h.b.unrefFeed(h.feed)
	h.end(errHubClosed)
}

// hubFor returns the FanOut key's hub, opening it if needed, holding a
// reference to it.
func (b *Broker[K]) hubFor(ctx context.Context, token, subject string) (*hub[K], error) {
	b.mu.Lock()
	h := b.hubs[token]
	if h != nil && h.failed() {
		h = nil
	}
	if h != nil {
		h.refs++
		b.mu.Unlock()
		select {
		case <-h.ready:
		case <-ctx.Done():
			b.unrefHub(h)
			return nil, ctx.Err()
		}
		if h.initErr != nil {
			b.unrefHub(h)
			return nil, h.initErr
		}
		return h, nil
	}
	h = b.newHub(token, subject, nil)
	h.refs = 1
	b.hubs[token] = h
	b.mu.Unlock()
	h.initErr = h.open(ctx)
	close(h.ready)
	if h.initErr != nil {
		b.unrefHub(h)
		return nil, h.initErr
	}
	return h, nil
}

// failed reports whether the hub ended or could not open: a new reader
// then opens another.
func (h *hub[K]) failed() bool {
	select {
	case <-h.ready:
		if h.initErr != nil {
			return true
		}
	default:
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err != nil
}

// unrefHub drops a reference to h: the last one closes it.
func (b *Broker[K]) unrefHub(h *hub[K]) {
	b.mu.Lock()
	h.refs--
	last := h.refs == 0
	if last && b.hubs[h.token] == h {
		delete(b.hubs, h.token)
	}
	b.mu.Unlock()
	if !last {
		return
	}
	<-h.ready
	if h.initErr == nil {
		h.close()
	}
}

// add appends bt to the hub's messages, dropping the oldest beyond the
// bounds (never the newest), and wakes the hub's readers. The feed calls
// it, in stream order.
func (h *hub[K]) add(bt *batch) {
	h.mu.Lock()
	if h.err != nil || len(h.msgs) > 0 && bt.seq <= h.msgs[len(h.msgs)-1].seq {
		h.mu.Unlock()
		return
	}
	h.msgs = append(h.msgs, bt)
	h.size += len(bt.body)
	drop := 0
	for len(h.msgs)-drop > 1 && (len(h.msgs)-drop > hubMessages || h.size > hubBytes) {
		h.size -= len(h.msgs[drop].body)
		drop++
	}
	if drop > 0 {
		clear(h.msgs[:drop])
		h.msgs = h.msgs[drop:]
		h.from = h.msgs[0].seq
	}
	if h.wake != nil {
		close(h.wake)
		h.wake = nil
	}
	h.mu.Unlock()
	h.wakes.fire()
}

// trim drops the messages before stream sequence seq, which the hub's one
// reader (a Queue key's) has read.
func (h *hub[K]) trim(seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := sort.Search(len(h.msgs), func(i int) bool { return h.msgs[i].seq >= seq })
	for _, bt := range h.msgs[:i] {
		h.size -= len(bt.body)
	}
	clear(h.msgs[:i])
	h.msgs = h.msgs[i:]
	if len(h.msgs) == 0 {
		h.msgs = nil
	}
	h.from = max(h.from, seq)
}

// end ends the hub with err, waking its readers.
func (h *hub[K]) end(err error) {
	h.mu.Lock()
	if h.err == nil {
		h.err = err
	}
	if h.wake != nil {
		close(h.wake)
		h.wake = nil
	}
	h.mu.Unlock()
	h.wakes.fire()
}

// next returns the hub's first message at stream sequence seq or after.
// If seq is before the hub's start (from), covered is false: the reader is
// behind it. If the hub has no such message yet, it returns the error
// that ended it, or else, if wait, the channel that its next message
// closes, or registers wake for the reader r in the hub's wakeSet. The
// check and the registration are one step: no message slips between.
func (h *hub[K]) next(seq uint64, wait bool, r any, wake func()) (bt *batch, covered bool, from uint64, wch <-chan struct{}, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq < h.from {
		return nil, false, h.from, nil, h.err
	}
	i := sort.Search(len(h.msgs), func(i int) bool { return h.msgs[i].seq >= seq })
	switch {
	case i < len(h.msgs):
		return h.msgs[i], true, h.from, nil, nil
	case h.err != nil:
		return nil, true, h.from, nil, h.err
	case wake != nil:
		h.wakes.add(r, wake)
	case wait:
		if h.wake == nil {
			h.wake = make(chan struct{})
		}
		wch = h.wake
	}
	return nil, true, h.from, wch, nil
}

// catchUp reads, by a direct get, the key's first message at stream
// sequence seq or after, for a reader behind its hub, whose start was from
// when it said so; it returns the message, if any, and the sequence the
// reader goes on from. If the stream holds none (as its leader says: a
// lagging replica may find none), the messages before from that the
// reader has not read are gone, expired or deleted: it goes on from
// from, and names them in a gap (events, not messages, count).
func (b *Broker[K]) catchUp(ctx context.Context, down <-chan struct{}, subject string, seq, from uint64) (*batch, uint64, error) {
	bctx, cancel := b.bounded(ctx, down)
	defer cancel()
	bt, err := b.nextFrom(bctx, subject, seq)
	if err == nil && bt == nil {
		bt, err = b.nextFromAtLeader(bctx, subject, seq)
	}
	switch {
	case err != nil:
		return nil, seq, unavailable{err}
	case bt == nil:
		return nil, max(seq, from), nil
	}
	return bt, bt.seq + 1, nil
}

// fetch returns the reader's next message: out of the hub if it holds it,
// or else by a direct get. Without wait it returns nil at once when none
// is ready (registering wake, if not nil, as next says); with wait, nil
// when tick fires.
func (s *fanSub[K]) fetch(ctx context.Context, tick <-chan time.Time, wait bool, wake func()) (*batch, error) {
	for {
		bt, covered, from, wch, err := s.hub.next(s.rseq, wait, s, wake)
		switch {
		case err != nil:
			return nil, err
		case bt != nil:
			s.rseq = bt.seq + 1
			return bt, nil
		case covered && !wait:
			return nil, nil
		case covered:
			select {
			case <-wch:
				continue
			case <-tick:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-s.down:
				return nil, ErrUnavailable
			case <-s.b.quit:
				return nil, sse.ErrShutdown
			}
		}
		if bt, s.rseq, err = s.b.catchUp(ctx, s.down, s.hub.subject, s.rseq, from); bt != nil || err != nil {
			return bt, err
		}
	}
}
