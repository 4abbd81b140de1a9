// Package page is the demos' web page: plain HTML, CSS and JavaScript,
// with no build step. It starts jobs with POST /jobs and follows all of
// them on one EventSource, on /jobs/events?job={id}&job={id}…, with the
// library's browser module, which the server serves at /sse.js. Where GET /cluster answers (the
// cluster demo), it also shows the replicas and lets the user stop and
// start them.
package page

import (
	"embed"
	"io/fs"
)

//go:embed static
var static embed.FS

// FS holds the page's files, index.html at its root.
var FS = must(fs.Sub(static, "static"))

func must(f fs.FS, err error) fs.FS {
	if err != nil {
		panic(err) // cannot happen: "static" is a valid path
	}
	return f
}
