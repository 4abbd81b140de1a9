package ssejs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/rocketqueue/sse"
	"github.com/rocketqueue/sse/sseclient"
	"github.com/rocketqueue/sse/ssejs"
)

// helperEnv names the environment variable that makes TestHelperProcess
// run a NATS server: "<store dir>:<port>".
const helperEnv = "SSEJS_HELPER_NATS"

// TestHelperProcess is not a test: run by TestKilledServer in a child
// process, it runs a NATS server with JetStream that syncs every write to
// disk, until it is killed.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		return
	}
	i := strings.LastIndexByte(spec, ':')
	port, _ := strconv.Atoi(spec[i+1:])
	s, err := server.NewServer(&server.Options{JetStream: true, StoreDir: spec[:i], Port: port, Host: "127.0.0.1", NoLog: true, NoSigs: true, SyncAlways: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		os.Exit(3)
	}
	fmt.Println("ready")
	select {}
}

// child runs a NATS server in a child process, on the store dir and port,
// and waits until it accepts connections.
func child(dir string, port int) (*exec.Cmd, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir+":"+strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
			return cmd, nil
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			return nil, errors.New("the child NATS server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill kills a child server at the end of the test.
func kill(t *testing.T, cmd *exec.Cmd) {
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

func freePort(t *testing.T) int { return freePortOf(t) }

func freePortOf(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestKilledServer: the NATS server is SIGKILLed while a producer
// publishes and a client reads over SSE, then restarted on the same store.
// Every event whose Enqueue returned nil is stored once (the producer
// retries the others with an idempotency key), and the client, which
// resumes by itself, sees each once, in order.
func TestKilledServer(t *testing.T) {
	for _, mode := range []sse.Mode{sse.Queue, sse.FanOut} {
		t.Run(mode.String(), func(t *testing.T) { killedServer(t, mode) })
	}
}

func killedServer(t *testing.T, mode sse.Mode) {
	dir, port := t.TempDir(), freePort(t)
	cmd, err := child(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	kill(t, cmd)
	natsURL := "nats://127.0.0.1:" + strconv.Itoa(port)
	reconnect := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond)}
	_, jsR := connect(t, natsURL, reconnect...)
	_, jsP := connect(t, natsURL, reconnect...)
	name := uniqueName()
	opts := []ssejs.Option{ssejs.WithName(name), ssejs.WithMode(mode)}
	reader := newBroker[string](t, jsR, opts...)
	producer := newBroker[string](t, jsP, opts...)
	h := sse.Handler[string](reader, func(r *http.Request) (string, error) { return r.URL.Query().Get("key"), nil }, sse.WithRetry(20*time.Millisecond))
	hs := httptest.NewUnstartedServer(h)
	hctx, hcancel := context.WithCancel(context.Background())
	hs.Config.BaseContext = func(net.Listener) context.Context { return hctx }
	hs.Start()
	defer hs.Close()
	defer hcancel()
	ctx := within(t, 150*time.Second)
	const key, total = "k", 400

	var got []int
	done := make(chan error, 1)
	go func() {
		var err error
		for ev, e := range sseclient.Events(ctx, hs.URL+"/?key="+url.QueryEscape(key), sseclient.WithLastEventID("0"), sseclient.WithBackoff(10*time.Millisecond, 100*time.Millisecond)) {
			if e != nil {
				err = e
				break
			}
			if ev.Name == sseclient.EventGap {
				err = errors.New("gap: " + ev.Data)
				break
			}
			n, _ := strconv.Atoi(ev.Data)
			got = append(got, n)
		}
		done <- err
	}()

	acked, failed := 0, 0
	type restart struct {
		cmd *exec.Cmd
		err error
	}
	restarted := make(chan restart, 1)
	for i := 1; i <= total; i++ {
		if i == total/2 {
			// Kill the server mid-stream, and start it again on the same
			// store and port.
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
			go func() {
				time.Sleep(time.Second)
				cmd, err := child(dir, port)
				restarted <- restart{cmd, err}
			}()
		}
		idem := ssejs.WithIdempotencyKey(ctx, "event-"+strconv.Itoa(i))
		for {
			cctx, cancel := context.WithTimeout(idem, 400*time.Millisecond)
			err := producer.Enqueue(cctx, key, strconv.Itoa(i))
			cancel()
			if err == nil {
				acked++
				break
			}
			failed++
			if ctx.Err() != nil {
				t.Fatalf("event %d: %v", i, err)
			}
		}
	}
	r := <-restarted
	if r.err != nil {
		t.Fatal(r.err)
	}
	kill(t, r.cmd)
	t.Logf("%d events acknowledged, after %d calls that failed while the server was down", acked, failed)
	if failed == 0 {
		t.Error("no call failed: the server was not down")
	}
	if err := producer.Close(ctx, key); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the client ended with %v after %d events", err, len(got))
		}
	case <-ctx.Done():
		t.Fatalf("the client did not end; it has %d events", len(got))
	}
	check := func(who string, got []int) {
		t.Helper()
		if len(got) != total {
			t.Fatalf("%s: %d events, want %d", who, len(got), total)
		}
		for i, n := range got {
			if n != i+1 {
				t.Fatalf("%s: event %d is %d", who, i, n)
			}
		}
	}
	check("the SSE client", got)
	if mode == sse.FanOut {
		var stored []int
		for ev, err := range producer.Events(ctx, key) {
			if err != nil {
				t.Fatal(err)
			}
			n, _ := strconv.Atoi(ev.Data)
			if ev.ID != uint64(n) {
				t.Fatalf("event %d has ID %d", n, ev.ID)
			}
			stored = append(stored, n)
		}
		check("the stream", stored)
	}
}

// TestUnreachable: with NATS gone, open streams end without "close", and
// a thousand calls each fail within their context's time (or the broker's
// timeout), leaving no goroutine behind.
func TestUnreachable(t *testing.T) {
	srv := startServerAt(t, t.TempDir(), -1)
	nc, js := connect(t, srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	b := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut), ssejs.WithTimeout(300*time.Millisecond))
	q := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithTimeout(300*time.Millisecond))
	ctx := within(t, 60*time.Second)
	if err := b.Enqueue(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	if err := q.Enqueue(ctx, "k", "1"); err != nil {
		t.Fatal(err)
	}
	subs := make([]sse.Subscription, 0, 2)
	for _, src := range []sse.Source[string]{b, q} {
		sub, err := src.Subscribe(ctx, "k", sse.SubscribeRequest{})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		if evs, _, err := sub.Next(ctx, nil, nil, 1<<20); err != nil || len(evs) != 1 {
			t.Fatalf("%v %v", evs, err)
		}
		subs = append(subs, sub)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	for nc.IsConnected() {
		time.Sleep(5 * time.Millisecond)
	}
	for i, sub := range subs {
		_, _, err := sub.Next(ctx, nil, nil, 1<<20)
		if err == nil || errors.Is(err, io_EOF) || !errors.Is(err, ssejs.ErrUnavailable) {
			t.Errorf("subscription %d, NATS gone: %v, want ErrUnavailable", i, err)
		}
	}
	if _, err := b.Subscribe(ctx, "k", sse.SubscribeRequest{}); !errors.Is(err, ssejs.ErrUnavailable) || !errors.Is(err, sse.ErrShutdown) {
		t.Errorf("Subscribe with NATS gone: %v, want ErrUnavailable, matching ErrShutdown", err)
	}
	time.Sleep(100 * time.Millisecond) // let the reconnect loop start
	before := numGoroutine()
	var wg sync.WaitGroup
	var slow, ok sync.Map
	start := time.Now()
	for i := range 1000 {
		wg.Go(func() {
			t0 := time.Now()
			var err error
			switch i % 4 {
			case 0: // no deadline: the broker's timeout
				err = b.Enqueue(context.Background(), "k"+strconv.Itoa(i), "x")
			case 1:
				c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				err = q.Publish(c, "k", sse.Event{Data: "x"})
				cancel()
			case 2:
				c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				err = b.Close(c, "k"+strconv.Itoa(i))
				cancel()
			case 3:
				c, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				for _, e := range q.Events(c, "k") {
					err = e
				}
				cancel()
			}
			if d := time.Since(t0); d > 3*time.Second {
				slow.Store(i, d)
			}
			if err == nil {
				ok.Store(i, true)
			}
		})
	}
	wg.Wait()
	slow.Range(func(k, v any) bool { t.Errorf("call %v took %v", k, v); return true })
	ok.Range(func(k, v any) bool { t.Errorf("call %v succeeded with NATS gone", k); return true })
	t.Logf("1000 failed calls in %v", time.Since(start))
	deadline := time.Now().Add(10 * time.Second)
	for numGoroutine() > before+5 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := numGoroutine(); n > before+5 {
		t.Errorf("%d goroutines after the calls, %d before", n, before)
	}
}

// TestOutageDuringCatchUp: the requests a subscription makes inside Next
// (a FanOut reader's catch-up consumer, a Queue connection's replay) end
// when NATS becomes unreachable, or after one attempt's time, not when the
// caller's context ends: a handler's request context has no deadline, and
// its stream would write nothing, not even heartbeats, for the outage.
func TestOutageDuringCatchUp(t *testing.T) {
	srv := startServerAt(t, t.TempDir(), -1)
	nc, js := connect(t, srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	fan := newBroker[string](t, js, ssejs.WithName(uniqueName()), ssejs.WithMode(sse.FanOut))
	q := newBroker[string](t, js, ssejs.WithName(uniqueName()))
	ctx := within(t, 60*time.Second)
	for _, p := range []sse.Publisher[string]{fan, q} {
		if err := p.Enqueue(ctx, "k", "1", "2", "3"); err != nil {
			t.Fatal(err)
		}
	}
	// The Queue key's events are taken by a connection that never
	// delivers them, so that a resuming one has them to replay.
	took, err := q.Subscribe(ctx, "k", sse.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if evs, _, err := took.Next(ctx, nil, nil, 1<<20); err != nil || len(evs) != 3 {
		t.Fatalf("%v %v", evs, err)
	}
	took.Close()
	var subs []sse.Subscription
	for _, src := range []sse.Source[string]{fan, q} {
		sub, err := src.Subscribe(ctx, "k", sse.SubscribeRequest{Resume: true, LastID: 0})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	srv.Shutdown()
	srv.WaitForShutdown()
	for nc.IsConnected() {
		time.Sleep(5 * time.Millisecond)
	}
	for i, sub := range subs {
		long, cancel := context.WithTimeout(ctx, 8*time.Second)
		tick := time.NewTicker(time.Second)
		start := time.Now()
		_, _, err := sub.Next(long, nil, tick.C, 1<<20)
		d := time.Since(start)
		tick.Stop()
		cancel()
		if d > 4*time.Second || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("subscription %d, NATS gone: Next returned %v after %v, want an error (or a heartbeat) within a few seconds", i, err, d)
		}
	}
}
