package sse_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/conformance"
)

// TestConformance runs the shared suite against the in-process Broker, in
// both modes.
func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T, c conformance.Config) conformance.Impl[string] {
		opts := []sse.Option{sse.WithMode(c.Mode)}
		if c.Retain > 0 {
			if c.Mode == sse.FanOut {
				opts = append(opts, sse.WithHistory(c.Retain, 1<<20, 0))
			} else {
				opts = append(opts, sse.WithReplay(c.Retain, 1<<20))
			}
		}
		b := sse.New[string](opts...)
		t.Cleanup(func() {
			if err := b.Shutdown(context.Background()); err != nil {
				t.Error(err)
			}
		})
		return conformance.Impl[string]{Publisher: b, Reader: b, Source: b}
	}, strconv.Itoa)
}
