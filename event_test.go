package sse

import (
	"context"
	"errors"
	"strings"
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

// TestCheckEvent: CheckEvent refuses exactly what Publish refuses, so that
// another implementation of Publisher (ssejs) refuses the same input.
func TestCheckEvent(t *testing.T) {
	const max = 16
	b := newBroker[string](t, WithMaxEventSize(max))
	ctx := context.Background()
	for _, ev := range []Event{
		{Data: "fine"}, {Name: "log", Data: "a\nb\r\nc"}, {Name: "Close"},
		{Name: EventClose}, {Name: EventGap}, {Name: ReservedPrefix + "x"}, {Data: TerminateData},
		{Name: "a\nb"}, {Name: "a\rb"}, {Name: "a\x00b"}, {Name: "\xff"}, {Data: "\xff\xfe"},
		{Data: strings.Repeat("x", max)}, {Name: "n", Data: strings.Repeat("x", max)},
	} {
		check := CheckEvent(ev, max)
		pub := b.Publish(ctx, "k", ev)
		if (check == nil) != (pub == nil) {
			t.Errorf("%+v: CheckEvent %v, Publish %v", ev, check, pub)
		}
		if check != nil && !errors.Is(check, ErrInvalidEvent) {
			t.Errorf("%+v: CheckEvent %v, want ErrInvalidEvent", ev, check)
		}
	}
}

// TestReadOptionStart: Start gives back what each ReadOption means.
func TestReadOptionStart(t *testing.T) {
	for _, c := range []struct {
		o              ReadOption
		after          uint64
		hasAfter, live bool
	}{
		{ReadOption{}, 0, false, false},
		{After(0), 0, true, false},
		{After(7), 7, true, false},
		{Live(), 0, false, true},
	} {
		after, hasAfter, live := c.o.Start()
		if after != c.after || hasAfter != c.hasAfter || live != c.live {
			t.Errorf("%+v.Start() = %d, %v, %v; want %d, %v, %v", c.o, after, hasAfter, live, c.after, c.hasAfter, c.live)
		}
	}
}
