// Command auth is a demo of github.com/rocketqueue/sse: per-key
// authorization of Server-Sent Events streams, done two ways, for a page on
// another origin than the streams'.
//
// Run it from the repository's root and open the page's URL it prints:
//
//	go run -C examples ./auth
//
// It serves two origins, as a site whose pages and API are apart
// (app.example.com and api.example.com): the API, with the streams, on
// -addr (localhost:8080), and a page on -page-addr (localhost:8081). Each
// of the demo's users, alice and bob, has a stream of notifications, a key
// of an [sse.Broker] in [sse.FanOut] mode, that only they may read. An
// EventSource cannot send an Authorization header, so the stream's request
// carries its credentials in one of two ways, which the handler's key
// function checks:
//
//   - A session cookie. The page signs in with POST /login, which sets an
//     HttpOnly cookie, and opens new EventSource(url, {withCredentials:
//     true}), which sends it to the API's origin. The API answers a page of
//     an allowed origin (-origin) with that exact origin in
//     Access-Control-Allow-Origin, never "*", with
//     Access-Control-Allow-Credentials: true and Vary: Origin, and refuses
//     any other origin with 403 before it does anything. A session's user
//     reads their own stream; another user's gets 403, no session 401.
//   - A short-lived signed token in the URL, for a page where cookies do
//     not fit (another site, where browsers block third-party cookies; a
//     client that authenticates with a header). POST /users/{user}/token
//     answers a signed-in user with a token for their stream, valid for
//     -token-ttl (a minute): an HMAC-SHA256, under the server's secret, of
//     the key and the expiry, checked in constant time. It opens that key
//     only, until it expires: a tampered token, an expired one, or one of
//     another key gets 401. The stream it opened ends when it expires;
//     the page (static/auth.js) then mints another and resumes after its
//     last event.
//
// The token is in the URL's query, which the library's log and this
// demo's never show: they log the request's path. A proxy in front may
// log it: nginx logs $request, the query included, by default. See the
// README's "Authorising streams".
//
// The secret is read from the environment variable AUTH_SECRET (base64, 32
// bytes or more), which every replica must share, or made at random at
// start: tokens then die with the process.
//
// Flags:
//
//	-addr       address of the API (default localhost:8080)
//	-page-addr  address of the page (default localhost:8081; empty: none)
//	-origin     origins allowed to call the API with credentials, comma-
//	            separated (default: the page's, as printed)
//	-token-ttl  lifetime of a stream token (default 1m)
//	-every      time between two notifications of a user (default 1s)
package main

import (
	"context"
	"crypto/rand"
	"embed"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rocketqueue/sse"
)

// shutdownTimeout bounds the wait for connections to end.
const shutdownTimeout = 5 * time.Second

// users are the demo's users: each has a stream, its key their name.
var users = []string{"alice", "bob"}

// config is the demo's settings, from its flags and environment.
type config struct {
	addr     string        // the API's address
	pageAddr string        // the page's address; empty: no page
	origins  []string      // the origins allowed; empty: the page's
	ttl      time.Duration // a stream token's lifetime
	every    time.Duration // time between two notifications of a user
	secret   []byte        // the tokens' secret
}

func main() {
	var cfg config
	var origins string
	flag.StringVar(&cfg.addr, "addr", "localhost:8080", "address of the API")
	flag.StringVar(&cfg.pageAddr, "page-addr", "localhost:8081", "address of the page (empty: none)")
	flag.StringVar(&origins, "origin", "", "origins allowed to call the API with credentials, comma-separated (default: the page's)")
	flag.DurationVar(&cfg.ttl, "token-ttl", time.Minute, "lifetime of a stream token")
	flag.DurationVar(&cfg.every, "every", time.Second, "time between two notifications of a user")
	flag.Parse()
	if origins != "" {
		cfg.origins = strings.Split(origins, ",")
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := cfg.check()
	if err == nil {
		cfg.secret, err = secret(os.Getenv("AUTH_SECRET"))
	}
	if err != nil || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "auth:", err)
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, logger, cfg); err != nil {
		logger.Error("exiting", "error", err)
		os.Exit(1)
	}
}

// check checks the settings.
func (cfg *config) check() error {
	if cfg.ttl < time.Second || cfg.every <= 0 {
		return errors.New("-token-ttl must be 1s or more, and -every more than 0")
	}
	if len(cfg.origins) == 0 && cfg.pageAddr == "" {
		return errors.New("without a page (-page-addr), -origin must name the pages' origins")
	}
	for _, o := range cfg.origins {
		if err := checkOrigin(o); err != nil {
			return err
		}
	}
	return nil
}

// checkOrigin checks that o is an origin as a browser sends it in its
// Origin header: a scheme, a host, and a port unless it is the scheme's
// default, nothing else. The API compares origins as strings: "*", a
// trailing slash or a path would never match, or match too much.
func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.String() != o || strings.ToLower(o) != o ||
		u.Scheme == "http" && u.Port() == "80" || u.Scheme == "https" && u.Port() == "443" {
		return fmt.Errorf("-origin: %q is not an origin, such as https://app.example.com or http://localhost:8081", o)
	}
	return nil
}

