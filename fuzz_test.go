package sse

import (
	"context"
	"errors"
	"iter"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/rocketqueue/sse/ssetest"
)

// FuzzEncoderRoundTrip sends any event that Publish accepts through the
// handler and a spec-following parser: the client must see the same event,
// with CR and CRLF read as LF, exactly as a browser would.
func FuzzEncoderRoundTrip(f *testing.F) {
	for _, s := range [][2]string{
		{"", ""}, {"", "plain"}, {"progress", "50"}, {"n", "a\nb"}, {"n", "a\rb"}, {"n", "a\r\nb"},
		{"", "\r"}, {"", "\n"}, {"", "\r\n"}, {"", "\n\r"}, {"", " x"}, {"", ":x"}, {"", "x\n"},
		{"", "\ufeffbom"}, {"ü", "ünï\x00code"}, {"a b", "data: x\nid: 7\nevent: y"}, {"", "\r\r\n\n"},
	} {
		f.Add(s[0], s[1])
	}
	b := New[int]()
	f.Cleanup(func() { b.Shutdown(context.Background()) })
	h := Handler(b, func(r *http.Request) (int, error) { return strconv.Atoi(r.URL.Query().Get("key")) })
	var keys atomic.Int64
	f.Fuzz(func(t *testing.T, name, data string) {
		ctx := context.Background()
		key := int(keys.Add(1))
		err := b.Publish(ctx, key, Event{Name: name, Data: data})
		if err != nil {
			if !errors.Is(err, ErrInvalidEvent) {
				t.Fatal(err)
			}
			if validate(&Event{Name: name, Data: data}, DefaultMaxEventSize) == nil {
				t.Fatalf("refused a valid event: %v", err)
			}
			return
		}
		must(t, b.Close(ctx, key))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key="+strconv.Itoa(key), nil))
		evs, err := ssetest.Events(rec)
		if err != nil {
			t.Fatal(err)
		}
		evs = stripIDs(t, evs)
		want := ssetest.Event{ID: "1", Type: name, Data: strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(data)}
		if len(evs) != 2 || evs[0] != want || evs[1].Type != "close" {
			t.Fatalf("sent %q %q, received %+v, want %+v then close", name, data, evs, want)
		}
	})
}

// FuzzBrokerOperations runs an operation sequence decoded from the input
// against a broker and the reference model: whatever the sequence, every
// accepted event is received once, in order.
func FuzzBrokerOperations(f *testing.F) {
	f.Add([]byte{1, 0, 3, 0, 1, 5, 2, 0, 3, 1, 4})
	f.Add([]byte{0, 0, 200, 0, 1, 200, 3, 0, 50, 2, 1, 0, 0, 9})
	f.Add([]byte{2, 2, 0, 0, 2, 1, 1, 2, 3, 2, 3, 0})
	f.Add([]byte{4 | 8, 0, 1, 5, 3, 1, 2, 0, 1, 7, 0, 1, 3, 3, 1, 9, 2, 1, 0}) // FanOut, a history of 2
	f.Add([]byte{4, 1, 0, 0, 3, 0, 1, 1, 0, 1, 0, 0, 3, 0, 200, 2, 0, 0})      // FanOut, a history of 1
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		const keys = 4
		opts := []Option{WithBuffer(int(ops[0] % 4))}
		fanOut := ops[0]&4 != 0
		if fanOut { // every reader gets every event: one history per key
			opts = []Option{WithMode(FanOut), WithHistory(1+int(ops[0]>>3), 1<<20, 0)}
		}
		b := New[int](opts...)
		defer func() {
			if err := b.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		}()
		ctx := context.Background()
		m := &model{queues: make(map[int][]Event), closed: make(map[int]bool)}
		got := make(map[int][][]Event)
		read := make(map[int]int) // events already received per key
		if fanOut {
			fuzzFanOut(t, b, ops, m)
			return
		}
		seq := 0
		for i := 1; i+2 < len(ops); i += 3 {
			key, n := int(ops[i+1]%keys), int(ops[i+2])
			switch ops[i] % 4 {
			case 0: // Enqueue a batch
				data := make([]string, 1+n%8)
				evs := make([]Event, len(data))
				for j := range data {
					seq++
					data[j] = strconv.Itoa(seq)
					evs[j].Data = data[j]
				}
				must(t, b.Enqueue(ctx, key, data...))
				m.accept(key, evs)
			case 1: // Publish one named event
				seq++
				ev := Event{Name: "n" + strconv.Itoa(n), Data: strconv.Itoa(seq)}
				must(t, b.Publish(ctx, key, ev))
				m.accept(key, []Event{ev})
			case 2:
				must(t, b.Close(ctx, key))
				m.closed[key] = true
			case 3: // read up to n of the events the key has
				k := min(n, len(m.queues[key])-read[key])
				if len(got[key]) == 0 {
					got[key] = append(got[key], nil)
				}
				got[key][0] = append(got[key][0], recv(t, b.Stream(key), k)...)
				read[key] += k
			}
		}
		for key := range keys {
			must(t, b.Close(ctx, key))
			if len(got[key]) == 0 {
				got[key] = append(got[key], nil)
			}
			got[key][0] = append(got[key][0], recvAll(t, b.Stream(key))...)
		}
		if err := checkDelivery(m.queues, got); err != nil {
			t.Fatal(err)
		}
	})
}

