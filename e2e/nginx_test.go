package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rocketqueue/sse/sseclient"
	"github.com/rocketqueue/sse/ssetest"
)

// The tests in this file run the demo behind a real nginx, configured with
// docs/nginx.conf, the file whose location block the README shows. The
// file's upstream (127.0.0.1:8080) and listen port (8000) are replaced by
// the demo's address and a free port, and nginx's temporary files go to a
// temporary directory, its prefix; the location block is kept verbatim
// (nginxConfig checks it). nginx runs in the foreground, as the test's
// user, or as "nobody" if the test runs as root: it needs no privilege.
// Without nginx the tests skip, unless CI=true, where they fail.

// liveBound is how much later than a direct connection an event may arrive
// through nginx. A proxy that buffered the stream would hold the job's
// events for seconds, until its buffer filled or the job ended.
const liveBound = 2 * time.Second

// Through nginx, each event arrives as soon as the demo publishes it: a
// client reading a running job through nginx gets every event within
// liveBound of a client reading it directly, and the job's events are
// spread over seconds, so a buffering proxy would be caught.
func TestNginxLiveEvents(t *testing.T) {
	const (
		steps = 10
		step  = 400 * time.Millisecond
	)
	nginx := findNginx(t)
	d := startDemo(t, "-step", step.String(), "-steps", strconv.Itoa(steps))
	proxy := startNginx(t, nginx, d)
	client := newClient(t)

	events := proxy + strings.TrimPrefix(d.startJob(t, client), strings.TrimSuffix(d.url, "/"))
	direct := strings.TrimSuffix(d.url, "/") + strings.TrimPrefix(events, proxy)
	type arrival struct {
		id   string
		name string
		at   time.Time
	}
	type result struct {
		arrivals []arrival
		err      error
	}
	read := func(url string, out chan<- result) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var res result
		defer func() { out <- res }()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"?lastEventId=0", nil)
		if err != nil {
			res.err = err
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			res.err = err
			return
		}
		defer resp.Body.Close()
		if res.err = ssetest.CheckResponse(resp); res.err != nil {
			return
		}
		r := ssetest.NewReader(resp.Body)
		for {
			ev, err := r.Next()
			if err != nil {
				res.err = fmt.Errorf("%s: %w before close", url, err)
				return
			}
			res.arrivals = append(res.arrivals, arrival{ev.ID, ev.Type, time.Now()})
			if ev.Type == "close" {
				return
			}
		}
	}
	viaNginx, viaDirect := make(chan result, 1), make(chan result, 1)
	go read(events, viaNginx)
	go read(direct, viaDirect)
	n, dr := <-viaNginx, <-viaDirect
	if n.err != nil || dr.err != nil {
		t.Fatalf("through nginx: %v; direct: %v", n.err, dr.err)
	}

	if want := 2*steps + 4; len(n.arrivals) != want || len(dr.arrivals) != want {
		t.Fatalf("%d events through nginx and %d direct, want %d (the job's and close)", len(n.arrivals), len(dr.arrivals), want)
	}
	worst := time.Duration(-1 << 63)
	for i, a := range n.arrivals {
		b := dr.arrivals[i]
		if a.id != b.id || a.name != b.name {
			t.Fatalf("event %d: %s %q through nginx, %s %q direct", i, a.name, a.id, b.name, b.id)
		}
		lag := a.at.Sub(b.at)
		worst = max(worst, lag)
		if lag > liveBound {
			t.Errorf("event %d (%s %s) arrived %v later through nginx than directly, want at most %v", i, a.name, a.id, lag.Round(time.Millisecond), liveBound)
		}
	}
	// The premise: the events came over the job's run, not all at once.
	spread := dr.arrivals[len(dr.arrivals)-1].at.Sub(dr.arrivals[0].at)
	if spread < liveBound {
		t.Errorf("the job's events arrived over %v, want more than %v: the test proves nothing", spread.Round(time.Millisecond), liveBound)
	}
	t.Logf("events over %v; through nginx at most %v later than directly", spread.Round(time.Millisecond), worst.Round(time.Millisecond))
}

