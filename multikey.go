package sse

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
)

// DefaultKeysPerRequest is how many keys a [MultiHandler] request may
// name unless [WithMaxKeysPerRequest] says otherwise; MaxKeysPerRequest is
// the most that option allows, and MaxVectorKeys the most it allows when
// the source is not a [CursorStore]. Without a cursor store every event of
// a multi-key stream carries every key's position in its ID, at most 18
// bytes a key while the keys' event numbers stay below a million (21 below
// a billion): 1.8 KB at 100 keys, 4.6 KB at 256, sent back in the
// Last-Event-ID header when the client reconnects, which proxies commonly
// cap at 8 KiB. With one, an ID names a stored cursor and carries at most
// [CursorDelta] keys' positions: at most about 450 bytes however many keys.
const (
	DefaultKeysPerRequest = 100
	MaxVectorKeys         = 256
	MaxKeysPerRequest     = 4096
)

// WithMaxKeysPerRequest bounds how many keys a [MultiHandler] request may
// name, from 1 to [MaxKeysPerRequest]; a request with more gets 400. The
// default is [DefaultKeysPerRequest]. It panics for n out of range, and
// [MultiHandler] panics for n above [MaxVectorKeys] when its source is not
// a [CursorStore]. The bound keeps what a connection holds, and, without a
// cursor store, the IDs, which then carry every key's position, and the
// Last-Event-ID header that sends one back, small (see docs/protocol.md).
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
// it, unless its Last-Event-ID is one of a multi-key stream (a page that
// followed several keys and follows one now): then it is served as one. With
// two keys or more:
//   - keys' error refuses the whole request, with the status [Handler]
//     gives a key function's error; so do an empty list, a key listed
//     twice, or more keys than [WithMaxKeysPerRequest] allows (400), and,
//     with [WithKnownKeysOnly], any key the server did not create (404).
//   - Every event's id is "<i>:<vector>": i is the position of the event's
//     key, the vector holds every key's position, so that a browser that
//     reconnects with its Last-Event-ID resumes every key, each exactly
//     once or with a gap. When src is a [CursorStore] ([*Broker] and
//     ssejs's broker are), the vector is "~<cursor>:<delta>": the name of
//     a [Cursor] the stream stored, and the positions of the keys that
//     moved since (at most [CursorDelta]). A Last-Event-ID that is not such
//     an ID (nor "0", nor a one-key ID) gets 400.
//   - A request may resume from an ID of a cursor whose keys are another
//     list (the page follows one more key, or one less): each key of the
//     request that the cursor holds resumes from its position there, and
//     the others start as new. From a one-key ID, the key of that ID's
//     epoch resumes, and the others start as new. A key whose position
//     the server does not know (the cursor was forgotten) restarts with an
//     "sse.gap" from its first event to its newest, then the events after
//     them.
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
	m := &multiHandler[K]{h: h, keys: keys, max: cmp0(h.cfg.maxKeys, DefaultKeysPerRequest)}
	m.store, _ = src.(CursorStore[K])
	if m.store == nil && m.max > MaxVectorKeys {
		panic(fmt.Sprintf("sse: MultiHandler: WithMaxKeysPerRequest(%d): more than %d keys need a source that stores cursors (a CursorStore)", m.max, MaxVectorKeys))
	}
	return m
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
	h     *handler[K] // immutable: the configuration, the WithMaxStreams bound; serves one-key requests
	keys  func(*http.Request) ([]K, error)
	max   int            // immutable: the most keys a request may name
	store CursorStore[K] // immutable: the source, if it stores cursors; else nil
}

var errNoKeys = requestError{"the request names no key"}

