package conformance

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/rocketqueue/sse"
)

// This file holds what a round of the checker records, and the rules it
// checks that record against once the round is over. Nothing here looks at
// the clock: a history is checked by what happened, in which order.

// A life is one life of a key, as the checker knows it: the key, and how
// many faults that lose data had ended its earlier lives when the life
// began. Over SSE a life is named by its epoch; the history maps each
// epoch to its life from what the server side recorded.
type life struct {
	key string
	gen int
}

func (l life) String() string { return fmt.Sprintf("%s#%d", l.key, l.gen) }

// An outcome is what a producer's call told it.
type outcome uint8

const (
	stored  outcome = iota // nil: the events are stored, once
	refused                // an error that means nothing was stored
	unknown                // any other error: stored at most once
)

// A call is one producer call: Enqueue, Publish, Close or Open.
type call struct {
	id       int
	producer int // the producer goroutine; -1 for the final phase's
	seq      int // its rank among the producer's calls
	proc     int
	op       string // "enqueue", "publish", "close", "open"
	kind     string // what the checker meant: "single", "batch", "empty", "big", "invalid", "late", "oversize"
	key      string
	gen      int
	events   []sse.Event
	bytes    int
	start    int64
	end      int64
	err      error
	out      outcome
	mustFail bool // the call carries an event the backend must refuse
}

// A readerKind tells an in-process reader from an SSE client.
type readerKind uint8

const (
	inProcess readerKind = iota
	client
)

// An endKind is how a reader's range ended.
type endKind uint8

const (
	running   endKind = iota
	closed            // the range ended by itself, with no error: close, 204, or a finished in-process range
	cancelled         // the checker stopped it
	failed            // it ended with an error
	hung              // it did not end within the bound once the keys were closed
)

func (e endKind) String() string {
	return [...]string{"running", "closed", "stopped", "failed", "hung"}[e]
}

// An item is what a reader was handed: an event or a gap.
type item struct {
	gap     bool
	epoch   string // clients: the epoch of the event's ID
	id      uint64 // the event's ID, or the gap's last ID
	from    uint64 // a gap's first ID
	name    string
	data    string
	attempt int // clients: the attempt (connection) that delivered it
	tick    int64
}

// An attempt is one request of an SSE client, with the Last-Event-ID it
// sent ("" for none).
type attempt struct {
	resume string
	tick   int64
}

// A reader is one range over a key's events: an in-process Events range
// or an SSE client's sequence (which spans its reconnections).
type reader struct {
	id       int
	kind     readerKind
	key      string
	proc     int
	gen      int    // in-process: the key's life when the range began
	start    string // how it started: "held", "live", "after N" (in process); the first Last-Event-ID (client)
	after    uint64 // in-process FanOut: After(after)
	hasAfter bool
	identity int // clients: the identity (a browser tab) it belongs to
	multi    int // the multi-key reader or client it is one key of; 0 for none
	final    bool
	attempts []attempt
	items    []item
	end      endKind
	endErr   error
	endTick  int64
}

// A subRecord is one Subscribe call as the server side saw it, and what
// each of its Next calls handed out.
type subRecord struct {
	reader, attempt int // the client and its attempt, -1 if unknown
	key             string
	proc            int
	genStart        int
	genEnd          int
	req             sse.SubscribeRequest
	err             error
	epoch           string
	takes           []take
}

type take struct {
	ids []uint64
	gap sse.Gap
	err error
}

// A Violation is one broken rule.
type Violation struct {
	Rule   string // a short name: "skip", "duplicate", "lost", "early-close", …
	Detail string
}

func (v Violation) String() string { return v.Rule + ": " + v.Detail }

// history is everything a round recorded. Its methods are safe for
// concurrent use while the round runs; verify runs once it is over.
type history struct {
	mu         sync.Mutex
	mode       sse.Mode
	drops      bool // the setup has an overflow policy that drops events
	atomic     int  // batches of up to this many bytes keep contiguous IDs; 0: all
	calls      []*call
	readers    []*reader
	subs       []*subRecord
	closeStart map[life]int64 // the first Close of each life began (or the fault that ended it)
	closeEnd   map[life]int64 // a Close of the life returned nil
	lost       map[life]bool  // lives that a fault losing data ended
	settled    map[life]bool  // lives the final phase closed and drained
	extra      []Violation    // violations found while the round ran
	forgot     map[int]int    // per multi-key client, its requests that named a cursor the store did not hold
	newest     []epochRecord  // the epochs CursorStore.Newest returned
}

