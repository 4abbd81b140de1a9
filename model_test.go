package sse

import (
	"context"
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
)

// model is the reference a broker is checked against: what each key's queue
// must deliver, in order. Every broker call of the randomized test is made
// while holding mu, so the model sees commands in the order the loop does.
type model struct {
	mu        sync.Mutex
	queues    map[int][]Event // every event accepted for a key, with the ID it must get
	closed    map[int]bool
	discarded uint64
}

func (m *model) accept(key int, evs []Event) {
	if m.closed[key] {
		m.discarded += uint64(len(evs))
		return
	}
	for _, ev := range evs {
		ev.ID = uint64(len(m.queues[key]) + 1)
		m.queues[key] = append(m.queues[key], ev)
	}
}

// checkDelivery compares what readers received with the model: every event
// exactly once, each reader's events in queue order, each with the content
// the model has for its ID. got[key] holds one slice per reader of the key.
func checkDelivery(want map[int][]Event, got map[int][][]Event) error {
	for key, readers := range got {
		w := want[key]
		seen := make([]bool, len(w))
		for r, evs := range readers {
			var last uint64
			for _, ev := range evs {
				switch {
				case ev.ID <= last:
					return fmt.Errorf("key %d reader %d: ID %d after %d", key, r, ev.ID, last)
				case ev.ID > uint64(len(w)):
					return fmt.Errorf("key %d: unexpected event %+v", key, ev)
				case ev != w[ev.ID-1]:
					return fmt.Errorf("key %d: got %+v, want %+v", key, ev, w[ev.ID-1])
				case seen[ev.ID-1]:
					return fmt.Errorf("key %d: event %d received twice", key, ev.ID)
				}
				seen[ev.ID-1] = true
				last = ev.ID
			}
		}
		for i, ok := range seen {
			if !ok {
				return fmt.Errorf("key %d: event %+v lost", key, w[i])
			}
		}
	}
	for key, w := range want {
		if _, ok := got[key]; !ok && len(w) > 0 {
			return fmt.Errorf("key %d: %d events never read", key, len(w))
		}
	}
	return nil
}

func TestCheckDeliveryCatchesFaults(t *testing.T) {
	a, b, c := Event{ID: 1, Data: "a"}, Event{ID: 2, Data: "b"}, Event{ID: 3, Data: "c"}
	want := map[int][]Event{0: {a, b, c}}
	if err := checkDelivery(want, map[int][][]Event{0: {{a, b, c}}}); err != nil {
		t.Fatalf("correct delivery rejected: %v", err)
	}
	if err := checkDelivery(want, map[int][][]Event{0: {{a}, {b, c}}}); err != nil {
		t.Fatalf("competing readers rejected: %v", err)
	}
	faults := map[string][][]Event{
		"swapped delivery": {{a, c, b}},
		"swapped content":  {{a, {ID: 2, Data: "c"}, {ID: 3, Data: "b"}}},
		"lost":             {{a, c}},
		"duplicated":       {{a, b, c}, {b}},
		"invented":         {{a, b, c, {ID: 4}}},
	}
	for name, got := range faults {
		if err := checkDelivery(want, map[int][][]Event{0: got}); err == nil {
			t.Errorf("%s: not detected", name)
		}
	}
}

// checkFanOut compares what FanOut readers received with the model: each
// reader, starting at the key's first event, got every event of its key,
// in order.
func checkFanOut(want map[int][]Event, got map[int][][]Event) error {
	for key, readers := range got {
		for r, evs := range readers {
			if !slices.Equal(evs, want[key]) {
				return fmt.Errorf("key %d reader %d got %d events, want all %d: %v", key, r, len(evs), len(want[key]), evs)
			}
		}
	}
	return nil
}

