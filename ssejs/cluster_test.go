package ssejs_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/ssejs"
)

// startCluster starts a three-node JetStream cluster in process, each node
// with its own store, and returns its nodes, once JetStream has a leader.
func startCluster(t *testing.T) []*server.Server {
	t.Helper()
	ports := []int{freePort(t), freePort(t), freePort(t)}
	var routes []string
	for _, p := range ports {
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(p))
	}
	var nodes []*server.Server
	for i, p := range ports {
		nodes = append(nodes, startServerWith(t, func(o *server.Options) {
			o.ServerName = fmt.Sprintf("n%d", i+1)
			o.Cluster = server.ClusterOpts{Name: "sse", Host: "127.0.0.1", Port: p}
			o.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		}))
	}
	_, js := connect(t, nodes[0].ClientURL())
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("JetStream has no leader: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestThreeNodeCluster: with WithReplicas(3) on a three-node cluster, the
// stream (and, in Queue mode, the bucket) has three replicas, and when the
// node leading the key's stream shuts down mid-stream, every Enqueue still
// returns nil (retrying while a new leader is elected), and a reader that
// resumes after the error its range ended with, if any, gets every event
// once and in order, in both modes.
func TestThreeNodeCluster(t *testing.T) {
	for _, mode := range []sse.Mode{sse.FanOut, sse.Queue} {
		t.Run(mode.String(), func(t *testing.T) {
			// A cluster each: the first stops a node, and a stream of
			// three replicas needs three.
			nodes := startCluster(t)
			var urls []string
			for _, s := range nodes {
				urls = append(urls, s.ClientURL())
			}
			// Each connection knows every node, tries them in the order
			// given, and reconnects for ever.
			opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.DontRandomize()}
			_, jsP := connect(t, strings.Join(urls, ","), opts...)
			name := uniqueName()
			cfg := []ssejs.Option{ssejs.WithName(name), ssejs.WithMode(mode), ssejs.WithReplicas(3), ssejs.WithTimeout(30 * time.Second)}
			producer := newBroker[string](t, jsP, cfg...)
			ctx := within(t, 2*time.Minute)

			info, err := jsP.Stream(ctx, "SSE_"+name)
			if err != nil {
				t.Fatal(err)
			}
			if n := info.CachedInfo().Config.Replicas; n != 3 {
				t.Fatalf("the stream has %d replicas, want 3", n)
			}
			// The reader's process is connected to the node that leads
			// the stream, which the test stops: it loses its connection
			// and the stream its leader at once.
			leader := info.CachedInfo().Cluster.Leader
			var stop *server.Server
			readerURLs := []string{}
			for i, s := range nodes {
				if s.Name() == leader {
					stop = s
					readerURLs = append([]string{urls[i]}, readerURLs...)
				} else {
					readerURLs = append(readerURLs, urls[i])
				}
			}
			if stop == nil {
				t.Fatalf("no node is the stream's leader %q", leader)
			}
			_, jsR := connect(t, strings.Join(readerURLs, ","), opts...)
			reader := newBroker[string](t, jsR, cfg...)
			if mode == sse.Queue {
				kv, err := jsP.Stream(ctx, "KV_SSE_"+name+"_keys")
				if err != nil {
					t.Fatal(err)
				}
				if n := kv.CachedInfo().Config.Replicas; n != 3 {
					t.Fatalf("the bucket has %d replicas, want 3", n)
				}
			}

			const events = 200
			got := make(chan []string, 1)
			var resumed int // written by the reader, read after got
			go func() {
				var ids []string
				var last uint64
				var from []sse.ReadOption
				for {
					var err error
					for ev, e := range reader.Events(ctx, "k", from...) {
						if e != nil {
							err = e
							break
						}
						ids = append(ids, ev.Data)
						last = ev.ID
					}
					if err == nil || ctx.Err() != nil {
						got <- ids
						return
					}
					// Cut short (the node this process used is gone):
					// resume after the last event taken, as a client would.
					if !errors.Is(err, ssejs.ErrUnavailable) && !errors.Is(err, sse.ErrReplaced) {
						t.Errorf("reader: %v", err)
					}
					t.Logf("the reader's range ended after event %d (%v); it resumes", last, err)
					resumed++
					from = []sse.ReadOption{sse.After(last)}
					time.Sleep(50 * time.Millisecond)
				}
			}()

			for i := 1; i <= events; i++ {
				if i == events/2 {
					// Its replicas elect another leader; the producer's
					// calls retry meanwhile.
					stop.Shutdown()
					stop.WaitForShutdown()
				}
				if err := producer.Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
					t.Fatalf("Enqueue %d: %v", i, err)
				}
			}
			if err := producer.Close(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			var ids []string
			select {
			case ids = <-got:
			case <-ctx.Done():
				t.Fatal("the reader did not finish")
			}
			if resumed == 0 {
				t.Error("the reader's range never ended early, though its node stopped")
			}
			if len(ids) != events {
				t.Fatalf("the reader got %d events, want %d: %v", len(ids), events, ids)
			}
			for i, id := range ids {
				if id != strconv.Itoa(i+1) {
					t.Fatalf("event %d is %q, want %d (every event once, in order): %v", i, id, i+1, ids)
				}
			}
		})
	}
}

// TestResumeOnALaggingReplica: on a three-node cluster, while a producer
// stores events through one replica, clients resume on the others with
// the ID of the event last acknowledged. The direct get that reads the
// key's last message may be answered by a replica that has not stored that
// event yet; an ID the key has reached must never be taken for one it has
// not (the client would be sent the key's whole history again), so the
// broker asks the stream's leader before it concludes so.
func TestResumeOnALaggingReplica(t *testing.T) {
	nodes := startCluster(t)
	name := uniqueName()
	cfg := []ssejs.Option{ssejs.WithName(name), ssejs.WithMode(sse.FanOut), ssejs.WithReplicas(3), ssejs.WithTimeout(30 * time.Second)}
	var brokers []*ssejs.Broker[string]
	for _, n := range nodes {
		_, js := connect(t, n.ClientURL())
		brokers = append(brokers, newBroker[string](t, js, cfg...))
	}
	ctx := within(t, 2*time.Minute)
	if err := brokers[0].Enqueue(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	epoch := epochOf(t, brokers[0], "k")
	var acked atomic.Uint64
	acked.Store(1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 2; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := brokers[0].Enqueue(ctx, "k", strconv.Itoa(i)); err != nil {
				t.Error(err)
				return
			}
			acked.Store(uint64(i))
		}
	})
	defer wg.Wait()
	defer close(stop)
	ready := make(chan time.Time, 1)
	again := 0
	for i := range 300 {
		last := acked.Load()
		sub, err := brokers[1+i%2].Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, Epoch: epoch, LastID: last})
		if err != nil {
			t.Fatal(err)
		}
		ready <- time.Time{} // Next returns at once unless events are ready
		evs, _, err := sub.Next(ctx, nil, ready, 1<<20)
		sub.Close()
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-ready:
		default:
		}
		if len(evs) > 0 && evs[0].ID <= last {
			again++
			t.Errorf("resume %d after event %d: sent events from %d again", i, last, evs[0].ID)
		}
	}
	if again > 0 {
		t.Fatalf("%d of 300 resumes were sent events again", again)
	}
}
