package conformance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/internal/cutproxy"
	"github.com/rocketqueue/sse/sseclient"
	"go.uber.org/goleak"
)

// A plan is a round's random mix of operations, drawn from its seed.
type plan struct {
	ops        time.Duration
	keys       int // keys in use at once
	producers  int
	pause      time.Duration // the most a producer waits between calls
	weights    [nOps]int
	readerGap  time.Duration // the most between two in-process readers' starts
	clientGap  time.Duration // the most between two clients' starts
	maxReaders int
	maxClients int
	cutPct     int // the share of connections the proxy cuts
	cutMax     int64
	faultGap   time.Duration
	faultLen   time.Duration
	terminate  bool // the handler ends streams with ---terminate--- instead of close
	maxMulti   int  // FanOut: multi-key readers and clients running at once
	// The share of multi-key clients' connections their own proxy cuts,
	// and the most bytes before a cut: more often than the others', so
	// that they resume several keys often.
	multiCutPct int
	multiCutMax int64
	// vectors hides the source's cursor store from MultiHandler, so that
	// the multi-key clients get IDs of the vector form, as a source
	// without a store gives them.
	vectors bool
	// The fewest and the most keys a multi-key client's tab follows: more
	// than sse.CursorDelta in some rounds, so that streams store cursors
	// again as their keys move, and resume from cursors some keys moved
	// past.
	minTabKeys, maxTabKeys int
}

const (
	opSingle = iota
	opBatch
	opEmpty
	opBig
	opOversize
	opInvalid
	opClose
	opLate
	opNewKey
	nOps
)

var opNames = [nOps]string{"single", "batch", "empty", "big", "oversize", "invalid", "close", "late", "new key"}

func drawPlan(rng *rand.Rand, o Options) plan {
	p := plan{
		ops:        o.Ops,
		keys:       1 + rng.IntN(4),
		producers:  1 + rng.IntN(3),
		pause:      time.Duration(1+rng.IntN(8)) * time.Millisecond,
		readerGap:  time.Duration(20+rng.IntN(200)) * time.Millisecond,
		clientGap:  time.Duration(20+rng.IntN(200)) * time.Millisecond,
		maxReaders: 1 + rng.IntN(6),
		maxClients: 1 + rng.IntN(6),
		cutPct:     rng.IntN(60),
		cutMax:     int64(200 + rng.IntN(32<<10)),
		faultGap:   time.Duration(300+rng.IntN(2500)) * time.Millisecond,
		faultLen:   time.Duration(50+rng.IntN(1500)) * time.Millisecond,
		terminate:  rng.IntN(5) == 0,
	}
	if p.ops == 0 {
		p.ops = time.Duration(1500+rng.IntN(1500)) * time.Millisecond
	}
	// Weights per mille, roughly.
	p.weights = [nOps]int{
		opSingle:   300 + rng.IntN(400),
		opBatch:    rng.IntN(300),
		opEmpty:    rng.IntN(40),
		opBig:      rng.IntN(15),
		opOversize: rng.IntN(10),
		opInvalid:  rng.IntN(20),
		opClose:    rng.IntN(25),
		opLate:     rng.IntN(15),
		opNewKey:   rng.IntN(20),
	}
	p.maxMulti = 1 + rng.IntN(3)
	p.multiCutPct = 30 + rng.IntN(60)
	p.multiCutMax = int64(200 + rng.IntN(3<<10))
	p.vectors = rng.IntN(4) == 0
	p.minTabKeys, p.maxTabKeys = 2, 5
	if rng.IntN(5) == 0 {
		p.wideTabs()
	}
	if o.tweak != nil {
		o.tweak(&p)
	}
	return p
}

// wideTabs makes the multi-key clients' tabs follow more keys than
// sse.CursorDelta, and the round have that many keys.
func (p *plan) wideTabs() {
	p.minTabKeys, p.maxTabKeys = sse.CursorDelta+1, sse.CursorDelta+8
	p.keys = max(p.keys, p.maxTabKeys)
}

func (p *plan) pick(rng *rand.Rand) int {
	total := 0
	for _, w := range p.weights {
		total += w
	}
	n := rng.IntN(total)
	for op, w := range p.weights {
		if n < w {
			return op
		}
		n -= w
	}
	return opSingle
}

// A tab is a client identity: a browser tab, which keeps its last event
// ID across the sequences (page loads) it runs.
type tab struct {
	id      int
	key     string
	last    string // the last ID it was handed
	running bool
	done    bool // its last sequence ended as finished
	used    bool // a request of it may have reached the server
}

type round struct {
	t     testing.TB
	b     Backend
	seed  uint64
	o     Options
	setup Setup
	pl    plan
	dep   *Deployment
	h     *history
	clock atomic.Int64
	ids   atomic.Int64 // call, reader and tab IDs
	mreqs atomic.Int64 // requests of multi-key clients
	// cursorIDs counts the cursor IDs multi-key clients read, forgotten
	// their requests from a cursor the store did not hold.
	cursorIDs, forgotten atomic.Int64
	began                time.Time

	// lifeMu is held for writing while a fault that loses data is
	// injected, and for reading by each call and each in-process range's
	// start, so that each knows its key's life.
	lifeMu sync.RWMutex

	mu        sync.Mutex
	cur       []Impl[string] // guarded by mu: each process's instance
	instGen   []int          // guarded by mu: the generation of each process's instance
	global    int            // guarded by mu: lives ended by LosesAll faults
	local     map[string]int // guarded by mu: lives ended by LosesKey faults, per key
	active    []string       // guarded by mu: keys producers publish to
	retired   []string       // guarded by mu: keys closed
	all       []string       // guarded by mu
	nkeys     int            // guarded by mu
	inproc    map[string]map[*reader]context.CancelFunc
	running   map[*reader]*run     // guarded by mu: readers and clients not ended
	tabs      []*tab               // guarded by mu
	seen      map[life]uint64      // guarded by mu: the highest ID read in process, per life
	seenEpoch map[string][2]string // guarded by mu: per key, an epoch and an ID clients saw
	nReaders  int                  // guarded by mu: in-process readers running
	nClients  int                  // guarded by mu: clients running
	nMulti    int                  // guarded by mu: multi-key readers and clients running
	mtabs     []*mtab              // guarded by mu
	faults    int                  // guarded by mu

	unstall chan struct{}
	procs   []*procHTTP
	tr      *http.Transport
	hc      *http.Client
	// mhc is the multi-key clients' HTTP client: a connection per
	// request, so that each draws its own cut from its proxy's table.
	mhc      *http.Client
	readerWG sync.WaitGroup
	hooks    []string
}

// run is a running reader's end, and how to stop it.
type run struct {
	done   chan struct{}
	cancel context.CancelFunc
}

