// Package sseclient reads Server-Sent Events (text/event-stream) in Go, as
// a browser's EventSource does, and resumes a stream across dropped
// connections: against github.com/rocketqueue/sse's handler, every event
// reaches the caller once and in order.
//
//	for ev, err := range sseclient.Events(ctx, "https://example.com/jobs/42/events") {
//		if err != nil {
//			return err // the only error, and the last value
//		}
//		fmt.Println(ev.Name, ev.Data)
//	}
//
// [Events] and [Stream] return an iter.Seq2[Event, error]: the events in
// order, until the stream ends for good, the context ends, or an error the
// client cannot recover from, which comes once, last. Reconnecting is the
// client's business: it reconnects after a network error, a response that
// ends, a connection silent for longer than the idle timeout (a half-open
// connection must not hang forever), and a 429, 502, 503 or 504 answer;
// each time it waits (exponential backoff with full jitter, at least what
// the server's retry field and Retry-After header ask, up to a cap of a
// minute that [WithMaxServerDelay] changes, so that one bad answer cannot
// park it for years) and sends the ID of the last event it received in a
// Last-Event-ID header. A 204 answer ends
// the sequence; any other status, or a 200 that is not text/event-stream,
// ends it with a [*StatusError]. Such a refused response's body is read
// for one idle timeout in all, 5 s at most, and up to 64 KiB: a body that
// trickles in cannot hold the client longer. [WithOnReconnect] tells of
// each reconnection and why.
//
// The parser, [Decoder], follows the WHATWG HTML standard's rules, with a
// limit on line and event size; it works on any io.Reader. It departs from
// them once: an id field holding a control byte (U+0001 to U+001F, or DEL)
// is ignored, as the standard ignores one holding NUL, and the last event ID
// stays as it was. Go's net/http refuses those bytes in a header, so the
// client could not send such an ID back: every reconnection would fail
// before it left the machine, for ever.
//
// # This library's protocol
//
// By default the client understands the control events of this library's
// handler (docs/protocol.md in the repository):
//
//   - "close" ends the sequence without an error: the key is closed and
//     every event was sent. It is not yielded.
//   - "gap", whose data is {"from":F,"to":T}, is yielded as an [Event]
//     named "gap" ([Event.Gap] reads it): events F to T will never reach
//     this client. It is an event, not an error, because the stream goes
//     on after it and the sequence yields an error only when it ends.
//   - an unnamed event whose data is "---terminate---" (the handler's
//     WithTerminateMessage, compatible with Rocket.Libraries.ServerSentEvents)
//     ends the sequence as "close" does. The handler refuses to send such
//     an event otherwise, so the client need not know how it is set up.
//   - on a stream of several keys (the handler's MultiHandler), "sse.gap"
//     and "sse.close" are yielded, as [Event]s named [EventKeyGap] and
//     [EventKeyClose]: one key's gap ([Event.Gap] reads it), and one key's
//     end; [Event.Key] tells any event's key, and "close" comes after the
//     last key's "sse.close".
//   - other events whose name starts with "sse." are skipped: the handler
//     reserves those names for control events of later versions.
//
// [WithPlain] turns all of this off, for other servers.
//
// The first request carries no Last-Event-ID (unless [WithLastEventID] sets
// one, or the request function sets the header itself). In Queue mode that
// is how the handler tells a new reader from one that reconnects: a key
// that another connection holds answers 409, a [*StatusError], rather than
// being taken from that reader. A page opens its EventSource with
// ?lastEventId=0, so that a first connection lost before its first event
// still resumes; this client needs no such parameter. Once a request may
// have reached the server (it was sent whole, or answered), every later one
// carries Last-Event-ID: the last ID received or, before any, "0" ("nothing
// yet"). So a first connection that died before its first event resumes
// from the start, gets again what it took, and takes the key over from its
// own stale connection. In FanOut mode "0" reads the key from its start,
// with a gap for what the history no longer holds, where no ID reads from
// the oldest event held.
//
// # Exactly once
//
// Against this library's handler, with the default protocol handling, a
// range yields each event of the key once, in order, whatever cuts its
// connections and wherever (an event cut short is dropped, and sent again
// after the reconnection), within the server's documented window: in Queue
// mode, as long as what a dead connection had in flight fits in the
// replay window (16 MiB by default); in FanOut mode, as long as the key's
// history still holds the events. Beyond that the client gets a "gap"
// naming exactly what it lost. The guarantee holds per range: a new range
// starts over, from [WithLastEventID]'s ID. It holds for each key of a
// stream of several keys too: their IDs say where the client is in every
// key (every key's position, or a cursor the server stored and the keys
// moved since), and the client sends them back as it sends any ID. To
// follow another list of keys and keep the place in the keys kept, start a
// new range on the new list's URL with [WithLastEventID] and the last ID
// of the old one; a key the server can no longer place comes with an
// "sse.gap" from its first event to its newest.
package sseclient
