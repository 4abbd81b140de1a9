// Command inflight measures how many SSE bytes a net/http server had accepted
// (Write+Flush succeeded) that the client never received when the stream is
// cut, over loopback TCP, directly and through a one-hop TCP proxy.
//
// Standard library only. Run:  go run . [-trials 20] [-only REGEXP] [-v]
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

const (
	batchMax      = 32 << 10
	writeDeadline = 2 * time.Second
	sioOUTQ       = 0x5411 // TIOCOUTQ == SIOCOUTQ: bytes in send queue (unacked + unsent)
	sioINQ        = 0x541B // FIONREAD == SIOCINQ: bytes in receive queue not yet read
	tcpNotsentLow = 25     // TCP_NOTSENT_LOWAT
	tcpInfoOpt    = 11     // TCP_INFO
)

// ---------- socket introspection ----------

type sockStat struct {
	ok                      bool
	sndbuf, rcvbuf          int   // getsockopt SO_SNDBUF / SO_RCVBUF (kernel-doubled values)
	outq, inq               int   // SIOCOUTQ / SIOCINQ
	notsent, rcvSpace, cwnd int64 // from TCP_INFO (-1 if unavailable)
	sndWnd, rcvWnd, sndMSS  int64
}

func (s sockStat) String() string {
	if !s.ok {
		return "n/a"
	}
	return fmt.Sprintf("sndbuf=%d rcvbuf=%d outq=%d inq=%d notsent=%d rcv_space=%d snd_wnd=%d rcv_wnd=%d cwnd=%d",
		s.sndbuf, s.rcvbuf, s.outq, s.inq, s.notsent, s.rcvSpace, s.sndWnd, s.rcvWnd, s.cwnd)
}

func ioctlInt(fd uintptr, req uintptr) int {
	var v int32
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(unsafe.Pointer(&v)))
	if e != 0 {
		return -1
	}
	return int(v)
}

func getSockStat(c syscall.Conn) sockStat {
	var s sockStat
	rc, err := c.SyscallConn()
	if err != nil {
		return s
	}
	cerr := rc.Control(func(fd uintptr) {
		s.ok = true
		s.sndbuf, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
		s.rcvbuf, _ = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF)
		s.outq = ioctlInt(fd, sioOUTQ)
		s.inq = ioctlInt(fd, sioINQ)
		s.notsent, s.rcvSpace, s.cwnd, s.sndWnd, s.rcvWnd, s.sndMSS = -1, -1, -1, -1, -1, -1
		var buf [512]byte
		l := uint32(len(buf))
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.IPPROTO_TCP, tcpInfoOpt,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return
		}
		u32 := func(off int) int64 {
			if off+4 > int(l) {
				return -1
			}
			return int64(binary.LittleEndian.Uint32(buf[off:]))
		}
		// offsets of struct tcp_info (include/uapi/linux/tcp.h)
		s.sndMSS = u32(16)
		s.cwnd = u32(80)
		s.rcvSpace = u32(96)
		s.notsent = u32(144)
		s.sndWnd = u32(228)
		s.rcvWnd = u32(232)
	})
	if cerr != nil && os.Getenv("DEBUG") != "" {
		log.Printf("control: %v", cerr)
	}
	return s
}

// ---------- server ----------

type countConn struct {
	net.Conn
	tc      *net.TCPConn
	dup     *os.File     // dup of the fd: net/http closes rwc on a write error, we still want getsockopt
	written atomic.Int64 // bytes the kernel accepted from write(2) on this conn
}

func (c *countConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written.Add(int64(n))
	return n, err
}

type countListener struct{ net.Listener }

func (l countListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	cc := &countConn{Conn: c, tc: c.(*net.TCPConn)}
	cc.dup, err = cc.tc.File()
	if err != nil {
		log.Fatal(err)
	}
	return cc, nil
}

type srvOpts struct {
	lowat  int // TCP_NOTSENT_LOWAT, 0 = unset
	sndbuf int // SetWriteBuffer value, 0 = default (autotuned)
}

var curSrvOpts atomic.Pointer[srvOpts]

type ctxKey struct{}

// setupErrKey holds, in a request's context, an error from setting up its socket.
type setupErrKey struct{}

