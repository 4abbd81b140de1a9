package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rocketqueue/sse/ssetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// pageOrigin is the origin the test API allows.
const pageOrigin = "http://app.example.test:8081"

// A testAPI is the demo's API served by an httptest server, with its log
// kept and a clock that tests move.
type testAPI struct {
	*api
	url   string
	logs  *logBuffer
	clock *clock
}

// newTestAPI serves the API, whose tokens live ttl, with a notification for
// each user every 10 ms.
func newTestAPI(t *testing.T, ttl time.Duration) *testAPI {
	t.Helper()
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, stop := context.WithCancel(context.Background())
	a, produced := newAPI(ctx, logger, config{
		origins: []string{pageOrigin},
		ttl:     ttl,
		every:   10 * time.Millisecond,
		secret:  testSecret,
	})
	c := &clock{}
	a.now = c.Now
	srv := httptest.NewServer(a.handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		stop()
		<-produced
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := a.broker.Shutdown(ctx); err != nil {
			t.Errorf("broker.Shutdown: %v", err)
		}
		if t.Failed() {
			t.Logf("the API's log:\n%s", logs)
		}
	})
	return &testAPI{api: a, url: srv.URL, logs: logs, clock: c}
}

// A clock is the real time, moved forward by what tests add.
type clock struct {
	mu     sync.Mutex
	offset time.Duration // guarded by mu
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// A logBuffer keeps what a logger writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A request is what a browser sends: an Origin header if not empty, a
// session cookie if not empty.
type request struct {
	method, path   string
	origin, cookie string
	form           url.Values // POST's body, if not nil
}

// send sends req to the API and returns the response; its body, read
// whole unless it is an event stream, whose first event is read (within 10
// seconds) before the body is closed.
func (a *testAPI) send(t *testing.T, req request) (*http.Response, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var body io.Reader
	if req.form != nil {
		body = strings.NewReader(req.form.Encode())
	}
	r, err := http.NewRequestWithContext(ctx, req.method, a.url+req.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if req.form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if req.origin != "" {
		r.Header.Set("Origin", req.origin)
	}
	if req.cookie != "" {
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: req.cookie})
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ssetest.CheckResponse(resp) == nil {
		ev, err := ssetest.NewReader(resp.Body).Next()
		if err != nil {
			t.Fatalf("%s %s: reading the stream's first event: %v", req.method, req.path, err)
		}
		return resp, ev.Data
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// signIn signs user in from the allowed origin and returns the session
// cookie's value.
func (a *testAPI) signIn(t *testing.T, user string) string {
	t.Helper()
	resp, body := a.send(t, request{method: "POST", path: "/login", origin: pageOrigin, form: url.Values{"user": {user}}})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("signing %s in: status %d %q", user, resp.StatusCode, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.MaxAge <= 0 {
				t.Errorf("session cookie %+v: want HttpOnly, Secure, SameSite=Lax, Path=/ and a Max-Age", c)
			}
			return c.Value
		}
	}
	t.Fatalf("signing %s in: no session cookie", user)
	return ""
}

// mint returns a stream token for key, asked with session cookie.
func (a *testAPI) mint(t *testing.T, key, cookie string) (token string, expires int64) {
	t.Helper()
	resp, body := a.send(t, request{method: "POST", path: "/users/" + key + "/token", origin: pageOrigin, cookie: cookie})
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("minting a token for %s: status %d %q", key, resp.StatusCode, body)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("a token's answer has Cache-Control %q, want no-store", cc)
	}
	var grant struct {
		Token   string
		Expires int64
	}
	if err := json.Unmarshal([]byte(body), &grant); err != nil || grant.Token == "" {
		t.Fatalf("minting a token for %s: %q, %v", key, body, err)
	}
	return grant.Token, grant.Expires
}

// checkCORS checks the CORS headers of an answer to a request from origin:
// the allowed origin echoed with credentials allowed, any other none; never
// "*"; Vary: Origin always.
func checkCORS(t *testing.T, resp *http.Response, origin string) {
	t.Helper()
	acao, acac := resp.Header.Values("Access-Control-Allow-Origin"), resp.Header.Get("Access-Control-Allow-Credentials")
	if origin == pageOrigin {
		if len(acao) != 1 || acao[0] != pageOrigin || acac != "true" {
			t.Errorf("from %s: Access-Control-Allow-Origin %q, -Credentials %q; want exactly the origin, and true", origin, acao, acac)
		}
	} else if len(acao) != 0 || acac != "" {
		t.Errorf("from %q: Access-Control-Allow-Origin %q, -Credentials %q; want neither", origin, acao, acac)
	}
	if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
		t.Errorf("from %q: Vary %q, want Origin", origin, resp.Header.Values("Vary"))
	}
}