// A client whose connections to nginx keep being cut (after 200–2,000
// bytes each) resumes through nginx with Last-Event-ID, which nginx
// passes on: it gets every event of the job exactly once, in order, with
// no gap, and the demo's metrics count each reconnection as a resume (or,
// after the last event, a 204).
func TestNginxResume(t *testing.T) {
	const steps = 100
	nginx := findNginx(t)
	d := startDemo(t, "-step", "20ms", "-steps", strconv.Itoa(steps))
	proxy := startNginx(t, nginx, d)
	client := newClient(t)
	before := scrape(t, client, d.url)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var conns atomic.Int64
	dialer := &net.Dialer{}
	tr := &http.Transport{
		DisableKeepAlives: true, // a connection per request: each is cut
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			n := conns.Add(1)
			cut := 200 + rand.New(rand.NewPCG(seed, uint64(n))).Int64N(1801)
			return &cutConn{Conn: c, left: cut}, nil
		},
	}
	t.Cleanup(tr.CloseIdleConnections)

	events := proxy + strings.TrimPrefix(d.startJob(t, client), strings.TrimSuffix(d.url, "/"))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var got []sseclient.Event
	epoch := ""
	reconnects := 0
	for ev, err := range sseclient.Events(ctx, events,
		sseclient.WithHTTPClient(&http.Client{Transport: tr}),
		sseclient.WithBackoff(10*time.Millisecond, 100*time.Millisecond),
		sseclient.WithOnReconnect(func(error, time.Duration) { reconnects++ }),
	) {
		if err != nil {
			t.Fatalf("after %d events and %d reconnections: %v", len(got), reconnects, err)
		}
		if epoch == "" {
			epoch, _, _ = strings.Cut(ev.ID, "-")
		}
		// IDs <epoch>-1, <epoch>-2, …: each event once, in order, no gap.
		if want := fmt.Sprintf("%s-%d", epoch, len(got)+1); ev.ID != want || ev.Name == "gap" {
			t.Fatalf("event %d is %s %q, want id %s, after %d reconnections", len(got)+1, ev.Name, ev.ID, want, reconnects)
		}
		got = append(got, ev)
	}

	const total = 2*steps + 3
	if len(got) != total || got[total-1].Data != "Finished." {
		t.Fatalf("%d events, want %d ending with Finished.", len(got), total)
	}
	if reconnects < 5 {
		t.Errorf("only %d reconnections: the test proves little", reconnects)
	}
	after := scrape(t, client, d.url)
	resumes := after["progress_resumes_total"] - before["progress_resumes_total"]
	finished := after[`progress_requests_refused_total{reason="finished"}`] - before[`progress_requests_refused_total{reason="finished"}`]
	if int(resumes+finished) != reconnects {
		t.Errorf("the demo counted %v resumes and %v 204s, want %d in all (one per reconnection)", resumes, finished, reconnects)
	}
	t.Logf("%d events in %d connections through nginx; %v resumes, %v 204s", len(got), conns.Load(), resumes, finished)
}

// cutConn is a connection that fails once it has read left bytes: a client
// whose connection drops in the middle of a stream.
type cutConn struct {
	net.Conn
	mu   sync.Mutex
	left int64 // guarded by mu
}

func (c *cutConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	left := c.left
	c.mu.Unlock()
	if left <= 0 {
		c.Conn.Close()
		return 0, errors.New("connection cut by the test")
	}
	n, err := c.Conn.Read(p[:min(int64(len(p)), left)])
	c.mu.Lock()
	c.left -= int64(n)
	c.mu.Unlock()
	return n, err
}

// findNginx returns the path of nginx: $NGINX, or nginx on the PATH or in
// /usr/sbin. Without it the test is skipped, or fails if CI=true (CI
// installs it).
func findNginx(t *testing.T) string {
	t.Helper()
	if exe := os.Getenv("NGINX"); exe != "" {
		return exe
	}
	if exe, err := exec.LookPath("nginx"); err == nil {
		return exe
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx"
	}
	const msg = "nginx not found: install it (apt-get install nginx) or set NGINX to its binary"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// startNginx runs nginx in front of d with docs/nginx.conf, and returns its
// base URL, without a trailing slash. nginx is stopped when the test ends.
func startNginx(t *testing.T, exe string, d *demo) string {
	t.Helper()
	upstream := strings.TrimSuffix(strings.TrimPrefix(d.url, "http://"), "/")
	dir := t.TempDir()
	cred := nginxCredential(t, dir)
	// The port is free when chosen, and might be taken before nginx
	// listens on it: then try another.
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConfig(t, upstream, addr)), 0o644); err != nil {
			t.Fatal(err)
		}
		if cred != nil {
			os.Chown(conf, int(cred.Uid), int(cred.Gid))
		}
		n, err := runNginx(t, exe, dir, conf, cred)
		if err == nil {
			return "http://" + addr
		}
		if !strings.Contains(n.String(), "Address already in use") || attempt == 3 {
			t.Fatalf("nginx: %v\n%s", err, n)
		}
	}
}