type srvResult struct {
	wire           int64 // bytes write(2) accepted on the server socket (headers+chunk framing+payload)
	payloadFlushed int64 // SSE bytes in batches whose Write AND Flush both succeeded
	payloadWritten int64 // SSE bytes ResponseWriter.Write returned as n (even if Flush then failed)
	err            error
	stat           sockStat // server socket at failure time
	setupErr       error
}

var (
	resultCh = make(chan srvResult, 1)
	ackCh    = make(chan struct{})
)

var pool = func() []byte {
	b := make([]byte, 1<<16)
	for i := range b {
		b[i] = byte(0x21 + rand.IntN(0x7e-0x21+1))
	}
	return b
}()

func handler(w http.ResponseWriter, r *http.Request) {
	cc := r.Context().Value(ctxKey{}).(*countConn)
	setupErr, _ := r.Context().Value(setupErrKey{}).(error)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	var res srvResult
	res.setupErr = setupErr
	batch := make([]byte, 0, batchMax)
	var id int64
	var pending []byte // next event that did not fit in the previous batch
	for {
		batch = batch[:0]
		if pending != nil {
			batch = append(batch, pending...)
			pending = nil
		}
		for {
			id++
			n := 10 + rand.IntN(301)
			off := rand.IntN(len(pool) - n)
			ev := make([]byte, 0, 340)
			ev = append(ev, "id: "...)
			ev = strconv.AppendInt(ev, id, 10)
			ev = append(ev, "\ndata: "...)
			ev = append(ev, pool[off:off+n]...)
			ev = append(ev, "\n\n"...)
			if len(batch)+len(ev) > batchMax {
				pending = ev
				break
			}
			batch = append(batch, ev...)
		}
		rc.SetWriteDeadline(time.Now().Add(writeDeadline))
		n, err := w.Write(batch)
		res.payloadWritten += int64(n)
		if err == nil {
			err = rc.Flush()
		}
		if err != nil {
			res.err = err
			break
		}
		res.payloadFlushed += int64(len(batch))
	}
	res.wire = cc.written.Load()
	res.stat = getSockStat(cc.dup)
	resultCh <- res
	defer cc.dup.Close()
	<-ackCh
}

func startServer() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler:  http.HandlerFunc(handler),
		ErrorLog: log.New(io.Discard, "", 0),
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			cc := c.(*countConn)
			o := curSrvOpts.Load()
			var setupErr error
			if o != nil && o.sndbuf > 0 {
				setupErr = cc.tc.SetWriteBuffer(o.sndbuf)
			}
			if o != nil && o.lowat > 0 {
				raw, _ := cc.tc.SyscallConn()
				raw.Control(func(fd uintptr) {
					if e := syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpNotsentLow, o.lowat); e != nil {
						setupErr = e
					}
				})
			}
			ctx = context.WithValue(ctx, ctxKey{}, cc)
			if setupErr != nil {
				ctx = context.WithValue(ctx, setupErrKey{}, setupErr)
			}
			return ctx
		},
	}
	go srv.Serve(countListener{ln})
	return ln.Addr().String()
}

// ---------- proxy ----------

type proxyConns struct {
	client, server *net.TCPConn
	forwarded      int64 // cut mode: bytes forwarded to client before cut
}

// startProxy accepts one connection, dials target, and forwards. If cutAfter>0
// it forwards exactly cutAfter bytes server->client, then closes both sides.
func startProxy(target string, cutAfter int64, bufSize int) (addr string, conns chan *proxyConns, done chan *proxyConns) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	conns = make(chan *proxyConns, 1)
	done = make(chan *proxyConns, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			log.Fatal(err)
		}
		s, err := net.Dial("tcp", target)
		if err != nil {
			log.Fatal(err)
		}
		pc := &proxyConns{client: c.(*net.TCPConn), server: s.(*net.TCPConn)}
		if bufSize > 0 {
			for _, x := range []*net.TCPConn{pc.client, pc.server} {
				x.SetReadBuffer(bufSize)
				x.SetWriteBuffer(bufSize)
			}
		}
		conns <- pc
		go io.Copy(pc.server, pc.client) // request direction
		if cutAfter > 0 {
			n, _ := io.CopyN(pc.client, pc.server, cutAfter)
			pc.forwarded = n
		} else {
			io.Copy(pc.client, pc.server)
		}
		pc.client.Close()
		pc.server.Close()
		done <- pc
	}()
	return ln.Addr().String(), conns, done
}

