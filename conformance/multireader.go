package conformance

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/sseclient"
)

// This file holds a FanOut round's multi-key readers: SSE clients that
// follow several keys on one connection (sseclient through
// [sse.MultiHandler]), and in-process ranges over several keys (EventsOf,
// where the backend's Reader has it). Each is recorded as one reader per
// key it follows, so that every rule on a reader holds per key; a key's
// reader ends as finished at its sse.close (a client) or when the range
// ends (in process).

// multiEventsOf is a Reader that also reads several FanOut keys as one
// range, as [sse.Broker.EventsOf] does.
type multiEventsOf interface {
	EventsOf(ctx context.Context, keys []string, from ...sse.ReadOption) iter.Seq2[sse.KeyEvent[string], error]
}

// An mtab is a browser tab that follows several keys on one connection,
// and keeps the last ID it had across its page loads.
type mtab struct {
	id      int      // immutable
	keys    []string // immutable: the keys it follows, in its requests' order
	last    string   // guarded by round.mu
	running bool     // guarded by round.mu
	// vecs holds the vector (every key's entry) that each multi-key ID
	// the tab was sent stands for: what it knows of each key once it has
	// the ID's event. Guarded by round.mu.
	vecs map[string][]string
	// forgot counts the requests of the tab's earlier clients that named
	// a cursor the store forgot; reopened holds, per key, the count of
	// the tab's forgotten cursors (forgot, plus its running client's) when
	// the key last closed or was followed again. A forgotten cursor
	// restarts every key, those the tab saw close too, and the server's
	// next cursors follow them, though the IDs' vectors still say closed:
	// a later client of the tab may get their events. Guarded by
	// history.mu.
	forgot   int
	reopened []int
}

// multiSpawner starts multi-key readers and clients, up to the plan's
// number at once.
func (r *round) multiSpawner(ctx context.Context) {
	rng := r.rng(500)
	for sleepCtx(ctx, time.Duration(rng.Int64N(int64(r.pl.clientGap)))) {
		r.mu.Lock()
		n := r.nMulti
		r.mu.Unlock()
		if n >= r.pl.maxMulti {
			continue
		}
		proc := rng.IntN(len(r.cur))
		r.mu.Lock()
		_, inproc := r.cur[proc].Reader.(multiEventsOf)
		r.mu.Unlock()
		if inproc && rng.IntN(3) == 0 {
			if keys := r.pickKeys(rng, 2+rng.IntN(3)); len(keys) >= 2 {
				r.startMultiReader(keys, proc, drawReaderPlan(rng), rng.IntN(4), rng.Uint64())
			}
			continue
		}
		// An idle tab comes back with the last ID it had (or 0, or
		// none), or a new tab opens.
		var mt *mtab
		start := ""
		r.mu.Lock()
		if rng.IntN(2) == 0 {
			var idle []*mtab
			for _, x := range r.mtabs {
				if !x.running {
					idle = append(idle, x)
				}
			}
			if len(idle) > 0 {
				mt = idle[rng.IntN(len(idle))]
				mt.running = true
				switch x := rng.IntN(10); {
				case x < 7:
					start = mt.last
				case x < 9:
					start = "0"
				}
			}
		}
		r.mu.Unlock()
		if mt == nil {
			keys := r.pickKeys(rng, r.pl.minTabKeys+rng.IntN(r.pl.maxTabKeys-r.pl.minTabKeys+1))
			if len(keys) < 2 {
				continue
			}
			mt = &mtab{id: r.nextID(), keys: keys, running: true, vecs: make(map[string][]string), reopened: make([]int, len(keys))}
			if rng.IntN(4) == 0 {
				start = "0"
			}
			r.mu.Lock()
			r.mtabs = append(r.mtabs, mt)
			r.mu.Unlock()
		}
		r.startMultiClient(mt, start, drawReaderPlan(rng), rng.Uint64())
	}
}

// pickKeys picks up to n distinct keys, as pickAny picks one.
func (r *round) pickKeys(rng *rand.Rand, n int) []string {
	var keys []string
	for range 2 * n {
		if len(keys) == n {
			break
		}
		if k, ok := r.pickAny(rng); ok && !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
	}
	return keys
}

