package sseclient_test

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/rocketqueue/sse/sseclient"
)

// parsed is everything a Decoder reports about a whole stream.
type parsed struct {
	Events   []sseclient.Event
	LastID   string
	Retry    time.Duration
	RetrySet bool
	Err      error // nil at a clean end
}

// decodeAll reads r to its end with a Decoder with the given limits.
func decodeAll(r io.Reader, maxLine, maxEvent int) parsed {
	d := sseclient.NewDecoder(r)
	d.MaxLineSize, d.MaxEventSize = maxLine, maxEvent
	var p parsed
	for {
		ev, err := d.Next()
		if err != nil {
			if err != io.EOF {
				p.Err = err
			}
			break
		}
		p.Events = append(p.Events, ev)
	}
	p.LastID = d.LastEventID()
	p.Retry, p.RetrySet = d.Retry()
	return p
}

// ev is shorthand for an expected event.
func ev(id, name, data string) sseclient.Event {
	return sseclient.Event{ID: id, Name: name, Data: data}
}

// splits deliver a stream in differently sized reads.
var splits = []struct {
	name string
	wrap func(string) io.Reader
}{
	{"whole", func(s string) io.Reader { return strings.NewReader(s) }},
	{"bytes", func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
	{"halves", func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) }},
	{"data+EOF", func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) }},
}

type ruleCase struct {
	name              string
	in                string
	maxLine, maxEvent int
	want              parsed
}

// checkRules checks each case with every reader of splits and with the
// input cut into two reads at every position (so between the CR and LF of
// each CRLF, and inside the byte order mark).
func checkRules(t *testing.T, cases []ruleCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, s := range splits {
				if got := decodeAll(s.wrap(tc.in), tc.maxLine, tc.maxEvent); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s %q:\n got %#v\nwant %#v", s.name, tc.in, got, tc.want)
				}
			}
			for i := 1; i < len(tc.in); i++ {
				r := io.MultiReader(strings.NewReader(tc.in[:i]), strings.NewReader(tc.in[i:]))
				if got := decodeAll(r, tc.maxLine, tc.maxEvent); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%q|%q:\n got %#v\nwant %#v", tc.in[:i], tc.in[i:], got, tc.want)
				}
			}
		})
	}
}

func TestDecoderLines(t *testing.T) {
	abc := []sseclient.Event{ev("", "", "a"), ev("", "", "b"), ev("", "", "c")}
	checkRules(t, []ruleCase{
		{name: "empty", in: ""},
		{name: "LF", in: "data: a\n\ndata: b\n\ndata: c\n\n", want: parsed{Events: abc}},
		{name: "CR", in: "data: a\r\rdata: b\r\rdata: c\r\r", want: parsed{Events: abc}},
		{name: "CRLF", in: "data: a\r\n\r\ndata: b\r\n\r\ndata: c\r\n\r\n", want: parsed{Events: abc}},
		{name: "mixed", in: "data: a\r\n\ndata: b\r\rdata: c\n\r\n", want: parsed{Events: abc}},
		// CR then LF is one line end; LF then CR is two.
		{name: "LF CR", in: "data: a\n\rdata: b\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a"), ev("", "", "b")}}},
		{name: "CR CR LF", in: "data: a\r\r\ndata: b\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a"), ev("", "", "b")}}},
		{name: "BOM skipped", in: "\uFEFFdata: a\n\n", want: parsed{Events: abc[:1]}},
		{name: "BOM once", in: "\uFEFF\uFEFFdata: a\n\ndata: b\n\n", want: parsed{Events: abc[1:2]}},
		{name: "BOM only at the start", in: "data: a\n\n\uFEFFdata: b\n\n", want: parsed{Events: abc[:1]}},
		{name: "BOM's start only", in: "\xEF\xBBdata: a\n\n", want: parsed{}},
		{name: "BOM's start at the end", in: "\xEF\xBB", want: parsed{}},
		{name: "BOM alone", in: "\uFEFF", want: parsed{}},
		{name: "BOM then blank lines", in: "\uFEFF\n\ndata: a\n\n", want: parsed{Events: abc[:1]}},
	})
}

