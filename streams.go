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
// resumes the current life of its key with a Last-Event-ID header (a
// browser reconnecting) may then take one of a few spare slots beyond the
// bound (see acquireSpare): its client most likely replaces a connection
// that will fail a heartbeat's write and give its slot back.
type streams[K comparable] struct {
	max   int // immutable
	spare int // immutable: the slots beyond max that acquireSpare may give

	mu   sync.Mutex
	n    int         // guarded by mu: slots held
	last map[K]*slot // guarded by mu: the slot of each key's newest stream
}

// A slot is one stream's place under the bound.
type slot struct {
	held bool // guarded by streams.mu: the slot counts in n; false once inherited or released
}

func newStreams[K comparable](max int) *streams[K] {
	if max <= 0 {
		return nil
	}
	return &streams[K]{max: max, spare: spareStreams(max), last: make(map[K]*slot)}
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
	old := s.last[key]
	switch {
	case s.n < s.max:
		s.n++
	case takeover && old != nil && old.held:
		old.held = false // the older stream ends without giving it back
	default:
		return nil, false
	}
	sl := &slot{held: true}
	s.last[key] = sl
	return sl, true
}

// acquireSpare returns a slot beyond the bound for a stream of key, or
// false if every spare slot is taken. The handler calls it, in FanOut
// mode, for a request that resumes the key's current life with a
// Last-Event-ID header, after acquire refused it.
func (s *streams[K]) acquireSpare(key K) (*slot, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.n >= s.max+s.spare {
		return nil, false
	}
	s.n++
	sl := &slot{held: true}
	s.last[key] = sl
	return sl, true
}

// release gives sl back, unless a takeover inherited it.
func (s *streams[K]) release(key K, sl *slot) {
	if s == nil || sl == nil {
		return
	}
	s.mu.Lock()
	if sl.held {
		sl.held = false
		s.n--
	}
	if s.last[key] == sl {
		delete(s.last, key)
	}
	s.mu.Unlock()
}
