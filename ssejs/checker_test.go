package ssejs_test

import (
	"context"
	"errors"
	"flag"
	"iter"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/conformance"
	"github.com/rocketqueue/sse/ssejs"
)

// TestChecker runs the conformance checker on the broker: two replicas,
// each with its own NATS connection through a proxy that can sever, stall
// or refuse it, on one embedded server. The faults: a replica's connection
// severed (an outage) or stalled (a black hole), the server restarted on
// its store, a replica killed and started again, a lease write whose
// acknowledgement is lost before its replica's connection is severed
// (Queue), and a key's data expired now. In FanOut rounds the checker's
// clients also follow several keys on one connection, through
// sse.MultiHandler over the broker.
//
// It runs in the default run and CI's (the regression seeds, then fresh
// rounds for conformance's default time, 60 s when CI is set); -check.time
// runs longer, -check.seed replays one seed.
func TestChecker(t *testing.T) {
	if testing.Short() {
		t.Skip("the checker runs for a while")
	}
	conformance.Check(t, conformance.Backend{
		Name:  "ssejs",
		Caps:  conformance.Caps{AtomicBatch: 512 << 10},
		Start: func(t testing.TB, s conformance.Setup) *conformance.Deployment { return startJS(t, s, 2) },
	})
}

// flagSet reports whether the named flag was given.
func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// jsServer is an embedded NATS server that can restart on its store.
type jsServer struct {
	t    testing.TB
	dir  string
	port int
	mu   sync.Mutex
	srv  *server.Server // guarded by mu
}

func (s *jsServer) start() error {
	o := &server.Options{JetStream: true, StoreDir: s.dir, Port: s.port, Host: "127.0.0.1", NoLog: true, NoSigs: true}
	srv, err := server.NewServer(o)
	if err != nil {
		return err
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("the NATS server did not start")
	}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	return nil
}

