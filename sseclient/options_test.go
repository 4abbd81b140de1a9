package sseclient

import (
	"testing"
	"time"
)

// TestErrorBodyTime: a refused response's body is read for one idle
// timeout in all, and never more than 5 s, with no idle timeout too.
func TestErrorBodyTime(t *testing.T) {
	for _, tc := range []struct {
		idle, want time.Duration
	}{
		{DefaultIdleTimeout, 5 * time.Second},
		{300 * time.Millisecond, 300 * time.Millisecond},
		{5 * time.Second, 5 * time.Second},
		{time.Hour, 5 * time.Second},
		{0, 5 * time.Second}, // no idle timeout
		{-time.Second, 5 * time.Second},
	} {
		c := newConfig([]Option{WithIdleTimeout(tc.idle)})
		if got := c.errorBodyTime(); got != tc.want {
			t.Errorf("idle timeout %v: the error body is read for %v, want %v", tc.idle, got, tc.want)
		}
	}
	if got := newConfig(nil).errorBodyTime(); got != 5*time.Second {
		t.Errorf("default: the error body is read for %v, want 5s", got)
	}
}
