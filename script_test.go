package sse_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/rocketqueue/sse"
)

func TestScriptHandler(t *testing.T) {
	want, err := os.ReadFile("js/sse.js")
	if err != nil {
		t.Fatal(err)
	}
	h := sse.ScriptHandler()
	serve := func(method string, header map[string]string) *http.Response {
		r := httptest.NewRequest(method, "/sse.js", nil)
		for k, v := range header {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w.Result()
	}
	resp := serve(http.MethodGet, nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.Equal(body, want) {
		t.Fatalf("GET: %d, %d bytes (want 200, the %d bytes of js/sse.js)", resp.StatusCode, len(body), len(want))
	}
	if !bytes.Contains(body, []byte("export function follow(")) {
		t.Error("the module does not export follow")
	}
	for k, v := range map[string]string{
		"Content-Type":           "text/javascript; charset=utf-8",
		"Cache-Control":          "public, max-age=3600",
		"X-Content-Type-Options": "nosniff",
	} {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	etag := resp.Header.Get("ETag")
	if etag == "" {
		t.Error("no ETag")
	}

	resp = serve(http.MethodHead, nil)
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Errorf("HEAD: %d, %d bytes, %q", resp.StatusCode, len(body), resp.Header.Get("Content-Type"))
	}

	resp = serve(http.MethodGet, map[string]string{"If-None-Match": etag})
	if resp.StatusCode != http.StatusNotModified {
		t.Errorf("GET with the ETag: %d, want 304", resp.StatusCode)
	}

	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		resp = serve(m, nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s: %d, Allow %q; want 405, GET, HEAD", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}
