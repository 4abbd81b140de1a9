//go:build race

package workload

// raceEnabled reports whether the race detector is on: W6 skips itself under
// it, since the detector's shadow memory would swamp the figures.
const raceEnabled = true
