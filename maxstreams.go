package sse

import "sync"

// streams counts, under [WithMaxStreams], the streams a handler serves. A
// request that takes a key over from a stream of the same handler inherits
// that stream's slot, even at the bound: the client replaces its own
// connection, which ends, so the count does not grow; otherwise a client
// whose stale connection heartbeats keep alive could never come back.
//
// In FanOut mode nothing is taken over, so the handler cannot tell a
// client's own stale connection from another client. A request that
// resumes the current life of a key this handler streams, with a
// Last-Event-ID header (a browser reconnecting), may then take one of a
// few spare slots beyond the bound (see acquireSpare): its client most
// likely replaces a connection that will fail a heartbeat's write and give
// its slot back.
type streams[K comparable] struct {
	max   int // immutable
	spare int // immutable: the slots beyond max that acquireSpare may give

	mu   sync.Mutex
	n    int               // guarded by mu: slots held
	keys map[K]*keyStreams // guarded by mu: the keys with streams
}

// keyStreams is what streams knows of one key's streams.
type keyStreams struct {
	newest *slot // the slot of the key's newest stream, if it runs
	n      int   // the key's streams, whether they hold a slot or not
}

// A slot is one stream's place under the bound.
type slot struct {
	held bool // guarded by streams.mu: the slot counts in n; false once inherited or released
}

func newStreams[K comparable](max int) *streams[K] {
	if max <= 0 {
		return nil
	}
	return &streams[K]{max: max, spare: spareStreams(max), keys: make(map[K]*keyStreams)}
}

// spareStreams is how many streams beyond a bound of max [WithMaxStreams]
// lets resuming FanOut clients have: an eighth, and at least one.
func spareStreams(max int) int { return max/8 + 1 }

// acquire returns a slot for a stream of key, or false at the bound. A
// request that takes the key over (takeover) inherits the slot of the
// key's newest stream, if it has one. A nil streams has no bound.
func (s *streams[K]) acquire(key K, takeover bool) (*slot, bool) {
	if s == nil {
		return nil, true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[key]
	switch {
	case s.n < s.max:
		s.n++
	case takeover && ks != nil && ks.newest != nil && ks.newest.held:
		ks.newest.held = false // the older stream ends without giving it back
	default:
		return nil, false
	}
	return s.add(key, ks), true
}

// serves reports whether the handler streams key, so that a request that
// resumes it may be a client replacing its own stale connection.
func (s *streams[K]) serves(key K) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys[key] != nil
}

// acquireSpare returns a slot beyond the bound for a stream of key, or
// false if the handler no longer streams key or every spare slot is taken.
// The handler calls it, in FanOut mode, for a request that resumes the
// key's current life with a Last-Event-ID header, after acquire refused
// it.
func (s *streams[K]) acquireSpare(key K) (*slot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ks := s.keys[key]
	if ks == nil || s.n >= s.max+s.spare {
		return nil, false
	}
	s.n++
	return s.add(key, ks), true
}

// add records a new stream of key, holding a slot; ks is the key's entry,
// if it has one. The caller holds mu and has counted the slot.
func (s *streams[K]) add(key K, ks *keyStreams) *slot {
	if ks == nil {
		ks = new(keyStreams)
		s.keys[key] = ks
	}
	sl := &slot{held: true}
	ks.newest = sl
	ks.n++
	return sl
}

// release gives sl back, unless a takeover inherited it, and forgets the
// stream.
func (s *streams[K]) release(key K, sl *slot) {
	if s == nil || sl == nil {
		return
	}
	s.mu.Lock()
	if sl.held {
		sl.held = false
		s.n--
	}
	ks := s.keys[key]
	if ks.newest == sl {
		ks.newest = nil
	}
	if ks.n--; ks.n == 0 {
		delete(s.keys, key)
	}
	s.mu.Unlock()
}
