// Package cutproxy is a TCP proxy for tests that cuts connections: it
// forwards each connection to a target, and after a chosen number of bytes
// of the target's reply it closes both sides, as a network failure, a
// proxy restart or a load balancer would. The tests of resuming event
// streams use it, in the root module and in the browser tests.
package cutproxy

import (
	"io"
	"net"
	"sync"
)

// Options say how a [Proxy] treats its connections.
type Options struct {
	// Cut returns, for the nth connection (from 0), how many bytes of the
	// target's reply to forward before cutting both sides. A negative
	// number, or a nil Cut, never cuts.
	Cut func(n int) int64
	// Buffers, if positive, pins the send and receive buffers of the
	// proxy's own sockets (both sides) to that size, as SO_SNDBUF and
	// SO_RCVBUF do (the kernel doubles it); 0 leaves the kernel's
	// autotuning.
	Buffers int
	// Swallow, if positive, makes a connection stop forwarding once Cut's
	// bytes have passed, then read the target's reply into the void until
	// it has taken Swallow more bytes, and only then cut: a path that
	// buffers that much and loses it.
	Swallow int64
}

// A Proxy listens on loopback and forwards to a target.
type Proxy struct {
	ln     net.Listener
	target string
	opts   Options

	mu     sync.Mutex
	n      int                   // guarded by mu: connections accepted
	conns  map[net.Conn]struct{} // guarded by mu: open connections, both sides
	closed bool                  // guarded by mu
	wg     sync.WaitGroup        // the accept loop and each connection's goroutines
}

// Start starts a proxy to target on a free loopback port.
func Start(target string, opts Options) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, opts: opts, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Conns returns how many connections the proxy has accepted.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// Close stops the proxy, closes every connection and waits for its
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		n := p.n
		p.n++
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(n, client)
	}
}

// track adds c to the open connections, or closes it if the proxy is
// closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *Proxy) serve(n int, client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(server) {
		return
	}
	defer p.untrack(server)
	if b := p.opts.Buffers; b > 0 {
		for _, c := range []net.Conn{client, server} {
			tc := c.(*net.TCPConn)
			tc.SetReadBuffer(b)
			tc.SetWriteBuffer(b)
		}
	}
	cut := int64(-1)
	if p.opts.Cut != nil {
		cut = p.opts.Cut(n)
	}
	p.wg.Add(1)
	go func() { // requests, as they come
		defer p.wg.Done()
		copyPlain(server, client)
		server.(*net.TCPConn).CloseWrite()
	}()
	// The reply, counted, through a buffer of our own rather than splice,
	// so that the cut falls at the exact byte.
	buf := make([]byte, 32<<10)
	for cut != 0 {
		want := len(buf)
		if cut > 0 && int64(want) > cut {
			want = int(cut)
		}
		k, err := server.Read(buf[:want])
		if k > 0 {
			if _, werr := client.Write(buf[:k]); werr != nil {
				return
			}
			if cut > 0 {
				cut -= int64(k)
			}
		}
		if err != nil {
			return
		}
	}
	if p.opts.Swallow > 0 {
		io.CopyN(io.Discard, server, p.opts.Swallow)
	}
	// Returning closes both sides: the cut.
}

// copyPlain copies without splice or sendfile, so that the buffers are
// only the sockets' own.
func copyPlain(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
