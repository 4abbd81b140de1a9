package workload

import (
	"fmt"
	"sync/atomic"

	"github.com/rocketqueue/sse"
)

// Messages are [sse.Event] values built from precomputed strings, so that the
// harness allocates nothing per message. Producer p's i-th message to a key
// is
//
//	Event{Name: tags[p][(i/dataLen)%laps], Data: data[i%dataLen]}
//
// so the pair (Name, Data) repeats only every dataLen*laps = 65,536 messages
// of one producer to one key. A reader knows which message each producer must
// send next, so a swap, a loss or a duplicate shows at the first message out
// of place, and the exact count per producer, compared at the end, catches
// any loss or surplus that a period could hide.
const (
	maxProducers = 9    // 8 producers, plus W7's stall producer
	dataLen      = 1024 // distinct Data strings; a power of two
	laps         = 64   // distinct Name strings per producer
)

var (
	// data holds the payloads: JSON-like text of 40 bytes or so, as a
	// progress report would be.
	data [dataLen]string
	// tags[p] holds producer p's names, "p<p>.<lap>": byte 1 is the
	// producer's digit, which is how a reader finds it.
	tags [maxProducers][laps]string
)

func init() {
	for i := range data {
		data[i] = fmt.Sprintf(`{"step":%4d,"text":"progress report"}`, i)
	}
	for p := range tags {
		for l := range tags[p] {
			tags[p][l] = fmt.Sprintf("p%d.%02d", p, l)
		}
	}
}

// message returns producer p's i-th message to a key.
func message(p, i int) sse.Event {
	return sse.Event{Name: tags[p][(i/dataLen)%laps], Data: data[i%dataLen]}
}

// A reader checks the messages of one key as the key's reader goroutine
// receives them, and counts them per producer.
type reader struct {
	next [maxProducers]int // reader goroutine: index of each producer's next message
	n    int               // reader goroutine: messages received
	err  error             // reader goroutine: the first message out of place; read after the reader ended

	// seen publishes n every 16 messages, and n+1 when the key has ended,
	// so that W7's watchdog can tell a stalled workload from a slow one.
	seen atomic.Int64

	want [maxProducers]int // set before the reader starts, then read-only: messages each producer sends to this key

	_ [64]byte // keeps the hot fields of neighbouring readers off one cache line
}

// check takes the next message received for the reader's key. With
// -lean it only counts it: what a hand-written reader would do, so that
// the harness's own per-message work does not shrink the ratios between
// designs; verify then compares the total only.
func (r *reader) check(ev sse.Event) {
	r.n++
	if r.n&15 == 0 {
		r.seen.Store(int64(r.n))
	}
	if *lean {
		return
	}
	if len(ev.Name) < 2 || ev.Name[1]-'0' >= maxProducers {
		r.fail(ev, -1, 0)
		return
	}
	p := int(ev.Name[1] - '0')
	i := r.next[p]
	r.next[p] = i + 1
	if ev.Data != data[i%dataLen] || ev.Name != tags[p][(i/dataLen)%laps] {
		r.fail(ev, p, i)
	}
}

// fail records the first message out of place.
func (r *reader) fail(ev sse.Event, p, i int) {
	if r.err != nil {
		return
	}
	if p < 0 {
		r.err = fmt.Errorf("message %d has name %q, from no producer", r.n, ev.Name)
		return
	}
	want := message(p, i)
	r.err = fmt.Errorf("message %d: want producer %d's message %d (%q, %q), got (%q, %q): a swap, loss or duplicate",
		r.n, p, i, want.Name, want.Data, ev.Name, ev.Data)
}

// lose records an error that a fan-out subscriber's reader loop yielded:
// the subscriber lost events.
func (r *reader) lose(err error) {
	if r.err == nil {
		r.err = fmt.Errorf("after message %d: %w", r.n, err)
	}
}

// end records that the key's reader loop has ended.
func (r *reader) end() { r.seen.Store(int64(r.n) + 1) }

// verify returns an error unless every message arrived exactly once and in
// per-producer order. Call it after the reader goroutine has ended.
func (r *reader) verify(key int) error {
	if r.err != nil {
		return fmt.Errorf("key %d: %w", key, r.err)
	}
	if *lean {
		want := 0
		for p := range r.want {
			want += r.want[p]
		}
		if r.n != want {
			return fmt.Errorf("key %d: received %d messages, %d were sent", key, r.n, want)
		}
		return nil
	}
	for p := range r.next {
		if r.next[p] != r.want[p] {
			return fmt.Errorf("key %d: received %d messages from producer %d, which sent %d", key, r.next[p], p, r.want[p])
		}
	}
	return nil
}

// reset prepares r for a new run.
func (r *reader) reset() {
	r.next, r.want = [maxProducers]int{}, [maxProducers]int{}
	r.n, r.err = 0, nil
	r.seen.Store(0)
}