func (s *jsServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func (s *jsServer) url() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// jsProc is one replica: its proxy, its connection and its broker.
type jsProc struct {
	proxy *conformance.NetProxy
	url   string // the NATS URLs it connects to; "" for its proxy's
	mu    sync.Mutex
	nc    *nats.Conn            // guarded by mu
	b     *ssejs.Broker[string] // guarded by mu
	// armed: the next take of an in-process reader that fails severs the
	// connection before the reader learns of it, so that the broker cannot
	// write again (the lost-lease-ack fault: a floor write stored, its ack
	// lost, and the connection gone with it).
	armed   atomic.Bool
	severed chan struct{} // closed when an armed read severed
}

func (p *jsProc) impl() conformance.Impl[string] {
	p.mu.Lock()
	defer p.mu.Unlock()
	return conformance.Impl[string]{Publisher: p.b, Reader: &armedReader{p, p.b}, Source: p.b}
}

// trip severs the connection if armed and a read failed for the lost
// ack (DropLeaseAcks makes the write fail with DeadlineExceeded), not for
// the reader's own context.
func (p *jsProc) trip(ctx context.Context, err error) {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil && p.armed.CompareAndSwap(true, false) {
		ssejs.DropLeaseAcks(p.b, 0)
		p.proxy.Refuse(true)
		p.proxy.Sever()
		close(p.severed)
	}
}

type armedReader struct {
	p *jsProc
	b *ssejs.Broker[string]
}

func (r *armedReader) Events(ctx context.Context, key string, from ...sse.ReadOption) iter.Seq2[sse.Event, error] {
	return func(yield func(sse.Event, error) bool) {
		for ev, err := range r.b.Events(ctx, key, from...) {
			r.p.trip(ctx, err)
			if !yield(ev, err) {
				return
			}
		}
	}
}

func jsOptions(s conformance.Setup, name string) []ssejs.Option {
	opts := []ssejs.Option{
		ssejs.WithName(name), ssejs.WithMode(s.Mode), ssejs.WithMaxEventSize(s.MaxEventSize),
		ssejs.WithLease(time.Second), ssejs.WithTimeout(3 * time.Second),
	}
	if s.Retain > 0 {
		if s.Mode == sse.FanOut {
			opts = append(opts, ssejs.WithHistoryMessages(s.Retain))
		} else {
			opts = append(opts, ssejs.WithReplayEvents(s.Retain))
		}
	}
	return opts
}

// connectVia connects to NATS (through a proxy), reconnecting for ever,
// trying the URLs in the order given.
func connectVia(url string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(25*time.Millisecond), nats.DontRandomize(),
		nats.PingInterval(500*time.Millisecond), nats.MaxPingsOutstanding(3), nats.Timeout(2*time.Second))
	if err != nil {
		return nil, nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}

// start connects the replica and makes its broker.
func (p *jsProc) start(ctx context.Context, opts []ssejs.Option) error {
	url := p.url
	if url == "" {
		url = "nats://" + p.proxy.Addr()
	}
	nc, js, err := connectVia(url)
	if err != nil {
		return err
	}
	b, err := ssejs.New[string](ctx, js, opts...)
	if err != nil {
		nc.Close()
		return err
	}
	p.mu.Lock()
	p.nc, p.b = nc, b
	p.mu.Unlock()
	return nil
}

// stop shuts the replica's broker down (within d) and closes its
// connection.
func (p *jsProc) stop(d time.Duration) {
	p.mu.Lock()
	nc, b := p.nc, p.b
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if b != nil {
		b.Shutdown(ctx)
	}
	if nc != nil {
		nc.Close()
	}
}

func startJS(t testing.TB, s conformance.Setup, procs int) *conformance.Deployment {
	srv := &jsServer{t: t, dir: t.TempDir(), port: freePortOf(t)}
	if err := srv.start(); err != nil {
		t.Fatal(err)
	}
	name := uniqueName()
	opts := jsOptions(s, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ps := make([]*jsProc, procs)
	for i := range ps {
		proxy, err := conformance.StartNetProxy(srv.url())
		if err != nil {
			t.Fatal(err)
		}
		ps[i] = &jsProc{proxy: proxy}
		if err := ps[i].start(ctx, opts); err != nil {
			t.Fatal(err)
		}
	}
	// The faults; for each, heal returns the replica or server to health.
	sever := func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
		p := ps[a.Proc]
		p.proxy.Refuse(true)
		p.proxy.Sever()
		return func(context.Context) error { p.proxy.Refuse(false); return nil }, nil
	}
	stall := func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
		p := ps[a.Proc]
		p.proxy.Stall(true)
		return func(context.Context) error { p.proxy.Stall(false); return nil }, nil
	}
	restart := func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
		srv.stop()
		return func(context.Context) error { return srv.start() }, nil
	}
	kill := func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
		p := ps[a.Proc]
		p.stop(time.Duration(a.Rand.IntN(200)) * time.Millisecond)
		return func(ctx context.Context) error {
			for {
				err := p.start(ctx, opts)
				if err == nil || ctx.Err() != nil {
					return err
				}
				time.Sleep(100 * time.Millisecond)
			}
		}, nil
	}
	lostAck := func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
		// The replica's next lease writes are stored and their acks lost
		// (a take then fails, handing out nothing), and its connection
		// dies before it writes again: severed by the first read that
		// fails so, before the reader (and the broker) can react.
		p := ps[a.Proc]
		p.mu.Lock()
		b := p.b
		p.mu.Unlock()
		p.severed = make(chan struct{})
		p.armed.Store(true)
		// Every lease write, until an in-process reader's take fails:
		// renewals' and connections' writes may come first (a
		// connection's client gets its take from the replay window).
		ssejs.DropLeaseAcks(b, 1<<30)

		return func(context.Context) error {
			// Armed for 3 s at least, until a take's write fails.
			select {
			case <-p.severed:
			case <-time.After(3 * time.Second):
			}
			if p.armed.CompareAndSwap(true, false) {
				ssejs.DropLeaseAcks(b, 0)
				return nil
			}
			// Severed: long enough for the lease to expire, so that
			// another replica takes the key over first.
			<-p.severed
			time.Sleep(1500 * time.Millisecond)
			p.proxy.Refuse(false)
			return nil
		}, nil
	}
	expire := func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
		// What MaxAge would do to the key, now: its messages are gone.
		nc, js, err := connectVia("nats://" + srv.url())
		if err != nil {
			return nil, err
		}
		defer nc.Close()
		st, err := js.Stream(ctx, "SSE_"+name)
		if err != nil {
			return nil, err
		}
		tok, err := ssejs.Token[string](stringCodec{}, a.Key)
		if err != nil {
			return nil, err
		}
		return nil, st.Purge(ctx, jetstream.WithPurgeSubject("sse."+name+".e."+tok))
	}
	faults := []conformance.Fault{
		{Name: "sever", Inject: sever},
		{Name: "stall", Inject: stall},
		{Name: "restart-server", Inject: restart},
		{Name: "kill-replica", Inject: kill},
		{Name: "expire-key", Inject: expire, Loses: conformance.LosesKey},
	}
	// Twice as likely as the others in Queue mode: it needs an in-process
	// reader taking on the replica at the time.
	faults = append(faults,
		conformance.Fault{Name: "lost-lease-ack", Inject: lostAck, Modes: []sse.Mode{sse.Queue}},
		conformance.Fault{Name: "lost-lease-ack", Inject: lostAck, Modes: []sse.Mode{sse.Queue}})
	return &conformance.Deployment{
		Procs:  procs,
		Impl:   func(i int) conformance.Impl[string] { return ps[i].impl() },
		Faults: faults,
		Stop: func() {
			for _, p := range ps {
				p.proxy.Stall(false)
				p.proxy.Refuse(false)
			}
			for _, p := range ps {
				p.stop(5 * time.Second)
				p.proxy.Close()
			}
			srv.stop()
		},
	}
}
