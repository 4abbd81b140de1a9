package sse

import (
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
)

// DefaultKeysPerRequest is how many keys a [MultiHandler] request may name
// unless [WithMaxKeysPerRequest] says otherwise; MaxKeysPerRequest is the
// most that option allows. Every event of a multi-key stream carries every
// key's position in its ID, at most 18 bytes a key while the keys' event
// numbers stay below a million (21 below a billion): 1.8 KB at 100 keys,
// 4.6 KB at 256, sent back in the Last-Event-ID header when the client
// reconnects, which proxies commonly cap at 8 KiB.
const (
	DefaultKeysPerRequest = 100
	MaxKeysPerRequest     = 256
)

// WithMaxKeysPerRequest bounds how many keys a [MultiHandler] request may
// name, from 1 to [MaxKeysPerRequest]; a request with more gets 400. The
// default is [DefaultKeysPerRequest]. It panics for n out of range. The
// bound keeps the IDs, which carry every key's position, and the
// Last-Event-ID header that sends one back, small (see
// docs/protocol.md).
func WithMaxKeysPerRequest(n int) HandlerOption {
	if n < 1 || n > MaxKeysPerRequest {
		panic(fmt.Sprintf("sse: WithMaxKeysPerRequest: %d is not from 1 to %d", n, MaxKeysPerRequest))
	}
	return handlerOptionFunc(func(c *handlerConfig) { c.maxKeys = n })
}

// MultiHandler returns an http.Handler that streams several keys of a
// [FanOut] source on one response, so that a page follows them with one
// EventSource (a browser opens at most six HTTP/1.1 connections per site).
// keys picks the request's keys, as a list; each key is shown on the wire
// by its position in that list, from 0. The protocol is written down in
// docs/protocol.md, "Several keys on one connection".
//
// A request whose list holds one key is served exactly as [Handler] serves
// it. With two keys or more:
//   - keys' error refuses the whole request, with the status [Handler]
//     gives a key function's error; so do an empty list, a key listed
//     twice, or more keys than [WithMaxKeysPerRequest] allows (400), and,
//     with [WithKnownKeysOnly], any key the server did not create (404).
//   - Every event's id is "<i>:<vector>": i is the position of the event's
//     key, the vector holds every key's position, so that a browser that
//     reconnects with its Last-Event-ID resumes every key, each exactly
//     once or with a gap. A Last-Event-ID that is not such an ID of this
//     request's keys (nor "0") gets 400.
//   - A key's events come in order; the keys' are interleaved. Events the
//     client missed that can no longer be sent come as an "sse.gap" event
//     ([EventKeyGap]), {"key":i,"from":F,"to":T}; a closed key whose
//     events were all sent gets an "sse.close" ([EventKeyClose]),
//     {"key":i}, and is detached from the connection at once. After the
//     last key's comes "close", and the response ends; a client that
//     resumes with every key closed gets 204.
//   - The connection counts as one stream under [WithMaxStreams]. At the
//     bound, a request with a Last-Event-ID header that resumes the
//     current life of its first key not closed may have one of the spare
//     places a reconnecting one-key FanOut client may have.
//
// Heartbeats, the retry field, write deadlines, metrics and logging are
// Handler's. The request's goroutine reads every key, with
// [Subscription.Poll], and writes them: the handler starts no goroutine,
// whatever the number of keys. A key with nothing to send costs the wake
// its Poll registered; keys with events take turns, a batch each, so that
// a busy key does not hold the others back.
//
// MultiHandler panics if src or keys is nil, if src is in [Queue] mode
// (several keys on one connection need FanOut), or for an option out of
// range.
func MultiHandler[K comparable](src Source[K], keys func(*http.Request) ([]K, error), opts ...HandlerOption) http.Handler {
	if src == nil || keys == nil {
		panic("sse: MultiHandler: nil source or key function")
	}
	if v := reflect.ValueOf(src); v.Kind() == reflect.Pointer && v.IsNil() {
		panic("sse: MultiHandler: nil source")
	}
	if src.Mode() != FanOut {
		panic("sse: MultiHandler: the source is in Queue mode; several keys on one connection need FanOut")
	}
	for i, o := range opts {
		if o == nil {
			panic(fmt.Sprintf("sse: MultiHandler: option %d is nil", i))
		}
	}
	h := Handler(src, noKey[K], opts...).(*handler[K])
	return &multiHandler[K]{h: h, keys: keys, max: cmp0(h.cfg.maxKeys, DefaultKeysPerRequest)}
}

// noKey is the key function of a MultiHandler's handler, which is never
// called: MultiHandler calls its own and hands the handler the key.
func noKey[K comparable](*http.Request) (k K, err error) {
	return k, errors.New("sse: MultiHandler calls its own key function")
}

// cmp0 returns v, or def if v is 0.
func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

type multiHandler[K comparable] struct {
	h    *handler[K] // immutable: the configuration, the WithMaxStreams bound; serves one-key requests
	keys func(*http.Request) ([]K, error)
	max  int // immutable: the most keys a request may name
}