// runNginx starts nginx with the prefix dir and the configuration conf, and
// waits until it answers. If it exits first, runNginx returns an error and
// nginx's output.
func runNginx(t *testing.T, exe, dir, conf string, cred *syscall.Credential) (*output, error) {
	t.Helper()
	out := &output{}
	cmd := exec.Command(exe, "-e", "stderr", "-p", dir, "-c", conf,
		"-g", fmt.Sprintf("daemon off; pid %s; error_log stderr info;", filepath.Join(dir, "nginx.pid")))
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: if nginx must be killed, its workers go too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error // set before exited is closed
	go func() {
		waitErr = cmd.Wait()
		close(exited)
	}()
	stop := func() {
		select {
		case <-exited:
			return
		default:
		}
		cmd.Process.Signal(syscall.SIGTERM) // nginx's fast shutdown
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("nginx did not exit within 10s of SIGTERM: killing it")
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}

	// Ready once it serves the demo's page.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	url := "http://" + listenAddr(conf) + "/"
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-exited:
			return out, fmt.Errorf("nginx exited: %v", waitErr)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("nginx did not serve %s within 30s: %v\n%s", url, err, out)
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("nginx's output:\n%s", out)
		}
	})
	return out, nil
}

// nginxConfig returns docs/nginx.conf with its upstream server at upstream
// and its server listening on listen (host:port both), and with nginx's
// temporary files and access log under its prefix. The location block, the
// README's, is left as it is.
func nginxConfig(t *testing.T, upstream, listen string) string {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "docs", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	conf := string(src)
	for _, r := range []struct{ old, new string }{
		{"server 127.0.0.1:8080;", "server " + upstream + ";"},
		{"listen 8000;", "listen " + listen + ";"},
		{"http {", "http {\n" +
			"    # Added by the e2e test: files under the prefix, not in /var.\n" +
			"    access_log access.log;\n" +
			"    client_body_temp_path client_body;\n" +
			"    proxy_temp_path proxy;\n" +
			"    fastcgi_temp_path fastcgi;\n" +
			"    uwsgi_temp_path uwsgi;\n" +
			"    scgi_temp_path scgi;"},
	} {
		if n := strings.Count(conf, r.old); n != 1 {
			t.Fatalf("docs/nginx.conf has %q %d times, want once: update nginxConfig", r.old, n)
		}
		conf = strings.Replace(conf, r.old, r.new, 1)
	}
	_, block, _ := strings.Cut(string(src), "#readme:nginx")
	block, _, found := strings.Cut(block, "#readme:end")
	if !found || !strings.Contains(conf, block) || !strings.Contains(block, "location /") {
		t.Fatalf("the test's configuration lost docs/nginx.conf's location block:\n%s", conf)
	}
	return conf
}

// listenAddr returns the address of the listen directive of the nginx
// configuration file conf.
func listenAddr(conf string) string {
	src, _ := os.ReadFile(conf)
	_, rest, _ := strings.Cut(string(src), "listen ")
	addr, _, _ := strings.Cut(rest, ";")
	return addr
}

// nginxCredential returns the user nginx runs as: nil (the test's own
// user), or the user nobody if the test runs as root, for whom it makes
// dir, nginx's prefix, writable.
func nginxCredential(t *testing.T, dir string) *syscall.Credential {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Logf("running nginx as root: %v", err)
		return nil
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		t.Logf("running nginx as root: user nobody is %s:%s", u.Uid, u.Gid)
		return nil
	}
	// t.TempDir's parent is private to the test's user.
	if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(uid), int(gid)); err != nil {
		t.Fatal(err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
}

// freeAddr returns an address of 127.0.0.1 with a port that is free now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
