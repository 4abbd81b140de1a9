package ssetest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/rocketqueue/sse/ssetest"
)

// Each test here covers one group of rules of the HTML Standard's event
// stream parsing, one case per rule or edge.

type events = []ssetest.Event

func TestBOM(t *testing.T) {
	runCases(t, []testCase{
		{"skipped at start", "\uFEFFdata: x\n\n", result{Events: events{{Data: "x"}}}},
		{"skipped only once", "\uFEFF\uFEFFdata: x\n\n", result{}}, // field "\uFEFFdata"
		{"not skipped after start", "data: x\n\uFEFFdata: y\n\n", result{Events: events{{Data: "x"}}}},
		{"not skipped after blank line", "\n\uFEFFdata: y\n\n", result{}},
		{"kept in value", "data: \uFEFFx\n\n", result{Events: events{{Data: "\uFEFFx"}}}},
		{"partial is invalid UTF-8", "\xEF\xBBdata: x\n\n", result{}}, // field "\uFFFDdata"
	})
}

func TestLineEnds(t *testing.T) {
	ab := result{Events: events{{Data: "a"}, {Data: "b"}}}
	runCases(t, []testCase{
		{"LF", "data: a\n\ndata: b\n\n", ab},
		{"CRLF", "data: a\r\n\r\ndata: b\r\n\r\n", ab},
		{"CR", "data: a\r\rdata: b\r\r", ab},
		{"CRLF is one line end", "data: a\r\ndata: b\r\n\r\n", result{Events: events{{Data: "a\nb"}}}},
		{"LF CR is two line ends", "data: a\n\rdata: b\n\n", ab},
		{"CR CRLF", "data: a\r\r\ndata: b\n\n", ab},
		{"mixed", "data: a\rdata: b\ndata: c\r\n\n", result{Events: events{{Data: "a\nb\nc"}}}},
		{"blank lines only", "\n\r\n\r\n", result{}},
	})
}

func TestFields(t *testing.T) {
	x := func(data string) result { return result{Events: events{{Data: data}}} }
	runCases(t, []testCase{
		{"one space removed", "data: x\n\n", x("x")},
		{"no space", "data:x\n\n", x("x")},
		{"only one space removed", "data:  x\n\n", x(" x")},
		{"tab kept", "data:\tx\n\n", x("\tx")},
		{"trailing space kept", "data: x \n\n", x("x ")},
		{"split at first colon", "data: a: b\n\n", x("a: b")},
		{"colon value", "data::\n\n", x(":")},
		{"no colon: empty value", "data\n\n", x("")},
		{"space before colon is in name", "data : x\n\n", result{}},
		{"names are case-sensitive", "Data: x\n\n", result{}},
		{"unknown fields ignored", "foo: bar\ndata: x\nbaz\nretryx: 1\n\n", x("x")},
		{"comment", ": ping\n\n", result{Comments: []string{" ping"}}},
		{"empty comment", ":\n", result{Comments: []string{""}}},
		{"comment inside event", "data: a\n:c\ndata: b\n\n", result{
			Events:   events{{Data: "a\nb"}},
			Comments: []string{"c"},
		}},
	})
}

func TestEventType(t *testing.T) {
	runCases(t, []testCase{
		{"set", "event: add\ndata: x\n\n", result{Events: events{{Type: "add", Data: "x"}}}},
		{"last wins", "event: a\nevent: b\ndata: x\n\n", result{Events: events{{Type: "b", Data: "x"}}}},
		{"explicit message kept", "event: message\ndata: x\n\n", result{Events: events{{Type: "message", Data: "x"}}}},
		{"empty value", "event: a\nevent:\ndata: x\n\n", result{Events: events{{Data: "x"}}}},
		{"no colon resets", "event: a\nevent\ndata: x\n\n", result{Events: events{{Data: "x"}}}},
		{"reset after dispatch", "event: a\ndata: 1\n\ndata: 2\n\n", result{Events: events{{Type: "a", Data: "1"}, {Data: "2"}}}},
		{"reset by blank line without data", "event: a\n\ndata: x\n\n", result{Events: events{{Data: "x"}}}},
	})
}

func TestData(t *testing.T) {
	x := func(data string) result { return result{Events: events{{Data: data}}} }
	runCases(t, []testCase{
		{"joined by LF", "data: a\ndata: b\n\n", x("a\nb")},
		{"only last LF removed", "data: a\ndata\n\n", x("a\n")},
		{"two empty fields", "data\ndata\n\n", x("\n")},
		{"empty field dispatches", "data:\n\n", x("")},
		{"NUL kept", "data: a\x00b\n\n", x("a\x00b")},
		{"no data no dispatch", "event: a\nfoo\n\n", result{}},
		{"empty stream", "", result{}},
	})
}

func TestID(t *testing.T) {
	runCases(t, []testCase{
		{"set", "id: 1\ndata: a\n\n", result{Events: events{{ID: "1", Data: "a"}}, LastEventID: "1"}},
		{"after data in block", "data: a\nid: 2\n\n", result{Events: events{{ID: "2", Data: "a"}}, LastEventID: "2"}},
		{"not trimmed", "id:  a \ndata: x\n\n", result{Events: events{{ID: " a ", Data: "x"}}, LastEventID: " a "}},
		{"persists across events", "id: 1\ndata: a\n\ndata: b\n\n", result{
			Events:      events{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}},
			LastEventID: "1",
		}},
		{"with NUL ignored", "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n", result{
			Events:      events{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}},
			LastEventID: "1",
		}},
		{"empty resets", "id: 1\ndata: a\n\nid:\ndata: b\n\n", result{
			Events: events{{ID: "1", Data: "a"}, {Data: "b"}},
		}},
		{"no colon resets", "id: 1\ndata: a\n\nid\ndata: b\n\n", result{
			Events: events{{ID: "1", Data: "a"}, {Data: "b"}},
		}},
		{"committed by blank line without data", "id: 7\n\n", result{LastEventID: "7"}},
		{"not committed without blank line", "id: 1\n\nid: 2\ndata: x\n", result{LastEventID: "1"}},
	})
}