type procHTTP struct {
	srv   *httptest.Server
	proxy *cutproxy.Proxy
	// multiProxy is the multi-key clients' proxy, which cuts more often.
	multiProxy *cutproxy.Proxy
	mu         sync.Mutex
	src        sse.Source[string] // guarded by mu: the source h serves
	gen        int                // guarded by mu: its generation
	h          http.Handler       // guarded by mu
	mh         http.Handler       // guarded by mu: the multi-key handler, FanOut only
}

// setupOf draws a round's setup from its seed.
func setupOf(seed uint64, caps Caps) Setup {
	rng := rand.New(rand.NewPCG(seed, 0x5e7))
	s := Setup{Mode: sse.Queue, MaxEventSize: 16 << (10 + rng.IntN(3))}
	if rng.IntN(2) == 1 {
		s.Mode = sse.FanOut
	}
	if m := caps.MaxEventSize; m > 0 && s.MaxEventSize > m {
		s.MaxEventSize = m
	} else if m == 0 && s.MaxEventSize > 64<<10 {
		s.MaxEventSize = 64 << 10
	}
	ovs := append([]Overflow{{}}, caps.Overflows...)
	if ov := ovs[rng.IntN(len(ovs))]; s.Mode == sse.Queue {
		s.Overflow = ov
	}
	if rng.IntN(2) == 0 {
		s.Retain = 2 + rng.IntN(40)
	}
	return s
}

func newRound(t testing.TB, b Backend, seed uint64, o Options) *round {
	s := setupOf(seed, b.Caps)
	rng := rand.New(rand.NewPCG(seed, 0x91a))
	r := &round{
		t: t, b: b, seed: seed, o: o, setup: s, pl: drawPlan(rng, o),
		local: make(map[string]int), inproc: make(map[string]map[*reader]context.CancelFunc),
		running: make(map[*reader]*run), seen: make(map[life]uint64), seenEpoch: make(map[string][2]string),
		unstall: make(chan struct{}),
	}
	r.h = newHistory(s.Mode, s.Mode == sse.Queue && s.Overflow.drops(), b.Caps.AtomicBatch)
	return r
}

func (r *round) rng(stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(r.seed, stream))
}

func (r *round) tick() int64 { return r.clock.Add(1) }

func (r *round) nextID() int { return int(r.ids.Add(1)) }

// run runs the round and checks its history.
func (r *round) run() *Report {
	t := r.t
	var baseline goleak.Option
	if !r.o.SkipLeakCheck {
		baseline = goleak.IgnoreCurrent()
	}
	r.began = time.Now()
	r.dep = r.b.Start(t, r.setup)
	if r.dep == nil {
		t.Fatalf("%s: Start returned no deployment", r.b.Name)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			r.teardown()
		}
	}
	defer stop()
	n := max(r.dep.Procs, 1)
	r.cur = make([]Impl[string], n)
	r.instGen = make([]int, n)
	for i := range n {
		r.cur[i] = r.dep.Impl(i)
	}
	r.startHTTP(n)

	// The first keys, created before anyone reads them.
	for range r.pl.keys {
		r.newKey(r.rng(1), -1, new(int))
	}

	runCtx, cancelRun := context.WithCancel(context.Background())
	var actors sync.WaitGroup
	for p := range r.pl.producers {
		actors.Go(func() { r.producer(runCtx, p) })
	}
	actors.Go(func() { r.readerSpawner(runCtx) })
	actors.Go(func() { r.clientSpawner(runCtx) })
	if r.setup.Mode == sse.FanOut && r.pl.maxMulti > 0 {
		actors.Go(func() { r.multiSpawner(runCtx) })
	}
	if !r.o.NoFaults {
		actors.Go(func() { r.faulter(runCtx) })
	}
	time.Sleep(r.pl.ops)
	cancelRun()
	actors.Wait()

	r.phase("ops")
	r.finish()
	r.phase("final phase")
	stop()
	r.phase("teardown")
	var leak error
	if !r.o.SkipLeakCheck {
		// Goroutines may take a moment to wind down (the backend's
		// connections, timers): look again for up to 15 s.
		for end := time.Now().Add(15 * time.Second); ; {
			if leak = goleak.Find(baseline); leak == nil || time.Now().After(end) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	r.phase("leak check")
	rep := &Report{Seed: r.seed, Setup: r.setup}
	rep.Violations = r.h.verify()
	if leak != nil {
		rep.Violations = append(rep.Violations, Violation{"goroutines", fmt.Sprintf("goroutines left at the end of the round: %v", leak)})
	}
	rep.Stats = r.stats()
	if *flagV {
		rep.summary = r.h.summary()
	}
	rep.Traces = r.traces(rep.Violations)
	return rep
}

func (r *round) stats() Stats {
	h := r.h
	h.mu.Lock()
	defer h.mu.Unlock()
	s := Stats{Calls: len(h.calls), Elapsed: time.Since(r.began)}
	for _, c := range h.calls {
		s.Events += len(c.events)
	}
	multi := make(map[int]readerKind)
	for _, rd := range h.readers {
		if rd.multi != 0 {
			multi[rd.multi] = rd.kind
		}
		if rd.kind == client {
			s.Clients++
			s.Connections += len(rd.attempts)
		} else {
			s.Readers++
		}
		for _, it := range rd.items {
			if it.gap {
				s.Gaps++
			} else {
				s.Reads++
			}
		}
	}
	for _, kind := range multi {
		if kind == client {
			s.MultiClients++
		} else {
			s.MultiReaders++
		}
	}
	s.MultiConnections = int(r.mreqs.Load())
	s.CursorIDs, s.ForgottenCursors = int(r.cursorIDs.Load()), int(r.forgotten.Load())
	r.mu.Lock()
	s.Faults = r.faults
	r.mu.Unlock()
	return s
}

// traces returns the traces of the readers that violations name.
func (r *round) traces(vs []Violation) []string {
	if len(vs) == 0 {
		return nil
	}
	want := make(map[string]bool)
	for _, v := range vs {
		for _, w := range []string{"reader ", "client "} {
			for rest := v.Detail; ; {
				i := strings.Index(rest, w)
				if i < 0 {
					break
				}
				rest = rest[i+len(w):]
				j := 0
				for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
					j++
				}
				if j > 0 {
					want[rest[:j]] = true
				}
			}
		}
	}
	// A violation about a life names no reader: show its key's readers.
	keys := make(map[string]bool)
	for _, v := range vs {
		if v.Rule != "lost" {
			continue
		}
		if i := strings.IndexByte(v.Detail, '#'); i > 0 {
			keys[v.Detail[:i]] = true
		}
	}
	var out []string
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	for _, rd := range r.h.readers {
		if want[strconv.Itoa(rd.id)] || keys[rd.key] || *flagV {
			tr := rd.trace()
			if len(tr) > 4000 {
				tr = tr[:2000] + " … " + tr[len(tr)-2000:]
			}
			out = append(out, tr)
		}
	}
	out = append(out, r.hooks...)
	return out
}

