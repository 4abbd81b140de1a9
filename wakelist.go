package sse

import (
	"sync"
	"sync/atomic"
)

// A wakeList holds the wakes that [Subscription.Poll] calls found nothing
// and registered on one key, each until the key's next change calls it: a
// FanOut key's history holds one for its readers, a Queue key's topic one
// for its connection. It is made by the first Poll that waits on the key.
// Registering, dropping and calling take its lock for a few steps only;
// the wakes are called outside it, so a wake may register again at once.
type wakeList struct {
	mu         sync.Mutex
	head, tail *pollWake // guarded by mu: the registered wakes, oldest first
	gen        uint64    // guarded by mu: how many times fire has started
}

// A pollWake is one subscription's place in its key's wakeList: the
// subscription makes it once, and registers it again after each call.
type pollWake struct {
	list *wakeList // immutable

	// Guarded by list.mu.
	wake       func()
	prev, next *pollWake
	gen        uint64 // list.gen when it was registered
	in         bool   // it is in list
}

// wakeListAt returns the list that p holds, making it if there is none.
func wakeListAt(p *atomic.Pointer[wakeList]) *wakeList {
	if l := p.Load(); l != nil {
		return l
	}
	p.CompareAndSwap(nil, new(wakeList))
	return p.Load()
}

// add registers w, to call wake at the list's next fire; if w is
// registered already, it now calls wake.
func (l *wakeList) add(w *pollWake, wake func()) {
	l.mu.Lock()
	w.wake = wake
	if !w.in {
		w.in, w.gen = true, l.gen
		w.prev, w.next = l.tail, nil
		if l.tail != nil {
			l.tail.next = w
		} else {
			l.head = w
		}
		l.tail = w
	}
	l.mu.Unlock()
}

// remove drops w if it is registered. A fire that has already taken it may
// still call its wake.
func (l *wakeList) remove(w *pollWake) {
	l.mu.Lock()
	if w.in {
		l.unlink(w)
	}
	l.mu.Unlock()
}

// unlink takes w out of the list; the caller holds mu.
func (l *wakeList) unlink(w *pollWake) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next, w.wake, w.in = nil, nil, nil, false
}

// fire calls, once each, the wakes registered before it started, and
// unregisters them; those registered meanwhile wait for the next fire. It
// is called after the change it signals is visible to Poll (an event
// stored, a channel closed) and holds no lock while it calls a wake. l may
// be nil: no Poll has waited on the key.
func (l *wakeList) fire() {
	if l == nil {
		return
	}
	var batch [8]func()
	l.mu.Lock()
	l.gen++
	gen := l.gen
	for {
		n := 0
		for w := l.head; w != nil && w.gen < gen && n < len(batch); w = l.head {
			batch[n] = w.wake
			n++
			l.unlink(w)
		}
		more := l.head != nil && l.head.gen < gen
		l.mu.Unlock()
		for i, wake := range batch[:n] {
			batch[i] = nil
			wake()
		}
		if !more {
			return
		}
		l.mu.Lock()
	}
}
