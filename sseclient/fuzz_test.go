package sseclient_test

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/rocketqueue/sse/sseclient"
	"github.com/rocketqueue/sse/ssetest"
)

// FuzzSameAsSsetest feeds one complete stream to this package's Decoder and
// to ssetest's Reader, two parsers written apart from the same standard,
// and requires the same events, last event ID and reconnection time. The
// Decoder must also give the same result whatever the sizes of its reads.
func FuzzSameAsSsetest(f *testing.F) {
	for _, seed := range []string{
		"",
		"data: x\n\n",
		"\uFEFFevent: a\r\nid: 1\r\ndata: x\r\ndata\r\n\r\n",
		"\uFEFF\uFEFFdata: x\n\n\xEF\xBB\n\n",
		": ping\rretry: 10\rdata:  y\r\r\n",
		"id: a\x00b\nretry: 1a\ndata: \xE2\x82\xFF\n\ndata: tail",
		"id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\n\n",
		"event: gap\nid: e-9\ndata: {\"from\":3,\"to\":9}\n\nevent: close\ndata: \n\n",
		"data:\xF0\x9F\x98\x80\xF0\x9F\x98\n\xED\xA0\x80:\n\n",
		"retry: 99999999999999999999\nretry: 007\n",
		"id: 1\n\nid: a\x01b\ndata: x\n\nid: \t\x7f\n\nid: \xC2\x85\n\n",
		"id: 1:e-5,\nevent: sse.gap\ndata: {\"key\":1,\"from\":3,\"to\":5}\n\nid: 0:.,e-5\nevent: sse.close\ndata: {\"key\":0}\n\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		want, wantErr := reference(in)
		if wantErr != nil {
			t.Skipf("ssetest: %v", wantErr) // a line beyond its limit
		}
		got := decodeAll(strings.NewReader(in), ssetest.DefaultMaxLineSize, len(in)+1)
		if got.Err != nil {
			t.Fatalf("Decoder: %v", got.Err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("stream %q:\nDecoder %#v\nssetest %#v", in, got, want)
		}
		if oneByte := decodeAll(iotest.OneByteReader(strings.NewReader(in)), ssetest.DefaultMaxLineSize, len(in)+1); !reflect.DeepEqual(oneByte, got) {
			t.Fatalf("stream %q, a byte at a time:\n got %#v\nwant %#v", in, oneByte, got)
		}
	})
}

// reference parses a whole stream with ssetest.Reader.
func reference(in string) (parsed, error) {
	r := ssetest.NewReader(strings.NewReader(in))
	var p parsed
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return p, err
		}
		p.Events = append(p.Events, sseclient.Event{ID: e.ID, Name: e.Type, Data: e.Data})
	}
	p.LastID = r.LastEventID()
	p.Retry, p.RetrySet = r.Retry()
	return p, nil
}