// phase notes how long a phase of the round took.
func (r *round) phase(name string) {
	if *flagV {
		r.note("%s done at %.2fs", name, time.Since(r.began).Seconds())
	}
}

// note adds a line to the report's traces.
func (r *round) note(format string, args ...any) {
	r.h.mu.Lock()
	r.hooks = append(r.hooks, fmt.Sprintf(format, args...))
	r.h.mu.Unlock()
}

// --- HTTP: one server per process, behind a proxy that cuts connections.

type ctxKey struct{}

// reqInfo is who made a request: the reader and its attempt; for a
// multi-key request, per key, the reader that follows the key and its
// attempt.
type reqInfo struct {
	reader, attempt int
	keys            map[string]reqInfo
	lastID          string // the request's Last-Event-ID
}

const (
	hdrReader  = "X-Check-Reader"
	hdrAttempt = "X-Check-Attempt"
	hdrKeys    = "X-Check-Keys" // a multi-key request's "<key>=<reader>.<attempt>,…"
)

func (r *round) startHTTP(n int) {
	r.tr = &http.Transport{MaxIdleConnsPerHost: 4, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}
	r.hc = &http.Client{Transport: r.tr}
	r.mhc = &http.Client{Transport: &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{Timeout: 5 * time.Second}).DialContext}}
	cutTable := cuts(r.rng(7), r.pl.cutPct, r.pl.cutMax)
	multiCuts := cuts(r.rng(8), r.pl.multiCutPct, r.pl.multiCutMax)
	for i := range n {
		p := &procHTTP{}
		p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			rid, err1 := strconv.Atoi(req.Header.Get(hdrReader))
			att, err2 := strconv.Atoi(req.Header.Get(hdrAttempt))
			if err1 != nil || err2 != nil {
				rid, att = -1, -1
			}
			info := reqInfo{reader: rid, attempt: att}
			if req.URL.Path == "/m" { // a multi-key client's, even with no key open (all closed in its ID)
				info.keys = parseKeysHeader(req.Header.Get(hdrKeys))
				info.lastID = req.Header.Get("Last-Event-ID")
			}
			ctx := context.WithValue(req.Context(), ctxKey{}, info)
			r.handler(i, p, req.URL.Path == "/m").ServeHTTP(w, req.WithContext(ctx))
		}))
		var err error
		if p.proxy, err = cutproxy.Start(p.srv.Listener.Addr().String(), cutproxy.Options{Cut: func(c int) int64 { return cutTable[c%len(cutTable)] }}); err != nil {
			r.t.Fatal(err)
		}
		if p.multiProxy, err = cutproxy.Start(p.srv.Listener.Addr().String(), cutproxy.Options{Cut: func(c int) int64 { return multiCuts[c%len(multiCuts)] }}); err != nil {
			p.proxy.Close()
			r.t.Fatal(err)
		}
		r.procs = append(r.procs, p)
	}
}

// cuts returns a proxy's cut table: for each connection, by its number,
// the byte offset at which it is cut (pct in 100 of them, below max), or
// -1 for none.
func cuts(rng *rand.Rand, pct int, max int64) *[4096]int64 {
	var t [4096]int64
	for i := range t {
		t[i] = -1
		if rng.IntN(100) < pct {
			t[i] = rng.Int64N(max)
		}
	}
	return &t
}

// handler returns the handler serving process i's current instance: the
// multi-key one (MultiHandler, FanOut only) if multi.
func (r *round) handler(i int, p *procHTTP, multi bool) http.Handler {
	r.mu.Lock()
	src, gen := r.cur[i].Source, r.instGen[i]
	r.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.h == nil || p.src != src || p.gen != gen {
		opts := []sse.HandlerOption{sse.WithHeartbeat(250 * time.Millisecond), sse.WithWriteTimeout(2 * time.Second), sse.WithRetry(20 * time.Millisecond)}
		if r.pl.terminate {
			opts = append(opts, sse.WithTerminateMessage())
		}
		var rs sse.Source[string] = &recSource{r: r, proc: i, gen: gen, src: src}
		if cs, ok := src.(sse.CursorStore[string]); ok && !r.pl.vectors {
			rs = &recCursorSource{recSource: rs.(*recSource), store: cs}
		}
		p.src, p.gen, p.h = src, gen, sse.Handler[string](rs, func(req *http.Request) (string, error) {
			return strings.TrimPrefix(req.URL.Path, "/k/"), nil
		}, opts...)
		p.mh = nil
		if src.Mode() == sse.FanOut {
			p.mh = sse.MultiHandler[string](rs, func(req *http.Request) ([]string, error) {
				return strings.Split(req.URL.Query().Get("keys"), ","), nil
			}, opts...)
			if r.o.wrapMulti != nil {
				p.mh = r.o.wrapMulti(p.mh)
			}
		}
	}
	if multi && p.mh != nil {
		return p.mh
	}
	return p.h
}

func (r *round) teardown() {
	for _, p := range r.procs {
		p.proxy.Close()
		p.multiProxy.Close()
	}
	for _, p := range r.procs {
		p.srv.CloseClientConnections()
		p.srv.Close()
	}
	if r.tr != nil {
		r.tr.CloseIdleConnections()
	}
	if r.dep != nil && r.dep.Stop != nil {
		r.dep.Stop()
	}
}

// recSource records, for the history, what the source hands to each
// connection: the server's side of the story.
type recSource struct {
	r    *round
	proc int
	gen  int // the generation of the instance it serves
	src  sse.Source[string]
}

func (s *recSource) Mode() sse.Mode { return s.src.Mode() }

func (s *recSource) Subscribe(ctx context.Context, key string, req sse.SubscribeRequest) (sse.Subscription, error) {
	info, ok := ctx.Value(ctxKey{}).(reqInfo)
	if !ok {
		info = reqInfo{reader: -1, attempt: -1}
	}
	if info.keys != nil {
		if ki, ok := info.keys[key]; ok {
			info = ki
		} else {
			info = reqInfo{reader: -1, attempt: -1}
		}
	}
	rec := &subRecord{reader: info.reader, attempt: info.attempt, key: key, proc: s.proc, req: req}
	rec.req.Abort = nil
	rec.genStart = s.genOf(key)
	sub, err := s.src.Subscribe(ctx, key, req)
	rec.genEnd = s.genOf(key)
	rec.err = err
	if err == nil {
		rec.epoch = sub.Epoch()
	}
	h := s.r.h
	h.mu.Lock()
	h.subs = append(h.subs, rec)
	h.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &recSub{Subscription: sub, rec: rec, h: h}, nil
}

