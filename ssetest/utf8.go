package ssetest

import (
	"strings"
	"unicode/utf8"
)

// decodeUTF8 decodes b as the Encoding Standard's UTF-8 decoder does, minus
// its byte order mark handling, which [Reader] does for the stream as a whole.
// Unlike Go's own conversions, which produce one U+FFFD per invalid byte, it
// produces one U+FFFD per maximal subpart of an ill-formed sequence, so the
// result matches what a browser would deliver.
func decodeUTF8(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b) + 2*utf8.UTFMax)
	for len(b) > 0 {
		r, n := decodeRune(b)
		sb.WriteRune(r)
		b = b[n:]
	}
	return sb.String()
}

// decodeRune decodes the first code point of b, which must not be empty, and
// returns it with the number of bytes it used. An ill-formed sequence yields
// utf8.RuneError and the length of its maximal subpart, so the byte that
// broke it is decoded afresh.
func decodeRune(b []byte) (rune, int) {
	c := b[0]
	lo, hi := byte(0x80), byte(0xBF) // allowed range of the next byte
	var need int                     // continuation bytes to come
	var r rune
	switch {
	case c < 0x80:
		return rune(c), 1
	case 0xC2 <= c && c <= 0xDF:
		need, r = 1, rune(c&0x1F)
	case 0xE0 <= c && c <= 0xEF:
		need, r = 2, rune(c&0x0F)
		switch c {
		case 0xE0: // no overlong forms
			lo = 0xA0
		case 0xED: // no surrogates
			hi = 0x9F
		}
	case 0xF0 <= c && c <= 0xF4:
		need, r = 3, rune(c&0x07)
		switch c {
		case 0xF0: // no overlong forms
			lo = 0x90
		case 0xF4: // nothing above U+10FFFF
			hi = 0x8F
		}
	default:
		return utf8.RuneError, 1
	}
	for i := 1; i <= need; i++ {
		if i == len(b) || b[i] < lo || b[i] > hi {
			return utf8.RuneError, i
		}
		lo, hi = 0x80, 0xBF
		r = r<<6 | rune(b[i]&0x3F)
	}
	return r, need + 1
}
