package sse

import (
	"context"
	"iter"
)

// A Publisher sends events to keys: what producers call. [*Broker]
// implements it in process; a broker shared by several servers can too, so
// that application code written against Publisher works with either. Over a
// network a call can fail after the events were stored: an error other than
// [ErrInvalidEvent], [ErrInvalidKey] or [ErrShutdown] means the outcome is
// not known.
type Publisher[K comparable] interface {
	// Enqueue appends unnamed events with the given data to key, as one
	// batch.
	Enqueue(ctx context.Context, key K, data ...string) error
	// Publish appends events to key, as one batch.
	Publish(ctx context.Context, key K, events ...Event) error
	// Close marks key as finished: its readers end after its last event.
	Close(ctx context.Context, key K) error
}

// A Reader reads keys' events: what in-process consumers call.
// [*Broker] implements it; so can a broker shared by several servers, whose
// reads can fail: the range then ends with the error.
type Reader[K comparable] interface {
	// Events ranges over key's events, as [Broker.Events] does.
	Events(ctx context.Context, key K, from ...ReadOption) iter.Seq2[Event, error]
}

// The Broker is a Publisher, a Reader and a Source.
var (
	_ Publisher[int] = (*Broker[int])(nil)
	_ Reader[int]    = (*Broker[int])(nil)
	_ Source[int]    = (*Broker[int])(nil)
)
