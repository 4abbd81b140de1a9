package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/rocketqueue/sse"
)

// sessionCookie is the name of the session cookie. Cookies are not kept
// apart by port: a page on localhost:8081 and an API on localhost:8080 see
// each other's cookies, so the name should be the API's own.
const sessionCookie = "sse_auth_session"

// sessionLifetime is how long a session lasts after its sign-in.
const sessionLifetime = 12 * time.Hour

// maxStreams bounds the streams the API serves at once (see
// sse.WithMaxStreams).
const maxStreams = 1000

// An api is the server that holds the streams: it signs users in, mints
// stream tokens, and serves each user's stream to that user only.
type api struct {
	broker  *sse.Broker[string] // a FanOut broker; each demo user's stream is a key
	tokens  tokens
	ttl     time.Duration    // a stream token's lifetime
	origins map[string]bool  // the origins whose pages may call the API with credentials; immutable
	users   map[string]bool  // the demo's users; immutable
	logger  *slog.Logger     // the API's and the library's log
	now     func() time.Time // the clock of tokens and sessions

	mu       sync.Mutex
	sessions map[string]session // guarded by mu: by session ID, the cookie's value
}

// A session is a signed-in user.
type session struct {
	user    string
	expires time.Time
}

// handler returns the API's routes:
//
//	GET  /                    what this is: the routes
//	POST /login               sign in (form field user), which sets the session cookie
//	POST /logout              sign out
//	POST /users/{user}/token  a stream token for the user's stream, for the user signed in
//	GET  /users/{user}/events the user's stream, for the session's user or a token's holder
//
// Every request goes through the origin check, and every request is
// logged without its query, where a stream's token is.
func (a *api) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, routes)
	})
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("POST /logout", a.logout)
	mux.HandleFunc("POST /users/{user}/token", a.mint)
	mux.Handle("GET /users/{user}/events", a.events())
	return a.logRequests(a.checkOrigin(mux))
}

// routes is the answer to GET /.
const routes = `The API of github.com/rocketqueue/sse's auth demo. Open the page it prints.

POST /login               sign in (form field user: alice or bob), which sets the session cookie
POST /logout              sign out
POST /users/{user}/token  a stream token for the user's stream, for the user signed in
GET  /users/{user}/events the user's stream, for the session's user or a token's holder (?token=)
`

//readme:cors

// checkOrigin lets browsers' requests from the allowed origins through,
// with the CORS headers that let their pages read the answer with
// credentials: the page's exact origin, never "*" (a browser refuses "*"
// with credentials), and Access-Control-Allow-Credentials. A request from
// any other origin gets 403 before it does anything: CORS only stops a page
// from reading an answer, while a stream request from a foreign page would
// still carry the user's cookie. A request with no Origin header (curl,
// a server, a same-origin GET) goes through: it carries a browser's cookie
// only if it comes from the API's own origin, and the key function still
// checks its credentials.
//
// Every request the pages make is a simple request (GET, or POST with a
// form or no body), so that no preflight (OPTIONS) is needed.
func (a *api) checkOrigin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The answer depends on Origin: a cache must not serve one
		// origin's answer to another. No answer of the API is for a cache
		// at all (a stream's handler sets its own Cache-Control).
		w.Header().Add("Vary", "Origin")
		w.Header().Set("Cache-Control", "no-store")
		if origin, sent := r.Header["Origin"]; sent {
			if len(origin) != 1 || !a.origins[origin[0]] {
				http.Error(w, "origin not allowed", http.StatusForbidden)
				return
			}
			w.Header().Set("Access-Control-Allow-Origin", origin[0])
			w.Header().Set("Access-Control-Allow-Credentials", "true")
		}
		next.ServeHTTP(w, r)
	})
}

//readme:end

// login signs the form's user in, with the session cookie. In this demo
// anyone may be any of its users: a real server checks a password here, or
// signs in through its identity provider.
func (a *api) login(w http.ResponseWriter, r *http.Request) {
	user := r.PostFormValue("user")
	if !a.users[user] {
		http.Error(w, "unknown user", http.StatusUnauthorized)
		return
	}
	id := rand.Text() // 26 characters, 130 random bits
	now := a.now()
	a.mu.Lock()
	for id, s := range a.sessions {
		if !now.Before(s.expires) {
			delete(a.sessions, id)
		}
	}
	a.sessions[id] = session{user: user, expires: now.Add(sessionLifetime)}
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{
		Name:     sessionCookie,
		Value:    id,
		Path:     "/",
		MaxAge:   int(sessionLifetime / time.Second),
		HttpOnly: true, // the page's scripts cannot read it
		// Lax: sent with requests from pages of the same site, such as
		// app.example.com to api.example.com, or localhost:8081 to
		// localhost:8080. A page of another site needs SameSite=None,
		// which browsers increasingly block: use a stream token there.
		SameSite: http.SameSiteLaxMode,
		// Secure: the browser sends it over HTTPS only. Chromium and
		// Firefox make an exception for http://localhost and 127.0.0.1,
		// where this demo runs.
		Secure: true,
	})
	w.WriteHeader(http.StatusNoContent)
}