// ---------- client ----------

// chunkDec counts payload bytes of an HTTP/1.1 chunked response.
type chunkDec struct {
	state   int // 0 headers, 1 size line, 2 data, 3 data CRLF, 4 done
	hdrTail uint32
	size    int64
	rem     int64
	crlf    int
	payload int64
}

func (d *chunkDec) feed(b []byte) {
	for len(b) > 0 {
		switch d.state {
		case 0:
			c := b[0]
			b = b[1:]
			d.hdrTail = d.hdrTail<<8 | uint32(c)
			if d.hdrTail == 0x0d0a0d0a {
				d.state = 1
			}
		case 1:
			c := b[0]
			b = b[1:]
			switch {
			case c == '\n':
				if d.size == 0 {
					d.state = 4
				} else {
					d.rem, d.state = d.size, 2
				}
			case c >= '0' && c <= '9':
				d.size = d.size*16 + int64(c-'0')
			case c >= 'a' && c <= 'f':
				d.size = d.size*16 + int64(c-'a'+10)
			case c >= 'A' && c <= 'F':
				d.size = d.size*16 + int64(c-'A'+10)
			}
		case 2:
			n := min(int64(len(b)), d.rem)
			d.payload += n
			d.rem -= n
			b = b[n:]
			if d.rem == 0 {
				d.state, d.crlf = 3, 0
			}
		case 3:
			b = b[1:]
			d.crlf++
			if d.crlf == 2 {
				d.state, d.size = 1, 0
			}
		case 4:
			return
		}
	}
}

type clientResult struct {
	raw, payload int64
	err          error
}

// runClient reads up to limit raw bytes (limit<=0: until EOF/error).
func runClient(conn *net.TCPConn, limit int64) clientResult {
	if _, err := conn.Write([]byte("GET /events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")); err != nil {
		return clientResult{err: err}
	}
	buf := make([]byte, 32<<10)
	var d chunkDec
	var raw int64
	var err error
	for limit <= 0 || raw < limit {
		m := int64(len(buf))
		if limit > 0 {
			m = min(m, limit-raw)
		}
		var n int
		n, err = conn.Read(buf[:m])
		raw += int64(n)
		d.feed(buf[:n])
		if err != nil {
			break
		}
	}
	return clientResult{raw: raw, payload: d.payload, err: err}
}

// ---------- scenarios ----------

type scenario struct {
	name     string
	proxy    bool
	proxyBuf int
	dead     bool // client stops reading, keeps socket open
	large    bool // cut/stop range 1–20 MB instead of 300–6300 B
	srv      srvOpts
}

type trial struct {
	limit              int64
	wireInflight       int64 // server write(2)-accepted − client raw bytes read
	appInflight        int64 // server Write+Flush-accepted SSE bytes − client SSE payload bytes
	appWrittenInflight int64 // server Write-returned SSE bytes − client SSE payload bytes
	clientRaw          int64
	srvErr             string
	srv, cli, pxS, pxC sockStat
	pipeRemainder      int64 // dead+proxy: wire − (srv.outq + pxS.inq + pxC.outq + cli.inq)
	directCheck        int64 // dead+direct: wire − (srv.outq + cli.inq)
	bad                string
}

func randLimit(large bool) int64 {
	if large {
		return 1_000_000 + rand.Int64N(19_000_001)
	}
	return 300 + rand.Int64N(6001)
}