// An epochRecord is an epoch a source returned for a key, with the key's
// generation before and after the call: as a subRecord's, it maps the
// epoch to a life if they agree.
type epochRecord struct {
	key              string
	epoch            string
	genStart, genEnd int
}

func newHistory(mode sse.Mode, drops bool, atomicBytes int) *history {
	return &history{
		mode: mode, drops: drops, atomic: atomicBytes,
		closeStart: make(map[life]int64), closeEnd: make(map[life]int64),
		lost: make(map[life]bool), settled: make(map[life]bool), forgot: make(map[int]int),
	}
}

func (h *history) violation(rule, format string, args ...any) {
	h.mu.Lock()
	h.extra = append(h.extra, Violation{rule, fmt.Sprintf(format, args...)})
	h.mu.Unlock()
}

// token returns the token at the start of an event's data: up to its
// first space or line break.
func token(data string) string {
	if i := strings.IndexAny(data, " \n\r"); i >= 0 {
		return data[:i]
	}
	return data
}

// parseID splits a wire ID "<epoch>-<n>".
func parseID(id string) (epoch string, n uint64, ok bool) {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		if id == "0" {
			return "", 0, true
		}
		return "", 0, false
	}
	n, err := strconv.ParseUint(id[i+1:], 10, 64)
	return id[:i], n, err == nil && i > 0
}

// normalize is what SSE makes of data: CR and CRLF arrive as LF.
func normalize(s string) string {
	if !strings.ContainsRune(s, '\r') {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

// ids is a set of event IDs kept as sorted, merged ranges.
type ids struct{ r [][2]uint64 }

func (s *ids) add(from, to uint64) {
	if from == 0 {
		from = 1
	}
	if to < from {
		return
	}
	s.r = append(s.r, [2]uint64{from, to})
}

func (s *ids) norm() {
	sort.Slice(s.r, func(i, j int) bool { return s.r[i][0] < s.r[j][0] })
	var out [][2]uint64
	for _, x := range s.r {
		if n := len(out); n > 0 && x[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], x[1])
			continue
		}
		out = append(out, x)
	}
	s.r = out
}

func (s *ids) has(i uint64) bool {
	k := sort.Search(len(s.r), func(k int) bool { return s.r[k][1] >= i })
	return k < len(s.r) && s.r[k][0] <= i
}

// lifeStats is what the verifier gathers about one life.
type lifeStats struct {
	epochs   map[string]bool
	maxSeen  uint64             // the highest ID anyone saw: read, in a gap, or handed to a connection
	read     map[uint64]bool    // IDs some reader was handed as an event
	inproc   map[uint64]bool    // IDs an in-process reader was handed
	by       map[uint64]*reader // who read each ID first
	gapped   ids                // IDs some reader was told it missed
	taken    ids                // IDs the source handed to a connection
	tokens   map[string]uint64  // token → ID, for the tokens read in the life
	minBound uint64             // a lower bound of the life's last ID
}

// tokenRead is one reading of a token.
type tokenRead struct {
	r    *reader
	it   *item
	l    life
	repl bool // clients: the attempt resumed from before the event (a replay may hand it again)
}

type verifier struct {
	h        *history
	out      []Violation
	perRule  map[string]int
	byToken  map[string]*call
	tokenIdx map[string]int
	epochs   map[string]life // epoch → life
	lives    map[life]*lifeStats
	reads    map[string][]tokenRead
	ends     []func() // checks that need every life's bound
}

const maxPerRule = 8

func (v *verifier) add(rule, format string, args ...any) {
	v.perRule[rule]++
	if v.perRule[rule] > maxPerRule && !*flagV {
		return
	}
	v.out = append(v.out, Violation{rule, fmt.Sprintf(format, args...)})
}

func (v *verifier) life(l life) *lifeStats {
	s := v.lives[l]
	if s == nil {
		s = &lifeStats{epochs: make(map[string]bool), read: make(map[uint64]bool), inproc: make(map[uint64]bool), by: make(map[uint64]*reader), tokens: make(map[string]uint64)}
		v.lives[l] = s
	}
	return s
}