func TestDecoderFields(t *testing.T) {
	checkRules(t, []ruleCase{
		{name: "one space removed", in: "data:a\n\ndata: a\n\ndata:  a\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a"), ev("", "", "a"), ev("", "", " a")}}},
		{name: "tab kept", in: "data:\ta\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "\ta")}}},
		{name: "data lines joined", in: "data: a\ndata: b\ndata\ndata:\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a\nb\n\n")}}},
		{name: "empty data", in: "data\n\ndata:\n\ndata: \n\n", want: parsed{Events: []sseclient.Event{ev("", "", ""), ev("", "", ""), ev("", "", "")}}},
		{name: "colon in value", in: "data: a: b:c\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a: b:c")}}},
		{name: "comments", in: ": ping\n:\ndata: a\n: more\n\n:x\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a")}}},
		{name: "unknown fields", in: "foo: bar\nData: x\ndata : y\n data: z\ndata: a\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a")}}},
		{name: "no data, no event", in: "event: a\n\nid: 1\n\n", want: parsed{LastID: "1"}},
		{name: "event name", in: "event: progress\ndata: 1\n\nevent: log\nevent: progress\ndata: 2\n\n", want: parsed{Events: []sseclient.Event{ev("", "progress", "1"), ev("", "progress", "2")}}},
		{name: "event name reset", in: "event: a\ndata: 1\n\ndata: 2\n\nevent: b\n\ndata: 3\n\n", want: parsed{Events: []sseclient.Event{ev("", "a", "1"), ev("", "", "2"), ev("", "", "3")}}},
		{name: "explicit message", in: "event: message\ndata: 1\n\nevent\ndata: 2\n\n", want: parsed{Events: []sseclient.Event{ev("", "message", "1"), ev("", "", "2")}}},
		{name: "NUL in data", in: "data: a\x00b\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a\x00b")}}},
		{name: "invalid UTF-8", in: "data: \xFF\xE2\x82x\xF0\x9F\x98\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "\uFFFD\uFFFDx\uFFFD")}}},
		{name: "invalid UTF-8 in names and IDs", in: "event: \xC0\xAF\nid: \xED\xA0\x80\ndata: \xEF\xBF\xBD\n\n", want: parsed{
			Events: []sseclient.Event{ev("\uFFFD\uFFFD\uFFFD", "\uFFFD\uFFFD", "\uFFFD")}, LastID: "\uFFFD\uFFFD\uFFFD"}},
		{name: "unterminated event dropped", in: "data: a\n\ndata: b\n", want: parsed{Events: []sseclient.Event{ev("", "", "a")}}},
		{name: "unterminated line dropped", in: "data: a\n\ndata: b", want: parsed{Events: []sseclient.Event{ev("", "", "a")}}},
		{name: "unterminated blank line", in: "data: a\n", want: parsed{}},
	})
}

func TestDecoderIDs(t *testing.T) {
	checkRules(t, []ruleCase{
		{name: "kept by later events", in: "id: 1\ndata: a\n\ndata: b\n\n", want: parsed{Events: []sseclient.Event{ev("1", "", "a"), ev("1", "", "b")}, LastID: "1"}},
		{name: "set before dispatch", in: "data: a\nid: 1\n\n", want: parsed{Events: []sseclient.Event{ev("1", "", "a")}, LastID: "1"}},
		{name: "last one wins", in: "id: 1\nid: 2\ndata: a\n\n", want: parsed{Events: []sseclient.Event{ev("2", "", "a")}, LastID: "2"}},
		{name: "NUL ignored", in: "id: 1\ndata: a\n\nid: 2\x00\ndata: b\n\n", want: parsed{Events: []sseclient.Event{ev("1", "", "a"), ev("1", "", "b")}, LastID: "1"}},
		{name: "empty resets", in: "id: 1\ndata: a\n\nid\ndata: b\n\n", want: parsed{Events: []sseclient.Event{ev("1", "", "a"), ev("", "", "b")}}},
		{name: "without data", in: "id: 7\n\n", want: parsed{LastID: "7"}},
		{name: "counts at a blank line", in: "id: 1\ndata: a\n\nid: 2\ndata: b\n", want: parsed{Events: []sseclient.Event{ev("1", "", "a")}, LastID: "1"}},
		{name: "opaque", in: "id:  3w5e11264s-42 \ndata: a\n\n", want: parsed{Events: []sseclient.Event{ev(" 3w5e11264s-42 ", "", "a")}, LastID: " 3w5e11264s-42 "}},
	})
}

// controlBytes are the bytes that Go's net/http refuses in a header value
// and that an SSE line can hold: every C0 control but CR and LF (NUL
// included), and DEL.
func controlBytes() []byte {
	var bs []byte
	for b := range byte(0x20) {
		if b != '\n' && b != '\r' {
			bs = append(bs, b)
		}
	}
	return append(bs, 0x7f)
}

// TestDecoderControlBytesInID: an id field holding a control byte is
// ignored, as one holding NUL, since a client could not send it back in
// Last-Event-ID; other bytes, C1 controls in UTF-8 included, are kept.
func TestDecoderControlBytesInID(t *testing.T) {
	var cases []ruleCase
	for _, b := range controlBytes() {
		for _, id := range []string{"2" + string(b) + "3", string(b), "2" + string(b)} {
			cases = append(cases, ruleCase{name: fmt.Sprintf("%q", id), in: "id: 1\ndata: a\n\nid: " + id + "\ndata: b\n\n",
				want: parsed{Events: []sseclient.Event{ev("1", "", "a"), ev("1", "", "b")}, LastID: "1"}})
		}
	}
	cases = append(cases, ruleCase{name: "before any ID", in: "id: a\x01b\ndata: a\n\n", want: parsed{Events: []sseclient.Event{ev("", "", "a")}}})
	kept := " 2\u0085\u00a0\uFFFD~ "
	cases = append(cases, ruleCase{name: "others kept", in: "id: 1\nid: " + kept + "\ndata: a\n\n",
		want: parsed{Events: []sseclient.Event{ev(kept, "", "a")}, LastID: kept}})
	checkRules(t, cases)
}

