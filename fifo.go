package sse

// fifo is a growable ring buffer of events. Its size is 0 or a power of
// two, so that indexes wrap with a mask.
type fifo struct {
	buf  []Event
	head int // index of the oldest event
	n    int // number of events
}

func (q *fifo) len() int { return q.n }
func (q *fifo) cap() int { return len(q.buf) }

// push appends evs, in order.
func (q *fifo) push(evs ...Event) {
	for q.n+len(evs) > len(q.buf) {
		q.grow()
	}
	tail := (q.head + q.n) & (len(q.buf) - 1)
	k := copy(q.buf[tail:], evs)
	copy(q.buf, evs[k:])
	q.n += len(evs)
}

// front returns the oldest event; the fifo must not be empty.
func (q *fifo) front() Event { return q.buf[q.head] }

// dropOldest removes the oldest event.
func (q *fifo) dropOldest() {
	q.buf[q.head] = Event{}
	q.head = (q.head + 1) & (len(q.buf) - 1)
	q.n--
}

// clear drops every event.
func (q *fifo) clear() {
	for q.n > 0 {
		q.dropOldest()
	}
}

// at returns the ith event, oldest first.
func (q *fifo) at(i int) Event { return q.buf[(q.head+i)&(len(q.buf)-1)] }

func (q *fifo) grow() {
	buf := make([]Event, max(2*len(q.buf), 64))
	k := copy(buf, q.buf[q.head:min(q.head+q.n, len(q.buf))])
	copy(buf[k:], q.buf[:q.n-k])
	q.buf, q.head = buf, 0
}
