package ssejs_test

import (
	"strconv"
	"testing"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/conformance"
	"github.com/rocketqueue/sse/ssejs"
)

// TestConformance runs the root module's shared suite against the broker,
// in both modes, on an embedded server.
func TestConformance(t *testing.T) {
	srv := startServer(t)
	conformance.Run(t, func(t *testing.T, c conformance.Config) conformance.Impl[string] {
		_, js := connect(t, srv.ClientURL())
		opts := []ssejs.Option{ssejs.WithName(uniqueName()), ssejs.WithMode(c.Mode)}
		if c.Retain > 0 {
			if c.Mode == sse.FanOut {
				opts = append(opts, ssejs.WithHistoryMessages(c.Retain))
			} else {
				opts = append(opts, ssejs.WithReplayEvents(c.Retain))
			}
		}
		b := newBroker[string](t, js, opts...)
		return conformance.Impl[string]{Publisher: b, Reader: b, Source: b}
	}, strconv.Itoa)
}
