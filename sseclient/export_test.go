package sseclient

import "time"

// WithoutJitter makes every reconnection delay the top of its range, so
// that tests can check the backoff's steps.
func WithoutJitter() Option {
	return optionFunc(func(c *config) { c.jitter = func(d time.Duration) time.Duration { return d } })
}
