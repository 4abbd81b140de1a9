package sse

import (
	"strings"
	"testing"
)

// FuzzValidateFastPath: validate's fast path accepts exactly what its full
// check, validateAll, accepts, and an event it refuses gets validateAll's
// reason.
func FuzzValidateFastPath(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""}, {"", "x"}, {"", TerminateData}, {"n", TerminateData}, {"p0.00", `{"step":1}`},
		{"a\rb", "x"}, {"a\nb", "x"}, {"a\x00", "x"}, {"é", "x"}, {"\xff", "x"}, {"n", "\xff"},
		{"n", "é"}, {EventClose, "x"}, {EventGap, ""}, {ReservedPrefix + "x", "y"}, {"\x7f", "x"},
		{"n", strings.Repeat("x", 100)},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, name, data string) {
		for _, max := range []int{len(name) + len(data), len(name) + len(data) - 1} {
			ev := Event{Name: name, Data: data}
			got, want := validate(&ev, max), validateAll(&ev, max)
			if (got == nil) != (want == nil) || got != nil && got.Error() != want.Error() {
				t.Fatalf("validate(%q, %q, %d) = %v, validateAll = %v", name, data, max, got, want)
			}
		}
	})
}
