package ssejs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rocketqueue/sse"
)

// A feed is the process's one ordered consumer over every key's subject
// (ephemeral, in memory, with no acks), from the stream's end when the
// first key gets a reader here: it hands each message to the hubs of its
// key in this process, and drops the others. So a key read here costs a
// hub, and no consumer or goroutine of its own. It runs while some key
// has a hub; a failure of its consumer, NATS becoming unreachable or
// Shutdown end it, and every hub on it with it: their readers end with an
// error wrapping [ErrUnavailable] (or [sse.ErrShutdown]), and the next
// reader starts another feed. The ordered consumer's own recovery (a
// reset after a missed message or heartbeat, a leader change) resumes
// after the last message it handed out, and a message it hands out again
// is dropped: the hubs get each message of their key once, in order.
// That recovery retries for as long as it fails, and says nothing; so
// [feedGiveUp] after the consumer reports an error, the feed looks (see
// watch), and ends, with an error wrapping [ErrUnavailable], if the stream
// is gone or was made anew, or if the stream or the consumer's new
// incarnation are still missing, or JetStream does not answer, another
// feedGiveUp later. Readers are told, rather than left to wait until
// Shutdown.
type feed[K comparable] struct {
	b       *Broker[K]               // immutable
	ready   chan struct{}            // closed when the feed started, or failed to (initErr)
	initErr error                    // written before ready is closed
	cons    jetstream.Consumer       // written before ready is closed
	prefix  string                   // written before ready is closed: the consumer's name, but for the "_<n>" of each incarnation
	created time.Time                // written before ready is closed: when the stream was made
	cc      jetstream.ConsumeContext // written before ready is closed
	fails   chan error               // capacity 1: a failure of the consumer
	trouble chan struct{}            // capacity 1: the consumer reported an error it may recover from
	stop    chan struct{}            // closed when its last hub leaves
	done    chan struct{}            // closed when its goroutine has returned

	mu   sync.Mutex
	hubs map[string]*hub[K] // guarded by mu: by subject, each hub linking the key's others (hub.sibling)
	pos  uint64             // guarded by mu: every message up to this stream sequence was handed out, or predates the feed
	err  error              // guarded by mu: why the feed ended, if it did
	// troubled is guarded by mu: when the consumer reported the first
	// error that watch has not yet seen it recover from; zero otherwise.
	// troubles counts the errors it reported.
	troubled time.Time
	troubles uint64

	scratch []*hub[K] // owned by the consumer's callback

	refs int // guarded by Broker.mu: its hubs, and those starting
}

// errFeedStopped ends a feed whose last hub left.
var errFeedStopped = errors.New("ssejs: the feed stopped")

// feedFor returns the process's feed, starting it if needed, holding a
// reference to it.
func (b *Broker[K]) feedFor(ctx context.Context) (*feed[K], error) {
	b.mu.Lock()
	f := b.feed
	if f != nil && f.ended() {
		f = nil
	}
	if f != nil {
		f.refs++
		b.mu.Unlock()
		select {
		case <-f.ready:
		case <-ctx.Done():
			b.unrefFeed(f)
			return nil, ctx.Err()
		}
		if f.initErr != nil {
			b.unrefFeed(f)
			return nil, f.initErr
		}
		return f, nil
	}
	f = &feed[K]{b: b, ready: make(chan struct{}), fails: make(chan error, 1), trouble: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}), hubs: make(map[string]*hub[K]), refs: 1}
	b.feed = f
	b.mu.Unlock()
	f.initErr = f.start(ctx)
	if f.initErr != nil {
		f.mu.Lock()
		f.err = f.initErr
		f.mu.Unlock()
		close(f.done)
	}
	close(f.ready)
	if f.initErr != nil {
		b.unrefFeed(f)
		return nil, f.initErr
	}
	return f, nil
}

// ended reports whether the feed ended (or could not start): a new hub
// then starts another.
func (f *feed[K]) ended() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err != nil
}