// A recCursorSource is a recSource over a Source that stores cursors: it
// forwards the store, so that MultiHandler writes cursor IDs, and checks
// each cursor a request resumes from against what the client's ID stands
// for.
type recCursorSource struct {
	*recSource
	store sse.CursorStore[string]
}

func (s *recCursorSource) SaveCursor(ctx context.Context, c sse.Cursor[string]) (string, error) {
	return s.store.SaveCursor(ctx, c)
}

// Newest records the epoch it returns, as Subscribe does: a key
// restarted from a cursor the store forgot may get its gap and sse.close
// with no subscription.
func (s *recCursorSource) Newest(ctx context.Context, key string) (string, uint64, error) {
	genStart := s.genOf(key)
	epoch, id, err := s.store.Newest(ctx, key)
	if err == nil && epoch != "" {
		rec := epochRecord{key: key, epoch: epoch, genStart: genStart, genEnd: s.genOf(key)}
		s.r.h.mu.Lock()
		s.r.h.newest = append(s.r.h.newest, rec)
		s.r.h.mu.Unlock()
	}
	return epoch, id, err
}

// LoadCursor loads the cursor a multi-key client's request resumes from,
// and settles, per key the request resumes, what the server resumes it
// from: a key the cursor does not know ("!", or a cursor the store
// forgot) restarts with a gap up to its newest event, as from "0"; any
// other entry of a key that did not move since the cursor was stored
// must be the one the client's ID stands for.
func (s *recCursorSource) LoadCursor(ctx context.Context, name string) (sse.Cursor[string], error) {
	c, err := s.store.LoadCursor(ctx, name)
	info, ok := ctx.Value(ctxKey{}).(reqInfo)
	if !ok || info.keys == nil || err != nil && !errors.Is(err, sse.ErrUnknownCursor) {
		return c, err
	}
	var moved map[int]string
	if x, perr := parseMultiID(info.lastID, len(c.Keys)); err == nil && perr == nil {
		moved = x.entries
	}
	positions := strings.Split(c.Positions, ",")
	h := s.r.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.forgot[info.reader]++
		s.r.forgotten.Add(1)
	}
	for _, rd := range h.readers {
		ki, ok := info.keys[rd.key]
		if !ok || rd.id != ki.reader || ki.attempt < 0 || ki.attempt >= len(rd.attempts) {
			continue
		}
		entry := "!"
		if err == nil {
			p := slices.Index(c.Keys, rd.key)
			if _, m := moved[p]; p < 0 || m || p >= len(positions) {
				continue
			}
			entry = positions[p]
		}
		at := &rd.attempts[ki.attempt]
		switch {
		case entry == "!":
			at.resume = "0"
		case entry == "" && at.resume != "0":
			// The server says the client has nothing of the key's current
			// life: a key restarted from an unknown position that had no
			// event then, or began a new life since, is read from its
			// start, and the client's entry, of an earlier life, counts as
			// 0 too. The resume is accounted from "0": were the client to
			// have had events of the current life, they would come again,
			// and the reader's accounting flags each as a duplicate.
			at.resume = "0"
		case entryResume(entry) != at.resume:
			h.extra = append(h.extra, Violation{"cursor", fmt.Sprintf("%s: resumed from %q, whose cursor %q holds %q for the key, not the %q the client's ID stands for", rd.describe(), info.lastID, name, entry, at.resume)})
		}
	}
	return c, err
}

func (s *recSource) genOf(key string) int {
	s.r.mu.Lock()
	defer s.r.mu.Unlock()
	return s.gen + s.r.local[key]
}

type recSub struct {
	sse.Subscription
	rec *subRecord
	h   *history
}

func (s *recSub) Next(ctx context.Context, buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	evs, gap, err := s.Subscription.Next(ctx, buf, tick, limit)
	return s.record(evs, gap, err)
}

// Poll records what Poll hands over, as Next does: a multi-key stream
// reads its keys with Poll.
func (s *recSub) Poll(ctx context.Context, buf []sse.Event, limit int, wake func()) ([]sse.Event, sse.Gap, error) {
	evs, gap, err := s.Subscription.Poll(ctx, buf, limit, wake)
	return s.record(evs, gap, err)
}

// record adds what a Next or a Poll handed over, if anything, to the
// subscription's takes.
func (s *recSub) record(evs []sse.Event, gap sse.Gap, err error) ([]sse.Event, sse.Gap, error) {
	if len(evs) > 0 || gap != (sse.Gap{}) || err != nil {
		tk := take{gap: gap, err: err}
		for _, ev := range evs {
			tk.ids = append(tk.ids, ev.ID)
		}
		s.h.mu.Lock()
		s.rec.takes = append(s.rec.takes, tk)
		s.h.mu.Unlock()
	}
	return evs, gap, err
}

// --- Keys and lives.

func (r *round) genOf(proc int, key string) int {
	return r.instGen[proc] + r.local[key]
}

func (r *round) pickActive(rng *rand.Rand) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.active) == 0 {
		return "", false
	}
	return r.active[rng.IntN(len(r.active))], true
}

func (r *round) pickAny(rng *rand.Rand) (string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.retired) > 0 && (rng.IntN(8) == 0 || len(r.active) == 0) {
		return r.retired[rng.IntN(len(r.retired))], true
	}
	if len(r.active) == 0 {
		return "", false
	}
	return r.active[rng.IntN(len(r.active))], true
}

// newKey creates a key (Open, or a first event) before anyone reads it,
// so that no request creates it first as a request key of its own life.
func (r *round) newKey(rng *rand.Rand, producer int, seq *int) {
	r.mu.Lock()
	key := "k" + strconv.Itoa(r.nkeys)
	r.nkeys++
	r.all = append(r.all, key)
	r.mu.Unlock()
	proc := rng.IntN(len(r.cur))
	r.mu.Lock()
	_, canOpen := r.cur[proc].Publisher.(opener)
	r.mu.Unlock()
	if canOpen && rng.IntN(2) == 0 {
		c := r.newCall(producer, seq, proc, "open", "open", key, nil)
		r.do(c, func(ctx context.Context, im Impl[string]) error {
			if o, ok := im.Publisher.(opener); ok {
				return o.Open(ctx, key)
			}
			return nil
		})
	} else {
		c := r.newCall(producer, seq, proc, "publish", "single", key, r.events(rng, 1))
		stamp(c)
		r.publish(c)
	}
	r.mu.Lock()
	r.active = append(r.active, key)
	r.mu.Unlock()
}

// opener is a Publisher that can create a key before its first event.
type opener interface {
	Open(ctx context.Context, key string) error
}

