package conformance

import (
	"bytes"
	"context"
	"fmt"
	"iter"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

// A multiMutation is a fault planted in the multi-key path of a correct
// broker: in MultiHandler's responses (rewritten on their way out) or in
// EventsOf's ranges. The checker must find it in every round where it
// was planted.
type multiMutation int

const (
	dropAfterResume multiMutation = iota // a resumed connection drops a key's event
	closeBeforeKeys                      // close comes right after a key's sse.close while other keys are open
	keyClosedEarly                       // a key's sse.close replaces one of its events
	wrongKey                             // an event is shown as another key's
	ownEntryDropped                      // a cursor ID lacks its own key's entry
	movedOutOfRange                      // a cursor ID names a moved key beyond the request's
	cursorClosed                         // a loaded cursor marks a key closed that was not
	rangeDrops                           // an EventsOf range drops an event
	rangeDuplicates                      // an EventsOf range yields an event twice
	noMutation                           // the rewriting path, planting nothing: the baseline
)

func (m multiMutation) String() string {
	return [...]string{"drop after resume", "close before every key", "key closed early", "wrong key", "own entry dropped", "moved out of range", "cursor closed", "range drops", "range duplicates", "none"}[m]
}

// inStore reports whether the mutation is planted in the cursor store.
func (m multiMutation) inStore() bool { return m == cursorClosed }

// inRange reports whether the mutation is planted in EventsOf.
func (m multiMutation) inRange() bool { return m == rangeDrops || m == rangeDuplicates }

// mutateMulti returns a middleware for MultiHandler that plants m once in
// each multi-key response it can plant it in.
//
// It follows what each ID it wrote stands for (every key's entry), as a
// client does, so that it knows which keys a request resumed with a
// cursor ID has closed.
func mutateMulti(m multiMutation, fired *atomic.Int64) func(http.Handler) http.Handler {
	var vecs sync.Map // ID written -> []string, the vector it stands for
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			keys := strings.Split(req.URL.Query().Get("keys"), ",")
			resumed := req.Header.Get("Last-Event-ID")
			if len(keys) < 2 || m == dropAfterResume && resumed == "" {
				h.ServeHTTP(w, req)
				return
			}
			known := make([]string, len(keys))
			if v, ok := vecs.Load(resumed); ok {
				known = slices.Clone(v.([]string))
			} else if x, err := parseMultiID(resumed, len(keys)); err == nil && x.cursor == "" {
				known, _ = x.apply(known)
			}
			open := len(keys)
			for _, e := range known {
				if e == closedEntry {
					open--
				}
			}
			h.ServeHTTP(&mutWriter{ResponseWriter: w, m: m, fired: fired, n: len(keys), open: open, known: known, vecs: &vecs}, req)
		})
	}
}

// mutWriter rewrites a multi-key response block by block (a block ends
// with a blank line).
type mutWriter struct {
	http.ResponseWriter
	m       multiMutation
	fired   *atomic.Int64
	n       int  // the request's keys
	open    int  // keys whose sse.close is still to come
	done    bool // the mutation was planted
	swallow bool // write nothing more: the client was told the stream ended
	buf     []byte
	known   []string  // every key's entry, as the IDs written say
	vecs    *sync.Map // where it records what each ID it writes stands for
}

func (w *mutWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.Index(w.buf, []byte("\n\n"))
		if i < 0 {
			return len(p), nil
		}
		out := w.rewrite(w.buf[:i+2])
		if id, ok := fieldOf(out, "id"); ok {
			if x, err := parseMultiID(id, w.n); err == nil {
				if v, err := x.apply(w.known); err == nil {
					w.known = v
					w.vecs.Store(id, v)
				}
			}
		}
		if len(out) > 0 && !w.swallow {
			if _, err := w.ResponseWriter.Write(out); err != nil {
				return 0, err
			}
		}
		if bytes.HasSuffix(out, []byte("event: close\ndata: \n\n")) {
			w.swallow = true
		}
		w.buf = w.buf[i+2:]
	}
}

func (w *mutWriter) Flush()                      { http.NewResponseController(w.ResponseWriter).Flush() }
func (w *mutWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
func (w *mutWriter) plant(out []byte) []byte     { w.done = true; w.fired.Add(1); return out }
func (w *mutWriter) keyEvent(name string) bool {
	return !strings.HasPrefix(name, sse.ReservedPrefix) && name != sse.EventClose
}
func fieldOf(block []byte, name string) (string, bool) { return field(string(block), name) }

// field returns the value of a block's field.
func field(block, name string) (string, bool) {
	for line := range strings.Lines(block) {
		if v, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), name+": "); ok {
			return v, true
		}
	}
	return "", false
}

