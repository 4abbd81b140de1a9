package ssejs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/rocketqueue/sse"
)

// cursors is where a Broker keeps the cursors of sse.MultiHandler's
// streams: the KV bucket "SSE_<name>_cursors", shared by every replica, so
// that a client resumes on any of them. It is created on first use.
type cursors struct {
	mu sync.Mutex
	kv jetstream.KeyValue // guarded by mu: nil until first used
}

// storedCursor is a cursor as the bucket holds it: the keys' tokens (see
// [Token]) and the positions.
type storedCursor struct {
	Keys      []string `json:"k"`
	Positions string   `json:"p"`
}

// SaveCursor stores c in the KV bucket "SSE_<name>_cursors", which it
// creates if it is missing, under a new random name of 22 characters (a
// NUID). Each entry expires with the bucket's TTL, set when the bucket is
// created: the stream's max age ([WithMaxAge]) plus a minute, so that a
// cursor lives as long as the events it names; a client that resumes
// from an expired one gets a gap for each key (see sse.CursorStore). It
// fails with an error wrapping [sse.ErrInvalidKey] for a key the codec
// cannot encode.
func (b *Broker[K]) SaveCursor(ctx context.Context, c sse.Cursor[K]) (string, error) {
	sc := storedCursor{Keys: make([]string, len(c.Keys)), Positions: c.Positions}
	for i, k := range c.Keys {
		t, err := Token(b.codec, k)
		if err != nil {
			return "", err
		}
		sc.Keys[i] = t
	}
	body, err := json.Marshal(sc)
	if err != nil {
		return "", err
	}
	kv, err := b.cursorBucket(ctx)
	if err != nil {
		return "", err
	}
	name := nuid.Next()
	ctx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
	defer cancel()
	if _, err := kv.Create(ctx, name, body); err != nil {
		return "", fmt.Errorf("ssejs: storing a cursor: %w", err)
	}
	return name, nil
}

// LoadCursor returns the cursor stored under name, or an error wrapping
// [sse.ErrUnknownCursor] if the bucket does not hold it (it expired, or
// was never stored).
func (b *Broker[K]) LoadCursor(ctx context.Context, name string) (sse.Cursor[K], error) {
	var c sse.Cursor[K]
	kv, err := b.cursorBucket(ctx)
	if err != nil {
		return c, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
	defer cancel()
	var value []byte
	e, err := b.kvGet(ctx, kv, name)
	switch {
	case errors.Is(err, jetstream.ErrInvalidKey):
		return c, fmt.Errorf("ssejs: cursor %q: %w", name, sse.ErrUnknownCursor)
	case errors.Is(err, jetstream.ErrKeyNotFound):
		// A replica that lags may not have a cursor stored a moment ago
		// (a client cut right after it): ask the bucket's leader before
		// taking it for unknown, which would restart every key with a
		// gap.
		v, found, err := b.kvAtLeader(ctx, kv.Bucket(), name)
		switch {
		case err != nil:
			return c, fmt.Errorf("ssejs: loading cursor %q: %w", name, err)
		case !found:
			return c, fmt.Errorf("ssejs: cursor %q: %w", name, sse.ErrUnknownCursor)
		}
		value = v
	case err != nil:
		return c, fmt.Errorf("ssejs: loading cursor %q: %w", name, err)
	default:
		value = e.Value()
	}
	var sc storedCursor
	if err := json.Unmarshal(value, &sc); err != nil {
		return c, fmt.Errorf("ssejs: cursor %q: %w", name, errBadMessage)
	}
	c.Keys, c.Positions = make([]K, len(sc.Keys)), sc.Positions
	for i, t := range sc.Keys {
		if c.Keys[i], err = KeyOf(b.codec, t); err != nil {
			return sse.Cursor[K]{}, fmt.Errorf("ssejs: cursor %q: key %d: %w", name, i, errBadMessage)
		}
	}
	return c, nil
}

// Newest returns the epoch of key's current life and the ID of its newest
// event, as the stream's leader holds them (a replica that lags may not
// have an event a reader was sent yet); "" and 0 for a key with no life,
// which it does not create.
func (b *Broker[K]) Newest(ctx context.Context, key K) (string, uint64, error) {
	_, subject, err := b.subject(key)
	if err != nil {
		return "", 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
	defer cancel()
	last, err := b.lastAtLeader(ctx, subject)
	switch {
	case err != nil:
		return "", 0, b.netErr(err)
	case last == nil:
		return "", 0, nil
	}
	return last.epoch, last.next() - 1, nil
}

// cursorBucket returns the cursors' bucket, creating it first if needed.
func (b *Broker[K]) cursorBucket(ctx context.Context) (jetstream.KeyValue, error) {
	b.cursors.mu.Lock()
	defer b.cursors.mu.Unlock()
	if b.cursors.kv != nil {
		return b.cursors.kv, nil
	}
	ctx, cancel := context.WithTimeout(ctx, b.attemptTimeout())
	defer cancel()
	bucket := "SSE_" + b.cfg.name + "_cursors"
	kv, err := b.js.KeyValue(ctx, bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = b.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: "sse.MultiHandler's cursors of stream SSE_" + b.cfg.name,
			History:     1,
			TTL:         b.cfg.age() + time.Minute,
			Storage:     b.cfg.storage,
			Replicas:    b.cfg.replicas,
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = b.js.KeyValue(ctx, bucket) // another replica created it meanwhile
		}
	}
	if err != nil {
		return nil, fmt.Errorf("ssejs: the cursors' bucket %s: %w", bucket, err)
	}
	b.cursors.kv = kv
	return kv, nil
}

// The Broker stores cursors.
var _ sse.CursorStore[string] = (*Broker[string])(nil)
