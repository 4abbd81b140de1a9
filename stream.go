package sse

// Stream returns key's channel, creating the key's queue if it is new.
// Every call for a key returns the same channel: readers compete, and each
// event is received once. The loop closes the channel after the last event of
// a closed key, so ranging over it ends; a key that was closed before it held
// anything gets a closed channel at once, and so does every key after
// [Broker.Shutdown].
//
// Stream counts as activity for [WithIdleTimeout]. At the [WithMaxKeys]
// bound, Stream of a new key returns a closed channel. It waits for the loop's
// answer, so it costs a round trip: call it once per reader, not per event.
func (b *Broker[K]) Stream(key K) <-chan Event {
	select {
	case <-b.done:
		return closedChan
	default:
	}
	reply := make(chan (<-chan Event), 1)
	b.post(command[K]{op: opStream, key: key, arg: reply})
	select {
	case ch := <-reply:
		return ch
	case <-b.done:
		select {
		case ch := <-reply:
			return ch
		default:
			return closedChan
		}
	}
}

// stream handles opStream. During Shutdown it creates no key.
func (l *loop[K]) stream(key K) <-chan Event {
	if l.quitting {
		if t := l.topics[key]; t != nil {
			return t.ch
		}
		return closedChan
	}
	t := l.open(key)
	if t == nil {
		return closedChan // refused by the key limit
	}
	return t.ch
}

// publish numbers evs and appends them to key's queue: into its channel
// while it has room and nothing waits before them, else into its overflow.
func (l *loop[K]) publish(key K, evs []Event) {
	t := l.open(key)
	if t == nil || t.closed { // refused by the key limit, or closed
		l.stats.Discarded += uint64(len(evs))
		return
	}
	l.stats.Enqueued += uint64(len(evs))
	for i := range evs {
		t.seq++
		evs[i].ID = t.seq
	}
	bl := t.backlog
	if bl == nil {
		for len(evs) > 0 && trySend(t.ch, evs[0]) {
			evs = evs[1:]
		}
		if len(evs) == 0 {
			return
		}
		bl = l.newBacklog()
		t.backlog = bl
		l.backlogged[t] = struct{}{}
	}
	bl.mu.Lock()
	if !bl.feeding && bl.queue.len() == 0 {
		// The last feeder sent everything before it stopped feeding, so
		// these events may go straight into the channel again.
		for len(evs) > 0 && trySend(t.ch, evs[0]) {
			evs = evs[1:]
		}
	}
	bl.queue.push(l.admit(bl, evs)...)
	start := !bl.feeding && bl.queue.len() > 0
	bl.feeding = bl.feeding || start
	feeding, waiting := bl.feeding, bl.queue.len()
	bl.mu.Unlock()
	if start {
		l.b.feeders.Add(1)
		go l.b.feed(t, bl)
	}
	if !feeding { // everything went into the channel after all
		l.endBacklog(t)
		return
	}
	if cfg := l.b.cfg; cfg.policy == Block && waiting >= cfg.maxPending {
		l.setCongested(key, true)
	}
}

// admit applies the overflow policy to events bound for bl's queue and
// returns those that may enter it. The caller holds bl.mu.
func (l *loop[K]) admit(bl *backlog, evs []Event) []Event {
	cfg := l.b.cfg
	if cfg.maxPending < 0 || cfg.policy == Block {
		return evs
	}
	excess := bl.queue.len() + len(evs) - cfg.maxPending
	if excess <= 0 {
		return evs
	}
	switch cfg.policy {
	case DropNewest:
		excess = min(excess, len(evs))
		l.stats.Dropped += uint64(excess)
		return evs[:len(evs)-excess]
	default: // DropOldest
		if len(evs) > cfg.maxPending {
			l.stats.Dropped += uint64(len(evs) - cfg.maxPending)
			excess -= len(evs) - cfg.maxPending
			evs = evs[len(evs)-cfg.maxPending:]
		}
		for ; excess > 0; excess-- {
			bl.queue.dropOldest()
			l.stats.Dropped++
		}
		return evs
	}
}