// rewrite returns what to write of one block.
func (w *mutWriter) rewrite(block []byte) []byte {
	id, hasID := fieldOf(block, "id")
	name, _ := fieldOf(block, "event")
	index, _, isMulti := strings.Cut(id, ":")
	if name == sse.EventKeyClose {
		w.open--
	}
	if w.done || !hasID || !isMulti {
		return block
	}
	switch w.m {
	case dropAfterResume:
		if w.keyEvent(name) {
			return w.plant(nil)
		}
	case closeBeforeKeys:
		if name == sse.EventKeyClose && w.open > 0 {
			return w.plant(append(block, "event: close\ndata: \n\n"...))
		}
	case keyClosedEarly:
		if w.keyEvent(name) {
			// The key's sse.close instead of its event, with the key's
			// entry closed, as the handler writes an sse.close.
			x, err := parseMultiID(id, w.n)
			if err != nil {
				return block
			}
			return w.plant(fmt.Appendf(nil, "id: %s\nevent: %s\ndata: {\"key\":%s}\n\n", withEntry(x, w.n, closedEntry), sse.EventKeyClose, index))
		}
	case ownEntryDropped, movedOutOfRange:
		x, err := parseMultiID(id, w.n)
		if err != nil || x.cursor == "" || !w.keyEvent(name) {
			return block
		}
		own := x.entries[x.index]
		delete(x.entries, x.index)
		if w.m == movedOutOfRange {
			x.entries[w.n] = own // the request's keys are 0 to n-1
		}
		moved := make([]string, 0, len(x.entries))
		for p := range w.n + 1 {
			if e, ok := x.entries[p]; ok {
				moved = append(moved, fmt.Sprintf("%d_%s", p, e))
			}
		}
		return w.plant(bytes.Replace(block, []byte("id: "+id+"\n"), fmt.Appendf(nil, "id: %d:~%s:%s\n", x.index, x.cursor, strings.Join(moved, ",")), 1))
	case wrongKey:
		if w.keyEvent(name) {
			i, err := strconv.Atoi(index)
			if err != nil {
				return block
			}
			other := strconv.Itoa((i + 1) % w.n)
			return w.plant(bytes.Replace(block, []byte("id: "+index+":"), []byte("id: "+other+":"), 1))
		}
	}
	return block
}

// withEntry returns x with its own key's entry e, written in x's form.
func withEntry(x multiID, n int, e string) string {
	x.entries[x.index] = e
	if x.cursor == "" {
		es := make([]string, n)
		for p, e := range x.entries {
			es[p] = e
		}
		return fmt.Sprintf("%d:%s", x.index, strings.Join(es, ","))
	}
	moved := make([]string, 0, len(x.entries))
	for p := range n {
		if e, ok := x.entries[p]; ok {
			moved = append(moved, fmt.Sprintf("%d_%s", p, e))
		}
	}
	return fmt.Sprintf("%d:~%s:%s", x.index, x.cursor, strings.Join(moved, ","))
}

// rangeMutant is the root broker whose EventsOf ranges each drop or
// duplicate their third event.
type rangeMutant struct {
	*sse.Broker[string]
	m     multiMutation
	fired *atomic.Int64
}

func (x *rangeMutant) EventsOf(ctx context.Context, keys []string, from ...sse.ReadOption) iter.Seq2[sse.KeyEvent[string], error] {
	return func(yield func(sse.KeyEvent[string], error) bool) {
		n := 0
		for kev, err := range x.Broker.EventsOf(ctx, keys, from...) {
			if err == nil {
				if n++; n == 3 {
					x.fired.Add(1)
					if x.m == rangeDrops {
						continue
					}
					if !yield(kev, nil) {
						return
					}
				}
			}
			if !yield(kev, err) {
				return
			}
		}
	}
}

// storeMutant is the root broker whose loaded cursors mark a key closed,
// the first whose entry the request's ID does not give: the stream never
// sends that key's events nor its sse.close.
type storeMutant struct {
	*sse.Broker[string]
	fired *atomic.Int64
}

func (x *storeMutant) LoadCursor(ctx context.Context, name string) (sse.Cursor[string], error) {
	c, err := x.Broker.LoadCursor(ctx, name)
	info, _ := ctx.Value(ctxKey{}).(reqInfo)
	id, perr := parseMultiID(info.lastID, len(c.Keys))
	if err != nil || perr != nil {
		return c, err
	}
	es := strings.Split(c.Positions, ",")
	for i, e := range es {
		if _, moved := id.entries[i]; !moved && e != closedEntry {
			es[i] = closedEntry
			c.Positions = strings.Join(es, ",")
			x.fired.Add(1)
			break
		}
	}
	return c, nil
}

