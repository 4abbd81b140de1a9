package ssetest

import (
	"bytes"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
)

// mediaType is the media type a browser requires of an event stream.
const mediaType = "text/event-stream"

// CheckResponse reports whether a browser's EventSource would read resp as
// an event stream: its status must be 200 and its Content-Type must have the
// media type text/event-stream, with any parameters. A browser fails the
// connection otherwise, so a handler that gets either wrong is broken however
// good its body is. The error says what is wrong. CheckResponse is stricter
// than a browser in one way: it also rejects a Content-Type that
// [mime.ParseMediaType] cannot parse, such as one with a malformed
// parameter, since a handler should not send one. For a
// [httptest.ResponseRecorder], pass its Result.
func CheckResponse(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("ssetest: status %d %s, want 200 OK",
			resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" {
		return fmt.Errorf("ssetest: no Content-Type, want %s", mediaType)
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return fmt.Errorf("ssetest: Content-Type %q: %w", ct, err)
	}
	if mt != mediaType {
		return fmt.Errorf("ssetest: Content-Type %q, want %s", ct, mediaType)
	}
	return nil
}

// Events checks the response recorded by rec with [CheckResponse] and returns
// the events its body holds, as [ReadAll] does. It is the usual way to test
// a handler that writes a finite stream. rec must be done recording, and is
// not changed: its Body can be read again.
func Events(rec *httptest.ResponseRecorder) ([]Event, error) {
	if err := CheckResponse(rec.Result()); err != nil {
		return nil, err
	}
	return ReadAll(bytes.NewReader(rec.Body.Bytes()))
}
