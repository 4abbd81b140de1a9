package sse

import "sync/atomic"

// Metrics counts what [Handler]s serve, for operators: streams, refusals
// and why, takeovers, resumes, gaps, events and bytes written, clients
// dropped, heartbeats. Give one to any number of handlers with
// [WithMetrics]; they add to it with atomic operations, so it costs a few
// nanoseconds per event and no lock. The zero value is ready to use. Read
// it with [Metrics.Stats]; the broker's own figures are in
// [Broker.Stats]. The counters only grow (StreamsOpen excepted), and carry
// no per-key label, so that their number stays fixed however many keys
// there are. The nested module github.com/rocketqueue/sse/sseprom exports
// both to Prometheus.
type Metrics struct {
	streamsOpen   atomic.Int64
	streamsServed atomic.Uint64
	refused       [numReasons]atomic.Uint64
	takeovers     atomic.Uint64
	resumes       atomic.Uint64
	gaps          atomic.Uint64
	events        atomic.Uint64
	bytes         atomic.Uint64
	dropped       atomic.Uint64
	heartbeats    atomic.Uint64
}

// HandlerStats is what a [Metrics] has counted: the handlers' figures, as
// [Stats] are a broker's.
type HandlerStats struct {
	StreamsOpen   int64             // streams being served now
	StreamsServed uint64            // streams started: responses 200 with events to come
	Refused       map[Reason]uint64 // requests that got no stream, by reason
	Takeovers     uint64            // streams that took a key over from an older connection (Queue mode)
	Resumes       uint64            // streams that started after a Last-Event-ID or lastEventId, ?lastEventId=0 included (a page's first connection sends it)
	Gaps          uint64            // "gap" events sent
	Events        uint64            // events written, control events excepted
	Bytes         uint64            // bytes written to streams
	Dropped       uint64            // streams ended because a write failed or missed its deadline: the client stopped reading, or went away mid-write
	Heartbeats    uint64            // heartbeat comments written
}

// A Reason is why [Handler] gave a request no stream.
type Reason int

// The reasons for refusals, with the status each answers.
const (
	RefusedMethod     Reason = iota // 405: not GET
	RefusedBadRequest               // 400: the key function failed, or the key cannot be held
	RefusedByKey                    // 4xx or 5xx other than 400: the key function's error carried that status (401, 403, 404…)
	RefusedNotFound                 // 404: WithKnownKeysOnly, and not a server key
	RefusedConflict                 // 409: another connection holds the key (Queue mode)
	RefusedFinished                 // 204: the key is closed and the client has every event
	RefusedRetryLater               // 200 with only "retry": too many streams, a full or shut down source, a lost takeover, the server shutting down
	RefusedInternal                 // 500: the ResponseWriter cannot flush, or the key function panicked
	numReasons
)

// String returns the reason's label: what the Prometheus adapter puts in
// its "reason" label.
func (r Reason) String() string {
	switch r {
	case RefusedMethod:
		return "method"
	case RefusedBadRequest:
		return "bad_request"
	case RefusedByKey:
		return "key_function"
	case RefusedNotFound:
		return "not_found"
	case RefusedConflict:
		return "conflict"
	case RefusedFinished:
		return "finished"
	case RefusedRetryLater:
		return "retry_later"
	case RefusedInternal:
		return "internal"
	}
	return "unknown"
}

// Reasons lists every [Reason], in order.
func Reasons() []Reason {
	r := make([]Reason, numReasons)
	for i := range r {
		r[i] = Reason(i)
	}
	return r
}

// Stats returns what m has counted. Each counter is read atomically;
// together they are not one instant's, as handlers go on meanwhile.
func (m *Metrics) Stats() HandlerStats {
	s := HandlerStats{
		StreamsOpen:   m.streamsOpen.Load(),
		StreamsServed: m.streamsServed.Load(),
		Refused:       make(map[Reason]uint64, numReasons),
		Takeovers:     m.takeovers.Load(),
		Resumes:       m.resumes.Load(),
		Gaps:          m.gaps.Load(),
		Events:        m.events.Load(),
		Bytes:         m.bytes.Load(),
		Dropped:       m.dropped.Load(),
		Heartbeats:    m.heartbeats.Load(),
	}
	for r := range m.refused {
		s.Refused[Reason(r)] = m.refused[r].Load()
	}
	return s
}

// refuse counts a refusal; a nil Metrics counts nothing.
func (m *Metrics) refuse(r Reason) {
	if m != nil {
		m.refused[r].Add(1)
	}
}

// WithMetrics makes the handler count what it serves in m, which any
// number of handlers may share. By default a handler counts nothing.
func WithMetrics(m *Metrics) HandlerOption {
	return handlerOptionFunc(func(c *handlerConfig) { c.metrics = m })
}

// served counts a stream served, and open until the function it returns
// is called; m may be nil.
func (m *Metrics) served(resume bool) (closed func()) {
	if m == nil {
		return func() {}
	}
	m.streamsServed.Add(1)
	m.streamsOpen.Add(1)
	if resume {
		m.resumes.Add(1)
	}
	return func() { m.streamsOpen.Add(-1) }
}
