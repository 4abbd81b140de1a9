//go:build race

package bench

// raceEnabled is set under the race detector.
const raceEnabled = true