var errNoKeys = requestError{"the request names no key"}

func (m *multiHandler[K]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := m.h
	keys, ok := admit(h, w, r, m.keys)
	if !ok {
		return
	}
	var err error
	switch n := len(keys); {
	case n == 1:
		h.serve(w, r, keys[0])
		return
	case n == 0:
		err = errNoKeys
	case n > m.max:
		err = requestError{fmt.Sprintf("the request names %d keys, more than the %d a request may name", n, m.max)}
	default:
		err = m.checkKeys(keys)
	}
	if err != nil {
		h.refuse(w, r, http.StatusBadRequest, RefusedBadRequest, err)
		return
	}
	if !canFlush(w) {
		h.refuse(w, r, http.StatusInternalServerError, RefusedInternal, errCannotFlush)
		return
	}
	pos := make([]position, len(keys))
	v, header, resume := rawLastEventID(r)
	if resume = resume && v != ""; resume { // an empty ID is none, as for one key
		if pos, err = parseMultiID(v, len(keys)); err != nil {
			h.refuse(w, r, http.StatusBadRequest, RefusedBadRequest, err)
			return
		}
		if allClosed(pos) {
			h.refuseSubscribe(w, r, ErrFinished, false) // 204
			return
		}
	}
	// The stream counts as one, under its first key not closed: a client
	// that reconnects with the same list is counted under the same key.
	first := slices.IndexFunc(pos, func(p position) bool { return !p.closed })
	sl, ok := h.streams.acquire(keys[first], false)
	// At the bound, a client that reconnects may have a spare place, as a
	// one-key FanOut client may, once its ID shows that it reads the
	// current life of that key (see streams).
	spare := !ok && header && resume && h.streams.serves(keys[first])
	if !ok && !spare {
		h.tryLater(w, r, errTooManyStreams)
		return
	}
	defer func() { h.streams.release(keys[first], sl) }()
	c := newConn(w, h.cfg.writeTimeout)
	defer c.finish()
	s := &multiStream[K]{h: h, r: r, c: c, v: newVector(pos), subs: make([]Subscription, len(keys)), epochs: make([]string, len(keys))}
	if err := m.subscribe(s, keys, pos, resume); err != nil {
		s.closeSubs()
		h.refuseSubscribe(w, r, err, false) // a bad epoch is the source's mistake: 500
		return
	}
	if spare {
		if s.subs[first] == nil || pos[first].epoch != s.epochs[first] {
			ok = false
		} else {
			sl, ok = h.streams.acquireSpare(keys[first])
		}
		if !ok {
			s.closeSubs()
			h.tryLater(w, r, errTooManyStreams)
			return
		}
	}
	defer h.cfg.metrics.served(resume)()
	s.stream(w)
}

// checkKeys refuses keys that no map can hold (see keysNeedCheck), and a
// key listed twice.
func (m *multiHandler[K]) checkKeys(keys []K) error {
	check := func(K) error { return nil }
	if m.h.checkKeys {
		check = checkKey[K]
	}
	i, err := duplicate(keys, check)
	if err == nil && i >= 0 {
		err = requestError{fmt.Sprintf("key %d of the request is listed twice", i)}
	}
	return err
}

// duplicate returns the position of the first key of keys that an earlier
// one equals, or -1; but first, the error of check for any key, which
// refuses keys before the map sees them (a NaN would never be found twice,
// and a slice in an interface would panic).
func duplicate[K comparable](keys []K, check func(K) error) (int, error) {
	seen := make(map[K]struct{}, len(keys))
	for i, k := range keys {
		if err := check(k); err != nil {
			return -1, err
		}
		if _, dup := seen[k]; dup {
			return i, nil
		}
		seen[k] = struct{}{}
	}
	return -1, nil
}

// allClosed reports whether a request's ID marks every key closed.
func allClosed(pos []position) bool {
	for _, p := range pos {
		if !p.closed {
			return false
		}
	}
	return true
}

// subscribe attaches the connection to every key that pos does not mark
// closed; a key closed with every event sent (ErrFinished) gets its
// sse.close. Any other refusal refuses the request: the caller closes what
// was attached.
func (m *multiHandler[K]) subscribe(s *multiStream[K], keys []K, pos []position, resume bool) error {
	h := m.h
	for i, key := range keys {
		if pos[i].closed {
			continue
		}
		req := SubscribeRequest{Known: h.cfg.known, Abort: s.c.abort}
		if resume {
			// An empty entry is "0": the client has nothing of the key,
			// and gets a gap for what the history no longer holds.
			req.Resume, req.Epoch, req.LastID = true, pos[i].epoch, pos[i].id
		}
		sub, err := h.src.Subscribe(s.r.Context(), key, req)
		switch {
		case errors.Is(err, ErrFinished):
			s.finished = append(s.finished, i)
			continue
		case err != nil:
			return err
		}
		s.subs[i], s.epochs[i] = sub, sub.Epoch()
		if err := checkEpoch(s.epochs[i]); err != nil {
			return err
		}
	}
	return nil
}