// retire takes a closed key out of the producers' keys, and adds a new
// one if the round runs fewer than its plan.
func (r *round) retire(key string) {
	r.mu.Lock()
	if i := slices.Index(r.active, key); i >= 0 {
		r.active = slices.Delete(r.active, i, i+1)
		r.retired = append(r.retired, key)
	}
	r.mu.Unlock()
}

// --- Producers.

func (r *round) newCall(producer int, seq *int, proc int, op, kind, key string, evs []sse.Event) *call {
	c := &call{id: r.nextID(), producer: producer, seq: *seq, proc: proc, op: op, kind: kind, key: key, events: evs}
	*seq++
	for _, ev := range evs {
		c.bytes += len(ev.Name) + len(ev.Data)
	}
	return c
}

// do makes a call, recording its life, when it began and ended, and what
// it returned.
func (r *round) do(c *call, f func(ctx context.Context, im Impl[string]) error) {
	r.lifeMu.RLock()
	r.mu.Lock()
	im := r.cur[c.proc]
	c.gen = r.genOf(c.proc, c.key)
	r.mu.Unlock()
	l := life{c.key, c.gen}
	c.start = r.tick()
	if c.op == "close" {
		r.h.mu.Lock()
		if _, ok := r.h.closeStart[l]; !ok {
			r.h.closeStart[l] = c.start
		}
		r.h.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.o.CallTimeout)
	c.err = f(ctx, im)
	cancel()
	c.end = r.tick()
	r.lifeMu.RUnlock()
	switch {
	case c.err == nil:
		c.out = stored
	case errors.Is(c.err, sse.ErrInvalidEvent), errors.Is(c.err, sse.ErrInvalidKey),
		errors.Is(c.err, sse.ErrClosed), errors.Is(c.err, sse.ErrShutdown):
		c.out = refused
	default:
		c.out = unknown
	}
	r.h.mu.Lock()
	if c.op == "close" && c.err == nil {
		if _, ok := r.h.closeEnd[l]; !ok {
			r.h.closeEnd[l] = c.end
		}
	}
	r.h.calls = append(r.h.calls, c)
	r.h.mu.Unlock()
}

func (r *round) publish(c *call) {
	unnamed := true
	for _, ev := range c.events {
		unnamed = unnamed && ev.Name == ""
	}
	r.do(c, func(ctx context.Context, im Impl[string]) error {
		if unnamed && c.id%2 == 0 {
			c.op = "enqueue"
			data := make([]string, len(c.events))
			for i, ev := range c.events {
				data[i] = ev.Data
			}
			return im.Publisher.Enqueue(ctx, c.key, data...)
		}
		return im.Publisher.Publish(ctx, c.key, c.events...)
	})
}

// events makes n events, each with a token of its own at the start of
// its data. The call's ID is filled in by stamp.
func (r *round) events(rng *rand.Rand, n int) []sse.Event {
	evs := make([]sse.Event, n)
	for i := range evs {
		switch x := rng.IntN(20); {
		case x < 12:
		case x < 17:
			evs[i].Name = "n"
		case x < 19:
			evs[i].Name = "ünï"
		default:
			evs[i].Name = "progress"
		}
		switch x := rng.IntN(20); {
		case x < 13:
			evs[i].Data = ""
		case x < 16:
			evs[i].Data = " " + strings.Repeat("p", rng.IntN(300))
		case x < 18:
			evs[i].Data = "\nsecond line\n\nfourth"
		case x < 19:
			evs[i].Data = "\r\ncr lf\rcr"
		default:
			evs[i].Data = " ünïcödé ✓"
		}
	}
	return evs
}

// stamp puts the call's tokens at the start of its events' data.
func stamp(c *call) {
	for j := range c.events {
		c.events[j].Data = "t" + strconv.Itoa(c.id) + "." + strconv.Itoa(j) + c.events[j].Data
	}
}

func (r *round) producer(ctx context.Context, id int) {
	rng := r.rng(100 + uint64(id))
	seq := 0
	for ctx.Err() == nil {
		time.Sleep(time.Duration(rng.Int64N(int64(r.pl.pause))))
		op := r.pl.pick(rng)
		proc := rng.IntN(len(r.cur))
		switch op {
		case opNewKey:
			r.mu.Lock()
			n := len(r.active)
			r.mu.Unlock()
			if n < 2*r.pl.keys {
				r.newKey(rng, id, &seq)
			}
			continue
		case opClose:
			key, ok := r.pickActive(rng)
			if !ok {
				continue
			}
			c := r.newCall(id, &seq, proc, "close", "close", key, nil)
			r.do(c, func(ctx context.Context, im Impl[string]) error { return im.Publisher.Close(ctx, key) })
			r.retire(key)
			r.mu.Lock()
			n := len(r.active)
			r.mu.Unlock()
			if n < r.pl.keys {
				r.newKey(rng, id, &seq)
			}
			continue
		}
		var key string
		var ok bool
		if op == opLate {
			r.mu.Lock()
			if len(r.retired) > 0 {
				key, ok = r.retired[rng.IntN(len(r.retired))], true
			}
			r.mu.Unlock()
		} else {
			key, ok = r.pickActive(rng)
		}
		if !ok {
			continue
		}
		var c *call
		switch op {
		case opSingle, opLate:
			c = r.newCall(id, &seq, proc, "publish", opNames[op], key, r.events(rng, 1))
		case opBatch:
			c = r.newCall(id, &seq, proc, "publish", "batch", key, r.events(rng, 2+rng.IntN(12)))
		case opEmpty:
			c = r.newCall(id, &seq, proc, "publish", "empty", key, nil)
		case opBig:
			c = r.newCall(id, &seq, proc, "publish", "big", key, r.events(rng, 1+rng.IntN(3)))
		case opOversize:
			c = r.newCall(id, &seq, proc, "publish", "oversize", key, r.events(rng, 1+rng.IntN(2)))
			c.mustFail = true
		case opInvalid:
			c = r.newCall(id, &seq, proc, "publish", "invalid", key, r.events(rng, 1+rng.IntN(3)))
			c.mustFail = true
		}
		stamp(c)
		switch op {
		case opBig:
			// Near the limit: each event a few bytes short of it, or at it.
			for j := range c.events {
				ev := &c.events[j]
				pad := r.setup.MaxEventSize - len(ev.Name) - len(ev.Data) - rng.IntN(8)
				if pad > 0 {
					ev.Data += " " + strings.Repeat("x", pad-1)
				}
			}
		case opOversize:
			j := rng.IntN(len(c.events))
			ev := &c.events[j]
			if pad := r.setup.MaxEventSize + 1 - len(ev.Name) - len(ev.Data); pad > 0 {
				ev.Data += strings.Repeat("y", pad)
			}
		case opInvalid:
			j := rng.IntN(len(c.events))
			ev := &c.events[j]
			switch rng.IntN(7) {
			case 0:
				ev.Name = sse.EventClose
			case 1:
				ev.Name = sse.EventGap
			case 2:
				ev.Name = sse.ReservedPrefix + "x"
			case 3:
				ev.Name, ev.Data = "", sse.TerminateData // no token: nothing of the call may be read anyway
			case 4:
				ev.Name = "a\nb"
			case 5:
				ev.Data += "\xff"
			default:
				ev.Name = "bad\x00"
			}
		}
		c.bytes = 0
		for _, ev := range c.events {
			c.bytes += len(ev.Name) + len(ev.Data)
		}
		r.publish(c)
	}
}

