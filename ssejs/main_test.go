package ssejs_test

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rocketqueue/sse/ssejs"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer starts an embedded NATS server with JetStream, its store in
// a temporary directory, on a random loopback port.
func startServer(t testing.TB) *server.Server {
	t.Helper()
	return startServerAt(t, t.TempDir(), -1)
}

func startServerAt(t testing.TB, dir string, port int) *server.Server {
	t.Helper()
	return startServerWith(t, func(o *server.Options) { o.StoreDir, o.Port = dir, port })
}

// startServerWith starts an embedded NATS server with JetStream, as
// startServer does, with its options changed by edit first, and waits
// until it accepts connections.
func startServerWith(t testing.TB, edit func(*server.Options)) *server.Server {
	t.Helper()
	o := &server.Options{JetStream: true, StoreDir: t.TempDir(), Port: -1, Host: "127.0.0.1", NoLog: true, NoSigs: true}
	edit(o)
	s, err := server.NewServer(o)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(30 * time.Second) {
		t.Fatal("the NATS server did not start")
	}
	return s
}

// connect opens a connection to url that the test closes at its end.
func connect(t testing.TB, url string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

var names atomic.Int64

// uniqueName returns a broker name no other test uses.
func uniqueName() string { return fmt.Sprintf("t%d", names.Add(1)) }

// newBroker makes a broker on js that the test shuts down at its end.
func newBroker[K comparable](t testing.TB, js jetstream.JetStream, opts ...ssejs.Option) *ssejs.Broker[K] {
	t.Helper()
	b, err := ssejs.New[K](context.Background(), js, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return b
}

// within returns a context that ends after d, or with the test.
func within(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func numGoroutine() int { return runtime.NumGoroutine() }

var io_EOF = io.EOF