// start starts the feed's consumer after the stream's last message (as
// its leader knows it), and its goroutine.
func (f *feed[K]) start(ctx context.Context) error {
	b := f.b
	info, err := b.stream.Info(ctx)
	if err != nil {
		return err
	}
	f.pos, f.created, f.prefix = info.State.LastSeq, info.Created, "sse_feed_"+nuid.Next()
	f.cons, err = b.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		NamePrefix:        f.prefix,
		FilterSubjects:    []string{b.prefix + ">"},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       f.pos + 1,
		InactiveThreshold: 30 * time.Second,
	})
	if err != nil {
		return err
	}
	f.cc, err = f.cons.Consume(f.deliver, jetstream.PullMaxMessages(feedBuffer), jetstream.PullHeartbeat(feedHeartbeat), jetstream.PullExpiry(10*feedHeartbeat), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, nats.ErrConnectionClosed) {
			f.fail(err)
			return
		}
		// A missed heartbeat, a deleted consumer, a leader change...: the
		// ordered consumer resets itself, and run watches that it does.
		f.mu.Lock()
		if f.troubled.IsZero() {
			f.troubled = time.Now()
		}
		f.troubles++
		f.mu.Unlock()
		select {
		case f.trouble <- struct{}{}:
		default:
		}
	}))
	if err != nil {
		b.deleteConsumer(f.cons)
		return err
	}
	down := b.downChan()
	b.calls.Add(1)
	go f.run(down)
	return nil
}

// feedBuffer is how many messages the feed's consumer asks for at once.
const feedBuffer = 256

// feedHeartbeat is how often the server tells the feed's consumer that it
// is alive while no message comes: two missed, and the consumer is reset.
// Every key read here waits on the feed, so a stalled one is found in
// 4 s, not in nats.go's default 10 s; there is one feed per process, so
// its heartbeats cost nothing per key.
const feedHeartbeat = 2 * time.Second

// feedGiveUp is how long the feed's consumer may go on failing to recover
// before the feed checks its stream (see feed): long enough for a NATS
// node's restart or a stream leader's election, which the consumer rides
// through.
const feedGiveUp = 15 * time.Second

// deliver hands the message m to the hubs of its key; it is the
// consumer's callback, called for one message at a time, in order.
func (f *feed[K]) deliver(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		f.fail(err)
		return
	}
	seq := md.Sequence.Stream
	f.mu.Lock()
	if f.err != nil || seq <= f.pos {
		f.mu.Unlock()
		return // ended, or handed out already (before a reset)
	}
	f.pos = seq
	hs := f.scratch[:0]
	for h := f.hubs[m.Subject()]; h != nil; h = h.sibling {
		hs = append(hs, h)
	}
	f.mu.Unlock()
	f.scratch = hs
	if len(hs) == 0 {
		return
	}
	bt, err := parseBatch(seq, m.Headers(), m.Data())
	for i, h := range hs {
		if err != nil {
			h.end(unavailable{err})
		} else {
			h.add(bt)
		}
		hs[i] = nil
	}
}

func (f *feed[K]) fail(err error) {
	select {
	case f.fails <- err:
	default:
	}
}

// run waits for the feed's end, and ends its hubs.
func (f *feed[K]) run(down <-chan struct{}) {
	b := f.b
	defer b.calls.Done()
	defer close(f.done)
	var err error
	var check *time.Timer // while the consumer is troubled
	var checkC <-chan time.Time
	defer func() {
		if check != nil {
			check.Stop()
		}
	}()
	failed := 0 // looks in a row that found the consumer not recovered
	for err == nil {
		select {
		case <-f.trouble:
			if check == nil {
				check = time.NewTimer(b.feedGiveUp)
				checkC = check.C
			}
		case <-checkC:
			var wait time.Duration
			wait, failed, err = f.watch(down, failed)
			select { // what ended watch's look, rather than its finding
			case <-b.quit:
				err = sse.ErrShutdown
			case <-down:
				err = ErrUnavailable
			default:
			}
			if err == nil && wait > 0 {
				check.Reset(wait)
			} else {
				check, checkC = nil, nil
			}
		case e := <-f.fails:
			err = unavailable{e}
		case <-down:
			err = ErrUnavailable
		case <-b.quit:
			err = sse.ErrShutdown
		case <-f.stop:
			err = errFeedStopped
		}
	}
	f.mu.Lock()
	f.err = err
	hubs := f.hubs
	f.hubs = nil
	f.mu.Unlock()
	for _, h := range hubs {
		for ; h != nil; h = h.sibling {
			h.end(err)
		}
	}
	// Stopping the consumer waits for a reset in progress (nats.go holds
	// its lock across the reset's retries, up to 10 s each): the feed's
	// end, and the last hub's unref that waits for it, do not.
	b.calls.Add(1)
	go func() {
		defer b.calls.Done()
		f.cc.Stop()
		b.deleteConsumer(f.cons)
	}()
}

