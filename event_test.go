package sse

import (
	"context"
	"errors"
	"testing"
)

// TestReservedEventsAreRefused: a producer cannot send what a client would
// take for the library's own events, so a page that stops on "close" never
// stops early.
func TestReservedEventsAreRefused(t *testing.T) {
	b := newBroker[string](t)
	ctx := context.Background()
	for _, ev := range []Event{
		{Name: EventClose},
		{Name: EventGap, Data: `{"from":1,"to":2}`},
		{Name: ReservedPrefix + "epoch"},
		{Name: ReservedPrefix},
		{Data: TerminateData},
	} {
		if err := b.Publish(ctx, "k", Event{Data: "fine"}, ev); !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Publish(%+v): %v, want ErrInvalidEvent", ev, err)
		}
	}
	if err := b.Enqueue(ctx, "k", "fine", TerminateData); !errors.Is(err, ErrInvalidEvent) {
		t.Errorf("Enqueue(%q): %v, want ErrInvalidEvent", TerminateData, err)
	}
	// Names that only look alike, and the terminate text with a name or
	// around other text, are ordinary events.
	ok := []Event{
		{Name: "Close"}, {Name: "closed"}, {Name: "gaps"}, {Name: "sse"}, {Name: "my.sse.x"},
		{Name: "log", Data: TerminateData}, {Data: TerminateData + "\n"}, {Data: " " + TerminateData},
	}
	must(t, b.Publish(ctx, "k", ok...))
	must(t, b.Close(ctx, "k"))
	got := recvAll(t, b.Stream("k"))
	if len(got) != len(ok) || got[0].ID != 1 {
		t.Fatalf("got %+v, want the %d ordinary events and nothing of the refused calls", got, len(ok))
	}
}