// --- In-process readers.

// A readerPlan says how a reader or client behaves.
type readerPlan struct {
	max   int           // stop after this many items; 0: read to the end
	life  time.Duration // stop after this long; 0: never
	stall int           // per mille of items after which it stalls
	still time.Duration // how long a stall lasts, at most
}

func drawReaderPlan(rng *rand.Rand) readerPlan {
	p := readerPlan{}
	if rng.IntN(3) != 0 {
		p.max = 1 + rng.IntN(120)
	}
	if rng.IntN(3) == 0 {
		p.life = time.Duration(50+rng.IntN(2000)) * time.Millisecond
	}
	if rng.IntN(3) == 0 {
		p.stall = 10 + rng.IntN(150)
		p.still = time.Duration(20+rng.IntN(800)) * time.Millisecond
	}
	return p
}

// stallFor waits d, or less if ctx ends or the round's stalls are over.
func (r *round) stallFor(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-r.unstall:
	}
}

func (r *round) readerSpawner(ctx context.Context) {
	rng := r.rng(200)
	for sleepCtx(ctx, time.Duration(rng.Int64N(int64(r.pl.readerGap)))) {
		r.mu.Lock()
		n := r.nReaders
		r.mu.Unlock()
		if n >= r.pl.maxReaders {
			continue
		}
		key, ok := r.pickAny(rng)
		if !ok {
			continue
		}
		proc := rng.IntN(len(r.cur))
		pl := drawReaderPlan(rng)
		from := rng.IntN(10)
		r.startReader(key, proc, pl, from, rng.Uint64(), false)
	}
}

// startReader starts an in-process range over key's events on process
// proc. from picks a FanOut reader's start: 0-3 the oldest held, 4-7
// after an ID seen (or 0), 8-9 live.
func (r *round) startReader(key string, proc int, pl readerPlan, from int, salt uint64, final bool) (*reader, chan struct{}) {
	r.lifeMu.RLock()
	defer r.lifeMu.RUnlock()
	rd := &reader{id: r.nextID(), kind: inProcess, key: key, proc: proc, final: final, start: "held"}
	var opts []sse.ReadOption
	r.mu.Lock()
	im := r.cur[proc]
	rd.gen = r.genOf(proc, key)
	if r.setup.Mode == sse.FanOut {
		switch {
		case from >= 8:
			opts, rd.start = []sse.ReadOption{sse.Live()}, "live"
		case from >= 4:
			after := uint64(0)
			if s := r.seen[life{key, rd.gen}]; s > 0 && from > 4 {
				after = salt % (s + 1)
			}
			opts, rd.start, rd.after, rd.hasAfter = []sse.ReadOption{sse.After(after)}, "after "+strconv.FormatUint(after, 10), after, true
		}
	} else {
		rd.start = "queue"
	}
	ctx, cancel := context.WithCancel(context.Background())
	if pl.life > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), pl.life)
	}
	done := make(chan struct{})
	r.running[rd] = &run{done, cancel}
	if r.inproc[key] == nil {
		r.inproc[key] = make(map[*reader]context.CancelFunc)
	}
	r.inproc[key][rd] = cancel
	r.nReaders++
	r.mu.Unlock()
	r.h.mu.Lock()
	r.h.readers = append(r.h.readers, rd)
	r.h.mu.Unlock()
	rng := rand.New(rand.NewPCG(salt, 1))
	r.readerWG.Go(func() {
		defer close(done)
		defer cancel()
		defer func() {
			r.mu.Lock()
			delete(r.running, rd)
			delete(r.inproc[key], rd)
			r.nReaders--
			r.mu.Unlock()
		}()
		n := 0
		for ev, err := range im.Reader.Events(ctx, key, opts...) {
			if err != nil {
				var ge *sse.GapError
				if errors.As(err, &ge) {
					r.addItem(rd, item{gap: true, from: ge.From, id: ge.To, attempt: -1})
					continue
				}
				r.endReader(rd, ctx, err)
				return
			}
			r.addItem(rd, item{id: ev.ID, name: ev.Name, data: ev.Data, attempt: -1})
			n++
			if pl.max > 0 && n >= pl.max {
				r.endReader(rd, nil, context.Canceled)
				return
			}
			if pl.stall > 0 && rng.IntN(1000) < pl.stall {
				r.stallFor(ctx, time.Duration(rng.Int64N(int64(pl.still))))
			}
		}
		r.endReader(rd, ctx, nil)
	})
	return rd, done
}

func (r *round) addItem(rd *reader, it item) {
	it.tick = r.tick()
	r.h.mu.Lock()
	rd.items = append(rd.items, it)
	r.h.mu.Unlock()
	if rd.kind == inProcess && !it.gap {
		r.mu.Lock()
		l := life{rd.key, rd.gen}
		if it.id > r.seen[l] {
			r.seen[l] = it.id
		}
		r.mu.Unlock()
	}
}

// endReader records how a range ended: err nil is a finished range
// (close, 204); an error once ctx ended (or context.Canceled with a nil
// ctx: the reader stopped by its plan) is the checker stopping it.
func (r *round) endReader(rd *reader, ctx context.Context, err error) {
	tk := r.tick()
	r.h.mu.Lock()
	defer r.h.mu.Unlock()
	if rd.end == hung {
		return
	}
	rd.endTick = tk
	switch {
	case err == nil:
		rd.end = closed
	case ctx == nil || ctx.Err() != nil:
		rd.end = cancelled
	default:
		rd.end, rd.endErr = failed, err
	}
}

// --- SSE clients.

