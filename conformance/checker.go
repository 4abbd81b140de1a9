package conformance

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

var (
	flagSeed = flag.String("check.seed", "", "conformance checker: run only the round of this seed (as printed)")
	flagTime = flag.Duration("check.time", 0, "conformance checker: run fresh rounds for this long, per backend (default 60s when CI is set, 12s otherwise)")
	flagV    = flag.Bool("check.v", false, "conformance checker: log each round's setup and figures, and the traces of every reader named in a violation")
)

// DefaultHangBound is how long, once every fault is healed, every key is
// closed and stalls are over, each reader may take to end: past it the
// reader is reported as hung. It is generous, so that it holds on a
// loaded two-core machine under the race detector.
const DefaultHangBound = 60 * time.Second

// A Backend is an implementation under test, as its test describes it to
// [Check].
type Backend struct {
	// Name names the backend in reports and picks its regression seeds.
	Name string
	// Caps says what the backend supports.
	Caps Caps
	// Start starts a fresh deployment in the given setup: every process
	// (replica) sharing the keys, and the faults it can inject. It fails t
	// if it cannot. The checker calls the deployment's Stop at the end of
	// the round, then checks that no goroutine is left.
	Start func(t testing.TB, s Setup) *Deployment
}

// Caps are what a backend supports, which the checker reads when it draws
// a round's setup.
type Caps struct {
	// Overflows are the Queue-mode overflow settings it supports besides
	// the unbounded default.
	Overflows []Overflow
	// AtomicBatch: a call's events keep consecutive IDs when their Names
	// and Data hold at most this many bytes (a backend that splits larger
	// batches sets it); 0: always.
	AtomicBatch int
	// MaxEventSize is the largest event size the backend takes in
	// [Setup].MaxEventSize; 0 means 64 KiB.
	MaxEventSize int
}

// Overflow is a Queue-mode overflow setting: WithMaxPending(Max, Policy)
// and WithBuffer(Buffer), as the root package has them. The zero value is
// the unbounded default.
type Overflow struct {
	Policy sse.Overflow
	Max    int
	Buffer int
}

func (o Overflow) String() string {
	if o.Policy == 0 {
		return "unbounded"
	}
	return fmt.Sprintf("%s(%d, buffer %d)", o.Policy, o.Max, o.Buffer)
}

// drops reports whether the policy drops events.
func (o Overflow) drops() bool { return o.Policy == sse.DropOldest || o.Policy == sse.DropNewest }

// A Setup is the configuration of one round, which the backend's Start
// applies.
type Setup struct {
	Mode sse.Mode
	// Overflow is Queue mode's overflow setting, one of the backend's
	// Caps.Overflows or the zero value.
	Overflow Overflow
	// Retain, if not 0, is how much a key keeps to send again: its replay
	// window, in events, in Queue mode; its history in FanOut mode, in
	// events (or messages, for a backend that counts those). Small values
	// make gaps.
	Retain int
	// MaxEventSize is the most bytes an event's Name and Data may hold
	// together: the backend refuses larger events with ErrInvalidEvent.
	MaxEventSize int
}

func (s Setup) String() string {
	o := ""
	if s.Mode == sse.Queue {
		o = ", overflow " + s.Overflow.String()
	}
	r := "default"
	if s.Retain > 0 {
		r = strconv.Itoa(s.Retain)
	}
	return fmt.Sprintf("%s%s, retain %s, max event %d B", s.Mode, o, r, s.MaxEventSize)
}

// A Deployment is one running instance of a backend: its processes and
// the faults it can inject.
type Deployment struct {
	// Procs is the number of processes (replicas) sharing the keys.
	Procs int
	// Impl returns process i's current instance. A fault that restarts a
	// process changes it; the checker asks again after each fault and heal.
	Impl func(i int) Impl[string]
	// Faults are what the backend can do to itself.
	Faults []Fault
	// Stop stops everything Start started, and returns once it has.
	Stop func()
}

// Loss says what a fault loses, legitimately.
type Loss uint8

const (
	// LosesNothing: the backend is durable through the fault; every key's
	// life and every stored event survive (an engine restarted on its store,
	// a severed or stalled connection, a replica killed).
	LosesNothing Loss = iota
	// LosesKey: the fault ends the key's life and loses its events (its
	// data expired now); what comes next is a new life of the key.
	LosesKey
	// LosesAll: every key's life ends and every event is lost (a restart
	// of a backend that is not durable, such as the in-process broker).
	LosesAll
)

