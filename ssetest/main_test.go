package ssetest_test

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"go.uber.org/goleak"

	"github.com/rocketqueue/sse/ssetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// result is everything a Reader reports about a whole stream.
type result struct {
	Events      []ssetest.Event
	Comments    []string
	Retry       time.Duration
	RetrySet    bool
	LastEventID string
	Err         error // nil at a clean end
}

// parse reads r to its end with a Reader with default settings.
func parse(r io.Reader) result {
	var res result
	sr := ssetest.NewReader(r)
	sr.OnComment = func(text string) { res.Comments = append(res.Comments, text) }
	for {
		ev, err := sr.Next()
		if err != nil {
			if err != io.EOF {
				res.Err = err
			}
			break
		}
		res.Events = append(res.Events, ev)
	}
	res.Retry, res.RetrySet = sr.Retry()
	res.LastEventID = sr.LastEventID()
	return res
}

// readers deliver a stream in differently sized reads.
var readers = []struct {
	name string
	wrap func(string) io.Reader
}{
	{"whole", func(s string) io.Reader { return strings.NewReader(s) }},
	{"OneByteReader", func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) }},
	{"HalfReader", func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) }},
	{"DataErrReader", func(s string) io.Reader { return iotest.DataErrReader(strings.NewReader(s)) }},
	{"DataErrReader(OneByteReader)", func(s string) io.Reader {
		return iotest.DataErrReader(iotest.OneByteReader(strings.NewReader(s)))
	}},
}

type testCase struct {
	name string
	in   string
	want result
}

// runCases checks each case with every reader in readers and with the input
// split into two reads at every possible position, which puts a read
// boundary between the CR and LF of every CRLF.
func runCases(t *testing.T, cases []testCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, rd := range readers {
				if got := parse(rd.wrap(tc.in)); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("%s: parse(%q)\n got %#v\nwant %#v", rd.name, tc.in, got, tc.want)
				}
			}
			for i := 1; i < len(tc.in); i++ {
				r := io.MultiReader(strings.NewReader(tc.in[:i]), strings.NewReader(tc.in[i:]))
				if got := parse(r); !reflect.DeepEqual(got, tc.want) {
					t.Errorf("split %q|%q:\n got %#v\nwant %#v", tc.in[:i], tc.in[i:], got, tc.want)
				}
			}
		})
	}
}
