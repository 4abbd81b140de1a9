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
	if t.backlog == nil {
		for len(evs) > 0 && trySend(t.ch, evs[0]) {
			evs = evs[1:]
		}
		if len(evs) == 0 {
			return
		}
	}
	evs = l.admit(t, evs)
	if len(evs) == 0 {
		return
	}
	if t.backlog == nil {
		l.startFeeder(t, evs)
		return
	}
	for _, ev := range evs {
		t.backlog.overflow.push(ev)
	}
	if cfg := l.b.cfg; cfg.policy == Block && t.backlog.overflow.len() >= cfg.maxPending {
		l.setCongested(key, true)
	}
}

// admit applies the overflow policy to events bound for t's overflow and
// returns those that may enter it.
func (l *loop[K]) admit(t *topic[K], evs []Event) []Event {
	cfg := l.b.cfg
	if cfg.maxPending < 0 || cfg.policy == Block {
		return evs
	}
	waiting := 0
	if t.backlog != nil {
		waiting = t.backlog.overflow.len()
	}
	excess := waiting + len(evs) - cfg.maxPending
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
			t.backlog.overflow.dropOldest()
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

// startFeeder makes t backlogged with evs, the events that found its channel
// full, and starts the goroutine that moves them into the channel. The first
// batch goes straight to the feeder; the rest wait in the overflow.
func (l *loop[K]) startFeeder(t *topic[K], evs []Event) {
	bl := &backlog{
		next: make(chan []Event, 1),
		stop: make(chan struct{}),
	}
	n := min(len(evs), batchSize)
	bl.batch = append(make([]Event, 0, batchSize), evs[:n]...)
	for _, ev := range evs[n:] {
		bl.overflow.push(ev)
	}
	t.backlog = bl
	l.backlogged[t] = struct{}{}
	if cfg := l.b.cfg; cfg.policy == Block && bl.overflow.len() >= cfg.maxPending {
		l.setCongested(t.key, true)
	}
	l.b.feeders.Add(1)
	go l.b.feed(t, bl, bl.batch)
}

// feed is a backlogged key's feeder goroutine. It sends the loop's batches
// into the key's channel, blocking as a reader would not, so the loop never
// has to; after each batch it asks the loop for the next. It returns when the
// loop answers with nil (the overflow is empty), when the key is forgotten,
// or when Shutdown's deadline has passed.
func (b *Broker[K]) feed(t *topic[K], bl *backlog, batch []Event) {
	defer b.feeders.Done()
	ch := t.ch
	for batch != nil {
		for i := range batch {
			select {
			case ch <- batch[i]:
			case <-bl.stop:
				bl.unsent = len(batch) - i
				b.post(command[K]{op: opRefill, arg: t})
				return
			case <-b.abort:
				bl.unsent = len(batch) - i
				return
			}
		}
		b.post(command[K]{op: opRefill, arg: t})
		select {
		case batch = <-bl.next:
		case <-b.abort:
			return
		}
	}
}

// refill answers a feeder that has sent its batch, or stopped early: with
// the next batch from the overflow, or with nil when the key has drained.
func (l *loop[K]) refill(t *topic[K]) {
	bl := t.backlog
	if bl.stopping {
		l.stats.Dropped += uint64(bl.unsent + bl.overflow.len())
		l.endFeeder(t)
		return
	}
	if bl.overflow.len() == 0 {
		l.endFeeder(t)
		return
	}
	clear(bl.batch)
	bl.batch = bl.overflow.take(bl.batch[:0], batchSize)
	bl.next <- bl.batch
	if cfg := l.b.cfg; cfg.policy == Block && !t.closed && bl.overflow.len() < cfg.maxPending {
		l.setCongested(t.key, false)
	}
}

// endFeeder tells t's feeder to return and ends t's backlog. A closed key's
// channel closes here, after its last event.
func (l *loop[K]) endFeeder(t *topic[K]) {
	t.backlog.next <- nil
	t.backlog = nil
	delete(l.backlogged, t)
	if t.closed {
		close(t.ch)
	} else {
		l.setCongested(t.key, false)
	}
}

// stopFeeder stops the feeder of a key being forgotten; its refill request
// then ends the backlog and closes the channel.
func (l *loop[K]) stopFeeder(t *topic[K]) {
	t.backlog.stopping = true
	close(t.backlog.stop)
}

// abandon ends every backlog at once when Shutdown's deadline has passed:
// it waits for the feeders (they watch abort), counts what they did not send
// as dropped, and closes the channels.
func (l *loop[K]) abandon() {
	l.b.feeders.Wait()
	for t := range l.backlogged {
		bl := t.backlog
		n := bl.unsent + bl.overflow.len()
		select {
		case batch := <-bl.next:
			n += len(batch)
		default:
		}
		l.stats.Dropped += uint64(n)
		t.backlog = nil
		close(t.ch)
	}
	clear(l.backlogged)
}
