package sseclient

import (
	"math"
	"net/http"
	"testing"
	"time"
)

// TestDelayBounds: with full jitter each delay lies in [0, min(max,
// base·2ⁿ)], never below the server's retry or Retry-After, and spreads
// over its range.
func TestDelayBounds(t *testing.T) {
	c := newConfig([]Option{WithBackoff(100*time.Millisecond, 3*time.Second)})
	for _, tc := range []struct {
		failures          int
		retry, retryAfter time.Duration
		lo, hi            time.Duration
	}{
		{0, 0, 0, 0, 100 * time.Millisecond},
		{3, 0, 0, 0, 800 * time.Millisecond},
		{5, 0, 0, 0, 3 * time.Second},
		{1000, 0, 0, 0, 3 * time.Second}, // no overflow
		{0, time.Second, 0, time.Second, time.Second},
		{5, time.Second, 0, time.Second, 3 * time.Second},
		{0, 0, 10 * time.Second, 10 * time.Second, 10 * time.Second},
		{5, time.Minute, 10 * time.Second, time.Minute, time.Minute},
	} {
		var least, most time.Duration = math.MaxInt64, 0
		for range 1000 {
			d := c.delay(tc.failures, tc.retry, tc.retryAfter)
			if d < tc.lo || d > tc.hi {
				t.Fatalf("%+v: delay %v, want it in [%v, %v]", tc, d, tc.lo, tc.hi)
			}
			least, most = min(least, d), max(most, d)
		}
		if spread := tc.hi - tc.lo; most-least < spread/2 {
			t.Errorf("%+v: delays from %v to %v: too little jitter", tc, least, most)
		}
	}
	huge := newConfig([]Option{WithBackoff(time.Hour, math.MaxInt64), WithoutJitter()})
	if d := huge.delay(100, 0, 0); d != math.MaxInt64 {
		t.Fatalf("delay %v, want the ceiling", d)
	}
}

// TestDelayExtremes: no backoff setting, count of failures or server
// delay makes the delay panic or overflow: it saturates, within its range.
func TestDelayExtremes(t *testing.T) {
	values := []time.Duration{math.MinInt64, -1, 0, 1, time.Second, math.MaxInt64/2 - 1, math.MaxInt64 / 2,
		math.MaxInt64/2 + 1, math.MaxInt64 - 1, math.MaxInt64}
	for _, base := range values {
		for _, ceiling := range values {
			for _, limit := range values {
				c := newConfig([]Option{WithBackoff(base, ceiling), WithMaxServerDelay(limit)})
				top := max(base, ceiling, 0)
				for _, failures := range []int{0, 1, 2, 62, 63, 64, 1000, math.MaxInt32, math.MaxInt} {
					for _, server := range []time.Duration{0, math.MaxInt64} {
						least := min(server, max(limit, 0))
						for range 5 {
							d := c.delay(failures, server, server)
							if d < least || d > max(top, least) {
								t.Fatalf("WithBackoff(%d, %d), WithMaxServerDelay(%d), %d failures, server %d: delay %d, want it in [%d, %d]",
									base, ceiling, limit, failures, server, d, least, max(top, least))
							}
						}
					}
				}
			}
		}
	}
	for _, d := range values {
		for range 20 {
			if j := fullJitter(d); j < 0 || j > max(d, 0) {
				t.Fatalf("fullJitter(%d) = %d, want it in [0, %d]", d, j, max(d, 0))
			}
		}
	}
}

// TestServerDelayCap: the server's retry field and Retry-After count up to
// the cap, a minute by default, and no further; the cap leaves the
// backoff, the caller's own, alone.
func TestServerDelayCap(t *testing.T) {
	for _, tc := range []struct {
		name              string
		opts              []Option
		retry, retryAfter time.Duration
		want              time.Duration
	}{
		{"default, retry", nil, 10 * time.Hour, 0, time.Minute},
		{"default, Retry-After", nil, 0, 10 * time.Hour, time.Minute},
		{"default, below", nil, 59 * time.Second, 0, 59 * time.Second},
		{"set", []Option{WithMaxServerDelay(time.Second)}, math.MaxInt64, math.MaxInt64, time.Second},
		{"zero ignores the server", []Option{WithMaxServerDelay(0)}, time.Hour, time.Hour, time.Millisecond},
		{"negative is zero", []Option{WithMaxServerDelay(-time.Hour)}, time.Hour, time.Hour, time.Millisecond},
		{"no cap", []Option{WithMaxServerDelay(math.MaxInt64)}, 0, math.MaxInt64, math.MaxInt64},
		{"not the backoff", []Option{WithBackoff(time.Hour, time.Hour), WithMaxServerDelay(time.Second)}, time.Minute, 0, time.Hour},
	} {
		c := newConfig(append([]Option{WithBackoff(time.Millisecond, time.Millisecond), WithoutJitter()}, tc.opts...))
		if got := c.delay(0, tc.retry, tc.retryAfter); got != tc.want {
			t.Errorf("%s: delay %v, want %v", tc.name, got, tc.want)
		}
	}
	if DefaultMaxServerDelay != time.Minute {
		t.Errorf("DefaultMaxServerDelay %v, want the minute the docs say", DefaultMaxServerDelay)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"120", 2 * time.Minute},
		{"99999999999999999999", 0}, // not a number Go can hold
		{"9999999999999", math.MaxInt64},
		{"-1", 0},
		{"1.5", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
		{"Thursday, 02-Jan-25 03:05:05 GMT", time.Minute}, // RFC 850
		{"soon", 0},
	} {
		if got := parseRetryAfter(tc.in, now); got != tc.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
