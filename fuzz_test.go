package sse

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
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
			if validate(&Event{Name: name, Data: data}) == nil {
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
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) == 0 {
			return
		}
		const keys = 4
		b := New[int](WithBuffer(int(ops[0] % 4)))
		defer func() {
			if err := b.Shutdown(context.Background()); err != nil {
				t.Fatal(err)
			}
		}()
		ctx := context.Background()
		m := &model{queues: make(map[int][]Event), closed: make(map[int]bool)}
		got := make(map[int][][]Event)
		read := make(map[int]int) // events already received per key
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
