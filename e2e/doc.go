// Package e2e tests the demo in examples/progress end to end: it builds the
// demo's binary, runs it, and drives it with a headless Chromium and with
// plain HTTP clients. It is a module of its own, so that the library does
// not depend on a browser driver. One test drives the library's handler
// directly instead, with Chromium reading its stream through a proxy that
// keeps cutting the connection.
//
// Run it with:
//
//	cd e2e && go test -race ./...
//
// The browser tests need Chromium (the Debian package chromium, or the
// CHROMIUM environment variable naming its binary); without it they skip,
// unless CI=true, where they fail. They save screenshots into $E2E_ARTIFACTS,
// or into e2e/artifacts. With UPDATE_SCREENSHOT=1 they also write
// docs/demo.png, the README's picture of the demo.
package e2e
