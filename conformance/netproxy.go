package conformance

import (
	"net"
	"sync"
)

// A NetProxy forwards TCP connections to a target and injects network
// faults into them: a backend's test puts one between each process and
// its engine (a NATS server, a database) to sever, stall or refuse that
// process's connection, as a [Fault].
type NetProxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	conns   map[net.Conn]struct{} // guarded by mu: both sides of each connection
	refuse  bool                  // guarded by mu: new connections are closed at once
	stalled chan struct{}         // guarded by mu: while not nil, nothing is forwarded until it is closed
	closed  bool                  // guarded by mu
	wg      sync.WaitGroup
}

// StartNetProxy starts a proxy to target on a free loopback port.
func StartNetProxy(target string) (*NetProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &NetProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address the proxy listens on.
func (p *NetProxy) Addr() string { return p.ln.Addr().String() }

// Sever closes every connection now, both sides, as a network failure
// would. New connections are accepted (unless Refuse says otherwise).
func (p *NetProxy) Sever() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Refuse makes the proxy close new connections at once, while on: an
// outage, after Sever.
func (p *NetProxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Stall holds every byte in both directions while on, the connections
// left open: a black hole. Turning it off forwards what was held.
func (p *NetProxy) Stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.stalled == nil:
		p.stalled = make(chan struct{})
	case !on && p.stalled != nil:
		close(p.stalled)
		p.stalled = nil
	}
}

// Close stops the proxy, closes every connection and waits for its
// goroutines.
func (p *NetProxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *NetProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *NetProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.refuse {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *NetProxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *NetProxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.copy(server, client)
		done <- struct{}{}
	}()
	p.copy(client, server)
	// One direction ended: end both.
	client.Close()
	server.Close()
	<-done
}

// copy forwards src to dst, holding each chunk while the proxy stalls.
func (p *NetProxy) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			st := p.stalled
			p.mu.Unlock()
			if st != nil {
				<-st
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
