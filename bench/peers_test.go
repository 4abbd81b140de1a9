package bench

import (
	"context"
	"errors"
	"iter"
	"strconv"
	"testing"
	"unsafe"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/cskr/pubsub/v2"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/workload"
	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the benchmarks; neither peer
// needs any goroutine ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// designs are the peers, as sub-benchmarks "design=NAME":
//
//	cskr-pubsub          github.com/cskr/pubsub/v2: one goroutine fed by an unbuffered command channel, blocking sends into subscriber channels of workload.Capacity (1,040)
//	watermill-gochannel  github.com/ThreeDotsLabs/watermill/pubsub/gochannel with BlockPublishUntilSubscriberAck, the only setting that keeps per-producer order
var designs = []workload.Named{
	{Name: "cskr-pubsub", New: newCskr},
	{Name: "watermill-gochannel", New: newWatermill},
}

// BenchmarkW1 to BenchmarkW7 run workload.W1 to workload.W7 through the peers,
// one sub-benchmark per design: see internal/workload for what each
// measures and reports.
func BenchmarkW1(b *testing.B) { workload.Each(b, workload.W1, designs) }
func BenchmarkW2(b *testing.B) { workload.Each(b, workload.W2, designs) }
func BenchmarkW3(b *testing.B) { workload.Each(b, workload.W3, designs) }
func BenchmarkW4(b *testing.B) { workload.Each(b, workload.W4, designs) }
func BenchmarkW5(b *testing.B) { workload.Each(b, workload.W5, designs) }
func BenchmarkW6(b *testing.B) { workload.Each(b, workload.W6, designs) }
func BenchmarkW7(b *testing.B) { workload.Each(b, workload.W7, designs) }

// fanOutDesigns are the peers as fan-out designs, one topic per key and one
// subscription per subscriber, as sub-benchmarks "subs=N/design=NAME":
//
//	cskr-pubsub          Sub per subscriber; Pub hands the event to the library's goroutine, which does a blocking send into each subscriber's channel of workload.Capacity (1,040)
//	watermill-gochannel  Subscribe per subscriber, with BlockPublishUntilSubscriberAck, the only setting that keeps each subscriber's order: Publish returns once every subscriber has acked the message
//
// Both block on a stalled subscriber (F3 reports hol-blocked=1): neither
// has a setting that gives up on one and keeps the order for the others.
var fanOutDesigns = []workload.FanOutNamed{
	{Name: "cskr-pubsub", New: newCskrFanOut},
	{Name: "watermill-gochannel", New: newWatermillFanOut},
}

// BenchmarkF1 to BenchmarkF3 run workload.F1 to workload.F3 through the
// peers, one sub-benchmark per subscriber count and design: see
// internal/workload for what each measures and reports.
func BenchmarkF1(b *testing.B) { workload.EachFanOut(b, workload.F1, fanOutDesigns) }
func BenchmarkF2(b *testing.B) { workload.EachFanOut(b, workload.F2, fanOutDesigns) }
func BenchmarkF3(b *testing.B) { workload.EachFanOut(b, workload.F3, fanOutDesigns) }

// cskrDesign uses one topic per key, made of the key itself. Open is Sub,
// Send is Pub, Close is Close of the topic (which closes its subscriber's
// channel after what was published before), Shutdown is Shutdown. Pub
// hands the message to the library's goroutine, which does a blocking send
// into each subscriber's channel, of capacity workload.Capacity (the
// library's only setting). It has no batch call: SendBatch calls Pub per
// message.
type cskrDesign struct {
	ps *pubsub.PubSub[int, sse.Event]
}

func newCskr(int) workload.Design {
	return &cskrDesign{ps: pubsub.New[int, sse.Event](workload.Capacity)}
}

func (d *cskrDesign) Open(key int) iter.Seq[sse.Event] { return workload.FromChan(d.ps.Sub(key)) }

func (d *cskrDesign) Send(key int, ev sse.Event) error {
	d.ps.Pub(ev, key)
	return nil
}

func (d *cskrDesign) SendBatch(key int, evs []sse.Event) error {
	for _, ev := range evs {
		d.ps.Pub(ev, key)
	}
	return nil
}

func (d *cskrDesign) Close(key int) error {
	d.ps.Close(key)
	return nil
}

func (d *cskrDesign) Shutdown() error {
	d.ps.Shutdown()
	return nil
}

// watermillDesign uses one topic per key, named by the key's decimal form
// (made by the factory: the application would hold its key strings anyway,
// so W6 does not count them), with one subscriber each.
//
// Config: BlockPublishUntilSubscriberAck is on, because without it gochannel
// hands every message to the subscriber from a goroutine of its own, so
// messages can overtake one another; with it, Publish returns once the
// reader has acked each message, so there is one message in flight per
// topic (Publish holds a per-topic lock). OutputChannelBuffer is
// sse.DefaultBuffer: with one message in flight per topic a larger buffer
// would only cost memory. Persistent is off (subscribers subscribe first), the
// logger is watermill.NopLogger.
//
// Messages: an Event becomes message.NewMessage("", payload) (the UUID may
// be empty: watermill uses it only for debugging) with the Data as payload,
// aliased without a copy (gochannel never writes to payloads), and the Name
// in the metadata under "event". The reader acks each message after the
// harness has checked it. Close cancels the subscription's context, which
// closes the subscriber's channel; by then every message has been acked.
// SendBatch is one Publish of all the messages.
type watermillDesign struct {
	g      *gochannel.GoChannel
	topics []string             // topic names of keys, made by the factory
	cancel []context.CancelFunc // cancel[key] ends key's subscription; written by Open before any Send or Close for key
}

func newWatermill(keys int) workload.Design {
	d := &watermillDesign{
		g: gochannel.NewGoChannel(gochannel.Config{
			OutputChannelBuffer:            sse.DefaultBuffer,
			BlockPublishUntilSubscriberAck: true,
		}, watermill.NopLogger{}),
		topics: make([]string, keys),
		cancel: make([]context.CancelFunc, keys),
	}
	for k := range d.topics {
		d.topics[k] = strconv.Itoa(k)
	}
	return d
}

func (d *watermillDesign) Open(key int) iter.Seq[sse.Event] {
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := d.g.Subscribe(ctx, d.topics[key])
	if err != nil {
		cancel()
		panic(err) // only after Shutdown
	}
	d.cancel[key] = cancel
	return func(yield func(sse.Event) bool) {
		for msg := range msgs {
			ok := yield(sse.Event{Name: msg.Metadata.Get("event"), Data: bytesToString(msg.Payload)})
			msg.Ack()
			if !ok {
				return
			}
		}
	}
}

func (d *watermillDesign) message(ev sse.Event) *message.Message {
	msg := message.NewMessage("", stringToBytes(ev.Data))
	msg.Metadata.Set("event", ev.Name)
	return msg
}

func (d *watermillDesign) Send(key int, ev sse.Event) error {
	return d.g.Publish(d.topics[key], d.message(ev))
}

func (d *watermillDesign) SendBatch(key int, evs []sse.Event) error {
	msgs := make([]*message.Message, len(evs))
	for i, ev := range evs {
		msgs[i] = d.message(ev)
	}
	return d.g.Publish(d.topics[key], msgs...)
}

func (d *watermillDesign) Close(key int) error {
	if d.cancel[key] == nil {
		return errors.New("watermill: key not open")
	}
	d.cancel[key]()
	return nil
}

func (d *watermillDesign) Shutdown() error {
	for _, cancel := range d.cancel {
		if cancel != nil {
			cancel()
		}
	}
	return d.g.Close()
}

// cskrFanOut is cskrDesign as a fan-out design: Subscribe is Sub, so a
// key's topic has one channel per subscriber; Publish is Pub, Close is Close
// of the topic, which closes every subscriber's channel after what was
// published before.
type cskrFanOut struct {
	ps *pubsub.PubSub[int, sse.Event]
}

func newCskrFanOut(int) workload.FanOutDesign {
	return &cskrFanOut{ps: pubsub.New[int, sse.Event](workload.Capacity)}
}

func (d *cskrFanOut) Subscribe(key int) iter.Seq2[sse.Event, error] {
	return workload.FromChanFanOut(d.ps.Sub(key))
}

func (d *cskrFanOut) Publish(key int, ev sse.Event) error {
	d.ps.Pub(ev, key)
	return nil
}

func (d *cskrFanOut) Close(key int) error {
	d.ps.Close(key)
	return nil
}

func (d *cskrFanOut) Shutdown() error {
	d.ps.Shutdown()
	return nil
}

// watermillFanOut is watermillDesign as a fan-out design, with the same
// configuration and messages: Subscribe is a Subscribe to the key's topic
// with a context of its own, Publish is Publish, and Close cancels the
// contexts of the key's subscriptions, which closes their channels; by then
// every subscriber has acked every message, since Publish waits for that.
// gochannel hands a message to each subscriber from a goroutine of its own
// and copies it for each.
type watermillFanOut struct {
	watermillDesign
	cancels [][]context.CancelFunc // cancels[key]: its subscriptions'; appended by Subscribe, before any Publish or Close
}

func newWatermillFanOut(keys int) workload.FanOutDesign {
	d := &watermillFanOut{
		watermillDesign: *newWatermill(keys).(*watermillDesign),
		cancels:         make([][]context.CancelFunc, keys),
	}
	return d
}

func (d *watermillFanOut) Subscribe(key int) iter.Seq2[sse.Event, error] {
	ctx, cancel := context.WithCancel(context.Background())
	msgs, err := d.g.Subscribe(ctx, d.topics[key])
	if err != nil {
		cancel()
		panic(err) // only after Shutdown
	}
	d.cancels[key] = append(d.cancels[key], cancel)
	return func(yield func(sse.Event, error) bool) {
		for msg := range msgs {
			ok := yield(sse.Event{Name: msg.Metadata.Get("event"), Data: bytesToString(msg.Payload)}, nil)
			msg.Ack()
			if !ok {
				return
			}
		}
	}
}

func (d *watermillFanOut) Publish(key int, ev sse.Event) error {
	return d.g.Publish(d.topics[key], d.message(ev))
}

func (d *watermillFanOut) Close(key int) error {
	if len(d.cancels[key]) == 0 {
		return errors.New("watermill: key has no subscriber")
	}
	for _, cancel := range d.cancels[key] {
		cancel()
	}
	return nil
}

func (d *watermillFanOut) Shutdown() error {
	for _, cs := range d.cancels {
		for _, cancel := range cs {
			cancel()
		}
	}
	return d.g.Close()
}

// stringToBytes returns s's bytes without copying them; nobody may write to
// them.
func stringToBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// bytesToString returns b as a string without copying it.
func bytesToString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
