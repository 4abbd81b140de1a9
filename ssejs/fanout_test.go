package ssejs_test

import (
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// TestLiveOnClosedKey: a FanOut reader that starts live on a closed key
// ends at once, with no event and no error, as the in-process broker's
// does, rather than waiting for an event that cannot come.
func TestLiveOnClosedKey(t *testing.T) {
	srv := startServer(t)
	_, js := connect(t, srv.ClientURL())
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut))
	ctx := within(t, 60*time.Second)
	if err := b.Enqueue(ctx, "k", "1", "2"); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for ev, err := range b.Events(within(t, 5*time.Second), "k", sse.Live()) {
		t.Fatalf("after %v: %v %v, want the range to end", time.Since(start), ev, err)
	}
}
