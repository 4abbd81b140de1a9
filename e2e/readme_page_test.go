package e2e

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rocketqueue/sse"
)

// readmePageMarker is the line before the README's page of the browser
// module.
const readmePageMarker = "<!-- e2e/readme_page_test.go runs this page in Chromium, byte for byte -->\n```html\n"

// The README's complete page of the browser module, as the README shows
// it, in Chromium, against a MultiHandler whose key function authorises
// the request by a session cookie, as the auth recipe does: without the
// cookie the page says it was refused; with it, it follows its three jobs
// on one connection to their end.
func TestReadmePage(t *testing.T) {
	chromium := findChromium(t)
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, page, found := strings.Cut(string(readme), readmePageMarker)
	page, _, closed := strings.Cut(page, "```\n")
	if !found || !closed {
		t.Fatalf("README.md has no html block after %q", readmePageMarker)
	}

	b := sse.New[string](sse.WithMode(sse.FanOut))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(page))
	})
	mux.Handle("GET /sse.js", sse.ScriptHandler())
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "alice", Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.Handle("GET /jobs/events", sse.MultiHandler[string](b, func(r *http.Request) ([]string, error) {
		// The auth recipe's check, for every job of the list: here, a
		// session cookie that gives them all.
		if c, err := r.Cookie("session"); err != nil || c.Value != "alice" {
			return nil, statusError(http.StatusUnauthorized)
		}
		return r.URL.Query()["job"], nil
	}, sse.WithKnownKeysOnly()))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	jobs := []string{"7", "9", "12"}
	ctx := context.Background()
	for _, job := range jobs {
		for _, pct := range []string{"50", "100"} {
			if err := b.Publish(ctx, job, sse.Event{Name: "progress", Data: pct}); err != nil {
				t.Fatal(err)
			}
		}
	}

	tab := newBrowser(t, chromium)
	status := func() string { return evaluate[string](t, tab, `document.getElementById("status")?.textContent ?? ""`) }
	rows := func() []string {
		return evaluate[[]string](t, tab, `[...document.querySelectorAll("#jobs li")].map((li) => li.textContent)`)
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("waiting for %s: the page shows %q and %q", what, rows(), status())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	navigate(t, tab, srv.URL+"/")
	wait("the refusal", func() bool { return strings.HasPrefix(status(), "refused") })
	if want := []string{"job 7: waiting", "job 9: waiting", "job 12: waiting"}; !slices.Equal(rows(), want) {
		t.Errorf("refused, the page shows %q, want %q", rows(), want)
	}

	for _, job := range jobs {
		if err := b.Close(ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	navigate(t, tab, srv.URL+"/login") // signs in, and back to the page
	wait("every job's end", func() bool { return status() == "every job is done" })
	if want := []string{"job 7: 100 % (done)", "job 9: 100 % (done)", "job 12: 100 % (done)"}; !slices.Equal(rows(), want) {
		t.Errorf("the page shows %q, want %q", rows(), want)
	}
}

// statusError is a key function's error that carries its HTTP status.
type statusError int

func (e statusError) Error() string   { return http.StatusText(int(e)) }
func (e statusError) StatusCode() int { return int(e) }