// TestIDControlBytes: an id field holding a control byte that Go's
// net/http refuses in a header (every C0 control but CR and LF, which end
// lines, and DEL) is ignored, as one holding NUL, in agreement with
// sseclient; other bytes, C1 controls in UTF-8 included, are kept.
func TestIDControlBytes(t *testing.T) {
	var cases []testCase
	for b := range byte(0x80) {
		if b == '\n' || b == '\r' || (b >= 0x20 && b < 0x7f) {
			continue
		}
		for _, id := range []string{"2" + string(b) + "3", string(b), "2" + string(b)} {
			cases = append(cases, testCase{fmt.Sprintf("%q", id), "id: 1\ndata: a\n\nid: " + id + "\ndata: b\n\n", result{
				Events:      events{{ID: "1", Data: "a"}, {ID: "1", Data: "b"}},
				LastEventID: "1",
			}})
		}
	}
	cases = append(cases, testCase{"before any ID", "id: a\x01b\ndata: a\n\n", result{Events: events{{Data: "a"}}}})
	kept := " 2\u0085\u00a0\uFFFD~ "
	cases = append(cases, testCase{"others kept", "id: 1\nid: " + kept + "\ndata: a\n\n", result{
		Events:      events{{ID: kept, Data: "a"}},
		LastEventID: kept,
	}})
	runCases(t, cases)
}

func TestRetry(t *testing.T) {
	set := func(d time.Duration) result { return result{Retry: d, RetrySet: true} }
	runCases(t, []testCase{
		{"digits", "retry: 5000\n", set(5 * time.Second)},
		{"zero", "retry: 0\n", set(0)},
		{"leading zeros are decimal", "retry: 0042\n", set(42 * time.Millisecond)},
		{"largest duration", "retry: 9223372036854\n", set(9223372036854 * time.Millisecond)},
		{"too large ignored", "retry: 9223372036855\n", result{}},
		{"does not dispatch", "retry: 10\n\n", set(10 * time.Millisecond)},
		{"later replaces", "retry: 100\nretry: 200\n", set(200 * time.Millisecond)},
		{"invalid keeps previous", "retry: 100\nretry: x\n", set(100 * time.Millisecond)},
		{"letter ignored", "retry: 1a\n", result{}},
		{"minus ignored", "retry: -1\n", result{}},
		{"plus ignored", "retry: +1\n", result{}},
		{"decimal point ignored", "retry: 1.5\n", result{}},
		{"second space ignored", "retry:  5\n", result{}},
		{"trailing space ignored", "retry: 5 \n", result{}},
		{"non-ASCII digit ignored", "retry: \u0663\n", result{}},
		{"empty ignored", "retry:\n", result{}},
		{"no colon ignored", "retry\n", result{}},
	})
}

func TestEndOfStream(t *testing.T) {
	a := result{Events: events{{Data: "a"}}}
	runCases(t, []testCase{
		{"event without blank line dropped", "data: a\n\ndata: b\n", a},
		{"event ending in CR dropped", "data: a\n\ndata: b\r", a},
		{"unterminated line dropped", "data: a\n\ndata: b", a},
		{"unterminated line not processed", "retry: 5", result{}},
		{"unterminated CRLF blank line", "data: a\r\n\r", a},
	})
}

func TestUTF8(t *testing.T) {
	x := func(data string) result { return result{Events: events{{Data: data}}} }
	runCases(t, []testCase{
		{"valid multibyte", "data: héllo €𝄞\n\n", x("héllo €𝄞")},
		{"invalid byte", "data: a\xFFb\n\n", x("a\uFFFDb")},
		{"truncated sequence is one U+FFFD", "data: a\xE2\x82b\n\n", x("a\uFFFDb")},
		{"truncated at line end", "data: a\xF0\x9F\x98\n\n", x("a\uFFFD")},
		{"truncated before colon", "data\xE2\x82: x\n\n", result{}},
		{"lone continuation bytes", "data: \x80\xBF\n\n", x("\uFFFD\uFFFD")},
		{"overlong two bytes", "data: \xC0\xAF\n\n", x("\uFFFD\uFFFD")},
		{"overlong three bytes", "data: \xE0\x80\xAF\n\n", x("\uFFFD\uFFFD\uFFFD")},
		{"surrogate", "data: \xED\xA0\x80\n\n", x("\uFFFD\uFFFD\uFFFD")},
		{"above U+10FFFF", "data: \xF4\x90\x80\x80\n\n", x("\uFFFD\uFFFD\uFFFD\uFFFD")},
		{"in field name", "\xFFdata: x\n\n", result{}},
		{"in comment", ":\xFF\n", result{Comments: []string{"\uFFFD"}}},
		{"in id", "id: \xFF\ndata: x\n\n", result{Events: events{{ID: "\uFFFD", Data: "x"}}, LastEventID: "\uFFFD"}},
	})
}
