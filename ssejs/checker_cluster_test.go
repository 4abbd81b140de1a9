package ssejs_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
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

// TestCheckerCluster runs the conformance checker on three replicas, each
// connected (through a proxy) to its own node of a three-node JetStream
// cluster, with WithReplicas(3). The faults: the node leading the key's
// stream stopped and restarted, a replica's connection severed or stalled.
// A client reconnects to any replica, so that a resume often lands on a
// node other than the one its last event came from; in FanOut rounds,
// clients that follow several keys on one connection too. It starts a cluster
// per round, so the ordinary run skips it: it runs in CI (CI set), when
// CHECK_CLUSTER is set, or when -check.time or -check.seed is given.
func TestCheckerCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the checker runs for a while")
	}
	if os.Getenv("CI") == "" && os.Getenv("CHECK_CLUSTER") == "" && !flagSet("check.time") && !flagSet("check.seed") {
		t.Skip("a cluster per round: set CHECK_CLUSTER (CI runs it), or give -check.time or -check.seed")
	}
	conformance.Check(t, conformance.Backend{
		Name:  "ssejs-cluster",
		Caps:  conformance.Caps{AtomicBatch: 512 << 10},
		Start: startJSCluster,
	})
}

// flakySource ends one stream in two soon after it hands events out, as
// a load balancer that drops connections would, so that clients resume
// often, on any replica, right after their last event.
type flakySource struct {
	sse.Source[string]
	seed uint64
	n    atomic.Uint64
}

var errFlaky = errors.New("the test dropped the stream")

func (f *flakySource) Subscribe(ctx context.Context, key string, req sse.SubscribeRequest) (sse.Subscription, error) {
	sub, err := f.Source.Subscribe(ctx, key, req)
	if err != nil {
		return nil, err
	}
	return &flakySub{Subscription: sub, drop: rand.New(rand.NewPCG(f.seed, f.n.Add(1))).IntN(2) == 0}, nil
}

// flakyCursorSource is a flakySource over a Source that stores cursors:
// it forwards the store, which flakySource alone would hide from
// MultiHandler.
type flakyCursorSource struct {
	*flakySource
	sse.CursorStore[string]
}

type flakySub struct {
	sse.Subscription
	drop   bool
	handed bool
}

func (s *flakySub) Next(ctx context.Context, buf []sse.Event, tick <-chan time.Time, limit int) ([]sse.Event, sse.Gap, error) {
	if s.drop && s.handed {
		return nil, sse.Gap{}, errFlaky
	}
	evs, gap, err := s.Subscription.Next(ctx, buf, tick, limit)
	s.handed = s.handed || len(evs) > 0
	return evs, gap, err
}

// jsNode is one node of a cluster, which can stop and start again on its
// store, at its address.
type jsNode struct {
	opts *server.Options
	mu   sync.Mutex
	srv  *server.Server // guarded by mu; nil while stopped
}

func (n *jsNode) start() error {
	o := n.opts.Clone()
	srv, err := server.NewServer(o)
	if err != nil {
		return err
	}
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return errors.New("a NATS node did not start")
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
	return nil
}