// verify checks the history against every rule and returns what broke.
func (h *history) verify() []Violation {
	h.mu.Lock()
	defer h.mu.Unlock()
	v := &verifier{
		h: h, perRule: make(map[string]int), byToken: make(map[string]*call), tokenIdx: make(map[string]int),
		epochs: make(map[string]life), lives: make(map[life]*lifeStats), reads: make(map[string][]tokenRead),
	}
	for _, x := range h.extra {
		v.add(x.Rule, "%s", x.Detail)
	}
	for _, c := range h.calls {
		for j, ev := range c.events {
			t := token(ev.Data)
			v.byToken[t] = c
			v.tokenIdx[t] = j
		}
		if c.mustFail && c.out == stored {
			v.add("accepted-invalid", "call %d (%s %s on %s) carried an event the backend must refuse, and returned nil", c.id, c.op, c.kind, c.key)
		}
	}
	v.mapEpochs()
	for _, r := range h.readers {
		v.reader(r)
	}
	v.serverSide()
	v.bounds()
	for _, f := range v.ends {
		f()
	}
	v.tokens()
	v.accounting()
	for rule, n := range v.perRule {
		if n > maxPerRule && !*flagV {
			v.out = append(v.out, Violation{rule, fmt.Sprintf("… and %d more", n-maxPerRule)})
		}
	}
	return v.out
}

// mapEpochs learns each epoch's life from the Subscribe calls that
// returned a subscription while the key's life did not change.
func (v *verifier) mapEpochs() {
	var recs []epochRecord
	for _, s := range v.h.subs {
		if s.err == nil {
			recs = append(recs, epochRecord{s.key, s.epoch, s.genStart, s.genEnd})
		}
	}
	// The epochs Newest returned: a key restarted from a cursor the
	// store forgot may get its gap and sse.close with no subscription.
	for _, s := range append(recs, v.h.newest...) {
		if s.epoch == "" || s.genStart != s.genEnd {
			continue
		}
		l := life{s.key, s.genStart}
		if old, ok := v.epochs[s.epoch]; ok && old != l {
			v.add("epoch-reused", "epoch %q names two lives, %v and %v", s.epoch, old, l)
			continue
		}
		v.epochs[s.epoch] = l
		v.life(l).epochs[s.epoch] = true
	}
}

// lifeOfEpoch returns the life an epoch names, learning it from the
// event's token if no subscription told it.
func (v *verifier) lifeOfEpoch(key, epoch string, it *item) (life, bool) {
	if l, ok := v.epochs[epoch]; ok {
		return l, true
	}
	if it != nil && !it.gap {
		if c := v.byToken[token(it.data)]; c != nil && c.key == key {
			l := life{key, c.gen}
			v.epochs[epoch] = l
			v.life(l).epochs[epoch] = true
			return l, true
		}
	}
	return life{}, false
}

// position is a reader's place in a life: the last ID it was handed, as
// an event or as the end of a gap.
type position struct {
	epoch string // clients: the epoch; "*" for "the current life, from its start"
	pos   uint64
	known bool
}