// watch looks at a troubled consumer, failed looks in a row after it
// found it not recovered. It returns how long to wait before it looks
// again (0: it recovered), the number of such looks, and the feed's
// error if the feed must end. Until feedGiveUp after the first error, it
// waits. Then it asks the stream's leader for the stream: if the stream is
// gone, or was made anew (the consumer would wait for sequences the new
// stream will reach only much later), the feed ends; it ends too if the
// stream did not answer, or the consumer has no incarnation on it (its
// reset still fails), at two looks in a row, feedGiveUp apart. Errors
// reported while it looked are looked at again.
func (f *feed[K]) watch(down <-chan struct{}, failed int) (time.Duration, int, error) {
	b := f.b
	f.mu.Lock()
	since, n := f.troubled, f.troubles
	f.mu.Unlock()
	if since.IsZero() {
		return 0, 0, nil
	}
	if wait := b.feedGiveUp - time.Since(since); wait > 0 {
		return wait, failed, nil
	}
	ctx, cancel := b.bounded(context.Background(), down)
	defer cancel()
	info, err := b.stream.Info(ctx)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return 0, failed, unavailable{fmt.Errorf("ssejs: the stream was deleted: %w", err)}
	case err == nil && !info.Created.Equal(f.created):
		return 0, failed, unavailable{errors.New("ssejs: the stream was deleted and made anew")}
	case err == nil:
		var found bool
		if found, err = f.incarnated(ctx); err == nil && !found {
			err = errors.New("no incarnation on the stream")
		}
	}
	if err != nil {
		if failed++; failed < 2 {
			return b.feedGiveUp, failed, nil
		}
		return 0, failed, unavailable{fmt.Errorf("ssejs: the feed's consumer did not recover in %v: %w", 2*b.feedGiveUp, err)}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.troubles != n {
		return b.feedGiveUp, 0, nil // errors reported meanwhile
	}
	f.troubled = time.Time{}
	return 0, 0, nil
}

// incarnated reports whether the stream holds an incarnation of the
// feed's consumer, which its reset makes: by its name, since asking the
// ordered consumer itself would wait for the reset.
func (f *feed[K]) incarnated(ctx context.Context) (bool, error) {
	names := f.b.stream.ConsumerNames(ctx)
	found := false
	for name := range names.Name() {
		found = found || strings.HasPrefix(name, f.prefix+"_")
	}
	return found, names.Err()
}

// register adds h to the feed: h gets every message of its key from the
// stream sequence it returns on.
func (f *feed[K]) register(h *hub[K]) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	h.sibling = f.hubs[h.subject]
	f.hubs[h.subject] = h
	return f.pos + 1, nil
}

// unregister removes h from the feed.
func (f *feed[K]) unregister(h *hub[K]) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hubs == nil {
		return // ended
	}
	p := f.hubs[h.subject]
	if p == h {
		if h.sibling == nil {
			delete(f.hubs, h.subject)
		} else {
			f.hubs[h.subject] = h.sibling
		}
		return
	}
	for ; p != nil; p = p.sibling {
		if p.sibling == h {
			p.sibling = h.sibling
			return
		}
	}
}

// unrefFeed drops a reference to f: the last one stops it.
func (b *Broker[K]) unrefFeed(f *feed[K]) {
	b.mu.Lock()
	f.refs--
	last := f.refs == 0
	if last && b.feed == f {
		b.feed = nil
	}
	b.mu.Unlock()
	if !last {
		return
	}
	<-f.ready
	if f.initErr != nil {
		return
	}
	close(f.stop)
	<-f.done
}

// deleteConsumer deletes an ordered consumer at once, rather than leaving
// it to its inactivity threshold; it gives up at once when NATS is
// unreachable.
func (b *Broker[K]) deleteConsumer(c jetstream.Consumer) {
	if !b.nc.IsConnected() {
		return
	}
	info := c.CachedInfo()
	if info == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	b.stream.DeleteConsumer(ctx, info.Name)
}
