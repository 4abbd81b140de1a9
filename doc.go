// Package sse hands messages from a server to many clients: one stream per
// key, read in process or by a browser over Server-Sent Events, as a queue
// whose events are each read once or as a history that every reader reads.
//
// A server starts long work (a job, an import, a chat reply), or has news
// for someone (a dashboard, a user's notifications), and streams it to
// whoever is watching. A [Broker] keeps one stream per key, such as a job
// ID or a user ID; any goroutine may [Broker.Enqueue] or [Broker.Publish]
// into it, and readers read it until [Broker.Close] ends it:
//
//	b := sse.New[string]()
//	defer b.Shutdown(ctx)
//
//	go func() {
//		b.Enqueue(ctx, jobID, "Starting process.")
//		b.Enqueue(ctx, jobID, "Message One", "Message Two")
//		b.Close(ctx, jobID)
//	}()
//
//	for ev := range b.Stream(jobID) {
//		fmt.Println(ev.ID, ev.Data)
//	}
//
// The key type is any comparable type, checked at compile time.
//
// # The model
//
// A broker has one of two modes ([WithMode]), and producers call Enqueue,
// Publish and Close the same way in both.
//
// In [Queue] mode, the default, each key names a FIFO queue. Events
// enqueued before any reader arrives wait for it. Each event is received
// once: every call to Stream for a key returns the same channel, so several
// readers of one key compete for its events, and a key has one SSE
// connection at a time.
//
// In [FanOut] mode each key keeps a bounded history of its events
// ([WithHistory]), stored once, and every reader reads it from its own
// position with [Broker.Events], in process, or over SSE, with any number
// of connections per key: each gets every event, from the oldest held, from
// after an ID, or live. A reader that falls further behind than the history
// holds is told which events it lost ([GapError], or a "gap" event over
// SSE), never silently skipped; it never slows the loop, the producers or
// another reader.
//
// In both modes Close means "no more events": readers receive everything
// published before it, then their range ends. There is no sentinel message
// in process. The broker numbers each key's events 1, 2, 3, … in order and
// puts the number in [Event].ID; over SSE the ID also carries the key's
// epoch, which names this life of the key (see Resuming).
//
// A Broker keeps its keys in one process. For keys shared by several
// replicas of a server and its worker processes, the nested module
// github.com/rocketqueue/sse/ssejs keeps them in NATS JetStream, in both
// modes. Code written against [Publisher], [Reader] and [Source] runs on
// either, and the package conformance is the behaviour both show. The two
// share one vocabulary: an option of the same name takes the same arguments
// in the same units in both (the README has a table of every option and
// which backend takes it), and both report [Stats]. A backend of your own
// implements those interfaces with the same parts: [Event.Size] for what
// Next's limit counts, [NewEpoch] for a key's new life, and
// [SubscriptionEvents] for a Reader over its subscriptions.
//
// # Ordering
//
// A key's events are in the order in which the broker's loop receives
// commands, and every reader of a FanOut key sees that same order. Calls
// made one after another by one goroutine are received in that order, so
// its events are in call order. The events of one Enqueue or Publish call
// are one batch: they stay contiguous, with consecutive IDs. Calls made
// concurrently from several goroutines are ordered in some interleaving of
// whole calls. There is no order between keys.
//
// # What is asynchronous
//
// One goroutine, the loop, owns every key's state. Enqueue, Publish and
// Close are commands into the loop's inbox: they return as soon as the inbox
// has accepted them, before the events reach the queue, with no round trip
// per message. An error from them means the command was not accepted, and
// nothing of it happens. A nil error means it will be carried out, even if
// Shutdown follows at once. Stream, Stats and the start of a range over
// Events wait for the loop's answer.
//
// Events and keys are checked in the caller's goroutine before anything is
// sent: a Name with CR, LF or NUL, a Name or Data that is not valid UTF-8,
// or an event a client would take for one the library sends ("close",
// "gap", a Name starting with [ReservedPrefix], an unnamed [TerminateData])
// fails the whole call with [ErrInvalidEvent]; a key the loop's map could
// not hold (a NaN, an interface holding a slice) fails it with
// [ErrInvalidKey]. No input a caller can pass stops the loop.
//
// # What blocks
//
// The loop never blocks on a reader. In Queue mode it hands events to a
// key's channel without waiting; when the channel is full, the events wait
// in the key's overflow, and a goroutine that lives only while the key is
// backlogged moves them into the channel as the reader drains it. In FanOut
// mode it appends each event to the key's history once, whatever the
// number of readers, and wakes the readers that wait by closing one
// channel; each reader copies batches out of the history by atomics alone,
// so the loop never waits for one, and does no work per reader. A key whose
// reader is slow or gone never delays any other key, nor, in FanOut mode,
// the key's other readers.
//
// Enqueue, Publish and Close wait only when the inbox is full (it holds 1024
// commands and as many events; a larger batch enters the empty inbox
// alone), until there is room or their context ends. With [WithMaxPending]
// and the [Block] policy, Enqueue and Publish to a key that has n events
// accepted and not yet in its channel also wait, for that key only, until
// its reader has brought them down to n/2: the key never has more than
// n − 1 + b of them, b being the largest batch of one call, whatever the
// number of producers. Close never waits for a full key, and producers
// waiting on a key that closes are released (their events are discarded).
// Near the [WithMaxKeys] bound, Enqueue and Publish to a new key wait for
// the loop's answer. By default overflow is unbounded and nothing is
// dropped; [DropOldest] and [DropNewest] bound it by dropping events,
// counted in [Stats].Dropped. In FanOut mode producers never wait for
// readers, and WithMaxPending is refused: the history's bounds drop its
// oldest events instead, and readers behind them are told.
//
// # Who closes which channel
//
// In FanOut mode there is no channel: a reader's range ends after the last
// event of a closed key, or with its context. The rest of this section is
// about Queue mode, except the retention time, which both have.
//
// Only the broker closes a key's channel. It does so after every event
// enqueued before the key's Close has been handed to it, and readers never
// close it. A closed channel then means the stream is complete, with two
// exceptions, in which the stream is cut short: Shutdown's deadline passed,
// or the key was forgotten with events its readers never took. The events
// already in the channel stay readable; [Broker.Events] then ends with
// [ErrTruncated], and [Handler] ends the response without "close".
//
// A closed key is remembered for the retention time ([WithRetention],
// [DefaultRetention]), counted from the later of its Close and the last
// event a reader took: a reader that keeps reading is never cut short, a
// late reader sees an ended stream, and an abandoned key does not stay
// forever. Then it is forgotten, and the key may start afresh, with IDs
// from 1 and a new epoch. A closed FanOut key is kept while readers read
// it, and for the retention time after the last one leaves. Events sent to
// a closed key are discarded and counted in [Stats].Discarded.
// [WithIdleTimeout] closes keys that nobody has touched for its time: no
// Enqueue, Publish, Open, Stream or Events call, and no SSE connection or
// FanOut reader attached. An in-process Queue reader waiting on the channel
// of Stream or in the range of Events does not keep its key open: when the
// key is closed under it, its range ends after the key's last event.
//
// # Shutdown
//
// [Broker.Shutdown] closes every key and lets readers drain what was queued
// until its context ends (closed keys are not forgotten meanwhile); it then
// stops the loop and every goroutine the broker started. If the context ends
// first, every channel is closed at once (events already in a channel stay
// readable by the readers that hold it), what had not reached a channel is
// counted as dropped, and Shutdown returns an error wrapping [ErrDropped]
// (nil if nothing was dropped, the same for every caller). After Shutdown,
// Enqueue, Publish and Close return [ErrShutdown] at once, Stream returns a
// closed channel, and no call blocks forever. A Broker that is not shut
// down keeps its goroutine. A server that serves SSE should shut its
// http.Server down first (see [Handler]), so that clients reconnect rather
// than see their keys closed.
//
// # Server-Sent Events
//
// [Handler] streams one key to a browser's EventSource, or any SSE client,
// over HTTP/1.1 or HTTP/2; docs/protocol.md describes what it sends. It
// reads through a [Source], which [*Broker] implements with
// [Broker.Subscribe].
//
// In FanOut mode a key has any number of connections, each reading the
// history from its own position: the oldest event held, or the event after
// its Last-Event-ID. There is no 409 and no takeover; a request with no ID
// on a closed key gets the held history, then "close", and only a client
// whose Last-Event-ID is the key's last gets 204.
//
// In Queue mode a key has at most one attached connection: a request
// that resumes (it carries a Last-Event-ID header, as a reconnecting
// browser sends) takes the key over from an older connection, which ends
// before the new one takes any event (a write of it blocked on a client
// that stopped reading fails at once); a request without one, even with a
// lastEventId parameter, gets 409 ([WithTakeover]). So a client whose
// first connection died unnoticed before it received any event may get 409
// until the server sees that connection fail. The handler writes from the
// request's goroutine and starts none of its own; it never holds a lock
// while it writes. After a closed key's last event it sends an event named
// "close" and ends the response; a later request for that key gets 204,
// which makes a browser stop reconnecting. Line breaks in Data arrive as
// LF, whether they were LF, CR or CRLF: the format cannot carry the
// difference.
//
// A key the server created or touched (Enqueue, Publish, Stream, Close) is
// a server key; a key that only requests created is a request key, which
// does not count against [WithMaxKeys] and is forgotten when its last
// request leaves, unless the server's first event or Close made it a
// server key.
//
// # Resuming
//
// Over SSE an ID is "<epoch>-<n>": the epoch names this life of the key, so
// that a Last-Event-ID from an earlier life (the key forgotten and created
// again, or the server restarted) is never taken for a position in this
// one: such a client, like one that sends "0", gets the current life from
// its start, with a "gap" for what can no longer be sent. The [Source]
// gives the epoch, so that sources shared by several servers can give the
// same one everywhere.
//
// In FanOut mode a client resumes out of the key's history: every event
// after its ID, or a "gap" for those the history no longer holds, then the
// rest. What follows is about Queue mode.
//
// An event a connection has taken from the queue may still be lost with
// the connection: between the handler's write and the client's parser it
// sits in the server's socket send buffer, each proxy's buffers and the
// client's receive buffer, and no server can see past the first of them.
// So each event an SSE connection takes also enters the key's replay
// window, and a request with Last-Event-ID L (or lastEventId=L in the
// query) first receives the window's events after L, then the live queue;
// the window forgets what L shows the client has.
//
// The guarantee is a bound: a client that resumes from the last ID it
// received, as EventSource does, gets every event exactly once and in
// order, with no "gap", as long as the bytes in flight when its connection
// died fit in the window; otherwise it gets a "gap" event that names
// exactly the IDs it lost, then everything after them. The window holds
// [DefaultReplayBytes] (16 MiB) by default, each event counting 48 bytes
// plus its Name and Data ([Event.Size], [WithReplay]). Size it as at least
// the server's socket send buffer, plus each proxy's buffering, plus the
// client's receive buffer in use; the default covers a Linux host at its
// default settings with one proxy in between, as measured in the README. A
// window costs its events' memory once it fills, up to its bound, only for
// keys that SSE reads; it is freed when the key is forgotten. All windows
// and histories together are bounded by [DefaultReplayBudget]
// ([WithReplayBudget]) plus, for each key holding events, at most the
// larger of 32 KiB and one event: [WithReplayBudget] states the bound.
//
// A browser reconnecting before it received any event sends no
// Last-Event-ID, so for the guarantee to cover the first events too, open
// the stream with lastEventId=0 in the URL. In-process readers (Stream)
// have read-once semantics and no window; an SSE client that resumes before
// events they took gets a "gap" for them.
//
// # Several keys on one connection
//
// [MultiHandler] streams the [FanOut] keys a request names on one
// connection, each event exactly once and in order per key, or an exact
// per-key "sse.gap"; a key's "sse.close" detaches it, and "close" (or 204)
// comes only after every key's. Each event's ID tells its key (the number
// before the first colon) and, through a cursor the source stores
// ([CursorStore]: the Broker in memory, and a shared source across its
// replicas), every key's position, so that a plain EventSource resumes
// every key with its automatic Last-Event-ID, and a request for another
// list of keys resumes the keys it kept. A cursor the source no longer
// holds restarts each key with a gap, never a duplicate. The request's
// goroutine reads every key with [Subscription.Poll]: no goroutine per
// key. [Broker.EventsOf] does the same in process. docs/protocol.md has
// the wire.
//
// # Exposure to untrusted clients
//
// Whoever can reach the handler can name keys, and by default a request
// for a new key creates a request key. Before serving the Internet,
// authenticate in the key function (return an error with StatusCode 401 or
// 403), and set [WithKnownKeysOnly] so that only server keys are served and
// scanning creates nothing, and [WithMaxStreams] to bound concurrent
// connections (and so request keys); [WithMaxKeys] bounds the server's own
// keys. The handler's other defaults (heartbeat, write deadline, 409 for a
// second reader) are safe as they are.
//
// # Costs
//
// An open idle Queue key at default settings costs under 1 KiB: its
// channel holds [DefaultBuffer] events (a request key's, 1: see
// [WithBuffer]). Its overflow, feeder goroutine,
// replay window and timers cost nothing until they are needed, and timers
// cost O(1) per key, never a scan of all keys. A key that SSE streams holds
// up to its replay window in memory (16 MiB at the defaults) once that much
// has streamed. A FanOut key with an event and no reader costs under 1 KiB;
// each event it holds, 48 bytes plus its strings, up to its history's
// bounds; a reader, under 1 KiB plus a buffer of up to 4 KiB of events
// while it ranges, and no goroutine of the broker's. The loop's map of
// keys, and its inbox, shrink back after a burst.
package sse