func trySend(ch chan Event, ev Event) bool {
	select {
	case ch <- ev:
		return true
	default:
		return false
	}
}

// feed is a backlogged key's feeder goroutine. It takes the key's whole
// overflow at once and sends it into the channel, blocking as the loop
// must not, until it finds the overflow empty; then it returns. It returns
// early when the loop closes stop: the key was forgotten, or Shutdown's
// deadline passed. Its last act is to tell the loop, which then ends the
// backlog or, if it started another feeder meanwhile, lets that one go on.
// Under the Block policy it also tells the loop after each batch it takes,
// so that the loop can lift the key's congestion.
func (b *Broker[K]) feed(t *topic[K], bl *backlog) {
	defer b.feeders.Done()
	ch, block := t.ch, b.cfg.policy == Block
	bl.mu.Lock()
	batch := bl.spare
	bl.spare = fifo{}
	for bl.queue.len() > 0 {
		batch, bl.queue = bl.queue, batch
		bl.unsent.Store(int64(batch.len()))
		bl.mu.Unlock()
		if block {
			b.post(command[K]{op: opFed, arg: t})
		}
		for batch.len() > 0 {
			// A full channel is seen without its lock: go straight to waiting.
			if len(ch) == cap(ch) || !trySend(ch, batch.front()) {
				bl.unsent.Store(int64(batch.len()))
				select {
				case ch <- batch.front():
				case <-bl.stop:
					bl.mu.Lock()
					batch.clear()
					bl.feeding, bl.spare = false, batch
					bl.mu.Unlock()
					b.post(command[K]{op: opFed, arg: t})
					return
				}
			}
			batch.dropOldest()
		}
		bl.unsent.Store(0)
		bl.mu.Lock()
	}
	bl.feeding, bl.spare = false, batch
	bl.mu.Unlock()
	b.post(command[K]{op: opFed, arg: t})
}

// fed handles opFed: t's feeder took a batch, or returned. When the feeder
// has returned with nothing left to send, the backlog ends.
func (l *loop[K]) fed(t *topic[K]) {
	bl := t.backlog
	if bl == nil {
		return // a late word from a feeder whose backlog has ended
	}
	bl.mu.Lock()
	feeding, waiting := bl.feeding, bl.queue.len()
	bl.mu.Unlock()
	if cfg := l.b.cfg; cfg.policy == Block && !t.closed && waiting < cfg.maxPending {
		l.setCongested(t.key, false)
	}
	if feeding {
		return
	}
	// The feeder has returned. Unless it was stopped, it left the queue
	// empty: publish starts a feeder whenever it queues events.
	if bl.stopping {
		l.stats.Dropped += uint64(bl.unsent.Load()) + uint64(waiting)
		bl.mu.Lock()
		bl.queue.clear()
		bl.mu.Unlock()
	}
	l.endBacklog(t)
}

// endBacklog ends t's backlog once its feeder has returned. A closed key's
// channel closes here, after its last event.
func (l *loop[K]) endBacklog(t *topic[K]) {
	bl := t.backlog
	t.backlog = nil
	delete(l.backlogged, t)
	if t.closed {
		close(t.ch)
	} else {
		l.setCongested(t.key, false)
	}
	l.recycle(bl)
}

// stopFeeder stops the feeder of a key being forgotten: what it has not
// sent is dropped, and its channel closes when it has returned.
func (l *loop[K]) stopFeeder(t *topic[K]) {
	if bl := t.backlog; !bl.stopping {
		bl.stopping = true
		close(bl.stop)
	}
}

// abandon ends every backlog at once when Shutdown's deadline has passed:
// it stops the feeders, waits for them, counts what they did not send as
// dropped, and closes the channels.
func (l *loop[K]) abandon() {
	for t := range l.backlogged {
		l.stopFeeder(t)
	}
	l.b.feeders.Wait()
	for t := range l.backlogged {
		bl := t.backlog
		l.stats.Dropped += uint64(bl.unsent.Load()) + uint64(bl.queue.len())
		bl.queue.clear()
		t.backlog = nil
		close(t.ch)
	}
	clear(l.backlogged)
}
