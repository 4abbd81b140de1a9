package ssejs

import (
	"context"
	"sort"
	"time"

	"sync"

	"github.com/rocketqueue/sse"
)

// Bounds of what a hub keeps of its key's newest messages for readers
// that are behind: the messages, and their bodies' bytes. A reader further
// behind catches up through a consumer of its own.
const (
	hubMessages = 1024
	hubBytes    = 4 << 20
)

// A hub is one FanOut key's live feed in this process: one ordered
// consumer, from the key's last message on, whose messages every reader
// of the key in the process reads from memory. So a key read by a
// thousand connections on a replica costs the server one consumer there,
// not a thousand. A reader that starts before the hub's first message, or
// falls behind what it keeps, reads the stream through a consumer of its
// own until it reaches the hub again. A goroutine moves the consumer's
// messages into the hub while the key has readers in the process.
type hub[K comparable] struct {
	b              *Broker[K]    // immutable
	token, subject string        // immutable
	ready          chan struct{} // closed when the hub started, or failed to (initErr)
	initErr        error         // written before ready is closed
	feed           *feed         // written before ready is closed
	stop           chan struct{} // closed when its last reader leaves
	done           chan struct{} // closed when its goroutine has returned

	mu   sync.Mutex
	msgs []*batch      // guarded by mu: the newest messages received, oldest first
	size int           // guarded by mu: their bodies' bytes
	from uint64        // guarded by mu: every message of the key from this stream sequence on is in msgs, or not yet received
	wake chan struct{} // guarded by mu: closed, and replaced, when messages arrive or the hub ends
	err  error         // guarded by mu: why the hub ended, if it did

	refs int // guarded by Broker.mu: its readers, and those starting
}

// hubFor returns the key's hub, starting it if needed, holding a
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
	h = &hub[K]{b: b, token: token, subject: subject, ready: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}), refs: 1}
	b.hubs[token] = h
	b.mu.Unlock()
	h.initErr = h.start(ctx)
	if h.initErr != nil {
		close(h.done)
	}
	close(h.ready)
	if h.initErr != nil {
		b.unrefHub(h)
		return nil, h.initErr
	}
	return h, nil
}

// failed reports whether the hub ended or could not start: a new reader
// then starts another.
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

// start starts the hub's consumer after the key's last message, and its
// goroutine.
func (h *hub[K]) start(ctx context.Context) error {
	b := h.b
	last, err := b.last(ctx, h.subject)
	if err != nil {
		return err
	}
	h.from = 1
	if last != nil {
		h.from = last.seq + 1
	}
	if h.feed, err = b.startFeed(ctx, h.subject, h.from); err != nil {
		return err
	}
	down := b.downChan()
	b.calls.Add(1)
	go h.run(down)
	return nil
}

// run moves the consumer's messages into the hub until its last reader
// leaves, or the feed fails.
func (h *hub[K]) run(down <-chan struct{}) {
	defer h.b.calls.Done()
	defer close(h.done)
	for {
		select {
		case bt := <-h.feed.msgs:
			h.mu.Lock()
			h.add(bt)
			for more := true; more; {
				select {
				case bt := <-h.feed.msgs:
					h.add(bt)
				default:
					more = false
				}
			}
			close(h.wake)
			h.wake = make(chan struct{})
			h.mu.Unlock()
		case err := <-h.feed.errs:
			h.end(unavailable{err})
			return
		case <-down:
			h.end(ErrUnavailable)
			return
		case <-h.b.quit:
			h.end(sse.ErrShutdown)
			return
		case <-h.stop:
			return
		}
	}
}

// add appends bt to the hub's messages, dropping the oldest beyond the
// bounds (never the newest). It is called with mu held.
func (h *hub[K]) add(bt *batch) {
	if len(h.msgs) > 0 && bt.seq <= h.msgs[len(h.msgs)-1].seq {
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
}

func (h *hub[K]) end(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.err = err
	close(h.wake)
	h.wake = make(chan struct{})
}

// unrefHub drops a reference to h: the last one stops it.
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
	if h.initErr != nil {
		return
	}
	close(h.stop)
	<-h.done
	b.closeFeed(h.feed)
}

// next returns the hub's first message at stream sequence seq or after,
// and whether the hub covers seq at all (else the reader is behind it). If
// it has none yet, it returns the channel that its next message closes,
// or the error that ended it.
func (h *hub[K]) next(seq uint64) (bt *batch, covered bool, wake <-chan struct{}, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if seq < h.from {
		return nil, false, nil, nil
	}
	i := sort.Search(len(h.msgs), func(i int) bool { return h.msgs[i].seq >= seq })
	if i < len(h.msgs) {
		return h.msgs[i], true, nil, nil
	}
	return nil, true, h.wake, h.err
}

// fetch returns the reader's next message: out of the hub if it holds it,
// or else out of the reader's own catch-up consumer. Without wait it
// returns nil at once when none is ready; with wait, nil when tick fires.
func (s *fanSub[K]) fetch(ctx context.Context, tick <-chan time.Time, wait bool) (*batch, error) {
	for {
		bt, covered, wake, err := s.hub.next(s.rseq)
		if covered {
			if s.catch != nil { // caught up with the hub
				s.b.closeFeed(s.catch)
				s.catch = nil
			}
			switch {
			case bt != nil:
				s.rseq = bt.seq + 1
				return bt, nil
			case err != nil:
				return nil, err
			case !wait:
				return nil, nil
			}
			select {
			case <-wake:
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
		if s.catch == nil {
			bctx, cancel := s.b.bounded(ctx, s.down)
			s.catch, err = s.b.startFeed(bctx, s.hub.subject, s.rseq)
			cancel()
			if err != nil {
				return nil, unavailable{err}
			}
		}
		if !wait {
			select {
			case bt = <-s.catch.msgs:
			default:
				return nil, nil
			}
		} else {
			select {
			case bt = <-s.catch.msgs:
			case err := <-s.catch.errs:
				return nil, unavailable{err}
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
		if bt.seq < s.rseq {
			continue
		}
		s.rseq = bt.seq + 1
		return bt, nil
	}
}