func (r *round) clientSpawner(ctx context.Context) {
	rng := r.rng(300)
	for sleepCtx(ctx, time.Duration(rng.Int64N(int64(r.pl.clientGap)))) {
		r.mu.Lock()
		n := r.nClients
		r.mu.Unlock()
		if n >= r.pl.maxClients {
			continue
		}
		key, ok := r.pickAny(rng)
		if !ok {
			continue
		}
		// An idle tab of the key resumes, or a new tab opens.
		var tb *tab
		start := ""
		r.mu.Lock()
		if rng.IntN(2) == 0 {
			var idle []*tab
			for _, x := range r.tabs {
				if x.key == key && !x.running {
					idle = append(idle, x)
				}
			}
			if len(idle) > 0 {
				tb = idle[rng.IntN(len(idle))]
				switch x := rng.IntN(10); {
				case x < 7:
					start = tb.last
				case x < 9:
					start = "0"
				}
			}
		}
		if tb == nil {
			tb = &tab{id: r.nextID(), key: key}
			r.tabs = append(r.tabs, tb)
			switch x := rng.IntN(20); {
			case x < 11:
			case x < 16:
				start = "0"
			case x < 17:
				start = "zz" + strconv.Itoa(rng.IntN(1000)) + "-" + strconv.Itoa(1+rng.IntN(5))
			default:
				if se, ok := r.seenEpoch[key]; ok {
					start = se[1]
				}
			}
		}
		tb.running = true
		r.mu.Unlock()
		r.startClient(tb, start, drawReaderPlan(rng), rng.Uint64(), false)
	}
}

// startClient starts an SSE client of tab tb: a sequence of
// sseclient, which reconnects by itself, starting from start.
func (r *round) startClient(tb *tab, start string, pl readerPlan, salt uint64, final bool) (*reader, chan struct{}) {
	rd := &reader{id: r.nextID(), kind: client, key: tb.key, identity: tb.id, start: start, final: final, proc: -1}
	ctx, cancel := context.WithCancel(context.Background())
	if pl.life > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), pl.life)
	}
	done := make(chan struct{})
	r.mu.Lock()
	r.running[rd] = &run{done, cancel}
	r.nClients++
	tb.running = true
	r.mu.Unlock()
	r.h.mu.Lock()
	r.h.readers = append(r.h.readers, rd)
	r.h.mu.Unlock()
	rng := rand.New(rand.NewPCG(salt, 2))
	procs := len(r.procs)
	// In FanOut mode, a quarter of the clients go through MultiHandler
	// with one key, which serves it as Handler does.
	viaMulti := r.setup.Mode == sse.FanOut && salt%4 == 0
	newRequest := func(ctx context.Context, id string) (*http.Request, error) {
		r.h.mu.Lock()
		rd.attempts = append(rd.attempts, attempt{resume: id, tick: r.tick()})
		a := len(rd.attempts) - 1
		r.h.mu.Unlock()
		r.mu.Lock()
		tb.used = true
		r.mu.Unlock()
		p := rng.IntN(procs)
		path := "/k/" + tb.key
		if viaMulti {
			path = "/m?keys=" + tb.key
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.procs[p].proxy.Addr()+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set(hdrReader, strconv.Itoa(rd.id))
		req.Header.Set(hdrAttempt, strconv.Itoa(a))
		return req, nil
	}
	opts := []sseclient.Option{
		sseclient.WithHTTPClient(r.hc),
		sseclient.WithBackoff(2*time.Millisecond, 100*time.Millisecond),
		sseclient.WithIdleTimeout(3 * time.Second),
	}
	if start != "" {
		opts = append(opts, sseclient.WithLastEventID(start))
	}
	r.readerWG.Go(func() {
		defer close(done)
		defer cancel()
		finished := false
		defer func() {
			r.mu.Lock()
			delete(r.running, rd)
			r.nClients--
			tb.running = false
			tb.done = finished
			r.mu.Unlock()
		}()
		n := 0
		for ev, err := range sseclient.Stream(ctx, newRequest, opts...) {
			if err != nil {
				r.endReader(rd, ctx, err)
				return
			}
			r.h.mu.Lock()
			a := len(rd.attempts) - 1
			r.h.mu.Unlock()
			it := item{attempt: a, name: ev.Name, data: ev.Data}
			epoch, id, ok := parseID(ev.ID)
			if ev.Name == sseclient.EventGap {
				from, to, gok := ev.Gap()
				if !gok || !ok {
					r.h.violation("bad-gap", "client %d: gap event with ID %q and data %q", rd.id, ev.ID, ev.Data)
					continue
				}
				it.gap, it.from, it.id, it.epoch = true, from, to, epoch
				if id != to {
					r.h.violation("bad-gap", "client %d: gap event with ID %q names %d to %d", rd.id, ev.ID, from, to)
				}
			} else {
				if !ok || epoch == "" {
					r.h.violation("bad-id", "client %d: event with ID %q", rd.id, ev.ID)
					continue
				}
				it.epoch, it.id = epoch, id
			}
			r.addItem(rd, it)
			r.mu.Lock()
			tb.last = ev.ID
			r.seenEpoch[tb.key] = [2]string{epoch, ev.ID}
			r.mu.Unlock()
			n++
			if pl.max > 0 && n >= pl.max {
				r.endReader(rd, nil, context.Canceled)
				return
			}
			if pl.stall > 0 && rng.IntN(1000) < pl.stall {
				r.stallFor(ctx, time.Duration(rng.Int64N(int64(pl.still))))
			}
		}
		finished = true
		r.endReader(rd, ctx, nil)
	})
	return rd, done
}

// --- Faults.

func (r *round) faulter(ctx context.Context) {
	var fs []Fault
	for _, f := range r.dep.Faults {
		if len(f.Modes) == 0 || slices.Contains(f.Modes, r.setup.Mode) {
			fs = append(fs, f)
		}
	}
	if len(fs) == 0 {
		return
	}
	rng := r.rng(400)
	for sleepCtx(ctx, time.Duration(rng.Int64N(int64(r.pl.faultGap)))) {
		f := fs[rng.IntN(len(fs))]
		key, ok := r.pickActive(rng)
		if !ok {
			continue
		}
		a := FaultArgs{Key: key, Proc: rng.IntN(len(r.cur)), Rand: rng}
		r.inject(ctx, f, a, time.Duration(rng.Int64N(int64(r.pl.faultLen))))
	}
}