// A Fault is something a backend can do to itself during a round. The
// checker injects the backend's faults at random times, one at a time,
// and heals each after a while; the backend says what each loses, and the
// checker expects nothing more lost than that.
type Fault struct {
	Name  string
	Loses Loss
	// Modes, if not empty, are the modes the fault makes sense in.
	Modes []sse.Mode
	// Inject starts the fault. It returns the function that heals it, or
	// nil if nothing is left to heal when Inject returns (a restart). The
	// checker holds back its producers and the starts of its readers
	// while a fault that loses data is injected.
	Inject func(ctx context.Context, a FaultArgs) (heal func(context.Context) error, err error)
}

// FaultArgs are what the checker chose for one injection.
type FaultArgs struct {
	Key  string     // a key in use (the key a LosesKey fault concerns)
	Proc int        // a process, from 0
	Rand *rand.Rand // the round's randomness for the fault's own choices
}

// Options tune a round. The zero value is what [Check] uses.
type Options struct {
	// Ops is how long the round runs operations before it heals its
	// faults, closes every key and checks the history; 0 draws it between
	// 1.5 and 3 s from the seed.
	Ops time.Duration
	// HangBound is how long each reader may take to end once the keys are
	// closed; 0 is DefaultHangBound.
	HangBound time.Duration
	// CallTimeout bounds each producer call; 0 is 3 s.
	CallTimeout time.Duration
	// NoFaults leaves the backend's faults out.
	NoFaults bool
	// SkipLeakCheck leaves out the check that the round's goroutines are
	// gone at its end (for rounds run side by side).
	SkipLeakCheck bool

	tweak     func(*plan)                     // the checker's own tests change the plan
	wrapMulti func(http.Handler) http.Handler // and wrap the multi-key handler
}

// A Report is what one round found.
type Report struct {
	Seed       uint64
	Setup      Setup
	Violations []Violation
	// Traces are the items of the readers that violations name, for a
	// human to read.
	Traces []string
	Stats  Stats

	summary string
}

// Stats are a round's figures. Readers and Clients count one per key
// that a multi-key reader or client follows, and Connections one per key
// of each of their requests; MultiReaders and MultiClients count the
// multi-key ones, MultiConnections the multi-key clients' requests;
// CursorIDs counts the events of the cursor form's IDs they read, and
// ForgottenCursors their requests from a cursor the store no longer held.
type Stats struct {
	Calls, Events, Readers, Clients, Connections, Reads, Gaps, Faults int
	MultiReaders, MultiClients, MultiConnections                      int
	CursorIDs, ForgottenCursors                                       int
	Elapsed                                                           time.Duration
}

// add adds o's figures to s's.
func (s *Stats) add(o Stats) {
	s.Calls += o.Calls
	s.Events += o.Events
	s.Readers += o.Readers
	s.Clients += o.Clients
	s.Connections += o.Connections
	s.Reads += o.Reads
	s.Gaps += o.Gaps
	s.Faults += o.Faults
	s.MultiReaders += o.MultiReaders
	s.MultiClients += o.MultiClients
	s.MultiConnections += o.MultiConnections
	s.CursorIDs += o.CursorIDs
	s.ForgottenCursors += o.ForgottenCursors
	s.Elapsed += o.Elapsed
}

func (s Stats) String() string {
	return fmt.Sprintf("%d calls (%d events), %d readers, %d clients over %d connections, multi-key: %d readers, %d clients over %d connections, %d cursor IDs, %d forgotten cursors; %d reads, %d gaps, %d faults, %.1fs",
		s.Calls, s.Events, s.Readers, s.Clients, s.Connections, s.MultiReaders, s.MultiClients, s.MultiConnections, s.CursorIDs, s.ForgottenCursors, s.Reads, s.Gaps, s.Faults, s.Elapsed.Seconds())
}

