//go:build !race

package sse

// raceEnabled is set when the race detector is on.
const raceEnabled = false