func TestCheckFanOutCatchesFaults(t *testing.T) {
	a, b, c := Event{ID: 1, Data: "a"}, Event{ID: 2, Data: "b"}, Event{ID: 3, Data: "c"}
	want := map[int][]Event{0: {a, b, c}}
	if err := checkFanOut(want, map[int][][]Event{0: {{a, b, c}, {a, b, c}}}); err != nil {
		t.Fatalf("correct delivery rejected: %v", err)
	}
	for name, got := range map[string][][]Event{
		"split between readers": {{a}, {b, c}},
		"one reader short":      {{a, b, c}, {a, b}},
		"swapped":               {{a, c, b}},
		"duplicated":            {{a, b, b, c}},
	} {
		if err := checkFanOut(want, map[int][][]Event{0: got}); err == nil {
			t.Errorf("%s: not detected", name)
		}
	}
}

func TestRandomOperationsAgainstModel(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []Option
	}{
		{"unbounded", []Option{WithBuffer(1)}},
		{"default buffer", nil},
		{"block", []Option{WithBuffer(2), WithMaxPending(8, Block)}},
		{"fan-out", []Option{WithMode(FanOut)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			seed := rand.Uint64()
			t.Logf("seed %d", seed)
			runModel(t, seed, c.opts...)
		})
	}
}

func runModel(t *testing.T, seed uint64, opts ...Option) {
	const keys, producers, ops = 8, 4, 400
	b := newBroker[int](t, opts...)
	ctx := context.Background()
	m := &model{queues: make(map[int][]Event), closed: make(map[int]bool)}

	var rmu sync.Mutex
	got := make(map[int][][]Event)
	var readers sync.WaitGroup
	read := func(key int) {
		// In Queue mode readers compete; in FanOut mode each reads the
		// key's history from its start (nothing is trimmed here).
		var evs iter.Seq2[Event, error]
		if b.Mode() == FanOut {
			evs = b.Events(ctx, key)
		} else {
			ch := b.Stream(key) // now: events read later are the reader's
			evs = func(yield func(Event, error) bool) {
				for ev := range ch {
					if !yield(ev, nil) {
						return
					}
				}
			}
		}
		rmu.Lock()
		got[key] = append(got[key], nil)
		slot := len(got[key]) - 1
		rmu.Unlock()
		readers.Go(func() {
			var all []Event
			for ev, err := range evs {
				if err != nil {
					t.Error(err)
					return
				}
				all = append(all, ev)
			}
			rmu.Lock()
			got[key][slot] = all
			rmu.Unlock()
		})
	}
	// Under Block a key without a reader would hold its producer forever.
	for key := range keys {
		read(key)
	}

	var producersDone sync.WaitGroup
	for p := range producers {
		rng := rand.New(rand.NewPCG(seed, uint64(p)))
		producersDone.Go(func() {
			for i := range ops {
				key := rng.IntN(keys)
				evs := make([]Event, 1+rng.IntN(4)*rng.IntN(4))
				for j := range evs {
					evs[j].Data = fmt.Sprintf("%d.%d.%d", p, i, j)
					if rng.IntN(2) == 0 {
						evs[j].Name = "n"
					}
				}
				switch r := rng.IntN(100); {
				case r < 50:
					data := make([]string, len(evs))
					for j := range evs {
						data[j], evs[j].Name = evs[j].Data, ""
					}
					m.mu.Lock()
					must(t, b.Enqueue(ctx, key, data...))
					m.accept(key, evs)
					m.mu.Unlock()
				case r < 95:
					m.mu.Lock()
					must(t, b.Publish(ctx, key, evs...))
					m.accept(key, evs)
					m.mu.Unlock()
				case r < 98:
					m.mu.Lock()
					must(t, b.Close(ctx, key))
					m.closed[key] = true
					m.mu.Unlock()
				default:
					read(key)
				}
			}
		})
	}
	producersDone.Wait()
	for key := range keys {
		must(t, b.Close(ctx, key))
	}
	readers.Wait()

	check := checkDelivery
	if b.Mode() == FanOut {
		check = checkFanOut
	}
	if err := check(m.queues, got); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, q := range m.queues {
		total += uint64(len(q))
	}
	if s := b.Stats(); s.Enqueued != total || s.Discarded != m.discarded || s.Dropped != 0 || s.Pending != 0 {
		t.Fatalf("stats %+v, want %d enqueued, %d discarded", s, total, m.discarded)
	}
}