// Check runs the checker on a backend: first the backend's regression
// seeds (testdata/seeds.txt), then rounds from a fresh seed for a bounded
// time: 60 s when the environment variable CI is set, 12 s otherwise, or
// -check.time. With -check.seed=N it runs only round N. Each round is a
// subtest named by its seed, which fails on any violation; the seed is
// printed at the start of each round, so that a crash names it too.
func Check(t *testing.T, b Backend) {
	if *flagSeed != "" {
		seed, err := strconv.ParseUint(*flagSeed, 10, 64)
		if err != nil {
			t.Fatalf("-check.seed=%q: %v", *flagSeed, err)
		}
		runRound(t, b, seed)
		return
	}
	budget := *flagTime
	if budget == 0 {
		budget = 12 * time.Second
		if os.Getenv("CI") != "" {
			budget = 60 * time.Second
		}
	}
	start := time.Now()
	var total Stats
	rounds, failed := 0, 0
	count := func(st Stats, ok bool) {
		total.add(st)
		if rounds++; !ok {
			failed++
		}
	}
	defer func() {
		fmt.Fprintf(os.Stderr, "conformance: %s: %d rounds with violations of %d: %s\n", b.Name, failed, rounds, total)
		t.Logf("%d rounds with violations of %d: %s", failed, rounds, total)
	}()
	for _, s := range RegressionSeeds(b.Name) {
		count(runRound(t, b, s.Seed))
	}
	master := rand.Uint64()
	fmt.Fprintf(os.Stderr, "conformance: %s: fresh rounds from seed %d for %v\n", b.Name, master, budget)
	t.Logf("fresh rounds from seed %d for %v", master, budget)
	rng := rand.New(rand.NewPCG(master, 0))
	for i := 0; i == 0 || time.Since(start) < budget; i++ {
		if t.Failed() && i > 0 {
			break
		}
		count(runRound(t, b, rng.Uint64()))
	}
}

// runRound runs one round as a subtest, and fails it on any violation;
// it returns the round's figures, and whether it passed.
func runRound(t *testing.T, b Backend, seed uint64) (st Stats, ok bool) {
	ok = t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
		fmt.Fprintf(os.Stderr, "conformance: %s: round seed=%d (replay with -check.seed=%d)\n", b.Name, seed, seed)
		rep := CheckSeed(t, b, seed, Options{})
		st = rep.Stats
		if *flagV {
			t.Logf("%s: %s\n%s", rep.Setup, rep.Stats, rep.summary)
		}
		if len(rep.Violations) == 0 {
			return
		}
		var sb strings.Builder
		fmt.Fprintf(&sb, "%s, seed %d (replay: go test -run '%s' -check.seed=%d), %s: %d violations\n", b.Name, seed, t.Name(), seed, rep.Setup, len(rep.Violations))
		for _, v := range rep.Violations {
			fmt.Fprintf(&sb, "  %s\n", v)
		}
		if len(rep.Traces) > 0 {
			sb.WriteString("traces:\n")
			for _, tr := range rep.Traces {
				fmt.Fprintf(&sb, "  %s\n", tr)
			}
		}
		t.Error(sb.String())
	})
	return st, ok
}

// CheckSeed runs the round of one seed and returns what it found. It
// fails t only when the round cannot run (the backend cannot start, a
// heal fails); violations of the contract are in the report, so that a
// test can also expect them (the checker's own tests do).
func CheckSeed(t testing.TB, b Backend, seed uint64, o Options) *Report {
	t.Helper()
	if o.HangBound == 0 {
		o.HangBound = DefaultHangBound
	}
	if o.CallTimeout == 0 {
		o.CallTimeout = 3 * time.Second
	}
	r := newRound(t, b, seed, o)
	return r.run()
}

//go:embed testdata/seeds.txt
var seedsFile string

// A Seed is a regression seed: a round that once found a violation.
type Seed struct {
	Backend string
	Seed    uint64
	Found   string // what it found, and on which commit
}

// RegressionSeeds returns the recorded seeds of a backend, from
// testdata/seeds.txt: one per line, "<backend> <seed> <what it found>",
// with # starting a comment.
func RegressionSeeds(backend string) []Seed {
	var out []Seed
	for line := range strings.Lines(seedsFile) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) < 2 || f[0] != backend {
			continue
		}
		s, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		found := ""
		if len(f) == 3 {
			found = f[2]
		}
		out = append(out, Seed{Backend: f[0], Seed: s, Found: found})
	}
	return out
}