// A signed-in user follows their stream with the session cookie, from the
// allowed origin, which the answer names exactly, with credentials.
func TestCookie(t *testing.T) {
	a := newTestAPI(t, time.Minute)
	alice := a.signIn(t, "alice")
	resp, data := a.send(t, request{method: "GET", path: "/users/alice/events", origin: pageOrigin, cookie: alice})
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(data, "notification ") || !strings.Contains(data, " for alice,") {
		t.Fatalf("alice's stream: status %d, first event %q", resp.StatusCode, data)
	}
	checkCORS(t, resp, pageOrigin)

	// Without an Origin header (not a browser's cross-origin request):
	// the cookie is enough.
	resp, data = a.send(t, request{method: "GET", path: "/users/alice/events", cookie: alice})
	if resp.StatusCode != http.StatusOK || !strings.Contains(data, " for alice,") {
		t.Fatalf("alice's stream without Origin: status %d, first event %q", resp.StatusCode, data)
	}

	// Signed out: the session is gone.
	resp, _ = a.send(t, request{method: "POST", path: "/logout", origin: pageOrigin, cookie: alice})
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout: status %d", resp.StatusCode)
	}
	for _, path := range []string{"/users/alice/events", "/users/alice/token"} {
		method := "GET"
		if strings.HasSuffix(path, "token") {
			method = "POST"
		}
		if resp, _ := a.send(t, request{method: method, path: path, origin: pageOrigin, cookie: alice}); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s after logout: status %d, want 401", method, path, resp.StatusCode)
		}
	}
}

// A stream token, minted for a signed-in user, opens that user's stream
// with no cookie, and the stream ends, without "close", when the token
// expires; the same URL is then refused.
func TestToken(t *testing.T) {
	const ttl = 2 * time.Second
	a := newTestAPI(t, ttl)
	alice := a.signIn(t, "alice")
	token, expires := a.mint(t, "alice", alice)
	if d := time.Until(time.Unix(expires, 0)); d > ttl || d < ttl-2*time.Second {
		t.Errorf("the token expires in %v, want at most %v", d, ttl)
	}
	path := "/users/alice/events?token=" + url.QueryEscape(token)
	for _, origin := range []string{pageOrigin, ""} {
		resp, data := a.send(t, request{method: "GET", path: path, origin: origin})
		if resp.StatusCode != http.StatusOK || !strings.Contains(data, " for alice,") {
			t.Fatalf("alice's stream with a token, origin %q: status %d, first event %q", origin, resp.StatusCode, data)
		}
		if origin != "" {
			checkCORS(t, resp, origin)
		}
	}

	// Read the stream to its end: it must end by the token's expiry, with
	// no "close" (so that a browser reconnects, and is refused).
	ctx, cancel := context.WithTimeout(context.Background(), ttl+10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", a.url+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	events, err := ssetest.ReadAll(resp.Body)
	resp.Body.Close()
	ended := time.Now()
	if err != nil {
		t.Fatalf("reading the token's stream to its end: %v", err)
	}
	if len(events) == 0 || events[len(events)-1].Type == "close" {
		t.Errorf("the token's stream had %d events, the last %+v; want events and no close", len(events), events[len(events)-1:])
	}
	if exp := time.Unix(expires, 0); ended.Before(exp) || ended.After(exp.Add(5*time.Second)) {
		t.Errorf("the stream ended at %v, the token expired at %v", ended, exp)
	}
	resp, _ = a.send(t, request{method: "GET", path: path, origin: pageOrigin})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the token's URL after its expiry: status %d, want 401", resp.StatusCode)
	}
}

