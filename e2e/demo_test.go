package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// buildDir holds the demo's binary for the whole test run.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sse-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// builds holds each demo program's build, made once per test run.
var builds struct {
	mu sync.Mutex
	m  map[string]*programBuild // guarded by mu: by program
}

// A programBuild is one program's build.
type programBuild struct {
	once sync.Once
	path string
	out  []byte
	err  error
}

// demoBinary builds a program of the examples module (progress or cluster)
// once per test run, as `go run -C examples ./progress` does (with the
// library of this checkout, which examples/go.mod replaces), with the race
// detector if the tests have it, and returns its path.
func demoBinary(t *testing.T, program string) string {
	t.Helper()
	builds.mu.Lock()
	if builds.m == nil {
		builds.m = make(map[string]*programBuild)
	}
	b := builds.m[program]
	if b == nil {
		b = &programBuild{}
		builds.m[program] = b
	}
	builds.mu.Unlock()
	b.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		b.path = filepath.Join(buildDir, program)
		args := []string{"build", "-C", filepath.Join("..", "examples"), "-o", b.path}
		if raceEnabled {
			args = append(args, "-race")
		}
		args = append(args, "./"+program)
		b.out, b.err = exec.CommandContext(ctx, "go", args...).CombinedOutput()
	})
	if b.err != nil {
		t.Fatalf("building %s: %v\n%s", program, b.err, b.out)
	}
	return b.path
}

// A demo is a running demo process.
type demo struct {
	url    string // where it serves the page, with a trailing slash
	cmd    *exec.Cmd
	stdout *output
	stderr *output
	exited chan struct{} // closed when the process has exited and been waited for
	err    error         // cmd.Wait's result, set before exited is closed
}

// startDemo builds and starts the progress demo on a free port of
// 127.0.0.1 with the flags args, and waits until it listens. When the test
// ends, the demo is stopped with SIGTERM and must exit cleanly within 5
// seconds, or it is killed and the test fails; it is killed anyway after 3
// minutes.
func startDemo(t *testing.T, args ...string) *demo {
	t.Helper()
	return startProgram(t, "progress", args...)
}

// startProgram is startDemo for any program of the examples module that
// takes -addr.
func startProgram(t *testing.T, program string, args ...string) *demo {
	t.Helper()
	bin := demoBinary(t, program)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	d := &demo{
		stdout: &output{url: make(chan string, 1)},
		stderr: &output{},
		exited: make(chan struct{}),
	}
	d.cmd = exec.CommandContext(ctx, bin, append([]string{"-addr", "127.0.0.1:0"}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	d.cmd.WaitDelay = 5 * time.Second // bounds Wait after a kill
	if err := d.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		defer cancel()
		select {
		case <-d.exited:
		default:
			d.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-d.exited:
				if d.err != nil {
					t.Errorf("the demo exited with %v after SIGTERM", d.err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("the demo did not exit within 5s of SIGTERM: killing it")
				cancel()
				<-d.exited
			}
		}
		if strings.Contains(d.stderr.String(), "DATA RACE") {
			t.Errorf("the demo has a data race")
		}
		if t.Failed() {
			t.Logf("the demo's output:\n%s%s", d.stdout, d.stderr)
		}
	})

	select {
	case d.url = <-d.stdout.url:
	case <-d.exited:
		t.Fatalf("the demo exited before it listened: %v\n%s", d.err, d.stderr)
	case <-time.After(30 * time.Second):
		t.Fatal("the demo printed no URL within 30s")
	}
	return d
}

// startJob starts a job with POST /jobs and returns its event stream's URL.
func (d *demo) startJob(t *testing.T, client *http.Client) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url+"jobs", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var job struct {
		Events string `json:"events"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&job); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /jobs: status %d, error %v", resp.StatusCode, err)
	}
	return strings.TrimSuffix(d.url, "/") + job.Events
}

// newClient returns an HTTP client whose connections are closed when the
// test ends, so that no goroutine of theirs outlives it.
func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// output keeps what a process writes. If url is not nil, it receives the
// first URL that a complete line holds.
type output struct {
	url chan string // capacity 1; immutable

	mu    sync.Mutex
	buf   bytes.Buffer // guarded by mu
	found bool         // guarded by mu: a URL was sent
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf.Write(p)
	if o.url == nil || o.found {
		return len(p), nil
	}
	text := o.buf.String()
	text = text[:strings.LastIndexByte(text, '\n')+1] // complete lines
	if _, rest, ok := strings.Cut(text, "http://"); ok {
		if f := strings.Fields(rest); len(f) > 0 {
			o.url <- "http://" + f[0]
			o.found = true
		}
	}
	return len(p), nil
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// A demoProxy passes requests on to a demo, flushing every write, and lets
// a handler in front of it fetch a response itself to rewrite it.
type demoProxy struct {
	*httputil.ReverseProxy
	upstream *url.URL        // the demo's URL
	tr       *http.Transport // the proxy's and fetch's
}

func newDemoProxy(t *testing.T, d *demo) *demoProxy {
	t.Helper()
	upstream, err := url.Parse(d.url)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	proxy.Transport = tr
	proxy.FlushInterval = -1
	return &demoProxy{ReverseProxy: proxy, upstream: upstream, tr: tr}
}

// fetch sends r's GET to the demo and returns its response, or answers w
// with an error and returns nil.
func (p *demoProxy) fetch(w http.ResponseWriter, r *http.Request) *http.Response {
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, p.upstream.JoinPath(r.URL.Path).String()+"?"+r.URL.RawQuery, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return nil
	}
	resp, err := p.tr.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return nil
	}
	return resp
}