// startMultiReader starts an in-process range over several keys' events
// (EventsOf) on process proc, recorded as one reader per key. from picks
// where the keys start: 0 none (the oldest event held), 1 After(0) for
// every key, 2 Live for every key, 3 After an ID seen, per key.
func (r *round) startMultiReader(keys []string, proc int, pl readerPlan, from int, salt uint64) {
	pl.max *= len(keys) // its items are spread over its keys
	r.lifeMu.RLock()
	defer r.lifeMu.RUnlock()
	rng := rand.New(rand.NewPCG(salt, 3))
	ctx, cancel := context.WithCancel(context.Background())
	if pl.life > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), pl.life)
	}
	done := make(chan struct{})
	r.mu.Lock()
	mr, ok := r.cur[proc].Reader.(multiEventsOf)
	if !ok {
		r.mu.Unlock()
		cancel()
		return
	}
	base := r.nextID()
	subs := make([]*reader, len(keys))
	index := make(map[string]int, len(keys))
	var opts []sse.ReadOption
	switch from {
	case 1:
		opts = []sse.ReadOption{sse.After(0)}
	case 2:
		opts = []sse.ReadOption{sse.Live()}
	}
	for i, k := range keys {
		rd := &reader{id: r.nextID(), kind: inProcess, key: k, proc: proc, gen: r.genOf(proc, k), start: "held", multi: base}
		switch from {
		case 1:
			rd.start, rd.hasAfter = "after 0", true
		case 2:
			rd.start = "live"
		case 3:
			after := uint64(0)
			if s := r.seen[life{k, rd.gen}]; s > 0 {
				after = rng.Uint64N(s + 1)
			}
			opts = append(opts, sse.After(after))
			rd.start, rd.after, rd.hasAfter = "after "+strconv.FormatUint(after, 10), after, true
		}
		subs[i], index[k] = rd, i
		r.running[rd] = &run{done, cancel}
		if r.inproc[k] == nil {
			r.inproc[k] = make(map[*reader]context.CancelFunc)
		}
		r.inproc[k][rd] = cancel
	}
	r.nMulti++
	r.mu.Unlock()
	r.h.mu.Lock()
	r.h.readers = append(r.h.readers, subs...)
	r.h.mu.Unlock()
	endAll := func(ctx context.Context, err error) {
		for _, rd := range subs {
			r.endReader(rd, ctx, err)
		}
	}
	r.readerWG.Go(func() {
		defer close(done)
		defer cancel()
		defer func() {
			r.mu.Lock()
			for _, rd := range subs {
				delete(r.running, rd)
				delete(r.inproc[rd.key], rd)
			}
			r.nMulti--
			r.mu.Unlock()
		}()
		n := 0
		for kev, err := range mr.EventsOf(ctx, keys, opts...) {
			var ge *sse.GapError
			if err != nil && !errors.As(err, &ge) {
				endAll(ctx, err)
				return
			}
			i, ok := index[kev.Key]
			if !ok {
				r.h.violation("wrong-key", "multi-key reader %d of %v: an event or gap of key %q (%+v, %v)", base, keys, kev.Key, kev.Event, err)
				continue
			}
			if ge != nil {
				r.addItem(subs[i], item{gap: true, from: ge.From, id: ge.To, attempt: -1})
				continue
			}
			r.addItem(subs[i], item{id: kev.ID, name: kev.Name, data: kev.Data, attempt: -1})
			n++
			if pl.max > 0 && n >= pl.max {
				endAll(nil, context.Canceled)
				return
			}
			if pl.stall > 0 && rng.IntN(1000) < pl.stall {
				r.stallFor(ctx, time.Duration(rng.Int64N(int64(pl.still))))
			}
		}
		endAll(ctx, nil)
	})
}

