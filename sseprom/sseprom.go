// Package sseprom exports the figures of github.com/rocketqueue/sse to
// Prometheus: a [Collector], which reads an [sse.Metrics] that handlers
// share and the [sse.Stats] of brokers each time it is scraped, for the
// caller to register on its own prometheus.Registerer. A broker is any
// backend with a Stats method that returns sse.Stats: an *sse.Broker, or an
// *ssejs.Broker of github.com/rocketqueue/sse/ssejs, which sseprom does not
// import.
//
//	var metrics sse.Metrics
//	h := sse.Handler(broker, key, sse.WithMetrics(&metrics))
//	prometheus.MustRegister(sseprom.New("myapp", &metrics, sseprom.Broker("jobs", broker)))
//
// The names follow Prometheus's conventions: base units, "_total" for
// counters. With namespace "myapp" (or "sse" if it is empty) they are:
//
// From the handlers' [sse.Metrics] (its [sse.HandlerStats]):
//
//	myapp_streams_open                       gauge    streams being served
//	myapp_streams_total                      counter  streams started
//	myapp_requests_refused_total{reason}     counter  requests that got no stream, by reason
//	myapp_takeovers_total                    counter  streams taken over by a newer connection
//	myapp_resumes_total                      counter  streams that resumed after an ID
//	myapp_gaps_total                         counter  "gap" events sent
//	myapp_events_written_total               counter  events written
//	myapp_written_bytes_total                counter  bytes written to streams
//	myapp_clients_dropped_total              counter  streams ended by a failed or late write
//	myapp_heartbeats_total                   counter  heartbeats written
//
// The reason label takes the values of [sse.Reason]'s String: "method",
// "bad_request", "key_function", "not_found", "conflict", "finished",
// "retry_later", "internal"; every one is exported, zero or not.
//
// From each broker's [sse.Stats], labelled broker="<its name>" (an
// ssejs.Broker reports its process's part: the keys it reads, the events
// its calls stored or sent to closed keys; its closed keys, pending events,
// dropped events and replay bytes are 0, see its Stats):
//
//	myapp_broker_keys{broker}                    gauge    open keys
//	myapp_broker_closed_keys{broker}             gauge    closed keys still remembered
//	myapp_broker_pending_events{broker}          gauge    events beyond the channel buffers (Queue mode)
//	myapp_broker_replay_bytes{broker}            gauge    bytes held by replay windows and histories
//	myapp_broker_events_enqueued_total{broker}   counter  events accepted
//	myapp_broker_events_discarded_total{broker}  counter  events sent to closed keys
//	myapp_broker_events_dropped_total{broker}    counter  events never handed to a reader: overflow policy, Shutdown's deadline, a key forgotten undrained
//
// No metric has a per-key label, so that their number stays fixed however
// many keys there are.
package sseprom

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rocketqueue/sse"
)

// A Statser is what a [Collector] reads a broker's figures from: an
// *sse.Broker or an *ssejs.Broker of any key type, or any backend that
// reports its figures as they do.
type Statser interface{ Stats() sse.Stats }

// A NamedBroker is a broker with the name its metrics are labelled with.
type NamedBroker struct {
	Name   string
	Broker Statser
}

// Broker names b for [New].
func Broker(name string, b Statser) NamedBroker { return NamedBroker{name, b} }

// A Collector is a prometheus.Collector of an [sse.Metrics] and of brokers'
// [sse.Stats]. It reads them when it is scraped: the handlers' counters
// atomically, each broker's figures as one snapshot taken by its loop.
type Collector struct {
	metrics *sse.Metrics  // immutable; nil: no handler metrics
	brokers []NamedBroker // immutable

	streamsOpen, streams, refused, takeovers, resumes, gaps, events, bytes, dropped, heartbeats *prometheus.Desc
	keys, closed, pending, replay, enqueued, discarded, brokerDropped                           *prometheus.Desc
}

// New returns a Collector of m (nil for none) and of brokers, with metric
// names under namespace ("sse" if empty). Register it on a
// prometheus.Registerer; two Collectors on one registry need different
// namespaces.
func New(namespace string, m *sse.Metrics, brokers ...NamedBroker) *Collector {
	if namespace == "" {
		namespace = "sse"
	}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
	}
	return &Collector{
		metrics:       m,
		brokers:       brokers,
		streamsOpen:   desc("streams_open", "Event streams being served."),
		streams:       desc("streams_total", "Event streams started."),
		refused:       desc("requests_refused_total", "Requests that got no stream, by reason.", "reason"),
		takeovers:     desc("takeovers_total", "Streams taken over by a newer connection of their client."),
		resumes:       desc("resumes_total", "Streams that resumed after a Last-Event-ID or lastEventId."),
		gaps:          desc("gaps_total", "Gap events sent: events a client missed that could no longer be sent."),
		events:        desc("events_written_total", "Events written to streams."),
		bytes:         desc("written_bytes_total", "Bytes written to streams."),
		dropped:       desc("clients_dropped_total", "Streams ended because a write failed or missed its deadline."),
		heartbeats:    desc("heartbeats_total", "Heartbeat comments written."),
		keys:          desc("broker_keys", "Open keys.", "broker"),
		closed:        desc("broker_closed_keys", "Closed keys still remembered.", "broker"),
		pending:       desc("broker_pending_events", "Events beyond the keys' channel buffers (Queue mode).", "broker"),
		replay:        desc("broker_replay_bytes", "Bytes held by the replay windows or histories.", "broker"),
		enqueued:      desc("broker_events_enqueued_total", "Events accepted.", "broker"),
		discarded:     desc("broker_events_discarded_total", "Events sent to closed keys.", "broker"),
		brokerDropped: desc("broker_events_dropped_total", "Events never handed to a reader: overflow policy, Shutdown's deadline, keys forgotten undrained.", "broker"),
	}
}

// Describe sends the descriptions of every metric c exports.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	if c.metrics != nil {
		for _, d := range []*prometheus.Desc{c.streamsOpen, c.streams, c.refused, c.takeovers, c.resumes, c.gaps, c.events, c.bytes, c.dropped, c.heartbeats} {
			ch <- d
		}
	}
	if len(c.brokers) > 0 {
		for _, d := range []*prometheus.Desc{c.keys, c.closed, c.pending, c.replay, c.enqueued, c.discarded, c.brokerDropped} {
			ch <- d
		}
	}
}

// Collect reads the figures and sends them.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	if m := c.metrics; m != nil {
		s := m.Stats()
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		ch <- prometheus.MustNewConstMetric(c.streamsOpen, prometheus.GaugeValue, float64(s.StreamsOpen))
		counter(c.streams, s.StreamsServed)
		for _, r := range sse.Reasons() {
			counter(c.refused, s.Refused[r], r.String())
		}
		counter(c.takeovers, s.Takeovers)
		counter(c.resumes, s.Resumes)
		counter(c.gaps, s.Gaps)
		counter(c.events, s.Events)
		counter(c.bytes, s.Bytes)
		counter(c.dropped, s.Dropped)
		counter(c.heartbeats, s.Heartbeats)
	}
	for _, nb := range c.brokers {
		s := nb.Broker.Stats()
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, nb.Name)
		}
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), nb.Name)
		}
		gauge(c.keys, float64(s.Keys))
		gauge(c.closed, float64(s.Closed))
		gauge(c.pending, float64(s.Pending))
		gauge(c.replay, float64(s.Replay))
		counter(c.enqueued, s.Enqueued)
		counter(c.discarded, s.Discarded)
		counter(c.brokerDropped, s.Dropped)
	}
}
