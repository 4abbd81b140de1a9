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
// Events are checked in the caller's goroutine before anything is sent: a
// Name with CR, LF or NUL, or a Name or Data that is not valid UTF-8, fails
// the whole call with [ErrInvalidEvent].
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
// alone), until there is room or their context ends. With
// [WithMaxPending] and the [Block] policy, Enqueue and Publish to a key
// whose overflow is full also wait, for that key only; Close never waits for
// a congested key. Near the [WithMaxKeys] bound, Enqueue and Publish to a
// new key wait for the loop's answer. By default overflow is unbounded and
// nothing is dropped;
// [DropOldest] and [DropNewest] bound it by dropping events, counted in
// [Stats].Dropped.
//
// # Who closes which channel
//
// Only the broker closes a key's channel, and only after every event
// enqueued before the Close has been handed to it. Readers never close it.
// A closed key is remembered for the retention time ([WithRetention],
// [DefaultRetention]), so a late reader sees an ended stream; then it is
// forgotten with anything still unread, and the key may start afresh, with
// IDs from 1. Events sent to a closed key are discarded and counted in
// [Stats].Discarded. [WithIdleTimeout] closes keys that nobody has touched.
//
// # Shutdown
//
// [Broker.Shutdown] closes every key and lets readers drain what was queued
// until its context ends (closed keys are not forgotten meanwhile); it then
// stops the loop and every goroutine the broker started. If the context ends
// first, every channel is closed at once (events already in a channel stay
// readable by the readers that hold it) and what had not reached a channel
// is counted as dropped. After Shutdown, Enqueue, Publish and Close return
// [ErrShutdown] at once, Stream returns a closed channel, and no call blocks
// forever. A Broker that is not shut down keeps its goroutine. A server that
// serves SSE should shut its http.Server down first (see [Handler]), so that
// clients reconnect rather than see their keys closed.
//
// # Server-Sent Events
//
// [Handler] streams one key's queue to a browser's EventSource, or any SSE
// client, over HTTP/1.1 or HTTP/2. It reads through a [Source], which
// [*Broker] implements with [Broker.Subscribe]. A key has at most one
// attached connection: a request that resumes (it carries a Last-Event-ID
// header, as a reconnecting browser sends) takes the key over from an older
// connection, which ends before the new one takes any event; a request
// without one, even with a lastEventId parameter, gets 409 ([WithTakeover]).
// So a client whose first connection died unnoticed before it received any
// event may get 409 until the server sees that connection fail.
// The handler writes from the request's goroutine and starts none of its
// own; it never holds a lock while it writes. After a closed key's last
// event it sends an event named "close" and ends the response; a later
// request for that key gets 204, which makes a browser stop reconnecting.
//
// # Resuming
//
// An event a connection has taken from the queue may still be lost with
// the connection. So each event an SSE connection takes also enters the
// key's replay window ([WithReplay], [DefaultReplay] events), allocated only
// for keys that SSE reads. A request with Last-Event-ID L (or lastEventId=L
// in the query) first receives the window's events after L, then the live
// queue; the window forgets what L shows the client has. The guarantee is
// at-least-once delivery across reconnects, with duplicates removed by ID:
// exactly once and in order for a client that resumes from the last ID it
// received, as EventSource does, as long as no more than the window's size
// of events were taken and lost at once. If more were, the client is told:
// an event named "gap" carries the missing IDs. A browser reconnecting
// before it received any event sends no Last-Event-ID, so for the guarantee
// to cover the first events too, open the stream with lastEventId=0 in the
// URL. In-process readers (Stream) have read-once semantics and no window.
//
// # Exposure to untrusted clients
//
// Whoever can reach the handler can name keys, and by default a request
// for a new key creates it. Before serving the Internet, authenticate in
// the key function (return an error with StatusCode 401 or 403), and set
// [WithKnownKeysOnly] so that unknown keys get 404 and scanning creates
// nothing, [WithMaxKeys] to bound the broker, and [WithMaxStreams] to bound
// concurrent connections. The handler's other defaults (heartbeat, write
// deadline, 409 for a second reader) are safe as they are.
//
// # Costs
//
// An open idle key at default settings costs under 1 KiB: its channel holds
// [DefaultBuffer] events. Its overflow, feeder goroutine, replay window and
// timers cost nothing until they are needed, and timers cost O(1) per key,
// never a scan of all keys.
package sse