// Every refusal, with the status it gets and its CORS headers.
func TestRefusals(t *testing.T) {
	a := newTestAPI(t, time.Minute)
	alice, bob := a.signIn(t, "alice"), a.signIn(t, "bob")
	aliceToken, _ := a.mint(t, "alice", alice)
	// carol has no stream: a token for her (the server's own mistake) gets
	// 404, since the handler serves known keys only.
	carolToken, _ := a.tokens.mint("carol", a.now().Add(time.Minute))
	e, sig, _ := strings.Cut(aliceToken, ".")
	flipped := []byte(sig)
	flipped[10] ^= 'A' ^ 'B'
	if flipped[10] == sig[10] {
		flipped[10] = 'C'
	}
	expired, _ := a.tokens.mint("alice", a.now().Add(-time.Second))
	events := func(user, token string) string {
		return "/users/" + user + "/events?token=" + url.QueryEscape(token)
	}
	for _, c := range []struct {
		name string
		req  request
		want int
	}{
		{"no cookie", request{method: "GET", path: "/users/alice/events", origin: pageOrigin}, 401},
		{"no cookie, no origin", request{method: "GET", path: "/users/alice/events"}, 401},
		{"a cookie of no session", request{method: "GET", path: "/users/alice/events", origin: pageOrigin, cookie: "AAAAAAAAAAAAAAAAAAAAAAAAAA"}, 401},
		{"bob's cookie on alice's stream", request{method: "GET", path: "/users/alice/events", origin: pageOrigin, cookie: bob}, 403},
		{"alice's cookie on bob's stream", request{method: "GET", path: "/users/bob/events", origin: pageOrigin, cookie: alice}, 403},
		{"a disallowed origin", request{method: "GET", path: "/users/alice/events", origin: "http://evil.example.test", cookie: alice}, 403},
		{"the allowed origin's host on another port", request{method: "GET", path: "/users/alice/events", origin: "http://app.example.test:8082", cookie: alice}, 403},
		{"the allowed origin over https", request{method: "GET", path: "/users/alice/events", origin: "https://app.example.test:8081", cookie: alice}, 403},
		{"origin null", request{method: "GET", path: "/users/alice/events", origin: "null", cookie: alice}, 403},
		{"a tampered token", request{method: "GET", path: events("alice", e+"."+string(flipped)), origin: pageOrigin}, 401},
		{"a token with its expiry moved", request{method: "GET", path: events("alice", "9"+aliceToken), origin: pageOrigin}, 401},
		{"an expired token", request{method: "GET", path: events("alice", expired), origin: pageOrigin}, 401},
		{"alice's token on bob's stream", request{method: "GET", path: events("bob", aliceToken), origin: pageOrigin}, 401},
		{"alice's token on bob's stream, with bob's cookie", request{method: "GET", path: events("bob", aliceToken), origin: pageOrigin, cookie: bob}, 401},
		{"an empty token, with alice's cookie", request{method: "GET", path: events("alice", ""), origin: pageOrigin, cookie: alice}, 401},
		{"a token from a disallowed origin", request{method: "GET", path: events("alice", aliceToken), origin: "http://evil.example.test"}, 403},
		{"a token for a key with no stream", request{method: "GET", path: events("carol", carolToken), origin: pageOrigin}, 404},
		{"POST on a stream", request{method: "POST", path: "/users/alice/events", origin: pageOrigin, cookie: alice}, 405},
		{"a token without a session", request{method: "POST", path: "/users/alice/token", origin: pageOrigin}, 401},
		{"a token for bob's stream, for alice", request{method: "POST", path: "/users/bob/token", origin: pageOrigin, cookie: alice}, 403},
		{"minting from a disallowed origin", request{method: "POST", path: "/users/alice/token", origin: "http://evil.example.test", cookie: alice}, 403},
		{"signing in an unknown user", request{method: "POST", path: "/login", origin: pageOrigin, form: url.Values{"user": {"carol"}}}, 401},
		{"signing in from a disallowed origin", request{method: "POST", path: "/login", origin: "http://evil.example.test", form: url.Values{"user": {"alice"}}}, 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := a.send(t, c.req)
			if resp.StatusCode != c.want {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, c.want)
			}
			if c.req.origin != "" {
				checkCORS(t, resp, c.req.origin)
			}
			if len(resp.Cookies()) != 0 {
				t.Errorf("cookies set: %v", resp.Cookies())
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
		})
	}

	// A session ends after its lifetime.
	a.clock.advance(sessionLifetime)
	if resp, _ := a.send(t, request{method: "GET", path: "/users/alice/events", origin: pageOrigin, cookie: alice}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a session after its lifetime: status %d, want 401", resp.StatusCode)
	}
}