// startMultiClient starts an SSE client of tab mt that follows its keys
// on one connection: a sequence of sseclient through MultiHandler, which
// reconnects by itself, starting from start (a multi-key ID, "0" or "").
// It is recorded as one client per key that start does not mark closed;
// each request counts as an attempt of each key's client not ended, with
// the key's entry of the request's ID as its Last-Event-ID.
func (r *round) startMultiClient(mt *mtab, start string, pl readerPlan, salt uint64) {
	n := len(mt.keys)
	pl.max *= n // its items are spread over its keys
	base := r.nextID()
	subs := make([]*reader, n) // nil for a key start marks closed
	r.mu.Lock()
	known := mt.vectorOf(start) // every key's entry, as the client knows it: updated by each event's ID
	r.mu.Unlock()
	first := resumeEntries(start, known, n)
	var all []*reader // subs, and the readers subs held before
	for i, k := range mt.keys {
		if first[i] != closedEntry {
			subs[i] = &reader{id: r.nextID(), kind: client, key: k, identity: mt.id, start: first[i], proc: -1, multi: base}
			all = append(all, subs[i])
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if pl.life > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), pl.life)
	}
	done := make(chan struct{})
	r.mu.Lock()
	for _, rd := range subs {
		if rd != nil {
			r.running[rd] = &run{done, cancel}
		}
	}
	r.nMulti++
	r.mu.Unlock()
	r.h.mu.Lock()
	for _, rd := range subs {
		if rd != nil {
			r.h.readers = append(r.h.readers, rd)
		}
	}
	r.h.mu.Unlock()
	rng := rand.New(rand.NewPCG(salt, 4))
	procs := len(r.procs)
	url := "/m?keys=" + strings.Join(mt.keys, ",")
	newRequest := func(ctx context.Context, id string) (*http.Request, error) {
		r.mreqs.Add(1)
		r.mu.Lock()
		es := resumeEntries(id, mt.vectorOf(id), n)
		r.mu.Unlock()
		var hk []string
		r.h.mu.Lock()
		for i, rd := range subs {
			if rd == nil || rd.end != running || es[i] == closedEntry {
				continue
			}
			rd.attempts = append(rd.attempts, attempt{resume: es[i], tick: r.tick()})
			hk = append(hk, fmt.Sprintf("%s=%d.%d", rd.key, rd.id, len(rd.attempts)-1))
		}
		r.h.mu.Unlock()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.procs[rng.IntN(procs)].multiProxy.Addr()+url, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set(hdrReader, strconv.Itoa(base))
		req.Header.Set(hdrAttempt, "-1")
		req.Header.Set(hdrKeys, strings.Join(hk, ","))
		return req, nil
	}
	opts := []sseclient.Option{
		sseclient.WithHTTPClient(r.mhc),
		sseclient.WithBackoff(2*time.Millisecond, 100*time.Millisecond),
		sseclient.WithIdleTimeout(3 * time.Second),
	}
	if start != "" {
		opts = append(opts, sseclient.WithLastEventID(start))
	}
	name := fmt.Sprintf("multi-key client %d (tab %d, keys %v, from %q)", base, mt.id, mt.keys, start)
	// endOpen ends every key's client not ended yet.
	endOpen := func(ctx context.Context, err error) {
		for _, rd := range subs {
			if rd == nil {
				continue
			}
			r.h.mu.Lock()
			ended := rd.end != running
			r.h.mu.Unlock()
			if !ended {
				r.endReader(rd, ctx, err)
			}
		}
	}
	r.readerWG.Go(func() {
		defer close(done)
		defer cancel()
		defer func() {
			r.h.mu.Lock()
			mt.forgot += r.h.forgot[base]
			r.h.mu.Unlock()
			r.mu.Lock()
			for _, rd := range all {
				delete(r.running, rd)
			}
			r.nMulti--
			mt.running = false
			r.mu.Unlock()
		}()
		got := 0
		for ev, err := range sseclient.Stream(ctx, newRequest, opts...) {
			if err != nil {
				endOpen(ctx, err)
				return
			}
			i, iok := ev.Key()
			x, perr := parseMultiID(ev.ID, n)
			var es []string
			if perr == nil {
				es, perr = x.apply(known)
			}
			if perr == nil && (!iok || i != x.index) {
				perr = fmt.Errorf("sseclient reads its key as %d", i)
			}
			if perr != nil {
				r.h.violation("bad-id", "%s: %s event with ID %q: %v", name, ev.Name, ev.ID, perr)
				continue
			}
			known = es
			if x.cursor != "" {
				r.cursorIDs.Add(1)
			}
			r.mu.Lock()
			mt.vecs[ev.ID], mt.last = es, ev.ID
			r.mu.Unlock()
			rd := subs[i]
			r.h.mu.Lock()
			ended, reopen := rd == nil || rd.end != running, false
			// A request from a cursor the store forgot restarts every
			// key, those the client had closed too (docs/protocol.md,
			// "Cursors"): such a key is followed again, by a new reader
			// of the key from "0", once per forgotten cursor since the
			// key closed, this client's or an earlier one's of the tab
			// (see mtab.reopened).
			forgot := mt.forgot + r.h.forgot[base]
			if ended && forgot > mt.reopened[i] {
				mt.reopened[i] = forgot
				rd = &reader{id: r.nextID(), kind: client, key: mt.keys[i], identity: mt.id, start: "0", proc: -1, multi: base,
					attempts: []attempt{{resume: "0", tick: r.tick()}}}
				r.h.readers = append(r.h.readers, rd)
				subs[i], ended, reopen = rd, false, true
				all = append(all, rd)
			}
			a := -1
			if rd != nil {
				a = len(rd.attempts) - 1
			}
			r.h.mu.Unlock()
			if reopen {
				r.mu.Lock()
				r.running[rd] = &run{done, cancel}
				r.mu.Unlock()
			}
			if ended {
				r.h.violation("after-key-close", "%s: %s event %q with ID %q, of key %d (%s), after the key's sse.close", name, ev.Name, token(ev.Data), ev.ID, i, mt.keys[i])
				continue
			}
			it := item{attempt: a, name: ev.Name, data: ev.Data}
			switch ev.Name {
			case sseclient.EventKeyClose:
				if es[i] != closedEntry || ev.Data != fmt.Sprintf(`{"key":%d}`, i) {
					r.h.violation("bad-close", "%s: sse.close with ID %q and data %q", name, ev.ID, ev.Data)
				}
				r.h.mu.Lock()
				mt.reopened[i] = mt.forgot + r.h.forgot[base] // only a later forgotten cursor reopens it
				r.h.mu.Unlock()
				r.endReader(rd, ctx, nil)
			case sseclient.EventKeyGap:
				from, to, gok := ev.Gap()
				epoch, id, ok := parseID(es[i])
				if !gok || !ok || epoch == "" || id != to {
					r.h.violation("bad-gap", "%s: sse.gap with ID %q and data %q", name, ev.ID, ev.Data)
					continue
				}
				it.gap, it.from, it.id, it.epoch = true, from, to, epoch
			default:
				epoch, id, ok := parseID(es[i])
				if !ok || epoch == "" {
					r.h.violation("bad-id", "%s: event with ID %q", name, ev.ID)
					continue
				}
				it.epoch, it.id = epoch, id
			}
			if ev.Name != sseclient.EventKeyClose {
				r.addItem(rd, it)
			}
			got++
			if pl.max > 0 && got >= pl.max {
				endOpen(nil, context.Canceled)
				return
			}
			if pl.stall > 0 && rng.IntN(1000) < pl.stall {
				r.stallFor(ctx, time.Duration(rng.Int64N(int64(pl.still))))
			}
		}
		// close, or 204: every key's sse.close came first.
		r.h.mu.Lock()
		var open []string
		for _, rd := range subs {
			if rd != nil && rd.end == running {
				open = append(open, rd.describe())
			}
		}
		r.h.mu.Unlock()
		if len(open) > 0 {
			r.h.violation("early-close", "%s: the stream ended as finished (close or 204) before the sse.close of %s", name, strings.Join(open, ", "))
		}
		endOpen(ctx, nil)
	})
}

