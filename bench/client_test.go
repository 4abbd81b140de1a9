package bench

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"

	r3sse "github.com/r3labs/sse/v2"
	"github.com/rocketqueue/sse/sseclient"
	gosse "github.com/tmaxmax/go-sse"
	"gopkg.in/cenkalti/backoff.v1"
)

// clientMaxEvent is the largest event the peers' parsers accept here:
// sseclient's default event limit (sseclient.DefaultMaxEventSize, 4 MiB).
// go-sse's default (64 KiB, its bufio.Scanner's) is too small for an event
// with 64 KiB of data; neither limit changes how fast the parsers go.
const clientMaxEvent = sseclient.DefaultMaxEventSize

// clientParsers are the parsers of BenchmarkClientParse, as sub-benchmarks
// "parser=NAME":
//
//	sseclient      sseclient.NewDecoder and Decoder.Next, what sseclient.Stream runs per connection: each event's ID and Data as strings (the data decoded as WHATWG UTF-8)
//	gosse          github.com/tmaxmax/go-sse's sse.Read, the same parsing function its Connection runs (Connection adds only a callback dispatch under an RWMutex): LastEventID, Type and Data as strings
//	r3labs         github.com/r3labs/sse/v2's NewEventStreamReader and ReadEvent: framing only, the raw bytes of each event, in the reader's buffer; splitting them into fields is the Client's unexported processEvent, not measured here, so it does less work than the others
//	r3labs-copy    r3labs's ReadEvent and a copy of each event's raw bytes into a string: not a parser, a reference, the least a caller of the exported reader must add to keep an event past the next ReadEvent (still with no fields)
//	r3labs-client  r3labs's whole Client, the only exported way to get fields: SubscribeRaw over an http.Client whose RoundTripper answers the stream from memory; per event ReadEvent, processEvent (ID and Data copied into []byte), a hand-off from its read goroutine over an unbuffered channel, and the handler; one request per run
var clientParsers = []struct {
	name  string
	parse func(b *testing.B, s *clientStream)
}{
	{"sseclient", parseSSEClient},
	{"gosse", parseGoSSE},
	{"r3labs", parseR3labs},
	{"r3labs-copy", parseR3labsCopy},
	{"r3labs-client", parseR3labsClient},
}

// BenchmarkClientParse measures parsers of text/event-stream on the same
// bytes, read from memory: events of an "id:" line and one "data:" line of
// size bytes. An op is one event: ns/op is per event, B/op and allocs/op
// are per event (with the parser's setup, once per run, spread over them),
// MB/s counts the stream's bytes, and events/s is reported too. Every run
// reads b.N events and fails unless it parsed exactly b.N, each with the
// right data length, and the first and the last with the right ID and data
// (for r3labs and r3labs-copy, which do not split events into fields: the
// right length, and the right bytes for the first and the last). See
// clientParsers for what each parser does.
func BenchmarkClientParse(b *testing.B) {
	for _, size := range []int{50, 64 << 10} {
		s := newClientStream(size)
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			for _, p := range clientParsers {
				b.Run("parser="+p.name, func(b *testing.B) {
					b.SetBytes(int64(s.eventLen))
					b.ReportAllocs()
					p.parse(b, s)
					b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
				})
			}
		})
	}
}

// clientStream is the stream every parser reads: a block of events, the
// first ones of the stream, repeated as often as a run needs. Each event is
//
//	id: 3w5e11264s-NNNNNN
//	data: <size random letters and digits>
//	<blank line>
//
// IDs are of one length, so that every event is eventLen bytes long.
type clientStream struct {
	size     int      // bytes of data per event
	eventLen int      // bytes per event, its blank line included
	block    []byte   // the events of the block, one after another
	ids      []string // the ID of each event of the block
	data     []string // the data of each event of the block
}

// newClientStream builds the stream of events with size bytes of data: a
// block of about 1 MiB (at least 16 events), so that a parser's buffers see
// many events pass by before the block repeats.
func newClientStream(size int) *clientStream {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	rng := rand.New(rand.NewPCG(14, 14))
	n := max(16, (1<<20)/(size+32))
	s := &clientStream{size: size}
	payload := make([]byte, size)
	for i := range n {
		id := "3w5e11264s-" + strconv.Itoa(100000+i)
		for j := range payload {
			payload[j] = alphabet[rng.IntN(len(alphabet))]
		}
		s.ids = append(s.ids, id)
		s.data = append(s.data, string(payload))
		start := len(s.block)
		s.block = fmt.Appendf(s.block, "id: %s\ndata: %s\n\n", id, payload)
		if i == 0 {
			s.eventLen = len(s.block)
		} else if len(s.block)-start != s.eventLen {
			panic("bench: events of different lengths")
		}
	}
	return s
}

// reader returns a reader of the stream's first n events.
func (s *clientStream) reader(n int) io.Reader {
	return &repeatReader{block: s.block, left: int64(n) * int64(s.eventLen)}
}

