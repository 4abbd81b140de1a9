// Package sse hands messages from a server to many clients: one FIFO queue
// per key, read in process from a channel or by a browser over Server-Sent
// Events.
//
// A server starts long work (a job, an import, a chat reply) and streams its
// progress to the client that asked for it. A [Broker] keeps one queue per
// key, such as a job ID or a user ID; any goroutine may [Broker.Enqueue] or
// [Broker.Publish] into it, and a reader ranges over [Broker.Stream] until
// [Broker.Close] ends the queue:
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
// Each key names one queue. Events enqueued before any reader arrives wait
// for it. Each event is received once: every call to Stream for a key returns
// the same channel, so several readers of one key compete for its events.
// Close means "no more events": readers receive everything enqueued before
// it, then the channel is closed, so a range over it ends. There is no
// sentinel message in process.
//
// The broker numbers each key's events 1, 2, 3, … in queue order and puts
// the number in [Event].ID.
//
// # Ordering
//
// A key's queue is in the order in which the broker's loop receives
// commands. Calls made one after another by one goroutine are received in
// that order, so its events are queued in call order. The events of one
// Enqueue or Publish call are one batch: they stay contiguous, with
// consecutive IDs. Calls made concurrently from several goroutines are
// ordered in some interleaving of whole calls. There is no order between
// keys.
//
// # What is asynchronous
//
// One goroutine, the loop, owns every key's state. Enqueue, Publish and
// Close are commands into the loop's inbox: they return as soon as the inbox
// has accepted them, before the events reach the queue, with no round trip
// per message. An error from them means the command was not accepted, and
// nothing of it happens. A nil error means it will be carried out, even if
// Shutdown follows at once. Stream and Stats wait for the loop's answer.
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
// The loop never blocks on a reader. It hands events to a key's channel
// without waiting; when the channel is full, the events wait in the key's
// overflow, and a goroutine that lives only while the key is backlogged
// moves them into the channel as the reader drains it. A key whose reader is
// slow or gone never delays any other key.
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
// counted in [Stats].Dropped.
//
// # Who closes which channel
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
// from 1. Events sent to a closed key are discarded and counted in
// [Stats].Discarded. [WithIdleTimeout] closes keys that nobody has touched.
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
// [Handler] streams one key's queue to a browser's EventSource, or any SSE
// client, over HTTP/1.1 or HTTP/2; docs/protocol.md describes what it
// sends. It reads through a [Source], which [*Broker] implements with
// [Broker.Subscribe]. A key has at most one attached connection: a request
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
// plus its Name and Data ([WithReplay]). Size it as at least the server's
// socket send buffer, plus each proxy's buffering, plus the client's
// receive buffer in use; the default covers a Linux host at its default
// settings with one proxy in between, as measured in the README. A window
// costs its events' memory once it fills, up to its bound, only for keys
// that SSE reads; it is freed when the key is forgotten, and all windows
// together stay within [DefaultReplayBudget] ([WithReplayBudget]).
//
// A browser reconnecting before it received any event sends no
// Last-Event-ID, so for the guarantee to cover the first events too, open
// the stream with lastEventId=0 in the URL. In-process readers (Stream)
// have read-once semantics and no window; an SSE client that resumes before
// events they took gets a "gap" for them.
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
// An open idle key at default settings costs under 1 KiB: its channel holds
// [DefaultBuffer] events. Its overflow, feeder goroutine, replay window and
// timers cost nothing until they are needed, and timers cost O(1) per key,
// never a scan of all keys. A key that SSE streams holds up to its replay
// window in memory (16 MiB at the defaults) once that much has streamed.
// The loop's map of keys, and its inbox, shrink back after a burst.
package sse
