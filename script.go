package sse

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"time"
)

//go:embed js/sse.js
var script []byte

var scriptETag = func() string {
	sum := sha256.Sum256(script)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}()

// ScriptHandler serves sse.js, a browser ES module with no dependencies
// that follows the keys of a MultiHandler (or one key of a Handler) on one
// EventSource and calls the page per key: event, gap, close. Mount it at a
// path of the page's origin, say "GET /sse.js", and import it from there:
//
//	import { follow } from "/sse.js";
//	follow("/jobs/events?job=7&job=9", {events: ["progress"], onEvent(key, e) {…}});
//
// It answers GET and HEAD (405 otherwise) with Content-Type
// text/javascript, an ETag and Cache-Control "public, max-age=3600".
func ScriptHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", "public, max-age=3600")
		h.Set("ETag", scriptETag)
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, "sse.js", time.Time{}, bytes.NewReader(script))
	})
}