// Neither the library's log nor the demo's holds a token, nor a session
// cookie, whatever became of the request.
func TestLogsHoldNoSecrets(t *testing.T) {
	a := newTestAPI(t, time.Minute)
	alice := a.signIn(t, "alice")
	token, _ := a.mint(t, "alice", alice)
	bobs, _ := a.mint(t, "bob", a.signIn(t, "bob"))
	expired, _ := a.tokens.mint("alice", a.now().Add(-time.Second))
	tampered := token[:len(token)-2] + "AA"
	logged := strings.Count(a.logs.String(), "msg=request")
	reqs := []request{
		{method: "GET", path: "/users/alice/events?token=" + token, origin: pageOrigin},
		{method: "GET", path: "/users/alice/events?token=" + tampered, origin: pageOrigin},
		{method: "GET", path: "/users/alice/events?token=" + expired, origin: pageOrigin},
		{method: "GET", path: "/users/alice/events?token=" + bobs, origin: pageOrigin},
		{method: "GET", path: "/users/alice/events?token=" + token, origin: "http://evil.example.test"},
		{method: "GET", path: "/users/alice/events", origin: pageOrigin, cookie: alice},
		{method: "GET", path: "/users/bob/events", origin: pageOrigin, cookie: alice},
	}
	for _, req := range reqs {
		a.send(t, req)
	}
	// A request's line is written when its handler returns, which a
	// stream's does after its client has gone.
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(a.logs.String(), "msg=request") < logged+len(reqs) {
		if time.Now().After(deadline) {
			t.Fatalf("the log has %d request lines, want %d", strings.Count(a.logs.String(), "msg=request"), logged+len(reqs))
		}
		time.Sleep(10 * time.Millisecond)
	}
	logs := a.logs.String()
	if !strings.Contains(logs, "sse: request refused") || !strings.Contains(logs, "path=/users/alice/events") {
		t.Fatalf("the log has no refusal or no path:\n%s", logs)
	}
	for name, secret := range map[string]string{
		"a token": token, "a tampered token": tampered, "an expired token": expired, "bob's token": bobs,
		"a token's signature": token[strings.IndexByte(token, '.')+1:], "a session cookie": alice, "the query": "token=",
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds %s", name)
		}
	}
}

// The page serves index.html, which names the API, and auth.js; the API
// says what it is at /.
func TestPage(t *testing.T) {
	a := newTestAPI(t, time.Minute)
	if resp, body := a.send(t, request{method: "GET", path: "/"}); resp.StatusCode != http.StatusOK || !strings.Contains(body, "POST /users/{user}/token") {
		t.Errorf("GET / of the API: status %d, %q", resp.StatusCode, body)
	}

	srv := httptest.NewServer(pageHandler("http://api.example.test:8080"))
	defer srv.Close()
	for path, want := range map[string]string{
		"/":        `<meta name="api" content="http://api.example.test:8080">`,
		"/auth.js": "function followWithToken(",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: status %d, body without %q", path, resp.StatusCode, want)
		}
	}
}

// The settings: origins as browsers send them, and a secret long enough.
func TestConfig(t *testing.T) {
	for _, o := range []string{"http://localhost:8081", "https://app.example.com", "http://127.0.0.1:9"} {
		if err := checkOrigin(o); err != nil {
			t.Errorf("%q: %v", o, err)
		}
	}
	for _, o := range []string{"*", "null", "", "localhost:8081", "http://localhost:8081/", "https://app.example.com/x",
		"HTTPS://app.example.com", "https://App.example.com", "https://app.example.com:443", "http://a:80", "ftp://a", "https://u@a", "https://a?b"} {
		if err := checkOrigin(o); err == nil {
			t.Errorf("%q accepted as an origin", o)
		}
	}
	if s, err := secret(""); err != nil || len(s) != minSecret {
		t.Errorf("a random secret: %d bytes, %v", len(s), err)
	}
	if s, err := secret("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="); err != nil || string(s) != "secretsecretsecretsecretsecret12" {
		t.Errorf("AUTH_SECRET: %q, %v", s, err)
	}
	for _, env := range []string{"c2VjcmV0", "not base64!"} {
		if _, err := secret(env); err == nil {
			t.Errorf("AUTH_SECRET %q accepted", env)
		}
	}
	if err := (&config{ttl: time.Second, every: time.Second}).check(); err == nil {
		t.Errorf("no page and no origin accepted")
	}
	if err := (&config{ttl: time.Second, every: time.Second, origins: []string{"*"}}).check(); err == nil {
		t.Errorf("origin * accepted")
	}
	if err := (&config{ttl: time.Millisecond, every: time.Second, pageAddr: "x:1"}).check(); err == nil {
		t.Errorf("-token-ttl 1ms accepted")
	}
}