func runTrial(srvAddr string, sc scenario) trial {
	curSrvOpts.Store(&sc.srv)
	var t trial
	limit := randLimit(sc.large)
	t.limit = limit
	target := srvAddr
	var pconns chan *proxyConns
	var pdone chan *proxyConns
	if sc.proxy {
		cut := int64(0)
		if !sc.dead {
			cut = limit
		}
		target, pconns, pdone = startProxy(srvAddr, cut, sc.proxyBuf)
	}
	c, err := net.Dial("tcp", target)
	if err != nil {
		log.Fatal(err)
	}
	conn := c.(*net.TCPConn)
	var pc *proxyConns
	if sc.proxy {
		pc = <-pconns
	}
	clientLimit := limit
	if sc.proxy && !sc.dead {
		clientLimit = 0 // proxy does the cut; client reads until EOF
	}
	cliCh := make(chan clientResult, 1)
	go func() {
		r := runClient(conn, clientLimit)
		if !sc.dead {
			conn.Close() // cut (direct) / done (proxy)
		}
		cliCh <- r
	}()

	var sr srvResult
	var cr clientResult
	timeout := time.After(120 * time.Second)
	if sc.dead {
		select {
		case sr = <-resultCh:
		case <-timeout:
			log.Fatalf("%s: timeout waiting for server", sc.name)
		}
		select { // client stopped reading long ago
		case cr = <-cliCh:
		case <-time.After(5 * time.Second):
			log.Fatalf("%s: client did not finish", sc.name)
		}
		t.cli = getSockStat(conn)
		if pc != nil {
			t.pxS = getSockStat(pc.server)
			t.pxC = getSockStat(pc.client)
		}
	} else {
		select {
		case sr = <-resultCh:
		case <-timeout:
			log.Fatalf("%s: timeout waiting for server", sc.name)
		}
		cr = <-cliCh
	}
	ackCh <- struct{}{}
	conn.Close()
	if pc != nil {
		pc.client.Close()
		pc.server.Close()
		<-pdone
	}
	if sr.setupErr != nil {
		t.bad = "server sockopt: " + sr.setupErr.Error()
	}
	t.srv = sr.stat
	t.clientRaw = cr.raw
	t.srvErr = shortErr(sr.err)
	t.wireInflight = sr.wire - cr.raw
	t.appInflight = sr.payloadFlushed - cr.payload
	t.appWrittenInflight = sr.payloadWritten - cr.payload
	if sc.dead {
		if pc != nil {
			t.pipeRemainder = t.wireInflight - int64(t.srv.outq+t.pxS.inq+t.pxC.outq+t.cli.inq)
		} else {
			t.directCheck = t.wireInflight - int64(t.srv.outq+t.cli.inq)
		}
		if !strings.Contains(t.srvErr, "timeout") {
			t.bad += " server error not a timeout: " + t.srvErr
		}
		if cr.raw != limit {
			t.bad += fmt.Sprintf(" client read %d != limit %d", cr.raw, limit)
		}
	} else if sc.proxy && cr.raw != limit {
		t.bad += fmt.Sprintf(" client got %d, proxy cut at %d (%v)", cr.raw, limit, cr.err)
	}
	return t
}

func shortErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