// reader checks one reader's items: each event is one that was published,
// with its content, handed once; IDs go forward within a life; in FanOut
// mode, and over SSE in both modes, every event skipped is named by a gap
// first; and a range that ended as finished came after its life's Close
// and after every event of it, or its gap.
func (v *verifier) reader(r *reader) {
	name := r.describe()
	seen := make(map[string]bool)
	var p position
	if r.kind == inProcess && r.hasAfter {
		p = position{pos: r.after, known: true}
	}
	lastAttempt := -1
	left := make(map[string]bool) // epochs the client has left
	strict := r.kind == client || v.h.mode == sse.FanOut
	where, whereAttempt := name, -1
	for i := range r.items {
		it := &r.items[i]
		var l life
		var lok bool
		if r.kind == inProcess {
			l, lok = life{r.key, r.gen}, true
		} else {
			if it.attempt != lastAttempt {
				lastAttempt = it.attempt
				p = v.resume(p, r, it.attempt)
			}
			l, lok = v.lifeOfEpoch(r.key, it.epoch, it)
			if p.epoch != it.epoch {
				switch {
				case left[it.epoch]:
					v.add("life-back", "%s: back in the life of epoch %q after leaving it, at %s", name, it.epoch, it.show())
				case p.epoch != "" && p.epoch != "*" && p.known && i > 0 && r.items[i-1].attempt == it.attempt && r.items[i-1].epoch == p.epoch:
					v.add("life-switch", "%s: epoch %q then %q within one connection", name, p.epoch, it.epoch)
				}
				if p.epoch != "" && p.epoch != "*" {
					left[p.epoch] = true
				}
				// Another life: from its start if the client had a
				// position (an ID of another life counts as 0), else from
				// wherever the server starts it.
				p = position{epoch: it.epoch, known: p.known || p.epoch == "*"}
			}
		}
		if lok {
			v.note(l, r, it)
		}
		if !it.gap {
			t := token(it.data)
			c := v.byToken[t]
			switch {
			case c == nil:
				v.add("unknown-event", "%s: event %s was never published", name, it.show())
			default:
				ev := c.events[v.tokenIdx[t]]
				want := ev.Data
				if r.kind == client {
					want = normalize(want)
				}
				if it.name != ev.Name || it.data != want {
					v.add("content", "%s: event %s has name %q and %d bytes of data, published as %q and %d bytes (call %d)", name, it.show(), it.name, len(it.data), ev.Name, len(want), c.id)
				}
				if c.key != r.key {
					v.add("wrong-key", "%s: read event %s of key %s", name, it.show(), c.key)
				}
			}
			if seen[t] {
				v.add("duplicate", "%s: event %s (token %s) handed twice to the same reader", name, it.show(), t)
			}
			seen[t] = true
			if lok {
				v.reads[t] = append(v.reads[t], tokenRead{r: r, it: it, l: l, repl: v.replay(r, it, l)})
			}
		}
		if !strict {
			// A Queue reader in process competes: it may jump, but
			// never goes back.
			if p.known && it.id <= p.pos && !it.gap {
				v.add("back", "%s: event %s after ID %d", name, it.show(), p.pos)
			}
			if !it.gap || !p.known || it.id > p.pos {
				p.pos, p.known = it.id, true
			}
			continue
		}
		if r.kind == client && it.attempt != whereAttempt && it.attempt >= 0 && it.attempt < len(r.attempts) {
			whereAttempt = it.attempt
			where = fmt.Sprintf("%s, connection %d from Last-Event-ID %q", name, it.attempt, r.attempts[it.attempt].resume)
		}
		p = v.step(where, l, lok, p, it)
	}
	if r.end == closed {
		v.closedEnd(r, name, p)
	}
}

// resume applies what a client's attempt sent as Last-Event-ID.
func (v *verifier) resume(p position, r *reader, a int) position {
	if a < 0 || a >= len(r.attempts) {
		return p
	}
	switch id := r.attempts[a].resume; id {
	case "":
		return p
	case "0":
		return position{epoch: "*", known: true}
	default:
		e, n, ok := parseID(id)
		if !ok {
			return p
		}
		if p.known && p.epoch == e && p.pos != n {
			v.add("client-resume", "%s: resumed from %s, but had %s-%d", r.describe(), id, p.epoch, p.pos)
		}
		return position{epoch: e, pos: n, known: true}
	}
}

// attemptPos is where a client's attempt resumed from, in l: its
// Last-Event-ID's number if of l, 0 for "0" or an ID of another life,
// and the largest ID (no resume) for an attempt without one.
func (v *verifier) attemptPos(r *reader, a int, l life) uint64 {
	if r.kind != client || a < 0 || a >= len(r.attempts) {
		return ^uint64(0)
	}
	id := r.attempts[a].resume
	if id == "" {
		return ^uint64(0)
	}
	e, n, ok := parseID(id)
	if !ok {
		return ^uint64(0)
	}
	if el, ok := v.epochs[e]; ok && el == l {
		return n
	}
	return 0
}

// replay reports whether a client's attempt that handed it it resumed from
// before the event, so that the source could send it again from its
// replay window.
func (v *verifier) replay(r *reader, it *item, l life) bool {
	return r.kind == client && v.attemptPos(r, it.attempt, l) < it.id
}

