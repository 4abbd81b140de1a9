package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/rocketqueue/sse/ssetest"
)

// authPage is a page of another origin than the auth demo's API. It loads
// the demo's examples/auth/static/auth.js from the demo's page server (its
// URL replaces %s), and follows streams with it, or opens EventSources of
// its own with watch; window.streams() returns what each stream got.
const authPage = `<!doctype html>
<meta charset="utf-8">
<title>auth</title>
<script src="%s/auth.js"></script>
<script>
"use strict";
const streams = {};
function recorder(name) {
  const s = streams[name] = {opens: 0, messages: [], reconnecting: 0, failed: "", ended: false};
  return {
    open() { s.opens++; },
    message(e) { s.messages.push({id: e.lastEventId, data: e.data}); },
    reconnecting() { s.reconnecting++; },
    failed(why) { s.failed = why || "failed"; },
    ended() { s.ended = true; },
  };
}
window.followCookie = (api, user, name) => { followWithCookie(api, user, recorder(name)); };
window.followToken = (api, user, name) => { followWithToken(api, user, recorder(name)); };
// watch opens an EventSource on url, which gets listen's handlers.
window.watch = (name, url, withCredentials) => {
  const on = recorder(name);
  listen(new EventSource(url, {withCredentials}), on, () => on.failed("refused"));
};
window.streams = () => streams;
</script>
`

// authStream is what authPage knows of one stream.
type authStream struct {
	Opens        int         `json:"opens"`        // "open" events: connections that got a stream
	Messages     []pageEvent `json:"messages"`     // every message, in order
	Reconnecting int         `json:"reconnecting"` // errors after which the browser reconnects
	Failed       string      `json:"failed"`       // why the stream failed for good: the browser gave up, or a token could not be minted
	Ended        bool        `json:"ended"`        // a "close" event
}

// String sums s up, for failures: not every message.
func (s authStream) String() string {
	last := ""
	if len(s.Messages) > 0 {
		last = s.Messages[len(s.Messages)-1].ID
	}
	return fmt.Sprintf("{%d opens, %d messages (the last %q), %d reconnections, failed %q, ended %v}",
		s.Opens, len(s.Messages), last, s.Reconnecting, s.Failed, s.Ended)
}

// tokenGrant is the API's answer to POST /users/{user}/token.
type tokenGrant struct {
	Token   string `json:"token"`
	Expires int64  `json:"expires"`
}

// authDemo is the auth demo, started with args, with pages that serve
// authPage from two other origins: allowed, the one the API allows, and
// other, one it does not.
type authDemo struct {
	*demo
	api            string // the API's origin
	allowed, other string // the pages' origins
}

// startAuth starts the auth demo with args, allowing the origin of the
// first of two pages it starts, and the pages.
func startAuth(t *testing.T, args ...string) *authDemo {
	t.Helper()
	// The servers listen before they start: the demo must be told the
	// allowed page's origin, and the pages the demo's URLs.
	allowed, other := httptest.NewUnstartedServer(nil), httptest.NewUnstartedServer(nil)
	t.Cleanup(allowed.Close)
	t.Cleanup(other.Close)
	a := &authDemo{
		allowed: "http://" + allowed.Listener.Addr().String(),
		other:   "http://" + other.Listener.Addr().String(),
	}
	a.demo = startProgram(t, "auth", append([]string{"-page-addr", "127.0.0.1:0", "-origin", a.allowed}, args...)...)
	a.api = strings.TrimSuffix(a.url, "/")
	_, rest, ok := strings.Cut(a.stdout.String(), "Open the page at ")
	if !ok {
		t.Fatalf("the demo printed no page URL: %q", a.stdout)
	}
	pageServer := strings.TrimSuffix(strings.Fields(rest)[0], "/")
	page := fmt.Sprintf(authPage, pageServer)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /auth.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, page)
	})
	for _, srv := range []*httptest.Server{allowed, other} {
		srv.Config.Handler = mux
		srv.Start()
	}
	return a
}

