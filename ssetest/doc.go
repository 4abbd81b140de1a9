// Package ssetest parses text/event-stream responses as a browser's
// EventSource does, with one departure (below) shared with Go's clients, so
// that tests of server-sent-event handlers can check what a real client
// would see.
//
// The parser follows the WHATWG HTML Standard, §9.2.5 "Parsing an event
// stream" and §9.2.6 "Interpreting an event stream":
//
//   - The stream is decoded as UTF-8 with the Encoding Standard's decoder:
//     each maximal invalid subsequence becomes one U+FFFD, and one byte order
//     mark at the very start of the stream is skipped.
//   - Lines end at CRLF, LF or CR, even when a CRLF is split between reads.
//   - A blank line dispatches the pending event, unless no data field was
//     seen; a line starting with a colon is a comment; any other line is a
//     field, "name: value" (one space after the colon is dropped) or just
//     "name" (empty value).
//   - The fields event, data, id and retry are processed as the standard
//     says; other fields are ignored.
//   - One departure from the standard, shared with the Go client sseclient:
//     an id field holding a control byte (U+0001 to U+001F, or DEL) is
//     ignored, as one holding NUL is. A browser would keep it, but Go's
//     net/http refuses such a byte in the Last-Event-ID header, so a
//     handler that sends one locks Go clients out; here, as there, the last
//     event ID stays as it was.
//   - An event that is not ended by a blank line before the stream ends,
//     including a last line with no line terminator, is discarded.
//
// [Reader] reads events one at a time from a live response and also reports
// comments, the reconnection time and the last event ID. [ReadAll] and
// [Events] collect every event of a finished body or of an
// [net/http/httptest.ResponseRecorder], and [CheckResponse] verifies the
// status code and Content-Type a browser requires before it reads a stream.
package ssetest
