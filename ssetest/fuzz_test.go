package ssetest_test

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"
)

// FuzzReader checks that the Reader never panics, that how the stream is
// split into reads does not change the result, and that everything it
// reports is valid UTF-8 with no line breaks where none can be.
func FuzzReader(f *testing.F) {
	for _, seed := range []string{
		"",
		"data: x\n\n",
		"\uFEFFevent: a\r\nid: 1\r\ndata: x\r\ndata\r\n\r\n",
		": ping\rretry: 10\rdata:  y\r\r\n",
		"id: a\x00b\nretry: 1a\ndata: \xE2\x82\xFF\n\ndata: tail",
		"id: 1\n\nid: a\x01b\ndata: x\n\nid: \t\x7f\n\n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		want := parse(strings.NewReader(in))
		if got := parse(iotest.OneByteReader(strings.NewReader(in))); !reflect.DeepEqual(got, want) {
			t.Fatalf("byte at a time:\n got %#v\nwant %#v", got, want)
		}
		half := len(in) / 2
		if got := parse(io.MultiReader(strings.NewReader(in[:half]), strings.NewReader(in[half:]))); !reflect.DeepEqual(got, want) {
			t.Fatalf("split at %d:\n got %#v\nwant %#v", half, got, want)
		}

		if want.Err != nil {
			t.Fatalf("unexpected error %v", want.Err)
		}
		noBreaks := func(what, s string) {
			if !utf8.ValidString(s) || strings.ContainsAny(s, "\r\n") {
				t.Fatalf("%s %q is not valid UTF-8 or has a line break", what, s)
			}
		}
		noBreaks("last event ID", want.LastEventID)
		for _, c := range want.Comments {
			noBreaks("comment", c)
		}
		for _, ev := range want.Events {
			noBreaks("ID", ev.ID)
			noBreaks("type", ev.Type)
			noBreaks("data line", strings.ReplaceAll(ev.Data, "\n", ""))
			if strings.ContainsFunc(ev.ID, func(c rune) bool { return c < 0x20 || c == 0x7f }) {
				t.Fatalf("ID %q contains a control byte", ev.ID)
			}
		}
	})
}
