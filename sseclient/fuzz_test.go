package sseclient_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
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

// FuzzSeveralKeys feeds one stream to Stream, then ends it with 204, and
// requires what ssetest's Reader parses of it, read by the rules of a
// stream of several keys (docs/protocol.md, "Several keys on one
// connection"): "close", or the terminate data, ends the sequence; other
// events named under "sse." than "sse.gap" and "sse.close" are skipped;
// every other event is yielded, with its ID. Each event's Key must be the
// number before the first colon of its ID, of 1 to 9 digits; a Gap that
// reads must come from a gap event of valid JSON, from ≤ to.
func FuzzSeveralKeys(f *testing.F) {
	for _, seed := range []string{
		"",
		"id: 1:e-5,\nevent: sse.gap\ndata: {\"key\":1,\"from\":3,\"to\":5}\n\nid: 0:.,e-5\nevent: sse.close\ndata: {\"key\":0}\n\n",
		"id: 12:~c0ffee:12_e-3,4_.\ndata: x\n\nid: 4:~c0ffee:12_e-3,4_.\nevent: sse.close\ndata: {\"key\":4}\n\nevent: close\ndata\n\ndata: after\n\n",
		"id: 0:!,e-1\nevent: sse.gap\ndata: {\"key\":0,\"from\":1,\"to\":18446744073709551615}\n\n",
		"id: 1234567890:x\ndata: a\n\nid: :x\ndata: b\n\nid: 01:x\nevent: sse.future\ndata: c\n\ndata: ---terminate---\n\n",
		"event: sse.gap\ndata: {\"FROM\":2,\"to\":1}\n\nevent: gap\ndata: {\"from\":1,\"to\":2}x\n\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		want, err := severalKeys(in)
		if err != nil {
			t.Skipf("ssetest: %v", err) // a line beyond its limit
		}
		var n atomic.Int32
		client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			if n.Add(1) == 1 {
				return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"text/event-stream"}},
					Body: io.NopCloser(strings.NewReader(in)), Request: r}, nil
			}
			return &http.Response{StatusCode: http.StatusNoContent, Header: http.Header{}, Body: http.NoBody, Request: r}, nil
		})}
		ctx, cancel := context.WithTimeout(context.Background(), patience)
		defer cancel()
		var got []sseclient.Event
		for ev, err := range sseclient.Events(ctx, "http://fuzz.invalid/", sseclient.WithHTTPClient(client),
			sseclient.WithBackoff(0, 0), sseclient.WithMaxServerDelay(0), sseclient.WithLimits(len(in)+1, len(in)+1)) {
			if err != nil {
				t.Fatalf("stream %q: %v", in, err)
			}
			got = append(got, ev)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("stream %q:\n got %#v\nwant %#v", in, got, want)
		}
		for _, ev := range got {
			i, ok := ev.Key()
			index, _, found := strings.Cut(ev.ID, ":")
			j, err := strconv.Atoi(index)
			if wantOK := found && len(index) >= 1 && len(index) <= 9 && strings.Trim(index, "0123456789") == "" && err == nil; ok != wantOK || ok && i != j {
				t.Fatalf("Key() of ID %q = %d, %v", ev.ID, i, ok)
			}
			if from, to, ok := ev.Gap(); ok && (from > to || !json.Valid([]byte(ev.Data)) || ev.Name != sseclient.EventGap && ev.Name != sseclient.EventKeyGap) {
				t.Fatalf("Gap() of %+v = %d, %d, true", ev, from, to)
			}
		}
	})
}

// severalKeys is what Stream yields of a stream that ends, by the rules of
// this library's protocol, read with ssetest.Reader.
func severalKeys(in string) ([]sseclient.Event, error) {
	r := ssetest.NewReader(strings.NewReader(in))
	var events []sseclient.Event
	for {
		e, err := r.Next()
		if err == io.EOF {
			return events, nil
		}
		if err != nil {
			return nil, err
		}
		switch {
		case e.Type == "close", e.Type == "" && e.Data == sseclient.TerminateData:
			return events, nil
		case strings.HasPrefix(e.Type, "sse.") && e.Type != "sse.gap" && e.Type != "sse.close":
			continue
		}
		events = append(events, sseclient.Event{ID: e.ID, Name: e.Type, Data: e.Data})
	}
}

// roundTrip is an http.RoundTripper of a function.
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