// step applies one item to a strict reader's position.
func (v *verifier) step(name string, l life, lok bool, p position, it *item) position {
	if it.gap && it.from > it.id {
		v.add("bad-gap", "%s: gap %s", name, it.show())
		return p
	}
	switch {
	case !p.known:
	case it.gap && it.from != p.pos+1:
		if it.from <= p.pos {
			v.add("gap-overlap", "%s: gap %s names events up to %d it was handed", name, it.show(), p.pos)
		} else {
			v.skip(l, lok, p.pos+1, it.from-1, fmt.Sprintf("%s: events %d to %d skipped before gap %s", name, p.pos+1, it.from-1, it.show()))
		}
	case !it.gap && it.id <= p.pos:
		v.add("back", "%s: event %s after ID %d", name, it.show(), p.pos)
	case !it.gap && it.id > p.pos+1:
		v.skip(l, lok, p.pos+1, it.id-1, fmt.Sprintf("%s: events %d to %d skipped without a gap, before %s", name, p.pos+1, it.id-1, it.show()))
	}
	if p.known && it.id < p.pos {
		return p
	}
	p.pos, p.known = it.id, true
	return p
}

// skip reports a skip once every reader is known, saying who had the
// events skipped.
func (v *verifier) skip(l life, lok bool, from, to uint64, msg string) {
	v.ends = append(v.ends, func() {
		if !lok {
			v.add("skip", "%s", msg)
			return
		}
		s := v.life(l)
		var inproc, conn, none uint64
		for id := from; id <= to && id < from+100000; id++ {
			switch {
			case s.inproc[id]:
				inproc++
			case s.read[id] || s.taken.has(id):
				conn++
			default:
				none++
			}
		}
		v.add("skip", "%s (of them %d read in process, %d handed to connections, %d to no one)", msg, inproc, conn, none)
	})
}

// note adds an item to its life's stats.
func (v *verifier) note(l life, r *reader, it *item) {
	s := v.life(l)
	s.maxSeen = max(s.maxSeen, it.id)
	if it.gap {
		s.gapped.add(it.from, it.id)
		return
	}
	s.read[it.id] = true
	if s.by[it.id] == nil {
		s.by[it.id] = r
	}
	if r.kind == inProcess {
		s.inproc[it.id] = true
	}
}

// serverSide adds what the source handed to connections to the lives'
// stats.
func (v *verifier) serverSide() {
	for _, s := range v.h.subs {
		if s.err != nil {
			continue
		}
		l, ok := v.epochs[s.epoch]
		if !ok {
			continue
		}
		st := v.life(l)
		for _, tk := range s.takes {
			for _, id := range tk.ids {
				st.maxSeen = max(st.maxSeen, id)
				st.taken.add(id, id)
			}
			if tk.gap != (sse.Gap{}) {
				st.maxSeen = max(st.maxSeen, tk.gap.To)
				st.gapped.add(tk.gap.From, tk.gap.To)
			}
		}
	}
}

// storedIn returns the calls whose events are stored in l for sure: they
// returned nil before the life's first Close began.
func (v *verifier) storedIn(l life) []*call {
	cs, hasClose := v.h.closeStart[l]
	var out []*call
	for _, c := range v.h.calls {
		if c.key != l.key || c.gen != l.gen || c.out != stored || len(c.events) == 0 || c.mustFail {
			continue
		}
		if hasClose && c.end >= cs {
			continue
		}
		out = append(out, c)
	}
	return out
}

// bounds computes each life's lower bound on its last ID: the highest ID
// seen, and the number of distinct events stored in it.
func (v *verifier) bounds() {
	for t, rs := range v.reads {
		for _, rd := range rs {
			v.life(rd.l).tokens[t] = rd.it.id
		}
	}
	ls := make(map[life]bool)
	for l := range v.lives {
		ls[l] = true
	}
	for _, c := range v.h.calls {
		if c.out == stored && len(c.events) > 0 {
			ls[life{c.key, c.gen}] = true
		}
	}
	for l := range ls {
		s := v.life(l)
		distinct := make(map[string]bool)
		for _, c := range v.storedIn(l) {
			for _, ev := range c.events {
				distinct[token(ev.Data)] = true
			}
		}
		for t := range s.tokens {
			distinct[t] = true
		}
		s.minBound = max(s.maxSeen, uint64(len(distinct)))
		s.gapped.norm()
		s.taken.norm()
	}
}