// closedEntry is a multi-key ID's entry of a key whose sse.close was sent.
const closedEntry = "."

// A multiID is a multi-key ID read (docs/protocol.md, "IDs"): the index of
// its event's key, and the entries it gives, by key position: every key's
// (the vector form), or those of the keys that moved since its cursor was
// stored (the cursor form; cursor is the cursor's name).
type multiID struct {
	index   int
	cursor  string
	entries map[int]string
}

// parseMultiID reads a multi-key ID of a request of n keys, of either
// form, or says why it is not one.
func parseMultiID(id string, n int) (multiID, error) {
	is, rest, ok := strings.Cut(id, ":")
	i, err := strconv.Atoi(is)
	if !ok || err != nil || i < 0 || i >= n || is != strconv.Itoa(i) {
		return multiID{}, fmt.Errorf("no index below %d", n)
	}
	x := multiID{index: i, entries: make(map[int]string)}
	body, isCursor := strings.CutPrefix(rest, "~")
	if !isCursor {
		es := strings.Split(rest, ",")
		if len(es) != n {
			return multiID{}, fmt.Errorf("%d entries, not %d", len(es), n)
		}
		for j, e := range es {
			x.entries[j] = e
		}
		return x, nil
	}
	name, moved, ok := strings.Cut(body, ":")
	if !ok || len(name) == 0 || len(name) > 40 || strings.IndexFunc(name, func(c rune) bool {
		return !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z')
	}) >= 0 {
		return multiID{}, fmt.Errorf("no cursor name")
	}
	x.cursor = name
	if moved == "" {
		return x, nil
	}
	for f := range strings.SplitSeq(moved, ",") {
		ps, e, ok := strings.Cut(f, "_")
		p, err := strconv.Atoi(ps)
		if !ok || err != nil || ps != strconv.Itoa(p) {
			return multiID{}, fmt.Errorf("moved key %q has no position", f)
		}
		if p < 0 || p >= n {
			return multiID{}, fmt.Errorf("moved key %q out of range (%d keys)", f, n)
		}
		if _, dup := x.entries[p]; dup {
			return multiID{}, fmt.Errorf("moved key %d twice", p)
		}
		x.entries[p] = e
	}
	return x, nil
}

