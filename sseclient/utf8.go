package sseclient

import (
	"strings"
	"unicode/utf8"
)

// text returns b as a string decoded the way the WHATWG Encoding Standard's
// UTF-8 decoder does, which is how an EventSource reads a stream: valid
// UTF-8 as it is, and each maximal subpart of an ill-formed sequence as one
// U+FFFD. Go's own conversions differ: they give one U+FFFD per bad byte.
//
// Decoding each field value apart gives the same text as decoding the whole
// stream, because every byte that splits a stream into fields (CR, LF, the
// colon, the space after it) is ASCII, and ASCII ends any ill-formed
// sequence.
func text(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 8)
	for len(b) > 0 {
		r, n := utf8.DecodeRune(b)
		if r == utf8.RuneError && n == 1 {
			n = badPrefix(b)
			sb.WriteString("\uFFFD")
		} else {
			sb.Write(b[:n])
		}
		b = b[n:]
	}
	return sb.String()
}

// badPrefix returns the length of the maximal subpart of the ill-formed
// sequence at the start of b: its longest prefix that could still begin a
// well-formed sequence, or 1 if none can. utf8.FullRune reports false
// exactly for such an unfinished prefix.
func badPrefix(b []byte) int {
	n := 1
	for k := 1; k <= len(b) && k < utf8.UTFMax && !utf8.FullRune(b[:k]); k++ {
		n = k
	}
	return n
}
