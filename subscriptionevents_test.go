package sse

import (
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"testing"
	"time"
)

// A scriptedSub is a Subscription whose Next returns, in turn, the answers
// it was given; Close is counted.
type scriptedSub struct {
	answers []scriptedNext
	closed  int
}

type scriptedNext struct {
	events []Event
	gap    Gap
	err    error
}

func (s *scriptedSub) Epoch() string { return "e" }

func (s *scriptedSub) Next(ctx context.Context, buf []Event, tick <-chan time.Time, limit int) ([]Event, Gap, error) {
	if limit != readBytes || tick != nil {
		panic("unexpected limit or tick")
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return append(buf[:0], a.events...), a.gap, a.err
}

// Poll is Next: every answer is ready.
func (s *scriptedSub) Poll(ctx context.Context, buf []Event, limit int, _ func()) ([]Event, Gap, error) {
	return s.Next(ctx, buf, nil, limit)
}

func (s *scriptedSub) Close() { s.closed++ }

func evs(ids ...uint64) []Event {
	var out []Event
	for _, id := range ids {
		out = append(out, Event{ID: id, Data: strconv.FormatUint(id, 10)})
	}
	return out
}

// TestSubscriptionEvents: the iterator yields each Next's gap, then its
// events, ends quietly at EOF or with the error last, closes the
// subscription however it ends, and hands what a caller that stopped did
// not get to unread.
func TestSubscriptionEvents(t *testing.T) {
	ctx := context.Background()
	script := func() *scriptedSub {
		return &scriptedSub{answers: []scriptedNext{
			{events: evs(1, 2)},
			{events: evs(5, 6, 7), gap: Gap{3, 4}},
			{events: evs(8), err: io.EOF},
		}}
	}
	type got struct {
		id  uint64
		gap Gap
		err error
	}
	read := func(s *scriptedSub, stopAfter int) (seen []got, unread []Event) {
		i := 0
		for ev, err := range SubscriptionEvents(ctx, func() (Subscription, error) { return s, nil }, func(sub Subscription, rest []Event) {
			if sub != s || unread != nil {
				t.Errorf("unread called with %v, or twice", sub)
			}
			unread = slices.Clone(rest)
		}) {
			var g got
			if gerr, ok := errors.AsType[*GapError](err); ok {
				g.gap = gerr.Gap
			} else {
				g.id, g.err = ev.ID, err
			}
			seen = append(seen, g)
			if i++; i == stopAfter {
				break
			}
		}
		return seen, unread
	}

	s := script()
	seen, unread := read(s, -1)
	want := []got{{id: 1}, {id: 2}, {gap: Gap{3, 4}}, {id: 5}, {id: 6}, {id: 7}, {id: 8}}
	if !slices.Equal(seen, want) || unread != nil || s.closed != 1 {
		t.Errorf("whole range: %v, unread %v, closed %d; want %v, none, 1", seen, unread, s.closed, want)
	}

	// Stopped at the gap: the events Next returned with it are unread.
	s = script()
	if seen, unread := read(s, 3); len(seen) != 3 || !slices.Equal(unread, evs(5, 6, 7)) || s.closed != 1 {
		t.Errorf("stopped at the gap: %v, unread %v, closed %d", seen, unread, s.closed)
	}
	// Stopped after 6: 7 is unread. Stopped after 2, a batch's last: none.
	s = script()
	if _, unread := read(s, 5); !slices.Equal(unread, evs(7)) || s.closed != 1 {
		t.Errorf("stopped after 6: unread %v, closed %d", unread, s.closed)
	}
	s = script()
	if _, unread := read(s, 2); unread != nil || s.closed != 1 {
		t.Errorf("stopped after 2: unread %v, closed %d", unread, s.closed)
	}

	// An error other than EOF comes last, once.
	boom := errors.New("boom")
	s = &scriptedSub{answers: []scriptedNext{{events: evs(1), err: boom}}}
	if seen, _ := read(s, -1); !slices.Equal(seen, []got{{id: 1}, {err: boom}}) || s.closed != 1 {
		t.Errorf("Next's error: %v, closed %d", seen, s.closed)
	}

	// A loop body that panics at 6 (a server recovers it further up): 7
	// is unread, as for a break, and the subscription is closed.
	s = script()
	var panicUnread []Event
	func() {
		defer func() {
			if p := recover(); p != "at 6" {
				t.Errorf("recovered %v, want the body's panic", p)
			}
		}()
		for ev := range SubscriptionEvents(ctx, func() (Subscription, error) { return s, nil }, func(_ Subscription, rest []Event) {
			panicUnread = slices.Clone(rest)
		}) {
			if ev.ID == 6 {
				panic("at 6")
			}
		}
	}()
	if !slices.Equal(panicUnread, evs(7)) || s.closed != 1 {
		t.Errorf("a body that panicked at 6: unread %v, closed %d; want [7], 1", panicUnread, s.closed)
	}

	// subscribe's errors: ErrFinished ends the range quietly, any other
	// comes once; unread may be nil.
	for _, err := range []error{ErrFinished, ErrShutdown} {
		var seen []error
		for _, e := range SubscriptionEvents(ctx, func() (Subscription, error) { return nil, err }, nil) {
			seen = append(seen, e)
		}
		if want := []error{ErrShutdown}; err == ErrFinished && len(seen) != 0 || err != ErrFinished && !slices.Equal(seen, want) {
			t.Errorf("subscribe failing with %v: the range yields %v", err, seen)
		}
	}
}

// TestNewEpoch: NewEpoch's epochs are what Handler accepts, and differ.
func TestNewEpoch(t *testing.T) {
	seen := make(map[string]bool)
	for range 1000 {
		e := NewEpoch()
		if err := checkEpoch(e); err != nil || len(e) > 10 {
			t.Fatalf("NewEpoch() = %q: %v", e, err)
		}
		seen[e] = true
	}
	if len(seen) < 999 {
		t.Errorf("1,000 epochs, %d different", len(seen))
	}
}

// TestEventSize: an event counts 48 bytes plus its Name and Data.
func TestEventSize(t *testing.T) {
	if n := (Event{ID: 1 << 40, Name: "ab", Data: "cde"}).Size(); n != 53 {
		t.Errorf("Size of a 5-byte event: %d, want 53", n)
	}
}