// apply returns the vector the ID stands for to a client that held known
// (every key's entry) before it: known, with the entries the ID gives.
// The ID must give its own key's entry.
func (x multiID) apply(known []string) ([]string, error) {
	if _, ok := x.entries[x.index]; !ok {
		return nil, fmt.Errorf("no entry for its own key %d", x.index)
	}
	v := slices.Clone(known)
	for p, e := range x.entries {
		v[p] = e
	}
	return v, nil
}

// entryResume is what a multi-key entry says of its key as a one-key
// request's Last-Event-ID: "0" for an empty entry (nothing of the key
// yet, counted as 0), else the entry.
func entryResume(e string) string {
	if e == "" {
		return "0"
	}
	return e
}

// resumeEntries returns what a multi-key request's Last-Event-ID says of
// each of its keys, as the Last-Event-ID of a one-key request: "" for no
// ID, else entryResume of each key's entry in vec, the vector the ID
// stands for (nil: every entry empty, as for "0").
func resumeEntries(id string, vec []string, n int) []string {
	es := make([]string, n)
	if id == "" {
		return es
	}
	for i := range es {
		if vec != nil {
			es[i] = vec[i]
		}
		es[i] = entryResume(es[i])
	}
	return es
}

// vectorOf returns the vector (every key's entry) that a multi-key ID
// stands for to tab mt: nothing of any key for "" and "0"; the vector
// recorded when mt was sent it; every entry of an ID of the vector form.
// The caller holds r.mu.
func (mt *mtab) vectorOf(id string) []string {
	n := len(mt.keys)
	if v, ok := mt.vecs[id]; ok {
		return slices.Clone(v)
	}
	if x, err := parseMultiID(id, n); err == nil && x.cursor == "" {
		if v, err := x.apply(make([]string, n)); err == nil {
			return v
		}
	}
	return make([]string, n)
}

// parseKeysHeader reads a multi-key request's hdrKeys header.
func parseKeysHeader(v string) map[string]reqInfo {
	m := make(map[string]reqInfo)
	if v == "" {
		return m
	}
	for f := range strings.SplitSeq(v, ",") {
		key, ra, ok1 := strings.Cut(f, "=")
		rs, as, ok2 := strings.Cut(ra, ".")
		rid, err1 := strconv.Atoi(rs)
		att, err2 := strconv.Atoi(as)
		if ok1 && ok2 && err1 == nil && err2 == nil {
			m[key] = reqInfo{reader: rid, attempt: att}
		}
	}
	return m
}