// fuzzFanOut runs FuzzBrokerOperations' operations on a FanOut broker whose
// history holds at most a few events: one reader per key reads when told
// to, and at the end it and a late reader must have every event the history
// could still give them, in order, with a gap for exactly what they missed.
func fuzzFanOut(t *testing.T, b *Broker[int], ops []byte, m *model) {
	const keys = 4
	held := b.cfg.historyEvents
	ctx := context.Background()
	type reader struct {
		next func() (Event, error, bool)
		stop func()
		evs  []Event
	}
	var readers [keys]*reader
	take := func(r *reader, n int) bool { // false at the end
		for range n {
			ev, err, ok := r.next()
			if !ok {
				return false
			}
			var gap *GapError
			switch {
			case errors.As(err, &gap):
				r.evs = append(r.evs, Event{Name: "gap", ID: gap.To, Data: strconv.FormatUint(gap.From, 10)})
			case err != nil:
				t.Fatal(err)
			default:
				r.evs = append(r.evs, ev)
			}
		}
		return true
	}
	seq := 0
	for i := 1; i+2 < len(ops); i += 3 {
		key, n := int(ops[i+1]%keys), int(ops[i+2])
		switch ops[i] % 4 {
		case 0, 1:
			seq++
			ev := Event{Name: "n", Data: strconv.Itoa(seq)}
			must(t, b.Publish(ctx, key, ev))
			m.accept(key, []Event{ev})
		case 2:
			must(t, b.Close(ctx, key))
			m.closed[key] = true
		case 3: // the key's reader reads up to n of the events it can
			r := readers[key]
			if r == nil {
				// From the key's first event, with a gap for what the
				// history no longer holds when it starts (at its first
				// read).
				next, stop := iter.Pull2(b.Events(ctx, key, After(0)))
				r = &reader{next: next, stop: stop}
				readers[key] = r
			}
			b.Stats() // what was sent has reached the history
			// What the reader can get now: a gap if it is behind the
			// history, which holds the newest held events, then those.
			total := len(m.queues[key])
			pos := 1
			if len(r.evs) > 0 {
				pos = int(r.evs[len(r.evs)-1].ID) + 1
			}
			first := max(1, total-held+1)
			avail := total - max(pos, first) + 1
			if pos < first && pos <= total {
				avail++
			}
			take(r, min(n, max(avail, 0)))
		}
	}
	for key := range keys {
		must(t, b.Close(ctx, key))
		m.closed[key] = true
	}
	for key := range keys {
		want := m.queues[key]
		if r := readers[key]; r != nil {
			for take(r, 1) {
			}
			r.stop()
			checkHeld(t, key, r.evs, want)
		}
		var late []Event
		for ev, err := range b.Events(ctx, key) {
			if err != nil {
				t.Fatal(err)
			}
			late = append(late, ev)
		}
		if len(want) > 0 && (len(late) == 0 || !slices.Equal(late, want[len(want)-len(late):])) {
			t.Fatalf("key %d: a late reader got %v, want the newest of %v", key, late, want)
		}
	}
}

// checkHeld checks what a FanOut reader got against every event of its
// key: each event once, in order, where a gap event (Name "gap", Data its
// first ID, ID its last) stands for exactly the events it names.
func checkHeld(t *testing.T, key int, got, want []Event) {
	t.Helper()
	next := uint64(1)
	for _, ev := range got {
		if ev.Name == "gap" {
			if ev.Data != strconv.FormatUint(next, 10) || ev.ID < next {
				t.Fatalf("key %d: gap %s-%d where the reader was at %d", key, ev.Data, ev.ID, next)
			}
			next = ev.ID + 1
			continue
		}
		if ev.ID != next || ev != want[next-1] {
			t.Fatalf("key %d: got %+v, want %+v", key, ev, want[next-1])
		}
		next++
	}
	if next != uint64(len(want))+1 {
		t.Fatalf("key %d: the reader ended at %d of %d events", key, next-1, len(want))
	}
}
