// Package conformance is the behaviour that every implementation of the
// interfaces of github.com/rocketqueue/sse must show, checked two ways:
// an example-based suite ([Run]) and a seeded, randomized history checker
// with fault injection ([Check]). The in-process [sse.Broker] runs both,
// and so does any other implementation (a broker shared by several
// servers, such as ssejs), so that code written against [sse.Publisher],
// [sse.Reader] and [sse.Source] works with either.
//
// # The suite
//
// An implementation's test calls [Run] with a function that makes a fresh
// instance for each test, in the mode and with the retention each asks
// for:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, func(t *testing.T, c conformance.Config) conformance.Impl[string] {
//			b := sse.New[string](sse.WithMode(c.Mode), ...)
//			t.Cleanup(func() { b.Shutdown(context.Background()) })
//			return conformance.Impl[string]{Publisher: b, Reader: b, Source: b}
//		}, strconv.Itoa)
//	}
//
// The suite waits at most [Patience] for anything, with real time, so that
// an implementation over a network passes it as the in-process one does.
//
// In FanOut mode it also serves the implementation's Source through
// [sse.MultiHandler] and reads several keys on one connection, on the wire
// (docs/protocol.md, "Several keys on one connection"): every key's events
// once and in order, each key's sse.close after them and close after
// every key's; resumes after cuts with the last ID, exactly once, and 204
// once every key is closed; the exact per-key sse.gap of a trimmed
// history; a key's sse.close closing its subscription while the
// connection goes on; refusals of the whole request (the key function's,
// an unknown key, a list over the bound, an ID of another request); one
// key served as [sse.Handler] serves it. When the Source is an
// [sse.CursorStore] (the root Broker and ssejs's are), these cases run
// twice: with its store shown to MultiHandler, so that IDs are of the
// cursor form, and hidden, so that they are of the vector form, as a
// Source without a store gets them. The cursor runs add the cases proper
// to cursors: a request for another list of keys resuming from the old
// list's last ID (each kept key exactly once, wherever it stands now, a
// new key from its start); a request of 1,000 keys cut again and again
// and resumed, whose IDs stay within 512 bytes; and an ID naming a cursor
// the store does not hold, which restarts every key with an sse.gap up to
// its newest event, never an event again without a gap, never 204 or
// close as if the keys were done.
//
// # The checker
//
// [Check] states the rule and searches for histories that break it, the
// way Jepsen checks histories against a model. Each round draws, from its
// seed, a setup (mode, overflow policy, a small replay window or history,
// the largest event) and a mix of operations, runs them for a few
// seconds against a fresh deployment of the backend while injecting the
// backend's faults, then heals every fault, closes every key, drains it,
// and checks what every reader recorded and what every producer was
// told.
//
// Operations: Enqueue and Publish of single events, batches, empty
// batches, events at the size limit and just over it, events the backend
// must refuse (reserved names, bad UTF-8, line breaks in a name), events
// published after their key's Close; Open and Close; in-process readers
// (Reader.Events) that start (from the oldest event held, after an ID, or
// live), stop after some events or some time, and stall; SSE clients
// (sseclient, through [sse.Handler] of each process, behind a proxy that
// cuts connections at random byte offsets) that start with no
// Last-Event-ID, with "0", with an ID of another life or of this one,
// resume, are cut, stall and stop; browser tabs that come back with the
// last ID they had. In FanOut mode, multi-key readers too: SSE clients
// that follow several keys on one connection (sseclient through
// [sse.MultiHandler], behind a proxy of their own that cuts more often,
// and tabs that come back with their last ID), and in-process ranges over several keys where the
// backend's Reader has an EventsOf method as [sse.Broker.EventsOf]; a
// quarter of the one-key clients go through MultiHandler. Where the
// backend's Source stores cursors, three rounds in four show the store to
// MultiHandler (cursor IDs) and one hides it (vector IDs); in a fifth of
// the rounds the tabs follow more keys than [sse.CursorDelta], so that
// streams store cursors again as their keys move. Each event's
// data starts with a token of its own, so that every read maps back to
// the producer call that made it.
//
// Faults are the backend's own ([Fault]): a backend lists what it can do
// to itself (restart, kill or stall a replica, sever or stall its engine
// connection through a [NetProxy], kill a leader, restart the engine on its
// store, expire a key's data now) and says what each loses ([Loss]):
// nothing (durable), a key's life, or every key's life (the in-process
// broker across a restart). The checker injects them one at a time, holds
// its producers back while one that loses data is injected, and expects
// nothing lost beyond what the backend said. A later backend plugs in its
// own faults; the checker does not change.
//
// What it checks, per key and per life of a key (over SSE the epoch of
// the "<epoch>-<n>" IDs; the checker maps each epoch to its life from what
// the source's Subscribe returned):
//
//   - Read means dispatched by the client's parser or yielded to an
//     in-process reader: what a dead connection swallowed does not count.
//     Every event read was published, with its name and data, on its key.
//   - No reader gets an event twice; IDs only go forward within a life.
//   - Every event a reader misses is named by a gap before anything after
//     it: over SSE in both modes (a Queue connection is told of what
//     others took), and in process in FanOut mode.
//   - A range that ends as finished (close, 204, or an in-process range
//     that ends without error) comes after its key's Close, and after
//     every event of the life or its gap.
//   - Queue: no event is handed to two readers, except again, out of the
//     replay window, to a client that resumes from before it. Every event
//     stored for sure is read by someone, or was handed to a connection
//     (whose client, resuming, gets it again or a gap), or is named in a
//     gap to a reader of the key: an event whose hand-out was lost (a
//     take whose floor write's ack was lost, events an in-process reader
//     took and did not yield when it stopped) is named to the key's next
//     reader that can be told; which reader that is, is not the
//     contract's. Under an
//     overflow policy that drops events, in-process readers are not told
//     of drops, so only the rules on clients hold.
//   - FanOut: every event stored for sure reaches every reader that stays
//     (the final phase reads each key from its start) or a gap covers it.
//   - A call that returned nil stored its events once (one ID in one
//     life, a batch's IDs consecutive, a producer's calls in order); one
//     that returned ErrInvalidEvent, ErrInvalidKey, ErrClosed or
//     ErrShutdown stored nothing; any other error stored them at most once.
//     A call after its key's Close returned is never read in that life.
//   - A multi-key reader is checked as one reader per key, by every rule
//     above; a key's sse.close ends its reader as finished. Nothing of a
//     key comes after its sse.close, and close (or 204) only after every
//     key's. Each multi-key client keeps what it knows of every key (the
//     vector), updated by each event's ID: every entry of the vector
//     form, the moved keys' entries of the cursor form; each request,
//     whether a tab's with its last ID or sseclient's reconnection, counts
//     for each key with the key's entry of the vector its ID stands for.
//     An ID that cannot be read, one naming a moved key out of the
//     request's range, or one without its own key's entry is a violation;
//     so is a cursor the server loads that holds, for a key that did not
//     move since, another entry than the client's. A request from a
//     cursor the store forgot (a restart of the in-process broker), or a
//     key whose entry the cursor does not know ("!"), resumes the key as
//     from "0": a gap up to its newest event is its due; a key the
//     client had closed is followed again (by a new reader of the key,
//     from "0"), since the server cannot know it was closed; the epochs
//     CursorStore.Newest returns map to lives as Subscribe's do.
//   - Once every fault is healed and every key closed, every reader ends
//     within [DefaultHangBound]: no hang.
//   - The round's goroutines are gone at its end (goleak).
//
// A violation names the rule, the reader, and who had what it missed;
// Report.Traces has the items of the readers it names.
//
// # Plugging a backend in
//
// A backend's test gives [Check] a [Backend]: its name, its [Caps]
// (overflow policies, batch atomicity, the largest event size) and a Start
// function that makes a fresh [Deployment] for a [Setup]: its processes
// (each an [Impl], asked for again after each fault, since a restart
// replaces it), its faults and Stop.
//
//	func TestChecker(t *testing.T) {
//		conformance.Check(t, conformance.Backend{
//			Name: "mybackend",
//			Start: func(t testing.TB, s conformance.Setup) *conformance.Deployment {
//				b := mybackend.New(s.Mode, s.Retain, s.MaxEventSize)
//				return &conformance.Deployment{
//					Procs:  1,
//					Impl:   func(int) conformance.Impl[string] { return conformance.Impl[string]{Publisher: b, Reader: b, Source: b} },
//					Faults: []conformance.Fault{ /* what it can do to itself */ },
//					Stop:   func() { b.Shutdown(context.Background()) },
//				}
//			},
//		})
//	}
//
// # Running it
//
// Check runs the backend's regression seeds (testdata/seeds.txt: every
// violation found becomes one), then fresh rounds for a bounded time: 60 s
// per backend when the environment variable CI is set, 12 s otherwise.
// Each round is a subtest named by its seed, printed when it starts (so
// that a crash names it too) and in the failure. Flags, after the package
// in the go test command:
//
//	-check.seed=N   replay the round of seed N only
//	-check.time=30m run fresh rounds for this long
//	-check.v        log each round's setup and figures, every violation
//	                (not the first 8 of each rule) and every reader's trace
//
// The checker asserts invariants, not timings, except the hang bound,
// which is generous. Timing still varies between runs of a seed: a seed
// fixes the round's choices, not the goroutines' schedule.
package conformance