// closedEnd checks a range that ended as finished: its life's Close had
// begun, and the reader had every event of the life or its gap.
func (v *verifier) closedEnd(r *reader, name string, p position) {
	var l life
	pos, known := p.pos, p.known
	if r.kind == inProcess {
		l = life{r.key, r.gen}
		if v.h.mode == sse.Queue {
			known = false // a Queue reader competes: it has no position
		}
	} else {
		s := v.lastSub(r)
		if s == nil {
			return
		}
		if s.genStart != s.genEnd {
			return
		}
		l = life{s.key, s.genStart}
		switch {
		case errors.Is(s.err, sse.ErrFinished):
			// 204: the request's ID, in this life, or 0 for an ID of
			// another life; no ID, no position.
			switch {
			case !s.req.Resume:
				known = false
			case s.req.Epoch != "" && v.life(l).epochs[s.req.Epoch]:
				pos, known = s.req.LastID, true
			default:
				pos, known = 0, true
			}
		case s.err == nil:
			if sl, ok := v.epochs[s.epoch]; ok {
				l = sl
			}
			a := len(r.attempts) - 1
			delivered := len(r.items) > 0 && r.items[len(r.items)-1].attempt == a
			switch {
			case delivered && p.epoch == s.epoch:
			case delivered:
				known = false
			case !s.req.Resume:
				known = p.known && p.epoch == s.epoch
			case s.req.Epoch == s.epoch:
				pos, known = s.req.LastID, true
			default:
				// An ID of another life counts as 0.
				pos, known = 0, true
			}
		default:
			return
		}
	}
	end := r.endTick
	how := "its range ended"
	if r.kind == client {
		how = "close"
		finished := "204"
		if r.multi != 0 {
			how, finished = "sse.close", "sse.close first"
		}
		if s := v.lastSub(r); s != nil && errors.Is(s.err, sse.ErrFinished) {
			how = fmt.Sprintf("%s to Last-Event-ID %q", finished, r.attempts[len(r.attempts)-1].resume)
		}
	}
	v.ends = append(v.ends, func() {
		cs, ok := v.h.closeStart[l]
		if !ok || cs > end {
			v.add("early-close", "%s: ended as finished (%s) in %v, whose key was not closed", name, how, l)
			return
		}
		if s := v.life(l); known && pos < s.minBound {
			var inproc, conn, seen uint64
			for id := pos + 1; id <= s.maxSeen; id++ {
				switch {
				case s.inproc[id]:
					inproc++
				case s.read[id] || s.taken.has(id):
					conn++
				}
				seen++
			}
			v.add("early-close", "%s: ended as finished (%s) at ID %d of %v, which has events up to at least %d (after %d: %d seen by someone, %d of them read in process, %d handed to connections; %d never seen, e.g. dropped)",
				name, how, pos, l, s.minBound, pos, seen, inproc, conn, s.minBound-max(pos, s.maxSeen))
		}
	})
}

// lastSub returns the server's record of a client's last attempt.
func (v *verifier) lastSub(r *reader) *subRecord {
	a := len(r.attempts) - 1
	for i := len(v.h.subs) - 1; i >= 0; i-- {
		if s := v.h.subs[i]; s.reader == r.id && s.attempt == a {
			return s
		}
	}
	return nil
}

