package sseclient

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"time"
)

// delay returns how long to wait before the next attempt, after failures
// attempts in a row without an event: the exponential step min(max,
// base·2^failures) with full jitter, but at least the server's retry field
// and Retry-After, which are the server's to set, each capped at maxServer
// so that one bad answer cannot park the client for years. It saturates
// rather than overflow, for any base, max and failures: the step stops
// doubling at max (in at most 63 doublings) or at 0, which doubling keeps.
func (c *config) delay(failures int, retry, retryAfter time.Duration) time.Duration {
	d := c.base
	for range failures {
		if d == 0 {
			break
		}
		if d >= c.max/2 {
			d = c.max
			break
		}
		d *= 2
	}
	return max(c.jitter(min(d, c.max)), min(retry, c.maxServer), min(retryAfter, c.maxServer))
}

// parseRetryAfter returns the delay a Retry-After header asks for, from
// now: a number of seconds, or an HTTP date. It returns 0 for no header, a
// date in the past, or a value it cannot read.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0
		}
		if secs > math.MaxInt64/uint64(time.Second) {
			return math.MaxInt64
		}
		return time.Duration(secs) * time.Second
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0
	}
	return max(t.Sub(now), 0)
}

// sleep waits for d, or until ctx ends, and then returns ctx's error.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
