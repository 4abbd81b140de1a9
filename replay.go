package sse

import "sync/atomic"

// A window is a key's replay window: the events SSE connections took from
// the key that their clients have not yet confirmed by resuming after
// them, so that a client whose connection died with events in flight gets
// them again. It is bounded by events and bytes ([WithReplay]) and, with
// every other key's window, by the broker's budget ([WithReplayBudget]).
// Its ring grows as it fills and is freed when the key is forgotten. Who
// owns it is said at [subscription.Taken].
type window struct {
	events fifo   // oldest first
	bytes  int    // the sum of Event.Size over events
	taken  uint64 // the ID of the last event taken, even if the window keeps none
	// unsent is the ID of the window's newest event if a connection took
	// it from the channel and ended before it wrote it (see
	// subscription.Close), else 0: nobody has it, so the next connection
	// gets it first, resuming or not.
	unsent uint64
}

// windowFloor is what a window keeps when the budget is used up: its newest
// events up to this size, or its newest event alone. It is the most
// [Handler] writes at once, so that a write that fails loses nothing.
const windowFloor = flushBytes

// add records that a connection took ev. The window drops its oldest events
// to stay within the key's bounds; if the broker's budget is used up, it
// drops its own oldest rather than grow, down to windowFloor. used is the
// budget's counter, shared by every window of the broker.
func (w *window) add(ev Event, c *config, used *atomic.Int64) {
	w.taken, w.unsent = ev.ID, 0
	if c.replayEvents == 0 || c.replayBytes == 0 {
		return
	}
	size := ev.Size()
	for w.events.len() > 0 && (w.events.len() >= c.replayEvents || w.bytes+size > c.replayBytes) {
		w.dropOldest(used)
	}
	if used.Add(int64(size)) > c.replayBudget {
		for w.events.len() > 0 && w.bytes+size > windowFloor && used.Load() > c.replayBudget {
			w.dropOldest(used)
		}
	}
	w.events.push(ev)
	w.bytes += size
}

// confirm drops the events up to last: the client has them.
func (w *window) confirm(last uint64, used *atomic.Int64) {
	for w.events.len() > 0 && w.events.front().ID <= last {
		w.dropOldest(used)
	}
}

func (w *window) dropOldest(used *atomic.Int64) {
	size := w.events.front().Size()
	w.events.dropOldest()
	w.bytes -= size
	used.Add(-int64(size))
}

// release frees the window and gives its bytes back to the budget.
func (w *window) release(used *atomic.Int64) {
	used.Add(-int64(w.bytes))
	w.events, w.bytes = fifo{}, 0
}