// tokens checks each published event across readers: one ID in one life,
// in the life its call was made in; nothing of a refused call, nor of a
// call made after its key's Close returned, read; a batch's events
// consecutive; a producer's calls in order; and in Queue mode no event
// handed to two readers, unless over SSE to a client that resumed from
// before it (the replay window's purpose).
func (v *verifier) tokens() {
	toks := make([]string, 0, len(v.reads))
	for t := range v.reads {
		toks = append(toks, t)
	}
	slices.Sort(toks)
	for _, t := range toks {
		rs := v.reads[t]
		c := v.byToken[t]
		if c == nil {
			continue
		}
		first := rs[0]
		for _, rd := range rs[1:] {
			if rd.l != first.l || rd.it.id != first.it.id {
				v.add("stored-twice", "event %s of call %d read as %v ID %d by %s and as %v ID %d by %s", t, c.id, first.l, first.it.id, first.r.describe(), rd.l, rd.it.id, rd.r.describe())
			}
		}
		switch {
		case c.out == refused:
			v.add("refused-stored", "call %d (%s %s on %s) failed with %q, which says nothing was stored, yet %s read its event %s", c.id, c.op, c.kind, c.key, errText(c.err), first.r.describe(), first.it.show())
		case first.l.gen != c.gen:
			v.add("wrong-life", "event %s of call %d, made in %v, read in %v by %s", t, c.id, life{c.key, c.gen}, first.l, first.r.describe())
		}
		if ce, ok := v.h.closeEnd[life{c.key, c.gen}]; ok && c.start > ce && first.l.gen == c.gen {
			v.add("after-close", "event %s of call %d, made after its key's Close had returned, read by %s", t, c.id, first.r.describe())
		}
		if v.h.mode == sse.Queue && len(rs) > 1 {
			v.queueDuplicates(t, c, rs)
		}
	}
	// Batches contiguous, and each producer's calls in order.
	type pk struct {
		producer, gen int
		key           string
	}
	last := make(map[pk]*call)
	lastMax := make(map[pk]uint64)
	cs := slices.Clone(v.h.calls)
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].producer != cs[j].producer {
			return cs[i].producer < cs[j].producer
		}
		return cs[i].seq < cs[j].seq
	})
	for _, c := range cs {
		if len(c.events) == 0 {
			continue
		}
		var l life
		var lo, hi uint64
		n := 0
		for j, ev := range c.events {
			rs := v.reads[token(ev.Data)]
			if len(rs) == 0 {
				continue
			}
			id := rs[0].it.id
			if n == 0 {
				l, lo, hi = rs[0].l, id-uint64(j), id
			} else if rs[0].l == l && id != lo+uint64(j) && (v.h.atomic == 0 || c.bytes <= v.h.atomic) {
				v.add("batch-split", "call %d's event %d has ID %d in %v, its event 0 %d: a batch's events are consecutive", c.id, j, id, l, lo)
			}
			hi = max(hi, id)
			n++
		}
		if n == 0 || c.producer < 0 {
			continue
		}
		k := pk{c.producer, c.gen, c.key}
		if p := last[k]; p != nil {
			if pl := v.reads[token(p.events[0].Data)]; len(pl) > 0 && pl[0].l == l && lastMax[k] >= lo {
				v.add("order", "producer %d's call %d (IDs from %d) after its call %d (IDs to %d) in %v", c.producer, c.id, lo, p.id, lastMax[k], l)
			}
		}
		last[k], lastMax[k] = c, hi
	}
}

// queueDuplicates checks an event read more than once in Queue mode: only
// SSE clients may have it again, from the replay window, when one of the
// two resumed from before it.
func (v *verifier) queueDuplicates(t string, c *call, rs []tokenRead) {
	for i := range rs {
		for j := i + 1; j < len(rs); j++ {
			a, b := rs[i], rs[j]
			if a.r == b.r {
				continue // the reader's own check
			}
			if a.r.kind == client && b.r.kind == client && a.l == b.l && a.it.id == b.it.id && (a.repl || b.repl) {
				continue
			}
			v.add("read-twice", "event %s (call %d) handed to %s and to %s", a.it.show(), c.id, a.r.describe(), b.r.describe())
			return
		}
	}
}

// accounting checks, for each life the final phase closed and drained
// and no fault that loses data ended, that every event stored for sure was
// read by someone, or its ID named in a gap (or, in Queue mode, handed to a
// connection: the client that resumes over it is told). Under an overflow
// policy that drops events, Queue readers in process are not told of the
// drops, so only the rules on clients' gaps and ends hold.
func (v *verifier) accounting() {
	ls := make([]life, 0, len(v.h.settled))
	for l := range v.h.settled {
		ls = append(ls, l)
	}
	sort.Slice(ls, func(i, j int) bool { return ls[i].String() < ls[j].String() })
	for _, l := range ls {
		if v.h.lost[l] || (v.h.drops && v.h.mode == sse.Queue) {
			continue
		}
		s := v.life(l)
		var missing []string
		for _, c := range v.storedIn(l) {
			for _, ev := range c.events {
				if t := token(ev.Data); len(v.reads[t]) == 0 {
					missing = append(missing, t)
				}
			}
		}
		if len(missing) == 0 {
			continue
		}
		// An unread ID is explained if a connection took it (its client,
		// resuming over it, is told or gets it again), or if a gap named
		// it: in FanOut mode the history no longer holds it; in Queue mode
		// its hand-out was lost (a take whose floor write's ack was lost,
		// a reader that stopped before it yielded what it took), and some
		// reader of the key was told. Which one is not the contract's: the
		// reader that would have had it may be gone, and the one handed the
		// next ID may have had it before the loss was known.
		explained := 0
		var unexplained []uint64
		for id := uint64(1); id <= s.minBound; id++ {
			switch {
			case s.read[id]:
			case s.taken.has(id), s.gapped.has(id):
				explained++
			default:
				unexplained = append(unexplained, id)
			}
		}
		if len(missing) > explained {
			show := missing
			if len(show) > 10 {
				show = show[:10]
			}
			v.add("lost", "%v: %d events stored for sure were never read, and only %d of its unread IDs (up to %d) were handed to a connection or named in a gap: %v; unread IDs %s", l, len(missing), explained, s.minBound, show, v.unread(s, unexplained))
		}
	}
}

