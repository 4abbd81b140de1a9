//go:build race

package e2e

// raceEnabled reports whether the tests run with the race detector: then the
// demo is built with it too.
const raceEnabled = true
