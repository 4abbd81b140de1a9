// Package e2e tests the demo in examples/progress end to end: it builds the
// demo's binary from the examples module, runs it, and drives it with a
// headless Chromium, with plain HTTP clients, and through a real nginx. It
// is a module of its own, so that the library does not depend on a browser
// driver. One test drives the library's handler directly instead, with
// Chromium reading its stream through a proxy that keeps cutting the
// connection.
//
// What it covers besides the demo's page (which follows all of its jobs
// on one connection, with the library's browser module: 8 jobs through
// two cuts): the README's follow.js snippet in Chromium (events, "close",
// a gap, a failure, a reconnection); the README's page of the browser
// module, and the module on 8 keys through cuts; the demo behind nginx
// configured with docs/nginx.conf (events arrive live, a cut client
// resumes through it), and a 100-key stream resumed through it; the
// demo's /metrics as streams open, resume and close; its graceful
// shutdown.
//
// Run it with:
//
//	cd e2e && go test -race ./...
//
// The browser tests need Chromium (the Debian package chromium, or the
// CHROMIUM environment variable naming its binary), and the nginx tests
// need nginx (the Debian package nginx, or NGINX naming its binary; it runs
// as the test's user, or as nobody under root, in a temporary directory);
// without them they skip, unless CI=true, where they fail. The browser
// tests save screenshots into $E2E_ARTIFACTS, or into e2e/artifacts. With
// UPDATE_SCREENSHOT=1 they also write docs/demo.png, the README's picture
// of the demo.
package e2e