// multiMutantBackend is the root broker in FanOut mode, with m planted in
// its EventsOf ranges if it is a range mutation, in its cursor store if it
// is a store mutation.
func multiMutantBackend(m multiMutation, fired *atomic.Int64) Backend {
	return Backend{
		Name: "multi-mutant",
		Start: func(t testing.TB, s Setup) *Deployment {
			opts := []sse.Option{sse.WithMode(s.Mode), sse.WithMaxEventSize(s.MaxEventSize)}
			if s.Retain > 0 {
				opts = append(opts, sse.WithHistory(s.Retain, 64<<20, 0))
			}
			b := sse.New[string](opts...)
			var reader sse.Reader[string] = b
			var source sse.Source[string] = b
			if m.inStore() {
				source = &storeMutant{Broker: b, fired: fired}
			}
			if m.inRange() {
				reader = &rangeMutant{Broker: b, m: m, fired: fired}
			}
			return &Deployment{
				Procs: 1,
				Impl:  func(int) Impl[string] { return Impl[string]{Publisher: b, Reader: reader, Source: source} },
				Stop: func() {
					ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
					defer cancel()
					b.Shutdown(ctx)
				},
			}
		},
	}
}

// TestCheckerCatchesMultiKeyMutations plants each multi-key mutation in a
// correct broker and expects the checker to report it in every round
// where it was planted; and none where nothing was (the responses go
// through the same rewriting, which plants nothing). The mutations of the
// wire are planted in streams of cursor IDs and of vector IDs (the store
// hidden), but for those proper to cursor IDs.
func TestCheckerCatchesMultiKeyMutations(t *testing.T) {
	seeds := []uint64{1}
	if os.Getenv("CI") != "" {
		seeds = []uint64{1, 2, 3}
	}
	for _, m := range []multiMutation{dropAfterResume, closeBeforeKeys, keyClosedEarly, wrongKey, ownEntryDropped, movedOutOfRange, cursorClosed, rangeDrops, rangeDuplicates, noMutation} {
		forms := []bool{false} // vectors
		if m == dropAfterResume || m == closeBeforeKeys || m == keyClosedEarly || m == wrongKey || m == noMutation {
			forms = append(forms, true)
		}
		for _, vectors := range forms {
			name := m.String()
			if vectors {
				name += ", vectors"
			}
			t.Run(name, func(t *testing.T) { multiMutationRounds(t, m, vectors, seeds) })
		}
	}
}

// multiMutationRounds plants m in a round of each seed, with IDs of the
// vector form if vectors, else of the cursor form.
func multiMutationRounds(t *testing.T, m multiMutation, vectors bool, seeds []uint64) {
	for _, seed := range seeds {
		var fired atomic.Int64
		o := Options{
			Ops:      time.Second,
			NoFaults: true,
			tweak: func(p *plan) {
				p.cutPct, p.multiCutPct = 0, 0 // a cut makes the source send again what a mutation hid
				p.maxMulti = 3
				p.maxClients, p.maxReaders = 1, 1
				p.keys = max(p.keys, 3)
				p.vectors = vectors
				if m == cursorClosed { // resumes from cursors that keys moved past
					p.wideTabs()
					p.multiCutPct = 90 // the store plants it again on each resume
				}
			},
		}
		if !m.inRange() && !m.inStore() {
			o.wrapMulti = mutateMulti(m, &fired)
		}
		rep := CheckSeed(t, multiMutantBackend(m, &fired), seedFor(seed, sse.FanOut), o)
		if m == noMutation {
			if len(rep.Violations) > 0 || fired.Load() > 0 {
				t.Errorf("seed %d (%s): nothing planted (%d), yet: %v\n%s", seed, rep.Setup, fired.Load(), rep.Violations, strings.Join(rep.Traces, "\n"))
			}
			if rep.Stats.MultiReaders+rep.Stats.MultiClients == 0 {
				t.Errorf("seed %d: no multi-key reader or client (%s)", seed, rep.Stats)
			}
			if !vectors && rep.Stats.CursorIDs == 0 {
				t.Errorf("seed %d: no cursor ID read, though the broker stores cursors (%s)", seed, rep.Stats)
			}
			continue
		}
		if fired.Load() == 0 {
			t.Logf("seed %d: the mutation never fired (%s)", seed, rep.Stats)
			continue
		}
		if len(rep.Violations) == 0 {
			t.Errorf("seed %d (%s): %s planted %d times, not detected (%s)", seed, rep.Setup, m, fired.Load(), rep.Stats)
			continue
		}
		var rules []string
		for _, v := range rep.Violations {
			rules = append(rules, v.Rule)
		}
		t.Logf("seed %d: planted %d times, found: %s", seed, fired.Load(), strings.Join(rules, ", "))
		if *flagV {
			t.Logf("%s\n%s", rep.Violations, strings.Join(rep.Traces, "\n"))
		}
	}
}