func (n *jsNode) stop() {
	n.mu.Lock()
	srv := n.srv
	n.srv = nil
	n.mu.Unlock()
	if srv != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

func (n *jsNode) addr() string { return "127.0.0.1:" + strconv.Itoa(n.opts.Port) }

func startJSCluster(t testing.TB, s conformance.Setup) *conformance.Deployment {
	// Three nodes on free ports; again on others if one cannot start (a
	// port taken meanwhile by another process of a busy machine).
	var nodes []*jsNode
	stopAll := func() {
		for _, n := range nodes {
			n.stop()
		}
	}
	for attempt := 1; ; attempt++ {
		ports := []int{freePortOf(t), freePortOf(t), freePortOf(t)}
		var routes []string
		for _, p := range ports {
			routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
		}
		nodes = make([]*jsNode, 3)
		for i := range nodes {
			nodes[i] = &jsNode{opts: &server.Options{
				ServerName: fmt.Sprintf("n%d", i+1), JetStream: true, StoreDir: t.TempDir(),
				Host: "127.0.0.1", Port: freePortOf(t), NoLog: true, NoSigs: true,
				Cluster: server.ClusterOpts{Name: "sse", Host: "127.0.0.1", Port: ports[i]},
				Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
			}}
		}
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i, n := range nodes {
			wg.Go(func() { errs[i] = n.start() })
		}
		wg.Wait()
		err := errors.Join(errs...)
		if err == nil {
			break
		}
		stopAll()
		if attempt == 3 {
			t.Fatal(err)
		}
	}
	// Each replica's connection goes through a proxy to its own node,
	// and knows the other nodes' proxies to fail over to.
	proxies := make([]*conformance.NetProxy, 3)
	for i, n := range nodes {
		p, err := conformance.StartNetProxy(n.addr())
		if err != nil {
			t.Fatal(err)
		}
		proxies[i] = p
	}
	urls := func(i int) string {
		var us []string
		for j := range proxies {
			us = append(us, "nats://"+proxies[(i+j)%3].Addr())
		}
		return strings.Join(us, ",")
	}
	// JetStream needs a meta leader before a stream can be made.
	nc, err := nats.Connect(urls(0))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := jetstream.New(nc)
	for deadline := time.Now().Add(60 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			nc.Close()
			t.Fatalf("JetStream has no leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	name := uniqueName()
	opts := append(jsOptions(s, name), ssejs.WithReplicas(3), ssejs.WithTimeout(10*time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ps := make([]*jsProc, 3)
	for i := range ps {
		ps[i] = &jsProc{proxy: proxies[i], url: urls(i)}
		if err := ps[i].start(ctx, opts); err != nil {
			t.Fatal(err)
		}
	}
	nc.Close()
	leader := func(ctx context.Context) (int, error) {
		nc, err := nats.Connect(urls(0))
		if err != nil {
			return 0, err
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		st, err := js.Stream(ctx, "SSE_"+name)
		if err != nil {
			return 0, err
		}
		l := st.CachedInfo().Cluster.Leader
		for i, n := range nodes {
			if n.opts.ServerName == l {
				return i, nil
			}
		}
		return 0, fmt.Errorf("no node is the stream's leader %q", l)
	}
	killLeader := func(ctx context.Context, a conformance.FaultArgs) (func(context.Context) error, error) {
		// A cluster that has no stream leader to name within 10 s (the
		// last one killed, an election still going on a loaded machine)
		// gets no fault this time: that is NATS's availability, not a
		// rule of the contract.
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		i, err := leader(lctx)
		cancel()
		if err != nil {
			return nil, nil
		}
		nodes[i].stop()
		return func(context.Context) error { return nodes[i].start() }, nil
	}
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
	return &conformance.Deployment{
		Procs: 3,
		Impl: func(i int) conformance.Impl[string] {
			im := ps[i].impl()
			fs := &flakySource{Source: im.Source, seed: uint64(i)}
			im.Source = fs
			if cs, ok := fs.Source.(sse.CursorStore[string]); ok {
				// Multi-key clients get cursor IDs, stored in the
				// bucket every replica shares, as they do in production.
				im.Source = flakyCursorSource{fs, cs}
			}
			return im
		},
		Faults: []conformance.Fault{
			{Name: "kill-leader", Inject: killLeader},
			{Name: "sever", Inject: sever},
			{Name: "stall", Inject: stall},
		},
		Stop: func() {
			for _, p := range ps {
				p.proxy.Stall(false)
				p.proxy.Refuse(false)
			}
			for _, p := range ps {
				p.stop(5 * time.Second)
				p.proxy.Close()
			}
			stopAll()
		},
	}
}
