package workload

import (
	"errors"
	"flag"
	"iter"
	"strings"
	"sync"
	"testing"

	"github.com/rocketqueue/sse"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// feed gives a fresh reader the messages msgs, with want set to sent
// messages per producer, and returns its verdict.
func feed(sent map[int]int, msgs []sse.Event) error {
	var r reader
	for p, n := range sent {
		r.want[p] = n
	}
	for _, ev := range msgs {
		r.check(ev)
	}
	r.end()
	return r.verify(7)
}

// stream returns producer p's messages from..to-1.
func stream(p, from, to int) []sse.Event {
	var out []sse.Event
	for i := from; i < to; i++ {
		out = append(out, message(p, i))
	}
	return out
}

func TestCheckAcceptsInterleavedProducers(t *testing.T) {
	a, b := stream(0, 0, 3000), stream(5, 0, 2000)
	var msgs []sse.Event
	for i := 0; len(a)+len(b) > 0; i++ {
		if len(b) == 0 || len(a) > 0 && i%3 != 0 {
			msgs, a = append(msgs, a[0]), a[1:]
		} else {
			msgs, b = append(msgs, b[0]), b[1:]
		}
	}
	if err := feed(map[int]int{0: 3000, 5: 2000}, msgs); err != nil {
		t.Fatal(err)
	}
}

func TestCheckCatchesMisdelivery(t *testing.T) {
	swap := stream(2, 0, 100)
	swap[40], swap[41] = swap[41], swap[40]
	lapLost := append(stream(2, 0, 10), stream(2, 10+dataLen, 100+dataLen)...) // same Data, other lap
	dup := stream(2, 0, 100)
	dup = append(dup[:51], dup[50:]...)
	stranger := append(stream(2, 0, 100), message(3, 0))

	for _, c := range []struct {
		name string
		msgs []sse.Event
		want string
	}{
		{"swap", swap, "want producer 2's message 40"},
		{"loss at the end", stream(2, 0, 99), "received 99 messages from producer 2, which sent 100"},
		{"loss of one lap", lapLost, "want producer 2's message 10 "},
		{"duplicate", dup, "want producer 2's message 51"},
		{"other producer", stranger, "received 1 messages from producer 3, which sent 0"},
		{"no producer", append(stream(2, 0, 100), sse.Event{Name: "x"}), "from no producer"},
		{"bad digit", append(stream(2, 0, 100), sse.Event{Name: "p9.00"}), "from no producer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := feed(map[int]int{2: 100}, c.msgs)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got error %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestMessagesRepeatOnlyAfterAPeriod(t *testing.T) {
	type pair struct{ name, data string }
	seen := make(map[pair]int)
	for p := range maxProducers {
		for i := range dataLen * laps {
			ev := message(p, i)
			if j, ok := seen[pair{ev.Name, ev.Data}]; ok {
				t.Fatalf("producer %d's message %d equals message %d", p, i, j)
			}
			seen[pair{ev.Name, ev.Data}] = i
		}
		if message(p, dataLen*laps) != message(p, 0) {
			t.Fatalf("producer %d: the period is not %d", p, dataLen*laps)
		}
	}
}

func TestCheckAllocatesNothing(t *testing.T) {
	var r reader
	msgs := stream(4, 0, 2*dataLen)
	allocs := testing.AllocsPerRun(10, func() {
		r.reset()
		for _, ev := range msgs {
			r.check(ev)
		}
	})
	if allocs != 0 {
		t.Fatalf("check allocates %v times per run of %d messages", allocs, len(msgs))
	}
}

// chans is a minimal design for the harness's own tests: a buffered channel
// per key, big enough that no Send blocks.
type chans struct {
	chs []chan sse.Event // chs[key] is written by Open, before any Send to key
}

func (d *chans) Open(key int) iter.Seq[sse.Event] {
	d.chs[key] = make(chan sse.Event, 2*stallEvents)
	return FromChan(d.chs[key])
}

func (d *chans) Send(key int, ev sse.Event) error {
	d.chs[key] <- ev
	return nil
}

func (d *chans) SendBatch(key int, evs []sse.Event) error {
	for _, ev := range evs {
		d.chs[key] <- ev
	}
	return nil
}

func (d *chans) Close(key int) error {
	close(d.chs[key])
	return nil
}

func (d *chans) Shutdown() error { return nil }

// cheat wraps chans and misdelivers the first messages sent to each key.
type cheat struct {
	chans
	how  string      // "drop", "dup" or "swap" the first message(s)
	mu   sync.Mutex  // guards sent and held
	sent map[int]int // messages sent to each key so far
	held map[int]*sse.Event
}

func (d *cheat) Send(key int, ev sse.Event) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.sent[key]
	d.sent[key]++
	switch {
	case n == 0 && d.how == "drop":
		return nil
	case n == 0 && d.how == "dup":
		d.chs[key] <- ev
	case n == 0 && d.how == "swap":
		d.held[key] = &ev
		return nil
	case n == 1 && d.how == "swap":
		d.chs[key] <- ev
		ev = *d.held[key]
	}
	d.chs[key] <- ev
	return nil
}

func (d *cheat) SendBatch(key int, evs []sse.Event) error {
	for _, ev := range evs {
		d.Send(key, ev)
	}
	return nil
}

// TestWorkloadsFailMisdelivery runs every timed workload through designs
// that drop, duplicate or swap messages, and checks that each run fails, and
// through an honest design, and checks that it passes.
func TestWorkloadsFailMisdelivery(t *testing.T) {
	// testing.Benchmark runs for -test.benchtime: make that 16 messages.
	bt := flag.Lookup("test.benchtime")
	defer flag.Set(bt.Name, bt.Value.String())
	if err := flag.Set(bt.Name, "16x"); err != nil {
		t.Fatal(err)
	}
	workloads := []struct {
		name string
		w    Workload
	}{{"W1", W1}, {"W2", W2}, {"W3", W3}, {"W4", W4}, {"W5", W5}, {"W7", W7}}
	for _, how := range []string{"honest", "drop", "dup", "swap"} {
		for _, w := range workloads {
			f := func(keys int) Design {
				c := chans{chs: make([]chan sse.Event, keys)}
				if how == "honest" {
					return &c
				}
				return &cheat{chans: c, how: how, sent: make(map[int]int), held: make(map[int]*sse.Event)}
			}
			failed := false
			testing.Benchmark(func(b *testing.B) {
				defer func() { failed = failed || b.Failed() }() // Fatal ends the goroutine
				w.w(b, f)
			})
			if want := how != "honest"; failed != want {
				t.Errorf("%s through a design that does %q: failed=%v, want %v", w.name, how, failed, want)
			}
		}
	}
}

// fanChans is a minimal fan-out design for the harness's own tests: a
// buffered channel per subscriber. With how set, it misdelivers: "drop",
// "dup" or "swap" the first event(s) for the last subscriber of each key,
// "err" ends every reader loop with an error, and "stalled" sends the first
// subscriber of each key (F3's stalled one) nothing but the key's first
// event.
type fanChans struct {
	buf  int                // each channel's capacity
	how  string             // the misdelivery, or "" for none
	subs [][]chan sse.Event // subs[key]: written by Subscribe, before any Publish
	sent []int              // sent[key]: events published to key, by its producer
	held []sse.Event        // held[key]: "swap"'s first event, by key's producer
}

func newFanChans(keys, buf int, how string) *fanChans {
	return &fanChans{buf: buf, how: how, subs: make([][]chan sse.Event, keys), sent: make([]int, keys), held: make([]sse.Event, keys)}
}

func (d *fanChans) Subscribe(key int) iter.Seq2[sse.Event, error] {
	ch := make(chan sse.Event, d.buf)
	d.subs[key] = append(d.subs[key], ch)
	return func(yield func(sse.Event, error) bool) {
		for ev := range ch {
			if !yield(ev, nil) {
				return
			}
		}
		if d.how == "err" {
			yield(sse.Event{}, errors.New("lost events"))
		}
	}
}

func (d *fanChans) Publish(key int, ev sse.Event) error {
	n := d.sent[key]
	d.sent[key]++
	subs := d.subs[key]
	for i, ch := range subs {
		last := i == len(subs)-1
		switch {
		case last && n == 0 && d.how == "drop":
			continue
		case last && n == 0 && d.how == "dup":
			ch <- ev
		case last && n == 0 && d.how == "swap":
			d.held[key] = ev
			continue
		case last && n == 1 && d.how == "swap":
			ch <- ev
			ev = d.held[key]
		case i == 0 && n > 0 && d.how == "stalled":
			continue
		}
		ch <- ev
	}
	return nil
}

func (d *fanChans) Close(key int) error {
	for _, ch := range d.subs[key] {
		close(ch)
	}
	return nil
}

func (d *fanChans) Shutdown() error { return nil }

// runFanOut runs w's shape through testing.Benchmark, with subs subscribers
// per key and -test.benchtime benchtime, and returns the result and whether
// a run failed.
func runFanOut(t *testing.T, w FanOutWorkload, subs int, benchtime string, f FanOutFactory) (testing.BenchmarkResult, bool) {
	t.Helper()
	bt := flag.Lookup("test.benchtime")
	defer flag.Set(bt.Name, bt.Value.String())
	if err := flag.Set(bt.Name, benchtime); err != nil {
		t.Fatal(err)
	}
	failed := false
	r := testing.Benchmark(func(b *testing.B) {
		defer func() { failed = failed || b.Failed() }() // Fatal ends the goroutine
		w.shape.run(b, f, subs)
	})
	return r, failed
}

// TestFanOutWorkloadsFailMisdelivery runs every fan-out workload, with few
// subscribers, through designs that drop, duplicate or swap events for one
// subscriber, or whose reader loops yield an error, and checks that each
// run fails; and through an honest design, and checks that it passes.
func TestFanOutWorkloadsFailMisdelivery(t *testing.T) {
	workloads := []struct {
		name string
		w    FanOutWorkload
		subs int
		buf  int // a channel's capacity: F3's stalled subscriber must not block
	}{{"F1", F1, 3, 64}, {"F2", F2, 1, 64}, {"F3", F3, 3, 2 * stallEvents}}
	for _, how := range []string{"", "drop", "dup", "swap", "err"} {
		for _, w := range workloads {
			_, failed := runFanOut(t, w.w, w.subs, "16x", func(keys int) FanOutDesign { return newFanChans(keys, w.buf, how) })
			if want := how != ""; failed != want {
				t.Errorf("%s through a design that does %q: failed=%v, want %v", w.name, how, failed, want)
			}
		}
	}
}

// TestF3TellsBlockingFromDropping runs F3 through a design that blocks on
// its stalled subscriber, which must pass with hol-blocked=1, and through
// one that drops every event for it, which must pass with hol-blocked=0.
// It runs once (1x), as a blocked run takes a second.
func TestF3TellsBlockingFromDropping(t *testing.T) {
	for _, c := range []struct {
		how  string
		want float64
	}{{"", 1}, {"stalled", 0}} {
		r, failed := runFanOut(t, F3, 3, "1x", func(keys int) FanOutDesign { return newFanChans(keys, 64, c.how) })
		if failed {
			t.Fatalf("F3 through a design that does %q failed", c.how)
		}
		if got := r.Extra["hol-blocked"]; got != c.want {
			t.Errorf("F3 through a design that does %q: hol-blocked=%v, want %v", c.how, got, c.want)
		}
	}
}
