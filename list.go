package sse

// list is an intrusive doubly linked list of topics, oldest stamp first.
// The loop keeps two: open keys by last touch, closed keys by close time.
// Both durations are fixed, so list order is deadline order and each timer
// operation is O(1).
type list[K comparable] struct {
	head, tail *topic[K]
	n          int
}

func (l *list[K]) pushBack(t *topic[K], stamp int64) {
	t.stamp = stamp
	t.prev, t.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = t
	} else {
		l.head = t
	}
	l.tail = t
	l.n++
}

func (l *list[K]) remove(t *topic[K]) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		l.head = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	} else {
		l.tail = t.prev
	}
	t.prev, t.next = nil, nil
	l.n--
}
