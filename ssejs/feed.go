package ssejs

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A feed delivers one subject's messages, in order, from a start sequence,
// through an ordered consumer: ephemeral, in memory, with no acks, that
// exists only while someone reads the key.
type feed struct {
	cons jetstream.Consumer       // immutable
	cc   jetstream.ConsumeContext // immutable
	msgs chan *batch              // the consumer's callback sends; the reader receives
	errs chan error               // capacity 1: a failure that ends the feed
	stop chan struct{}            // closed by close
}

// feedBuffer is how many messages a feed holds for its reader.
const feedBuffer = 256

// startFeed starts delivering subject's messages from stream sequence
// start (0: the first one held).
func (b *Broker[K]) startFeed(ctx context.Context, subject string, start uint64) (*feed, error) {
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{subject},
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: 30 * time.Second,
	}
	if start > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	cons, err := b.stream.OrderedConsumer(ctx, cfg)
	if err != nil {
		return nil, err
	}
	f := &feed{cons: cons, msgs: make(chan *batch, feedBuffer), errs: make(chan error, 1), stop: make(chan struct{})}
	f.cc, err = cons.Consume(func(m jetstream.Msg) {
		md, err := m.Metadata()
		var bt *batch
		if err == nil {
			bt, err = parseBatch(md.Sequence.Stream, m.Headers(), m.Data())
		}
		if err != nil {
			f.fail(err)
			return
		}
		select {
		case f.msgs <- bt:
		case <-f.stop:
		}
	}, jetstream.PullMaxMessages(feedBuffer), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, nats.ErrConnectionClosed) {
			f.fail(err)
		}
	}))
	if err != nil {
		b.deleteConsumer(cons)
		return nil, err
	}
	return f, nil
}

func (f *feed) fail(err error) {
	select {
	case f.errs <- err:
	default:
	}
}

// close stops the feed and deletes its consumer on the server.
func (b *Broker[K]) closeFeed(f *feed) {
	if f == nil {
		return
	}
	close(f.stop)
	f.cc.Stop()
	b.deleteConsumer(f.cons)
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