// event returns the text of event i of the stream, without its blank line.
func (s *clientStream) event(i int) []byte {
	i %= len(s.ids)
	return s.block[i*s.eventLen : (i+1)*s.eventLen-2]
}

// check reports an error unless id and data are those of event i of the
// stream.
func (s *clientStream) check(i int, id, data string) error {
	want := i % len(s.ids)
	if id != s.ids[want] {
		return fmt.Errorf("event %d: ID %q, want %q", i, id, s.ids[want])
	}
	if data != s.data[want] {
		return fmt.Errorf("event %d: %d bytes of data, not the %d sent", i, len(data), len(s.data[want]))
	}
	return nil
}

// checkCount reports an error unless n events were parsed, as b.N.
func checkCount(b *testing.B, n int) {
	b.Helper()
	if n != b.N {
		b.Fatalf("parsed %d events, want %d", n, b.N)
	}
}

// A repeatReader reads a block again and again, left bytes in all.
type repeatReader struct {
	block []byte
	off   int
	left  int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := copy(p, r.block[r.off:])
	r.off += n
	if r.off == len(r.block) {
		r.off = 0
	}
	r.left -= int64(n)
	return n, nil
}

func parseSSEClient(b *testing.B, s *clientStream) {
	last := b.N - 1
	n := 0
	d := sseclient.NewDecoder(s.reader(b.N))
	for {
		ev, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if len(ev.Data) != s.size || n == 0 || n == last {
			if err := s.check(n, ev.ID, ev.Data); err != nil {
				b.Fatal(err)
			}
		}
		n++
	}
	checkCount(b, n)
}

func parseGoSSE(b *testing.B, s *clientStream) {
	last := b.N - 1
	n := 0
	for ev, err := range gosse.Read(s.reader(b.N), &gosse.ReadConfig{MaxEventSize: clientMaxEvent}) {
		if err != nil {
			b.Fatal(err)
		}
		if len(ev.Data) != s.size || n == 0 || n == last {
			if err := s.check(n, ev.LastEventID, ev.Data); err != nil {
				b.Fatal(err)
			}
		}
		n++
	}
	checkCount(b, n)
}

func parseR3labs(b *testing.B, s *clientStream) {
	last := b.N - 1
	n := 0
	rawLen := s.eventLen - 2
	r := r3sse.NewEventStreamReader(s.reader(b.N), clientMaxEvent)
	for {
		raw, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if len(raw) != rawLen || n == 0 || n == last {
			if want := s.event(n); !bytes.Equal(raw, want) {
				b.Fatalf("event %d: got %d bytes %.40q…, want %d bytes %.40q…", n, len(raw), raw, len(want), want)
			}
		}
		n++
	}
	checkCount(b, n)
}

// clientSink keeps the events parseR3labsCopy copies, so that the copy is
// not optimised away.
var clientSink string

func parseR3labsCopy(b *testing.B, s *clientStream) {
	last := b.N - 1
	n := 0
	rawLen := s.eventLen - 2
	r := r3sse.NewEventStreamReader(s.reader(b.N), clientMaxEvent)
	for {
		raw, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		clientSink = string(raw)
		if len(clientSink) != rawLen || n == 0 || n == last {
			if want := s.event(n); clientSink != string(want) {
				b.Fatalf("event %d: got %d bytes %.40q…, want %d bytes %.40q…", n, len(clientSink), clientSink, len(want), want)
			}
		}
		n++
	}
	checkCount(b, n)
}

// roundTripper answers every request with the response its function makes.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func parseR3labsClient(b *testing.B, s *clientStream) {
	last := b.N - 1
	n := 0
	var failed error
	c := r3sse.NewClient("http://bench.invalid/events", r3sse.ClientMaxBufferSize(clientMaxEvent))
	c.ReconnectStrategy = &backoff.StopBackOff{} // one request: the stream's end is the run's
	c.Connection = &http.Client{Transport: roundTripper(func(req *http.Request) (*http.Response, error) {
		return &http.Response{
			Status:     "200 OK",
			StatusCode: http.StatusOK,
			Proto:      "HTTP/1.1",
			ProtoMajor: 1,
			ProtoMinor: 1,
			Header:     http.Header{"Content-Type": {"text/event-stream"}},
			Body:       io.NopCloser(s.reader(b.N)),
			Request:    req,
		}, nil
	})}
	// The handler runs on this goroutine, but failing from it would leave
	// the client's read goroutine blocked: it keeps the first error.
	err := c.SubscribeRaw(func(ev *r3sse.Event) {
		if failed == nil && (len(ev.Data) != s.size || n == 0 || n == last) {
			failed = s.check(n, string(ev.ID), string(ev.Data))
		}
		n++
	})
	if err != nil {
		b.Fatal(err)
	}
	if failed != nil {
		b.Fatal(failed)
	}
	checkCount(b, n)
}
