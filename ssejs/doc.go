// Package ssejs keeps the keyed event streams of
// [github.com/rocketqueue/sse] in NATS JetStream, so that every replica of
// a server, and every worker process, shares them: a job started on one
// replica streams to a browser connected to another, and a browser that
// reconnects to any replica resumes where it was.
//
// A [Broker] offers what [sse.Broker] offers, across processes: any process
// may [Broker.Enqueue], [Broker.Publish] and [Broker.Close]; readers range
// over a key's events with [Broker.Events]; and it is an [sse.Source], so
// [sse.Handler] serves it unchanged:
//
//	nc, _ := nats.Connect(url)
//	js, _ := jetstream.New(nc)
//	b, err := ssejs.New[string](ctx, js, ssejs.WithMode(sse.FanOut))
//	...
//	http.Handle("/events", sse.Handler(b, keyFromRequest))
//
// Code written against [sse.Publisher], [sse.Reader] and [sse.Source] works
// with either broker; both pass the root module's conformance suite.
//
// # Modes
//
// In [sse.FanOut] mode every reader and SSE connection, on every process,
// gets every event of a key, from its own position in the key's history:
// the oldest message held, the event after its Last-Event-ID, or the next
// one ([sse.Live]). A reader behind the history is told of the gap.
//
// In [sse.Queue] mode (the default) each event is read once across the
// cluster. One process at a time owns a key: it holds the key's lease, and
// its SSE connection and in-process readers compete for the key's events;
// readers in other processes do not get them. A request that resumes
// (Last-Event-ID) on any replica takes the key over, and first receives
// the events after its ID that earlier connections took (the replay
// window), so a client cut off and reconnected anywhere gets every event
// exactly once and in order, as long as what was in flight fits in the
// window ([WithReplayEvents]). See "Queue mode: leases" below.
//
// # The mapping onto JetStream
//
// A broker named n ([WithName], "sse" by default) uses:
//
//   - One stream, "SSE_n", with Limits retention, on file by default
//     ([WithStorage]), with [WithReplicas] replicas, allowing direct gets,
//     whose subjects are "sse.n.e.>". It records the mode in its metadata;
//     brokers of another mode refuse it.
//   - One subject per key, "sse.n.e.k<base64url of the key's bytes>": any
//     key maps to a valid token (dots, "*", ">", spaces, non-ASCII bytes
//     and the empty string all round-trip; see [Token]). Strings are their
//     bytes and integers their decimal digits; other key types need a
//     [Codec] ([WithCodec]).
//   - One message per call: a batch of events, never one per event. Its
//     headers say its key's life ("Sse-Epoch"), the ID of its first event
//     ("Sse-First"), how many it holds ("Sse-Count"), and whether the key
//     is closed after them ("Sse-Close"); its body holds each event's Name
//     and Data, each preceded by its length as a uvarint. A message of no
//     event starts a key's life ([Broker.Open], or the first request for
//     a new key) or closes it ([Broker.Close]); an Enqueue or Publish of
//     no event stores nothing. A reader that starts before such a message
//     is told of the events before it by a gap, as of any it missed.
//   - No per-key metadata written apart from the events: a key's epoch,
//     next ID and closed state are its subject's last message, read by a
//     direct get. So a key costs nothing but its messages, and its
//     metadata can never disagree with its events.
//   - In Queue mode only, one key-value bucket, "SSE_n_keys", with an
//     entry per key that a process has read, "k<token>": its lease (the
//     owning process, or none) and read floor (the last event ID handed
//     out, the sequence of its message, the last one an in-process reader
//     took), the events its owner's readers took and may not have handed
//     to their callers (a stopped range forfeits them; the next owner
//     names them in a gap, even if the owner died before it could say the
//     range stopped), written only by compare and set on the entry's
//     revision; and an entry per running process, "p.<broker ID>", that
//     says until when it is alive (see "Queue mode: leases"). Its entries
//     expire a minute after the stream's MaxAge, that is after every event
//     they cover; a process that shuts down deletes its own, and that of a
//     process that died stays until then (a few dozen bytes).
//   - Ordered consumers (ephemeral, in memory, no acks), only for keys
//     that have readers, and one per process, not per key: its feed,
//     over every key's subject, from the stream's end when the
//     process's first reader of any key attaches, deleted when its last
//     leaves. Its one callback hands each message to the key's hub in
//     the process, if the key has readers there, and drops it
//     otherwise: a hub keeps the key's newest messages (up to 1,024, or
//     4 MiB) for the process's readers of the key, which wait on it
//     without a goroutine or a consumer of their own. A reader that
//     starts further back than the hub (resuming, from the oldest
//     message held), or falls behind what it keeps, catches up by
//     direct gets, one message at a time, until it reaches the hub. In
//     FanOut mode the process's readers and SSE connections of a key
//     share its hub; in Queue mode they take its events in turn from
//     the key's hub. The feed's own recovery (the ordered consumer's
//     reset after a missed message or heartbeat, a leader change)
//     resumes after the last message it handed out; when it fails, or
//     NATS becomes unreachable, every reader in the process ends with
//     an error wrapping [ErrUnavailable], and clients reconnect and
//     resume. So the stream has a consumer per process that reads, not
//     per key: see "Costs".
//
// New creates the stream, and in Queue mode the bucket, when they are
// missing, with the settings its options give ([WithStorage],
// [WithReplicas], [WithMaxAge], [WithHistoryMessages], [WithMaxReaders],
// [WithDuplicateWindow]). It never changes them once they exist: an
// operator may raise or lower their limits (MaxAge, MaxBytes,
// MaxMsgsPerSubject, replicas, MaxConsumers, placement) with the nats CLI,
// and every replica's New keeps them; those options then only matter to
// the first process that creates the stream. What the library owns and
// checks is what its guarantees rest on: New refuses a stream of the other
// mode, one whose subjects do not include "sse.n.e.>", one whose retention
// is not Limits (a work-queue or interest stream would delete a key's
// metadata, its last message), a sealed one, one that does not
// acknowledge publishes, and, in Queue mode, a bucket whose entries expire
// before the stream's events (a read floor lost before its events would
// let them be read again).
//
// What is deleted when:
//
//   - FanOut: a key keeps its newest [WithHistoryMessages] messages (plus
//     one, for the Close), none older than [WithMaxAge] (an hour by
//     default). The bound counts messages, that is calls: a call of many
//     events is one.
//   - Queue: once events are handed out, the messages all of whose events
//     are more than [WithReplayEvents] events below the floor are purged
//     (the subject's last message is always kept: it holds the key's
//     metadata), and every message expires after [WithMaxAge] (a day by
//     default), read or not. A reader finds events that expired unread as
//     a gap.
//   - A key whose messages have all expired is forgotten: its next event
//     starts a new life, with a new epoch and IDs from 1, and a client
//     holding an ID of the old life gets the new one from its start. The
//     server keeps, per idle key, its retained messages, its subject's
//     index entry and, in Queue mode, one small bucket entry; and, for the
//     duplicate window, each message's ID.
//
// # IDs and epochs
//
// Each key's events are numbered 1, 2, 3, … in the order the server
// stored them, with no hole, whatever the number of processes publishing
// to it, and every replica, and the same replica after a restart, sees the
// same IDs: they are stored in the messages. A publish carries its first
// ID and expects the subject's last sequence to be the one the process saw
// last (Nats-Expected-Last-Subject-Sequence, a compare and set); if another
// process published meanwhile, the server refuses it, and the broker reads
// the subject's last message by a direct get, renumbers the batch and
// tries again. So IDs stay contiguous with several producing processes;
// the conformance suite requires that (its Order test: IDs 1, 2, 3, … in
// key order, each call's events contiguous).
//
// The epoch, 48 random bits in base 36, names a key's life: it is drawn by
// the process whose publish starts the life (its compare and set expects
// no message; one process wins), and carried in every message of it, so
// that every replica gives the same wire IDs, "<epoch>-<n>", and
// recognises a Last-Event-ID of another life.
//
// # Errors and retries
//
// [Broker.Enqueue], [Broker.Publish] and [Broker.Close] return once the
// server has acknowledged the message: the events are stored, in order,
// with their IDs. Until their context ends (or [WithTimeout], 5 seconds by
// default, for a context without a deadline) they retry, each attempt with
// the same message ID (Nats-Msg-Id), so that an attempt whose
// acknowledgement was lost is not stored twice: a single server checks the
// expected sequence before the message ID, so such a retry is refused as
// out of sequence, and the broker, reading the subject's last message,
// finds its own message ID there; if another message came after it, the
// retry with the new sequence gets the server's duplicate answer instead.
//
// Their error is [sse.ErrInvalidEvent] or [sse.ErrInvalidKey] (wrapped,
// for input they refuse, as [sse.Broker] refuses it: see
// [sse.CheckEvent]), [sse.ErrShutdown], [sse.ErrClosed] or [ErrNotStored]
// (a context already done when the call would have been sent: a call whose
// context is done when it starts stores nothing and returns the context's
// error, wrapped), and then nothing was stored; or any other error, and
// then the outcome is unknown (a batch
// split at the max payload whose later part fails gets such an error,
// whatever the part's: its earlier parts are stored). A
// caller that retries such a call gives it an idempotency key
// ([WithIdempotencyKey]), honoured for the stream's duplicate window
// ([WithDuplicateWindow], at least 10 minutes).
//
// A definite refusal by the server is not retried: at the stream's bound
// ([WithMaxBytes]), or with the store full ("insufficient resources"), a
// call fails at once with an error matching ErrNotStored that wraps the
// server's *jetstream.APIError (errors.As). Queue readers go on reading at
// the stream's bound, and what they read is purged, which makes room; a
// store full to the server's or the account's own limit refuses every
// write, the read floors' included, so its readers wait until an operator
// makes room: keep WithMaxBytes below those limits. Calls racing other
// processes' calls to the same key retry at once the first time, then
// after a random wait below a bound that doubles up to 32 ms, so that many
// producing processes spread out (BenchmarkContention; the README has the
// figures).
//
// Concurrent calls to one key in one process are carried in one message
// while an earlier one is in flight, so a hot key costs a round trip per
// group of calls, not per call. A batch larger than the server's max
// payload (1 MiB by default) is split into messages stored one after the
// other: it is no longer atomic, and other calls' batches may come between
// its parts. An event must fit in one message: [WithMaxEventSize] is
// lowered to what the max payload allows.
//
// # When NATS is unreachable
//
// Calls fail within their context's time, or [WithTimeout]'s. Open
// subscriptions end as soon as the connection reports the loss: their
// Next returns an error wrapping [ErrUnavailable], and [sse.Handler] ends
// the stream without "close", so that clients reconnect; Subscribe fails
// with an error matching both ErrUnavailable and [sse.ErrShutdown], which
// the handler answers with "retry later" (a status that would make a
// browser give up is never sent). The nats.go connection reconnects by
// itself (give it MaxReconnects(-1)); the broker goes on when it has.
//
// When NATS answers but JetStream does not, or the stream was deleted,
// the process's consumer (see "The mapping onto JetStream") retries by
// itself, and says nothing. So 15 s after it reports an error, the broker
// looks: if the stream is gone, or was deleted and made anew, open
// subscriptions end as above, with an error wrapping ErrUnavailable, and
// the next reader starts afresh (or fails, while the stream is gone); if
// the stream does not answer, or the consumer could not be made again,
// they end so 15 s later, unless it recovered by then. A consumer that
// recovered goes on.
//
// # Queue mode: leases
//
// A process takes a key's lease when a connection or reader of the key
// attaches there: at once if the lease is free, its owner is dead, or it
// is its own; from another process only for a request that takes over (a
// Last-Event-ID header, [sse.WithTakeover]) or an in-process reader
// ([Broker.Events]), and otherwise the request gets [sse.ErrBusy] (409).
// Taking a key is a compare and set on its bucket entry: of two processes
// taking it at once, one wins. The process that took a key over tells its
// previous owner (a core NATS message on "sse.n.l.<broker ID>"), whose
// readers of the key end at once with [sse.ErrReplaced]; if that message
// is lost, they end at their next take, whose write fails.
//
// A key's entry names its owner, not an expiry: the owner holds its keys
// while its liveness is fresh. Each process writes its liveness entry
// ("p.<broker ID>", an ID drawn anew by each [New], so a restarted process
// owns none of its previous keys) when it starts, renews it a third of
// [WithLease] apart, and deletes it when it shuts down, which frees all
// its keys at once. So keeping leases costs one write per process per
// third of the lease, whatever the number of keys it holds: an idle key's
// entry is never written. A process that died unnoticed keeps its keys
// for [WithLease] after its last renewal. Another process reads an
// owner's liveness only when a request that does not take over finds one
// of its keys owned. A key's entry is written when it is taken, when its
// events are taken (the floor, below), once within a third of the lease
// after a take or after its in-process readers yielded what they took (so
// that the entry no longer says those events may not have been handed
// out, which would make the next owner, were this one to die, name them
// in a gap), and when the process's last reader of the key leaves (one
// write that frees it). Expiry is judged by each process's clock: they
// should agree to well within the lease (NTP does). A lease only decides
// who may serve a request that does not take over; the floor's compare
// and set, not the clock, is what keeps each event read once.
//
// Entries written by a version before process liveness carry their own
// expiry and were renewed one by one: such an entry holds until its
// expiry, as that version meant, so a bucket in use can be upgraded. An
// older version reads this version's entries as expired: during a rolling
// upgrade, an older replica may take a key that a newer one holds from a
// request that does not take over (the newer owner's readers then end
// with [sse.ErrReplaced] at their next take); each event is still read
// once. Upgrade every replica of a name before relying on 409s.
//
// Before it hands out any event, the owner advances the key's floor past
// it, by a compare and set on the revision it last wrote: a process that
// lost the lease can no longer write, so it never hands out another event
// (its readers end with [sse.ErrReplaced], and its connection's client
// reconnects). The new owner reads the floor from the entry it took, and
// starts after it. A connection takes no more than the replay window at
// once.
//
// A request that resumes after ID L first receives the events after L up
// to the floor, read out of the stream (at most the replay window), then
// the queue; a "gap" names what the window no longer holds, and what
// in-process readers took (the events up to the last one they took, even
// if a connection took some of them first: a gap, never a duplicate).
//
// # Costs
//
// In the reading process, a key with readers costs its hub (no goroutine,
// no consumer) and its readers' subscriptions; a Queue key also its lease
// state. Measured at 100,000 keys with a reader each in one process
// (BenchmarkIdleKeys, ssejs/results/idle.txt), an idle key costs about
// 1.4 KiB of heap in FanOut mode and 2.3 KiB in Queue mode with a reader
// that polls (as a connection following many keys does: no goroutine per
// key, five in the process in all), and 2.3 and 3.3 KiB with a reader
// waiting in Next, plus that reader's own goroutine and its stack (4 KiB
// in FanOut, 8 KiB in Queue). A consumer per key, as the broker had
// before, cost about 8 goroutines and 38 KiB per FanOut key, 7 and 34 KiB
// per Queue key.
//
// The price of one consumer per process is traffic: the feed receives
// every key's messages, whether the process reads the key or not. With R
// replicas each serving 1/R of the keys, each receives R times the bytes
// of its own keys' messages (BenchmarkReplicaTraffic,
// ssejs/results/traffic.txt: 0.84 R the stream's bytes for them, as the
// stream counts bytes). A consumer filtered to the keys a process reads
// would receive only those, but it must be made again whenever a key gains
// its first reader there or loses its last (each connection, at worst),
// its filter grows with the keys (the subjects of 100,000 keys do not fit
// in one request), and a consumer per key is what cost goroutines and
// memory per key and capped delivery over many keys. The feed is the
// better trade where each replica serves a good share of the stream's
// keys, or the stream's traffic is small against the network's; where
// many replicas each serve a small share of a busy stream, give each
// group of keys a broker and stream of its own ([WithName]).
//
// Delivery over 1,000 keys, a reader each (BenchmarkDelivery, with the
// raw layout of a consumer per key as its baseline, in one run:
// ssejs/results/delivery-issue22-final.txt): 65k events/s in FanOut mode,
// 3.2 times raw, and 41k in Queue mode, 2.1 times raw, whose every take
// first writes the key's floor; the process's CPU per event, the NATS
// server's included, 29 and 47 µs against raw's 65 and 66. The README has
// the table and the command.
package ssejs
