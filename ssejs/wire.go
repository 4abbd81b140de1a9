package ssejs

import (
	"encoding/binary"
	"math"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/rocketqueue/sse"
)

// The headers of a stored message (see the package documentation).
const (
	hdrEpoch = "Sse-Epoch" // the key's life, as on the wire
	hdrFirst = "Sse-First" // the ID of the message's first event, or of the next event if it has none
	hdrCount = "Sse-Count" // how many events the body holds
	hdrClose = "Sse-Close" // "1": the key is closed after this message's events
)

// A batch is one stored message, decoded: a run of a key's events. It is
// immutable once parsed, and handed from goroutine to goroutine whole.
type batch struct {
	seq    uint64 // the message's stream sequence
	epoch  string
	first  uint64 // the ID of events[0], or of the next event when there are none
	count  uint64
	closed bool
	msgID  string
	body   []byte // the encoded events
}

// next is the ID of the event after the batch.
func (b *batch) next() uint64 { return b.first + b.count }

// parseBatch decodes a stored message's headers; the events stay encoded.
// The IDs must fit in a uint64: first+count, the next event's, included.
func parseBatch(seq uint64, h nats.Header, body []byte) (*batch, error) {
	b := &batch{seq: seq, epoch: h.Get(hdrEpoch), closed: h.Get(hdrClose) == "1", msgID: h.Get(nats.MsgIdHdr), body: body}
	var err1, err2 error
	b.first, err1 = strconv.ParseUint(h.Get(hdrFirst), 10, 64)
	b.count, err2 = strconv.ParseUint(h.Get(hdrCount), 10, 64)
	if b.epoch == "" || err1 != nil || err2 != nil || b.first == 0 || b.count > math.MaxUint64-b.first {
		return nil, errBadMessage
	}
	return b, nil
}

// events decodes the batch's events from ID from on, appending them to buf.
func (b *batch) events(buf []sse.Event, from uint64) ([]sse.Event, error) {
	p := b.body
	for id := b.first; id < b.next(); id++ {
		var name, data string
		var ok bool
		if name, p, ok = field(p); !ok {
			return buf, errBadMessage
		}
		if data, p, ok = field(p); !ok {
			return buf, errBadMessage
		}
		if id >= from {
			buf = append(buf, sse.Event{ID: id, Name: name, Data: data})
		}
	}
	return buf, nil
}

func field(p []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || uint64(len(p)-k) < n {
		return "", nil, false
	}
	return string(p[k : k+int(n)]), p[k+int(n):], true
}

// appendEvent encodes one event of a message body.
func appendEvent(p []byte, name, data string) []byte {
	p = binary.AppendUvarint(p, uint64(len(name)))
	p = append(p, name...)
	p = binary.AppendUvarint(p, uint64(len(data)))
	return append(p, data...)
}

// encodedSize is what appendEvent adds for an event.
func encodedSize(name, data string) int {
	return uvarintLen(len(name)) + len(name) + uvarintLen(len(data)) + len(data)
}

func uvarintLen(n int) int {
	k := 1
	for n >= 0x80 {
		n >>= 7
		k++
	}
	return k
}