func (m *multiHandler[K]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := m.h
	keys, ok := admit(h, w, r, m.keys)
	if !ok {
		return
	}
	var err error
	v, header, resume := rawLastEventID(r)
	switch n := len(keys); {
	case n == 1 && !strings.Contains(v, ":"):
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
	var name string // the cursor the request's IDs may go on naming
	var delta []int
	if resume = resume && v != ""; resume { // an empty ID is none, as for one key
		if isCursorID(v) {
			pos, name, delta, err = m.resolve(r, keys, v)
		} else if one, ok := oneKeyID(v); ok {
			for i := range pos { // the key of that life resumes; see subscribe
				pos[i] = one
			}
		} else if pos, err = parseMultiID(v, len(keys)); err == nil && m.store == nil && slices.ContainsFunc(pos, func(p position) bool { return p.reset }) {
			err = requestError{"the Last-Event-ID marks a key's position unknown (\"!\"), and this server stores no cursors"}
		}
		var re requestError
		switch {
		case errors.As(err, &re):
			h.refuse(w, r, http.StatusBadRequest, RefusedBadRequest, err)
			return
		case err != nil: // the store failed: the client comes back
			h.tryLater(w, r, err)
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
	s := &multiStream[K]{h: h, r: r, c: c, subs: make([]Subscription, len(keys)), epochs: make([]string, len(keys))}
	if err := m.subscribe(s, keys, pos, resume); err != nil {
		s.closeSubs()
		h.refuseSubscribe(w, r, err, false) // a bad epoch is the source's mistake: 500
		return
	}
	s.v = newVector(pos) // after subscribe, which settles the positions a one-key ID left open
	if m.store != nil {
		ks, ctx := slices.Clone(keys), r.Context()
		s.v.withCursor(func(p string) (string, error) {
			return m.store.SaveCursor(ctx, Cursor[K]{Keys: ks, Positions: p})
		}, name, delta)
		if name == "" {
			s.v.store() // a stream starts with a cursor: its first ID names one
		}
		if s.v.failed() != nil {
			s.closeSubs()
			h.tryLater(w, r, s.v.failed())
			return
		}
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
// sse.close. A key whose position is not known is attached after its
// newest event, and gets a gap from its first. Any other refusal refuses
// the request: the caller closes what was attached.
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
		var reset Gap
		if pos[i].reset {
			// Where the client is in the key is not known: it restarts
			// after the newest event, which it may have had, with a gap
			// from the first.
			epoch, newest, err := m.store.Newest(s.r.Context(), key)
			if err != nil {
				return err
			}
			if newest > 0 {
				req.Epoch, req.LastID, reset = epoch, newest, Gap{From: 1, To: newest}
			}
		}
		sub, err := h.src.Subscribe(s.r.Context(), key, req)
		switch {
		case errors.Is(err, ErrFinished):
			if pos[i].guess {
				pos[i] = position{} // its sse.close sets its entry
			}
			if reset != (Gap{}) { // closed: its gap, then its sse.close
				s.resets = append(s.resets, keyGap{i, reset})
				s.epochs[i] = req.Epoch
			}
			s.finished = append(s.finished, i)
			continue
		case err != nil:
			return err
		}
		s.subs[i], s.epochs[i] = sub, sub.Epoch()
		if err := checkEpoch(s.epochs[i]); err != nil {
			return err
		}
		if pos[i].guess && pos[i].epoch != s.epochs[i] {
			pos[i] = position{} // another key's ID, read as 0: nothing of this key yet
		}
		pos[i].guess = false
		// A life that began since Newest is read from its start: the
		// client had none of it.
		if reset != (Gap{}) && s.epochs[i] == req.Epoch {
			s.resets = append(s.resets, keyGap{i, reset})
		} else if pos[i].reset {
			// Read from its start (no event yet, or a new life): the
			// client is sent all of it, so its entry is known again, and
			// a cursor stored from now on must not say "!" of it, which
			// would make a later resume gap events the history holds.
			pos[i] = position{}
		}
	}
	return nil
}

// oneKeyID reads v as a one-key stream's ID, "<epoch>-<seq>": a page that
// followed one key and now follows several. The ID does not say which key
// it is of, but its epoch does, since every key's life draws its own: each
// key is subscribed with it, so that the key of that life resumes after it
// and the others, for which it is of another life, read it as 0, as new
// keys do (see subscribe, which then clears their positions).
func oneKeyID(v string) (position, bool) {
	if strings.Contains(v, ":") {
		return position{}, false
	}
	epoch, id, ok := parseID(v)
	return position{raw: v, epoch: epoch, id: id, guess: true}, ok && epoch != ""
}

// A keyGap is a gap of key i of a multi-key stream.
type keyGap struct {
	key int
	gap Gap
}

// resolve reads v, an ID of the cursor form, for a request of keys: it
// returns each key's position, and the cursor and the moved keys the
// stream's IDs may go on naming (none when the request's keys are not the
// cursor's, or the ID moves more than CursorDelta keys: the stream stores
// a new one). A cursor the store does not hold leaves every key's position
// unknown. An error is a requestError, or the store's.
func (m *multiHandler[K]) resolve(r *http.Request, keys []K, v string) (pos []position, name string, delta []int, err error) {
	id, err := parseCursorID(v)
	if err != nil {
		return nil, "", nil, err
	}
	if m.store == nil {
		return nil, "", nil, requestError{"the Last-Event-ID names a cursor, and this server stores none"}
	}
	pos = make([]position, len(keys))
	c, err := m.store.LoadCursor(r.Context(), id.name)
	var old []position
	if err == nil {
		old, err = parseMultiID("0:"+c.Positions, len(c.Keys))
		if err != nil {
			err = fmt.Errorf("sse: cursor %q holds %d keys and the positions %.60q: %w", id.name, len(c.Keys), c.Positions, err)
			m.h.log(r.Context(), slog.LevelError, "sse: a stored cursor cannot be read: its keys restart with a gap", r, slog.Any("error", err))
			err = ErrUnknownCursor
		}
	}
	switch {
	case errors.Is(err, ErrUnknownCursor):
		m.h.log(r.Context(), slog.LevelWarn, "sse: unknown cursor: every key restarts with a gap", r, slog.String("cursor", id.name))
		for i := range pos {
			pos[i] = position{reset: true, raw: resetEntry}
		}
		return pos, "", nil, nil
	case err != nil:
		return nil, "", nil, err
	}
	if id.index >= len(c.Keys) {
		return nil, "", nil, requestError{fmt.Sprintf("the Last-Event-ID's key index %d is not one of its cursor's %d keys", id.index, len(c.Keys))}
	}
	for n, j := range id.delta {
		if j >= len(c.Keys) {
			return nil, "", nil, requestError{fmt.Sprintf("the Last-Event-ID moves key %d, not one of its cursor's %d keys", j, len(c.Keys))}
		}
		old[j] = id.pos[n]
	}
	if slices.Equal(c.Keys, keys) && len(id.delta) <= CursorDelta {
		return old, id.name, id.delta, nil
	}
	// Another list: each key the cursor holds keeps its position; a new
	// one starts as an empty entry does.
	at := make(map[K]int, len(c.Keys))
	for j, k := range c.Keys {
		at[k] = j
	}
	for i, k := range keys {
		if j, ok := at[k]; ok {
			pos[i] = old[j]
		}
	}
	return pos, "", nil, nil
}
