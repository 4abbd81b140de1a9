//go:build !unix

package workload

import "time"

// cpuTime returns the CPU time the process has used, and whether the
// platform tells it: here it does not.
func cpuTime() (time.Duration, bool) { return 0, false }