// secret returns the tokens' secret: env decoded from base64, or, if env
// is empty, random bytes.
func secret(env string) ([]byte, error) {
	if env == "" {
		b := make([]byte, minSecret)
		rand.Read(b)
		return b, nil
	}
	b, err := base64.StdEncoding.DecodeString(env)
	if err != nil || len(b) < minSecret {
		return nil, fmt.Errorf("AUTH_SECRET must be %d bytes or more, in base64 (openssl rand -base64 32)", minSecret)
	}
	return b, nil
}

// run serves the API and the page until ctx ends, then shuts down
// gracefully.
func run(ctx context.Context, logger *slog.Logger, cfg config) error {
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	apiURL := listenURL(ln, cfg.addr)
	var pageLn net.Listener
	pageURL := ""
	if cfg.pageAddr != "" {
		if pageLn, err = net.Listen("tcp", cfg.pageAddr); err != nil {
			ln.Close()
			return err
		}
		pageURL = listenURL(pageLn, cfg.pageAddr)
		if len(cfg.origins) == 0 {
			cfg.origins = []string{pageURL}
		}
	}
	// Listening first means that the servers are ready once this is
	// printed. The API's URL comes first.
	msg := fmt.Sprintf("API on %s/ (origins allowed: %s)\n", apiURL, strings.Join(cfg.origins, ", "))
	if pageURL != "" {
		msg += fmt.Sprintf("Open the page at %s/\n", pageURL)
	}
	fmt.Print(msg)

	prodCtx, stopProducing := context.WithCancel(context.Background())
	defer stopProducing()
	a, produced := newAPI(prodCtx, logger, cfg)
	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	shutdown := sse.Graceful(srv, a.broker)
	served := make(chan error, 2)
	go func() { served <- srv.Serve(ln) }()
	var page *http.Server
	if pageLn != nil {
		page = &http.Server{
			Handler:           pageHandler(apiURL),
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		}
		go func() { served <- page.Serve(pageLn) }()
	}

	var serveErr error
	select {
	case serveErr = <-served: // a listener failed
	case <-ctx.Done():
		logger.Info("shutting down")
	}
	stopProducing()
	<-produced
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	err = shutdown(sctx)
	if page != nil {
		err = errors.Join(err, page.Shutdown(sctx))
	}
	return errors.Join(serveErr, err)
}

// newAPI returns the API, with each user's stream opened, and a goroutine
// that publishes notifications into them until ctx ends, then closes the
// returned channel.
func newAPI(ctx context.Context, logger *slog.Logger, cfg config) (*api, <-chan struct{}) {
	// FanOut: a user may follow their stream from several tabs, and a page
	// that resumes (after its token expired) gets what it missed from the
	// history, which holds each user's last 100 notifications.
	broker := sse.New[string](
		sse.WithMode(sse.FanOut),
		sse.WithHistory(100, sse.DefaultReplayBytes, sse.DefaultHistoryAge),
		sse.WithLogger(logger),
	)
	a := &api{
		broker:   broker,
		tokens:   tokens{secret: cfg.secret},
		ttl:      cfg.ttl,
		origins:  make(map[string]bool),
		users:    make(map[string]bool),
		logger:   logger,
		now:      time.Now,
		sessions: make(map[string]session),
	}
	for _, o := range cfg.origins {
		a.origins[o] = true
	}
	for _, u := range users {
		a.users[u] = true
		// The handler serves known keys only: open each user's now.
		if err := broker.Open(ctx, u); err != nil {
			logger.Error("opening a stream", "user", u, "error", err)
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(cfg.every)
		defer tick.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				for _, u := range users {
					msg := fmt.Sprintf("notification %d for %s, at %s", n, u, now.Format(time.TimeOnly))
					if err := broker.Enqueue(ctx, u, msg); err != nil && ctx.Err() == nil {
						logger.Warn("publishing", "user", u, "error", err)
					}
				}
			}
		}
	}()
	return a, done
}

// listenURL returns the URL of ln, listening on addr, with addr's host
// name, as a browser's Origin header would name it.
func listenURL(ln net.Listener, addr string) string {
	host, _, _ := net.SplitHostPort(addr)
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if host == "" || net.ParseIP(host).IsUnspecified() {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port)
}

//go:embed static
var static embed.FS

// pageHandler serves the page: index.html, which talks to the API at
// apiURL, and auth.js, the part of it a page of your own would copy.
func pageHandler(apiURL string) http.Handler {
	files, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // cannot happen: "static" is a valid path
	}
	index := template.Must(template.ParseFS(files, "index.html"))
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		index.Execute(w, struct{ API string }{apiURL})
	})
	mux.Handle("GET /auth.js", http.FileServerFS(files))
	return mux
}
