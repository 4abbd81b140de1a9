package ssetest_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/rocketqueue/sse/ssetest"
)

func TestCheckResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		status  int
		ct      string // Content-Type, omitted if empty
		wantErr string // a substring of the error, or "" for none
	}{
		{"ok", 200, "text/event-stream", ""},
		{"parameters allowed", 200, "text/event-stream; charset=utf-8", ""},
		{"case-insensitive", 200, "Text/Event-Stream", ""},
		{"not found", 404, "text/event-stream", "status 404 Not Found"},
		{"no content", 204, "text/event-stream", "status 204"},
		{"no Content-Type", 200, "", "no Content-Type"},
		{"other media type", 200, "text/plain; charset=utf-8", `"text/plain; charset=utf-8"`},
		{"similar media type", 200, "text/event-streams", "want text/event-stream"},
		{"malformed", 200, "text/event-stream; charset", "charset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}}
			if tc.ct != "" {
				resp.Header.Set("Content-Type", tc.ct)
			}
			err := ssetest.CheckResponse(resp)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("CheckResponse() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("CheckResponse() = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestEvents(t *testing.T) {
	const body = "id: 1\ndata: a\n\nevent: b\ndata: b\n\n"
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(rec, body)

	got, err := ssetest.Events(rec)
	want := events{{ID: "1", Data: "a"}, {ID: "1", Type: "b", Data: "b"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Events() = %#v, %v; want %#v, nil", got, err, want)
	}
	if rec.Body.String() != body {
		t.Errorf("Events changed the recorded body to %q", rec.Body.String())
	}
}

func TestEventsRejectsNonStream(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		wantErr string
	}{
		{"error status", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusInternalServerError)
		}, "status 500"},
		{"sniffed Content-Type", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "data: x\n\n")
		}, "text/plain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.handler(rec, httptest.NewRequest(http.MethodGet, "/", nil))
			got, err := ssetest.Events(rec)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || got != nil {
				t.Errorf("Events() = %#v, %v; want nil and an error containing %q", got, err, tc.wantErr)
			}
		})
	}
}
