package ssejs

import "time"

// DropAcks makes b's next n publishes act as if their acknowledgement was
// lost after the server stored them; after runs then, given the subject's
// last message's first event ID, or 0.
func DropAcks[K comparable](b *Broker[K], n int, after func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dropAcks = n
	if after != nil {
		b.afterDrop = func(*batch) { after() }
	} else {
		b.afterDrop = nil
	}
}

// AfterPart makes f run, in b's flusher, after each part of a split batch
// but the last is stored; nil removes it.
func AfterPart[K comparable](b *Broker[K], f func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.afterPart = f
}

// Quit returns the channel that b closes when Shutdown begins.
func Quit[K comparable](b *Broker[K]) <-chan struct{} { return b.quit }

// DropLeaseAcks makes b's next n lease writes act as if their
// acknowledgement was lost after the bucket stored them.
func DropLeaseAcks[K comparable](b *Broker[K], n int) { b.dropLeaseAcks.Store(int32(n)) }

// DropAcquireAcks makes b's next n writes that take a lease act as if
// their acknowledgement was lost after the bucket stored them.
func DropAcquireAcks[K comparable](b *Broker[K], n int) { b.dropAcquireAcks.Store(int32(n)) }

// LoseLeaseWrites makes b's next n lease writes fail as if the connection
// dropped before the bucket got them: their outcome unknown to b, and
// nothing stored.
func LoseLeaseWrites[K comparable](b *Broker[K], n int) { b.loseLeaseWrites.Store(int32(n)) }

// Refused returns how many of b's publish attempts the server refused
// because another message of their key came first.
func Refused[K comparable](b *Broker[K]) uint64 { return b.refused.Load() }

// StaleGets makes b's next n direct gets of a key's messages find
// nothing, as a replica that lags the stream's leader answers.
func StaleGets[K comparable](b *Broker[K], n int) { b.staleGets.Store(int32(n)) }

// StaleKVGets makes b's next n direct gets of a bucket's entries (cursors,
// liveness) find nothing, as a replica that lags the bucket's leader can.
func StaleKVGets[K comparable](b *Broker[K], n int) { b.staleKVGets.Store(int32(n)) }

// FeedGiveUp sets how long b's feed lets its consumer fail to recover
// before it checks its stream; call it before b's first reader.
func FeedGiveUp[K comparable](b *Broker[K], d time.Duration) { b.feedGiveUp = d }