func med(xs []int64) int64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func main() {
	trials := flag.Int("trials", 20, "trials per scenario")
	only := flag.String("only", "", "regexp: run only scenarios whose name matches")
	verbose := flag.Bool("v", false, "print every trial")
	flag.Parse()
	re := regexp.MustCompile(*only)

	srvAddr := startServer()
	var scs []scenario
	add := func(name string, proxy bool, pbuf int, dead bool, srv srvOpts) {
		for _, large := range []bool{false, true} {
			r := "300-6300B"
			if large {
				r = "1-20MB"
			}
			scs = append(scs, scenario{name: name + " " + r, proxy: proxy, proxyBuf: pbuf, dead: dead, large: large, srv: srv})
		}
	}
	add("1 direct cut", false, 0, false, srvOpts{})
	add("2 direct dead", false, 0, true, srvOpts{})
	add("3 proxy cut", true, 0, false, srvOpts{})
	add("4 proxy dead", true, 0, true, srvOpts{})
	add("5a proxy256K cut", true, 256<<10, false, srvOpts{})
	add("5b proxy256K dead", true, 256<<10, true, srvOpts{})
	add("6a direct dead lowat16K", false, 0, true, srvOpts{lowat: 16 << 10})
	add("6b proxy dead lowat16K", true, 0, true, srvOpts{lowat: 16 << 10})
	add("6c direct dead sndbuf64K", false, 0, true, srvOpts{sndbuf: 64 << 10})
	add("6d proxy dead sndbuf64K", true, 0, true, srvOpts{sndbuf: 64 << 10})

	type row struct {
		name                   string
		n                      int
		wMed, wMax, aMed, aMax int64
		awMax                  int64
		extra                  string
	}
	var rows []row
	for _, sc := range scs {
		if !re.MatchString(sc.name) {
			continue
		}
		var w, a, aw []int64
		var srvOut, srvSnd, srvNotsent, cliIn, cliRcv, cliSpace, pxSin, pxCout, pipe, pxSrcv, pxCsnd []int64
		var errs = map[string]int{}
		for i := 0; i < *trials; i++ {
			t := runTrial(srvAddr, sc)
			if t.bad != "" {
				fmt.Fprintf(os.Stderr, "WARN %s trial %d: %s\n", sc.name, i, t.bad)
			}
			w = append(w, t.wireInflight)
			a = append(a, t.appInflight)
			aw = append(aw, t.appWrittenInflight)
			errs[t.srvErr]++
			srvSnd = append(srvSnd, int64(t.srv.sndbuf))
			if sc.dead {
				srvOut = append(srvOut, int64(t.srv.outq))
				srvNotsent = append(srvNotsent, t.srv.notsent)
				cliIn = append(cliIn, int64(t.cli.inq))
				cliRcv = append(cliRcv, int64(t.cli.rcvbuf))
				cliSpace = append(cliSpace, t.cli.rcvSpace)
				if sc.proxy {
					pxSin = append(pxSin, int64(t.pxS.inq))
					pxCout = append(pxCout, int64(t.pxC.outq))
					pxSrcv = append(pxSrcv, int64(t.pxS.rcvbuf))
					pxCsnd = append(pxCsnd, int64(t.pxC.sndbuf))
					pipe = append(pipe, t.pipeRemainder)
				}
			}
			if *verbose {
				fmt.Printf("%-36s #%02d limit=%-9d clientRaw=%-9d wire=%-9d app=%-9d appW=%-9d err=%s\n",
					sc.name, i, t.limit, t.clientRaw, t.wireInflight, t.appInflight, t.appWrittenInflight, t.srvErr)
				if sc.dead {
					fmt.Printf("    srv: %v\n    cli: %v\n", t.srv, t.cli)
					if sc.proxy {
						fmt.Printf("    pxS: %v\n    pxC: %v\n    pipe(remainder)=%d\n", t.pxS, t.pxC, t.pipeRemainder)
					} else {
						fmt.Printf("    wire-(srv.outq+cli.inq)=%d\n", t.directCheck)
					}
				} else {
					fmt.Printf("    srv@fail: %v\n", t.srv)
				}
			}
		}
		mm := func(xs []int64) string { return fmt.Sprintf("%d/%d", med(xs), slices.Max(xs)) }
		extra := fmt.Sprintf("srvErr=%v srv.SO_SNDBUF(med/max)=%s", errs, mm(srvSnd))
		if sc.dead {
			extra += fmt.Sprintf(" | med/max: srv.outq=%s srv.notsent=%s cli.inq=%s cli.SO_RCVBUF=%s cli.rcv_space=%s",
				mm(srvOut), mm(srvNotsent), mm(cliIn), mm(cliRcv), mm(cliSpace))
			if sc.proxy {
				extra += fmt.Sprintf(" pxS.inq=%s pxS.SO_RCVBUF=%s pxC.outq=%s pxC.SO_SNDBUF=%s splicePipe(remainder)=%s",
					mm(pxSin), mm(pxSrcv), mm(pxCout), mm(pxCsnd), mm(pipe))
			}
		}
		r := row{name: sc.name, n: len(w), wMed: med(w), wMax: slices.Max(w), aMed: med(a), aMax: slices.Max(a), awMax: slices.Max(aw), extra: extra}
		rows = append(rows, r)
		fmt.Printf("DONE %-36s n=%d wire med=%d max=%d | app(Write+Flush) med=%d max=%d | app(Write only) max=%d\n     %s\n",
			r.name, r.n, r.wMed, r.wMax, r.aMed, r.aMax, r.awMax, r.extra)
	}
	fmt.Printf("\n%-36s %6s %12s %12s %14s %14s\n", "scenario", "trials", "wire med", "wire max", "app med", "app max")
	for _, r := range rows {
		fmt.Printf("%-36s %6d %12d %12d %14d %14d\n", r.name, r.n, r.wMed, r.wMax, r.aMed, r.aMax)
	}
}