// inject injects a fault, waits d (or until ctx ends) and heals it.
func (r *round) inject(ctx context.Context, f Fault, a FaultArgs, d time.Duration) {
	r.mu.Lock()
	r.faults++
	r.mu.Unlock()
	r.note("fault %s on process %d, key %s, for %v", f.Name, a.Proc, a.Key, d)
	var heal func(context.Context) error
	var err error
	fctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	switch f.Loses {
	case LosesAll:
		r.lifeMu.Lock()
		tk := r.tick()
		r.mu.Lock()
		keys := slices.Clone(r.all)
		gens := make([]int, len(keys))
		for i, k := range keys {
			gens[i] = r.global + r.local[k]
		}
		r.mu.Unlock()
		r.h.mu.Lock()
		for i, k := range keys {
			l := life{k, gens[i]}
			r.h.lost[l] = true
			if _, ok := r.h.closeStart[l]; !ok {
				r.h.closeStart[l] = tk
			}
		}
		r.h.mu.Unlock()
		heal, err = f.Inject(fctx, a)
		r.mu.Lock()
		r.global++
		for i := range r.instGen {
			r.instGen[i] = r.global
		}
		r.mu.Unlock()
		r.refresh()
		r.lifeMu.Unlock()
	case LosesKey:
		r.lifeMu.Lock()
		r.mu.Lock()
		var dones []chan struct{}
		for rd, cancel := range r.inproc[a.Key] {
			cancel()
			if x := r.running[rd]; x != nil {
				dones = append(dones, x.done)
			}
		}
		l := life{a.Key, r.global + r.local[a.Key]}
		r.mu.Unlock()
		for _, d := range dones {
			select {
			case <-d:
			case <-time.After(10 * time.Second):
				r.h.violation("hang", "an in-process reader of %s did not end within 10 s of its context's end", a.Key)
			}
		}
		r.h.mu.Lock()
		r.h.lost[l] = true
		r.h.mu.Unlock()
		heal, err = f.Inject(fctx, a)
		r.mu.Lock()
		r.local[a.Key]++
		r.mu.Unlock()
		r.refresh()
		r.lifeMu.Unlock()
	default:
		heal, err = f.Inject(fctx, a)
		r.refresh()
	}
	if err != nil {
		r.t.Errorf("%s: fault %s: %v", r.b.Name, f.Name, err)
	}
	if heal == nil {
		return
	}
	sleepCtx(ctx, d)
	if err := heal(fctx); err != nil {
		r.t.Errorf("%s: healing %s: %v", r.b.Name, f.Name, err)
	}
	r.refresh()
}

// refresh asks the deployment for each process's current instance.
func (r *round) refresh() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.cur {
		im := r.dep.Impl(i)
		if im.Source != r.cur[i].Source || im.Publisher != r.cur[i].Publisher {
			r.cur[i] = im
			r.instGen[i] = r.global
		}
	}
}

// --- The end of a round.

// finish closes every key, resumes the Queue clients that may still be
// owed events and drains each key (Queue) or reads it whole (FanOut), and
// waits for every reader to end, within the hang bound.
func (r *round) finish() {
	close(r.unstall)
	r.refresh()
	deadline := time.Now().Add(r.o.HangBound)
	r.mu.Lock()
	keys := slices.Clone(r.all)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() { r.finalKey(k, i, deadline) })
	}
	wg.Wait()
	r.waitReaders(deadline)
}

func (r *round) finalKey(key string, i int, deadline time.Time) {
	seq := 0
	var c *call
	for {
		c = r.newCall(-1, &seq, 0, "close", "final", key, nil)
		r.do(c, func(ctx context.Context, im Impl[string]) error { return im.Publisher.Close(ctx, key) })
		if c.err == nil || errors.Is(c.err, sse.ErrClosed) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c.err != nil && !errors.Is(c.err, sse.ErrClosed) {
		r.note("final Close of %s: %v", key, c.err)
		return
	}
	l := life{key, c.gen}
	salt := r.seed ^ uint64(i)<<32
	wait := func(done chan struct{}) bool {
		select {
		case <-done:
			return true
		case <-time.After(time.Until(deadline)):
			return false
		}
	}
	if r.setup.Mode == sse.Queue {
		// The tabs that may be owed events resume, one at a time.
		r.mu.Lock()
		var owing []*tab
		for _, tb := range r.tabs {
			if tb.key == key && !tb.running && !tb.done && (tb.used || tb.last != "") {
				owing = append(owing, tb)
			}
		}
		if len(owing) > 5 {
			owing = owing[len(owing)-5:]
		}
		for _, tb := range owing {
			tb.running = true
		}
		r.mu.Unlock()
		for j, tb := range owing {
			r.mu.Lock()
			start := tb.last
			r.mu.Unlock()
			if start == "" {
				start = "0"
			}
			_, done := r.startClient(tb, start, readerPlan{}, salt+uint64(j), true)
			if !wait(done) {
				return
			}
		}
	}
	// Queue: a reader drains what is left; FanOut: one reads the whole
	// history (after 0). One that fails (the backend still recovering)
	// is followed by another, until one finishes or the deadline.
	from := 0
	if r.setup.Mode == sse.FanOut {
		from = 4
	}
	for j := 0; time.Now().Before(deadline); j++ {
		rd, done := r.startReader(key, j%len(r.cur), readerPlan{}, from, salt, true)
		if !wait(done) {
			return
		}
		r.h.mu.Lock()
		end, gen := rd.end, rd.gen
		r.h.mu.Unlock()
		if end == closed {
			if gen == l.gen {
				r.h.mu.Lock()
				r.h.settled[l] = true
				r.h.mu.Unlock()
			}
			if r.setup.Mode == sse.Queue {
				r.drainAgain(key, salt, wait)
			}
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// drainAgain, in Queue mode, waits for the key's other in-process readers
// to end, then reads the key once more: one that stopped while the drain
// ran forfeits what it took and did not yield, which only a later reader
// can be told of.
func (r *round) drainAgain(key string, salt uint64, wait func(chan struct{}) bool) {
	r.mu.Lock()
	var readers []chan struct{}
	for rd, x := range r.running {
		if rd.key == key && rd.kind == inProcess && !rd.final {
			readers = append(readers, x.done)
		}
	}
	r.mu.Unlock()
	for _, done := range readers {
		if !wait(done) {
			return
		}
	}
	_, done := r.startReader(key, 0, readerPlan{}, 0, salt+1, true)
	wait(done)
}

// waitReaders waits for every reader to end by the deadline; those that
// do not have hung.
func (r *round) waitReaders(deadline time.Time) {
	r.mu.Lock()
	left := make(map[*reader]*run, len(r.running))
	for rd, x := range r.running {
		left[rd] = x
	}
	r.mu.Unlock()
	for rd, x := range left {
		select {
		case <-x.done:
			continue
		case <-time.After(time.Until(deadline)):
		}
		r.h.mu.Lock()
		rd.end = hung
		tr := rd.trace()
		r.h.mu.Unlock()
		r.h.violation("hang", "%s did not end within %v of the keys' close, once every fault was healed: %.600s", rd.describe(), r.o.HangBound, tr)
	}
	// Stop the hung ones.
	r.mu.Lock()
	for _, x := range r.running {
		x.cancel()
	}
	r.mu.Unlock()
	ok := make(chan struct{})
	go func() {
		r.readerWG.Wait()
		close(ok)
	}()
	select {
	case <-ok:
	case <-time.After(10 * time.Second):
		r.t.Errorf("%s: readers still running 10 s after they were stopped", r.b.Name)
	}
}

// sleepCtx sleeps d and reports whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return ctx.Err() == nil
	case <-ctx.Done():
		return false
	}
}