// unread describes the unread IDs of a life: in runs, each with the
// reader that read the ID before it, for the reader that stopped after
// its take's first events, or a take that nobody read.
func (v *verifier) unread(s *lifeStats, ids []uint64) string {
	var b strings.Builder
	for i := 0; i < len(ids) && i < 200; {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		fmt.Fprintf(&b, " %d-%d", ids[i], ids[j])
		if prev := s.by[ids[i]-1]; ids[i] > 1 && prev != nil {
			last := len(prev.items) > 0 && prev.items[len(prev.items)-1].id == ids[i]-1
			switch {
			case prev.kind == inProcess && prev.end == cancelled && last:
				fmt.Fprintf(&b, " (after the last event of reader %d, which stopped there)", prev.id)
			case prev.kind == inProcess && last:
				fmt.Fprintf(&b, " (after the last event of reader %d, %s: %v)", prev.id, prev.end, prev.endErr)
			default:
				fmt.Fprintf(&b, " (after an event of %s)", prev.describe())
			}
		}
		b.WriteString(";")
		i = j + 1
	}
	return b.String()
}

func errText(err error) string {
	if err == nil {
		return "nil"
	}
	return err.Error()
}

func (it *item) show() string {
	e := ""
	if it.epoch != "" {
		e = it.epoch + "-"
	}
	if it.gap {
		return fmt.Sprintf("gap(%s%d-%d)", e, it.from, it.id)
	}
	return fmt.Sprintf("%s%d[%s]", e, it.id, token(it.data))
}

func (r *reader) describe() string {
	m := ""
	if r.multi != 0 {
		m = fmt.Sprintf(", a key of multi-key %d", r.multi)
	}
	if r.kind == inProcess {
		return fmt.Sprintf("reader %d (in process %d, %s, %s, from %s%s)", r.id, r.proc, life{r.key, r.gen}, r.end, r.start, m)
	}
	return fmt.Sprintf("client %d (tab %d, %s, from %q, %d connections, %s%s)", r.id, r.identity, r.key, r.start, len(r.attempts), r.end, m)
}

// trace is a reader's items, for a report.
func (r *reader) trace() string {
	var b strings.Builder
	b.WriteString(r.describe())
	b.WriteString(":")
	a := -1
	for i := range r.items {
		it := &r.items[i]
		if r.kind == client && it.attempt != a {
			a = it.attempt
			if a >= 0 && a < len(r.attempts) {
				fmt.Fprintf(&b, " [conn %d from %q]", a, r.attempts[a].resume)
			}
		}
		b.WriteString(" ")
		b.WriteString(it.show())
	}
	if r.endErr != nil {
		fmt.Fprintf(&b, " (end: %v)", r.endErr)
	}
	return b.String()
}

// summary tells, per life, what was stored and read: for -check.v.
func (h *history) summary() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	type sum struct{ stored, read, calls int }
	ls := make(map[life]*sum)
	get := func(l life) *sum {
		if ls[l] == nil {
			ls[l] = &sum{}
		}
		return ls[l]
	}
	tok := make(map[string]life)
	for _, c := range h.calls {
		if c.out == stored {
			get(life{c.key, c.gen}).stored += len(c.events)
			get(life{c.key, c.gen}).calls++
			for _, ev := range c.events {
				tok[token(ev.Data)] = life{c.key, c.gen}
			}
		}
	}
	read := make(map[string]bool)
	for _, r := range h.readers {
		for _, it := range r.items {
			if !it.gap && !read[token(it.data)] {
				read[token(it.data)] = true
				if l, ok := tok[token(it.data)]; ok {
					get(l).read++
				}
			}
		}
	}
	var out []string
	for l, s := range ls {
		out = append(out, fmt.Sprintf("%v: %d calls, %d events stored, %d read, lost %v, settled %v", l, s.calls, s.stored, s.read, h.lost[l], h.settled[l]))
	}
	slices.Sort(out)
	return strings.Join(out, "\n")
}