// The auth demo in Chromium, from a page of another origin than its API.
// With the session cookie (withCredentials) and with a token, the page
// gets its user's notifications; refused, the EventSource gets an error,
// gives up, and gets no event: without the cookie, on another user's
// stream, from an origin the API does not allow, with a tampered token,
// and with the token of another key. Neither the token nor the cookie
// reaches the demo's log.
func TestAuth(t *testing.T) {
	chromium := findChromium(t)
	a := startAuth(t, "-every", "100ms")
	browser := newBrowser(t, chromium)
	tab := browser
	navigate(t, tab, a.allowed+"/auth.html")
	evalAwait[bool](t, tab, fmt.Sprintf(`signIn(%q, "alice").then(() => true)`, a.api))
	grant := evalAwait[tokenGrant](t, tab, fmt.Sprintf(`mintToken(%q, "alice")`, a.api))
	if grant.Token == "" {
		t.Fatalf("no token minted: %+v", grant)
	}
	tokenURL := func(user, token string) string {
		return a.api + "/users/" + user + "/events?token=" + url.QueryEscape(token)
	}
	tampered := []byte(grant.Token)
	if i := len(tampered) - 5; tampered[i] == 'A' {
		tampered[i] = 'B'
	} else {
		tampered[i] = 'A'
	}

	// Followed: with the cookie and withCredentials (auth.js), with a
	// token of our own and no cookie, and with auth.js's token.
	evaluate[any](t, tab, fmt.Sprintf(`followCookie(%q, "alice", "cookie")`, a.api))
	evaluate[any](t, tab, fmt.Sprintf(`watch("token", %q, false)`, tokenURL("alice", grant.Token)))
	evaluate[any](t, tab, fmt.Sprintf(`followToken(%q, "alice", "auth.js token")`, a.api))
	// Refused.
	refused := map[string]string{
		"no cookie (no withCredentials)": fmt.Sprintf(`watch("no cookie (no withCredentials)", %q, false)`, a.api+"/users/alice/events"),
		"alice's cookie on bob's stream": fmt.Sprintf(`followCookie(%q, "bob", "alice's cookie on bob's stream")`, a.api),
		"a tampered token":               fmt.Sprintf(`watch("a tampered token", %q, false)`, tokenURL("alice", string(tampered))),
		"alice's token on bob's stream":  fmt.Sprintf(`watch("alice's token on bob's stream", %q, false)`, tokenURL("bob", grant.Token)),
		"a token for bob's stream":       fmt.Sprintf(`followToken(%q, "bob", "a token for bob's stream")`, a.api),
	}
	for _, js := range refused {
		evaluate[any](t, tab, js)
	}
	// From an origin the API does not allow: the browser sends alice's
	// cookie (cookies are not kept apart by port), and the API refuses.
	otherTab := newTab(t, browser)
	navigate(t, otherTab, a.other+"/auth.html")
	if got := evalAwait[string](t, otherTab, fmt.Sprintf(`signIn(%q, "bob").then(() => "signed in", () => "refused")`, a.api)); got != "refused" {
		t.Errorf("signing in from a disallowed origin: %s", got)
	}
	evaluate[any](t, otherTab, fmt.Sprintf(`followCookie(%q, "alice", "disallowed origin")`, a.api))
	evaluate[any](t, otherTab, fmt.Sprintf(`watch("disallowed origin, token", %q, false)`, tokenURL("alice", grant.Token)))

	followed := []string{"cookie", "token", "auth.js token"}
	waitStreams(t, tab, 30*time.Second, "the followed streams to get 5 events each, and the refused ones to fail", func(s map[string]authStream) bool {
		for _, name := range followed {
			if len(s[name].Messages) < 5 {
				return false
			}
		}
		for name := range refused {
			if s[name].Failed == "" {
				return false
			}
		}
		return true
	})
	waitStreams(t, otherTab, 30*time.Second, "the disallowed origin's streams to fail", func(s map[string]authStream) bool {
		return s["disallowed origin"].Failed != "" && s["disallowed origin, token"].Failed != ""
	})
	// A browser that reconnected would do it within its retry delay (3 s in
	// Chromium), but would fire "error" at once.
	time.Sleep(time.Second)
	s := getStreams(t, tab)
	for _, name := range followed {
		st := s[name]
		checkNotifications(t, name, st.Messages, "alice")
		if st.Opens != 1 || st.Reconnecting != 0 || st.Failed != "" || st.Ended {
			t.Errorf("%s: %d opens, %d reconnections, failed %q, ended %v; want one connection, open", name, st.Opens, st.Reconnecting, st.Failed, st.Ended)
		}
	}
	others := getStreams(t, otherTab)
	for name, st := range map[string]authStream{
		"no cookie (no withCredentials)": s["no cookie (no withCredentials)"],
		"alice's cookie on bob's stream": s["alice's cookie on bob's stream"],
		"a tampered token":               s["a tampered token"],
		"alice's token on bob's stream":  s["alice's token on bob's stream"],
		"a token for bob's stream":       s["a token for bob's stream"],
		"disallowed origin":              others["disallowed origin"],
		"disallowed origin, token":       others["disallowed origin, token"],
	} {
		if st.Opens != 0 || len(st.Messages) != 0 || st.Reconnecting != 0 || st.Failed == "" {
			t.Errorf("%s: %v; want no open, no event, no reconnection, and failed", name, st)
		}
	}
	if st := s["a token for bob's stream"]; st.Failed != "token: 403" {
		t.Errorf("a token for bob's stream: failed %q, want token: 403 (refused to alice)", st.Failed)
	}

	logs := a.stderr.String()
	for _, want := range []string{"status=401", "status=403", `msg="sse: request refused"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the demo's log has no %q", want)
		}
	}
	if strings.Contains(logs, grant.Token) || strings.Contains(logs, string(tampered)) || strings.Contains(logs, "token=") {
		t.Errorf("the demo's log holds a token")
	}
}

// A token expires: the stream it opened ends then, the browser's
// reconnection with the same URL is refused, and auth.js mints another
// token and resumes after its last event, so that the page gets every
// notification once and in order; a token used after its expiry is
// refused.
func TestAuthTokenExpires(t *testing.T) {
	chromium := findChromium(t)
	const ttl = 2 * time.Second
	a := startAuth(t, "-every", "100ms", "-token-ttl", ttl.String())
	tab := newBrowser(t, chromium)
	navigate(t, tab, a.allowed+"/auth.html")
	evalAwait[bool](t, tab, fmt.Sprintf(`signIn(%q, "alice").then(() => true)`, a.api))
	grant := evalAwait[tokenGrant](t, tab, fmt.Sprintf(`mintToken(%q, "alice")`, a.api))
	evaluate[any](t, tab, fmt.Sprintf(`followToken(%q, "alice", "renewed")`, a.api))

	// Wait for the token's expiry, to the second, and a little more.
	time.Sleep(time.Until(time.Unix(grant.Expires, 0).Add(200 * time.Millisecond)))
	evaluate[any](t, tab, fmt.Sprintf(`watch("expired", %q, false)`,
		a.api+"/users/alice/events?token="+url.QueryEscape(grant.Token)))

	// Each connection lasts less than the token's 2 s, and the browser
	// waits 3 s before it reconnects: three connections take about 13 s.
	s := waitStreams(t, tab, time.Minute, "the stream to go on over three tokens", func(s map[string]authStream) bool {
		return s["renewed"].Opens >= 3 && s["expired"].Failed != "" || s["renewed"].Failed != ""
	})
	renewed := s["renewed"]
	if renewed.Failed != "" || renewed.Ended {
		t.Fatalf("the stream failed: %v", renewed)
	}
	checkNotifications(t, "renewed", renewed.Messages, "alice")
	if renewed.Reconnecting < 2 {
		t.Errorf("%d reconnections, want one after each expired token", renewed.Reconnecting)
	}
	if st := s["expired"]; st.Opens != 0 || len(st.Messages) != 0 || st.Failed == "" {
		t.Errorf("an expired token: %v; want no open, no event, and failed", st)
	}
	if logs := a.stderr.String(); strings.Contains(logs, grant.Token) || strings.Contains(logs, "token=") {
		t.Errorf("the demo's log holds a token")
	}
}

// checkNotifications checks that a stream's messages are notifications for
// user with IDs <epoch>-n, <epoch>-(n+1), …: none missed, none twice.
func checkNotifications(t *testing.T, name string, msgs []pageEvent, user string) {
	t.Helper()
	if len(msgs) == 0 {
		t.Errorf("%s: no event", name)
		return
	}
	epoch, first, _ := strings.Cut(msgs[0].ID, "-")
	n, err := strconv.Atoi(first)
	if err != nil {
		t.Errorf("%s: first id %q", name, msgs[0].ID)
		return
	}
	for i, m := range msgs {
		if want := fmt.Sprintf("%s-%d", epoch, n+i); m.ID != want {
			t.Errorf("%s: event %d has id %q, want %q", name, i, m.ID, want)
			return
		}
		if !strings.Contains(m.Data, " for "+user+",") {
			t.Errorf("%s: event %s is %q, not for %s", name, m.ID, m.Data, user)
			return
		}
	}
}

// getStreams returns authPage's window.streams().
func getStreams(t *testing.T, tab context.Context) map[string]authStream {
	t.Helper()
	return evaluate[map[string]authStream](t, tab, "window.streams ? window.streams() : {}")
}

// waitStreams polls authPage's streams every 50 ms until cond holds, for
// at most within.
func waitStreams(t *testing.T, tab context.Context, within time.Duration, what string, cond func(map[string]authStream) bool) map[string]authStream {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := getStreams(t, tab)
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the page has %v", what, s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// evaluate evaluates the expression js in tab.
func evaluate[T any](t *testing.T, tab context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// evalAwait evaluates js in tab, and waits for the promise it returns.
func evalAwait[T any](t *testing.T, tab context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(tab, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("evaluating %s: %v", js, err)
	}
	return v
}

// The auth demo behind nginx configured with examples/auth/nginx.conf: a
// stream opened with a token works through it, and its access log names
// the requests, refused ones too, without their query, so without the
// token, while nginx's default format ("combined", in a second log the
// test adds) holds the token.
func TestAuthNginxLog(t *testing.T) {
	nginx := findNginx(t)
	d := startProgram(t, "auth", "-page-addr", "", "-origin", "http://127.0.0.1:9", "-every", "50ms")
	upstream := strings.TrimSuffix(strings.TrimPrefix(d.url, "http://"), "/")
	src, err := os.ReadFile(filepath.Join("..", "examples", "auth", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cred := nginxCredential(t, dir)
	var proxy string
	for attempt := 1; ; attempt++ {
		addr := freeAddr(t)
		conf := string(src)
		for _, r := range []struct{ old, new string }{
			{"server 127.0.0.1:8080;", "server " + upstream + ";"},
			{"listen 8000;", "listen " + addr + ";"},
			{"access_log /var/log/nginx/access.log no_query;", "access_log access.log no_query;\n" +
				"    # Added by the e2e test: what nginx logs by default.\n" +
				"    access_log combined.log combined;"},
			{"http {", "http {\n" +
				"    client_body_temp_path client_body;\n" +
				"    proxy_temp_path proxy;\n" +
				"    fastcgi_temp_path fastcgi;\n" +
				"    uwsgi_temp_path uwsgi;\n" +
				"    scgi_temp_path scgi;"},
		} {
			if n := strings.Count(conf, r.old); n != 1 {
				t.Fatalf("examples/auth/nginx.conf has %q %d times, want once: update the test", r.old, n)
			}
			conf = strings.Replace(conf, r.old, r.new, 1)
		}
		path := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := runNginx(t, nginx, dir, path, cred)
		if err == nil {
			proxy = "http://" + addr
			break
		}
		if !strings.Contains(out.String(), "Address already in use") || attempt == 3 {
			t.Fatalf("nginx: %v\n%s", err, out)
		}
	}

	client := newClient(t)
	do := func(method, url string, body io.Reader) *http.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		t.Cleanup(cancel)
		req, err := http.NewRequestWithContext(ctx, method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		if body != nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := do("POST", proxy+"/login", strings.NewReader("user=alice"))
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		session = c
	}
	if resp.StatusCode != http.StatusNoContent || session == nil {
		t.Fatalf("signing in through nginx: status %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", proxy+"/users/alice/token", nil)
	req.AddCookie(session)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var grant tokenGrant
	err = json.NewDecoder(resp.Body).Decode(&grant)
	resp.Body.Close()
	if err != nil || grant.Token == "" {
		t.Fatalf("minting a token through nginx: status %d, %v", resp.StatusCode, err)
	}

	// The token's stream, through nginx: its first events, then the
	// client leaves. A tampered token: 401.
	resp = do("GET", proxy+"/users/alice/events?token="+url.QueryEscape(grant.Token), nil)
	if err := ssetest.CheckResponse(resp); err != nil {
		t.Fatal(err)
	}
	r := ssetest.NewReader(resp.Body)
	for range 3 {
		if ev, err := r.Next(); err != nil || !strings.Contains(ev.Data, " for alice,") {
			t.Fatalf("the token's stream through nginx: %+v, %v", ev, err)
		}
	}
	resp.Body.Close()
	tampered := grant.Token[:len(grant.Token)-1] + "x"
	if tampered == grant.Token {
		tampered = grant.Token[:len(grant.Token)-1] + "y"
	}
	resp = do("GET", proxy+"/users/alice/events?token="+url.QueryEscape(tampered), nil)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a tampered token through nginx: status %d, want 401", resp.StatusCode)
	}

	// nginx writes a request's line when the request ends: the stream's
	// once nginx has seen the client leave.
	var logged, combined string
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(dir, "access.log"))
		c, _ := os.ReadFile(filepath.Join(dir, "combined.log"))
		logged, combined = string(b), string(c)
		if strings.Count(logged, "GET /users/alice/events ") == 2 && strings.Count(combined, "GET /users/alice/events") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx's access logs lack the streams' lines:\n%s\ncombined:\n%s", logged, combined)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logged, `"GET /users/alice/events HTTP/1.1" 200 `) || !strings.Contains(logged, `"GET /users/alice/events HTTP/1.1" 401 `) {
		t.Errorf("nginx's access log lacks the stream's 200 or the tampered token's 401:\n%s", logged)
	}
	if strings.Contains(logged, grant.Token) || strings.Contains(logged, tampered) || strings.Contains(logged, "token=") {
		t.Errorf("nginx's access log holds a token:\n%s", logged)
	}
	if !strings.Contains(combined, "token="+url.QueryEscape(grant.Token)) {
		t.Errorf("nginx's default format did not log the token: the test proves nothing:\n%s", combined)
	}
	if logs := d.stderr.String(); strings.Contains(logs, grant.Token) || strings.Contains(logs, "token=") {
		t.Errorf("the demo's log holds a token")
	}
}
