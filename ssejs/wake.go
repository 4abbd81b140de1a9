package ssejs

import "sync"

// A wakeSet holds the wake functions of the subscriptions of a key that
// polled and found nothing ready (see [sse.Subscription]'s Poll), by
// subscription: whatever may make something ready for them (a message, the
// hub's end, a takeover, a lease lost) fires the set, which calls each
// function once, outside every lock, and forgets it. Its zero value is
// empty and ready to use.
type wakeSet struct {
	mu sync.Mutex
	m  map[any]func() // guarded by mu: allocated on the first add
}

// add registers wake for the subscription s, replacing s's earlier one.
func (w *wakeSet) add(s any, wake func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = make(map[any]func(), 1)
	}
	w.m[s] = wake
}

// drop forgets s's wake, if any, without calling it.
func (w *wakeSet) drop(s any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.m, s)
}

// fire calls, and forgets, every registered wake.
func (w *wakeSet) fire() {
	w.mu.Lock()
	if len(w.m) == 0 {
		w.mu.Unlock()
		return
	}
	wakes := make([]func(), 0, len(w.m))
	for _, f := range w.m {
		wakes = append(wakes, f)
	}
	clear(w.m)
	w.mu.Unlock()
	for _, f := range wakes {
		f()
	}
}