// logout ends the request's session, if any, and removes its cookie.
// Token streams it opened end with their tokens, cookie streams go on
// (see events).
func (a *api) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		a.mu.Lock()
		delete(a.sessions, c.Value)
		a.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: true})
	w.WriteHeader(http.StatusNoContent)
}

// mint answers a signed-in user with a token for their own stream, as
// JSON: {"token": "…", "expires": <Unix seconds>}. Here the session cookie
// authenticates the call; a server whose pages call it with an
// Authorization header (which fetch can send and EventSource cannot) or a
// server that renders its pages would mint the same way.
func (a *api) mint(w http.ResponseWriter, r *http.Request) {
	key := r.PathValue("user")
	if err := a.authorize(r, key); err != nil {
		http.Error(w, http.StatusText(err.status), err.status)
		return
	}
	token, expires := a.tokens.mint(key, a.now().Add(a.ttl))
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(struct {
		Token   string `json:"token"`
		Expires int64  `json:"expires"`
	}{token, expires})
}

// events serves the users' streams. A stream opened with a token ends when
// the token expires, without "close": the browser reconnects with the same
// URL, is refused, and gives up, and the page mints a new token with its
// session and resumes after its last event (static/auth.js). So a user
// signed out keeps a token's stream for one token lifetime at most. A
// stream opened with the session cookie is not cut when the session ends;
// a server that needs that would bound it the same way.
func (a *api) events() http.Handler {
	h := sse.Handler(a.broker, a.key,
		sse.WithKnownKeysOnly(),
		sse.WithMaxStreams(maxStreams),
		sse.WithLogger(a.logger), // it logs the path, never the query
	)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token, ok := r.URL.Query()["token"]; ok {
			if exp, ok := tokenExpiry(token[0]); ok {
				ctx, cancel := context.WithDeadline(r.Context(), exp)
				defer cancel()
				r = r.WithContext(ctx)
			}
		}
		h.ServeHTTP(w, r)
	})
}

//readme:key

// key is the stream handler's key function: it authorizes the request for
// the key its path names. A request with a token parameter is authorized
// by the token alone: it must be a token for this key, not expired. Any
// other is authorized by its session cookie. The errors it returns say
// why in the server's log (never the token or the cookie), and carry the
// status the client gets: 401 without valid credentials, 403 for
// credentials that do not give this key.
func (a *api) key(r *http.Request) (string, error) {
	key := r.PathValue("user")
	if token, ok := r.URL.Query()["token"]; ok {
		if _, err := a.tokens.check(token[0], key, a.now()); err != nil {
			return "", &refusal{http.StatusUnauthorized, err}
		}
		return key, nil
	}
	if err := a.authorize(r, key); err != nil {
		return "", err
	}
	return key, nil
}

//readme:end

// authorize checks that the request's session may read key.
func (a *api) authorize(r *http.Request, key string) *refusal {
	user, err := a.user(r)
	if err != nil {
		return &refusal{http.StatusUnauthorized, err}
	}
	if !canRead(user, key) {
		return &refusal{http.StatusForbidden, fmt.Errorf("user %q may not read key %q", user, key)}
	}
	return nil
}

// canRead reports whether user may read key's stream. Here each user reads
// their own; a real server asks its database (the job's owner, the
// team's members).
func canRead(user, key string) bool { return user == key }

var errNoSession = errors.New("no session: no cookie, or one of no current session")

// user returns the user of the request's session.
func (a *api) user(r *http.Request) (string, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil {
		return "", errNoSession
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	s, ok := a.sessions[c.Value]
	if !ok || !a.now().Before(s.expires) {
		return "", errNoSession
	}
	return s.user, nil
}

// A refusal is an error of the key function: the handler answers with its
// status and the status text, and logs the error it wraps.
type refusal struct {
	status int
	err    error
}

func (e *refusal) Error() string   { return e.err.Error() }
func (e *refusal) Unwrap() error   { return e.err }
func (e *refusal) StatusCode() int { return e.status }

// logRequests logs each request when it ends: its method, path, status and
// duration. Not its query, nor its whole URL: a stream's token is in its
// query, and whoever reads a log must not be able to open the stream.
func (a *api) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		a.logger.LogAttrs(r.Context(), slog.LevelInfo, "request",
			slog.String("method", r.Method),
			slog.String("path", r.URL.Path),
			slog.Int("status", sw.status),
			slog.Duration("duration", time.Since(start)),
			slog.String("origin", r.Header.Get("Origin")),
			slog.String("remote", r.RemoteAddr),
		)
	})
}

// A statusWriter keeps the status of a response. It unwraps, so that the
// stream handler flushes through it (see http.ResponseController).
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
