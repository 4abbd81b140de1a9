package sse

import "sync"

// writeBufs holds the handler's write buffers between writes. A stream
// takes one when Next returns, and gives it back after the write, so that
// the buffers are as many as the streams writing at once, not as the
// streams open.
var writeBufs = sync.Pool{New: func() any {
	buf := make([]byte, 0, 4<<10)
	return &buf
}}

// maxPooledBuf is the largest write buffer given back to writeBufs: one
// grown larger for a large event stays with its stream, so that the next
// large event does not allocate again, until a heartbeat is due, and is
// then left to the garbage collector, so that the pool does not keep it.
const maxPooledBuf = 64 << 10

// keepWriteBuf gives buf, grown from *bp, back to writeBufs, and returns
// nil; or, if it grew beyond maxPooledBuf, returns it for the stream to
// keep.
func keepWriteBuf(bp *[]byte, buf []byte) (big *[]byte) {
	*bp = buf[:0]
	if cap(buf) > maxPooledBuf {
		return bp
	}
	writeBufs.Put(bp)
	return nil
}

// eventBufs holds room for large batches of events, emptied, between the
// streams that take them (see handler.stream).
var eventBufs = sync.Pool{New: func() any { return new([]Event) }}

// putEvents gives room for events back to eventBufs, emptied: a Source
// may have appended to it and returned no events.
func putEvents(p *[]Event) {
	clear((*p)[:cap(*p)])
	*p = (*p)[:0]
	eventBufs.Put(p)
}

// keptEvents is the room for events a stream keeps while it waits: a
// batch larger than that takes its room from eventBufs.
const keptEvents = 8