func TestDecoderRetry(t *testing.T) {
	checkRules(t, []ruleCase{
		{name: "digits", in: "retry: 1500\n", want: parsed{Retry: 1500 * time.Millisecond, RetrySet: true}},
		{name: "zero", in: "retry: 0\n", want: parsed{RetrySet: true}},
		{name: "no blank line needed", in: "retry: 10\ndata: a\n", want: parsed{Retry: 10 * time.Millisecond, RetrySet: true}},
		{name: "not digits", in: "retry: 15a\nretry: -1\nretry: 1.5\nretry: +1\nretry:  1\nretry:\nretry\n", want: parsed{}},
		{name: "too large", in: "retry: 99999999999999999999\n", want: parsed{}},
		{name: "last valid wins", in: "retry: 10\nretry: x\nretry: 20\nretry: 2x\n", want: parsed{Retry: 20 * time.Millisecond, RetrySet: true}},
		{name: "unterminated", in: "retry: 10", want: parsed{}},
	})
}

func TestDecoderLimits(t *testing.T) {
	checkRules(t, []ruleCase{
		{name: "line at the limit", in: "data: 1234\n\n", maxLine: 10, want: parsed{Events: []sseclient.Event{ev("", "", "1234")}}},
		{name: "line over the limit", in: "data: a\n\ndata: 12345\n\n", maxLine: 10, want: parsed{Events: []sseclient.Event{ev("", "", "a")}, Err: sseclient.ErrLineTooLong}},
		{name: "unterminated line over the limit", in: "data: 12345", maxLine: 10, want: parsed{Err: sseclient.ErrLineTooLong}},
		{name: "comment over the limit", in: ":12345678901\n", maxLine: 10, want: parsed{Err: sseclient.ErrLineTooLong}},
		{name: "event at the limit", in: "data: 12\ndata: 3\n\n", maxEvent: 5, want: parsed{Events: []sseclient.Event{ev("", "", "12\n3")}}},
		{name: "event over the limit", in: "data: 12\ndata: 34\n\n", maxEvent: 5, want: parsed{Err: sseclient.ErrEventTooLong}},
	})
}

// TestDecoderLongLines reads lines far longer than the first buffer.
func TestDecoderLongLines(t *testing.T) {
	big := strings.Repeat("x", 300<<10)
	in := "id: 1\ndata: " + big + "\ndata: " + big[:1000] + "\r\n\r\ndata: a\r\r"
	want := []sseclient.Event{ev("1", "", big+"\n"+big[:1000]), ev("1", "", "a")}
	for _, s := range splits[:3] {
		if got := decodeAll(s.wrap(in), 0, 0); !reflect.DeepEqual(got.Events, want) || got.Err != nil {
			t.Errorf("%s: %d events, error %v", s.name, len(got.Events), got.Err)
		}
	}
}

// TestDecoderReadError: a failed read ends the stream with its error,
// dropping the event it cut, and the error sticks.
func TestDecoderReadError(t *testing.T) {
	boom := errors.New("boom")
	d := sseclient.NewDecoder(io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom)))
	if e, err := d.Next(); err != nil || e.Data != "a" {
		t.Fatalf("got %+v, %v", e, err)
	}
	for range 2 {
		if _, err := d.Next(); err != boom {
			t.Fatalf("got %v, want %v", err, boom)
		}
	}
}

// TestDecoderAllocations: a Decoder allocates the data of each event, and
// an ID only when it changes; repeated event names cost nothing.
func TestDecoderAllocations(t *testing.T) {
	cases := []struct {
		name  string
		event func(i int) string
		want  float64
	}{
		{"same ID", func(int) string { return "event: progress\ndata: 42\n\n" }, 1},
		{"new IDs", func(i int) string { return "id: e-" + strings.Repeat("1", i%7+1) + "\nevent: progress\ndata: 42\n\n" }, 2},
		{"two names", func(i int) string { return "id: 1\nevent: " + []string{"progress", "log"}[i%2] + "\ndata: 42\n\n" }, 1},
		{"64 KiB", func(int) string { return "id: 1\ndata: " + strings.Repeat("x", 64<<10) + "\n\n" }, 1},
	}
	for _, tc := range cases {
		var sb strings.Builder
		for i := range 300 {
			sb.WriteString(tc.event(i))
		}
		d := sseclient.NewDecoder(strings.NewReader(sb.String()))
		if _, err := d.Next(); err != nil { // the buffers
			t.Fatal(err)
		}
		got := testing.AllocsPerRun(200, func() {
			if _, err := d.Next(); err != nil {
				t.Fatal(err)
			}
		})
		if got > tc.want {
			t.Errorf("%s: %v allocations per event, want %v", tc.name, got, tc.want)
		}
	}
}
