package sse

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// collectOf ranges over EventsOf and returns, per key, its events' data
// and its gaps, and the error the range ended with.
func collectOf(t *testing.T, b *Broker[string], ctx context.Context, keys []string, from ...ReadOption) (map[string][]string, error) {
	t.Helper()
	got := map[string][]string{}
	for ke, err := range b.EventsOf(ctx, keys, from...) {
		var gap *GapError
		switch {
		case errors.As(err, &gap):
			got[ke.Key] = append(got[ke.Key], fmt.Sprintf("gap %d-%d", gap.From, gap.To))
		case err != nil:
			return got, err
		default:
			if want := ke.Key + "/" + strconv.FormatUint(ke.ID, 10); ke.Data != want {
				t.Fatalf("event %+v of key %q, want data %q", ke.Event, ke.Key, want)
			}
			got[ke.Key] = append(got[ke.Key], strconv.FormatUint(ke.ID, 10))
		}
	}
	return got, nil
}

// TestEventsOf: in process, several keys' events come each with its key,
// each key's in order and each once, interleaved as they are published;
// the range ends once every key is closed.
func TestEventsOf(t *testing.T) {
	b := fanOut(t)
	keys := []string{"a", "b", "c"}
	publish(t, b, "a", 1, 2)
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	next, stop := iter.Pull2(b.EventsOf(ctx, keys))
	defer stop()
	want := func(key string, id uint64) {
		t.Helper()
		ke, err, ok := next()
		if !ok || err != nil || ke.Key != key || ke.ID != id || ke.Data != key+"/"+strconv.FormatUint(id, 10) {
			t.Fatalf("got %+v, %v, %v; want %s/%d", ke, err, ok, key, id)
		}
	}
	want("a", 1)
	want("a", 2)
	for n := 1; n <= 3; n++ {
		for _, k := range []string{"c", "b"} {
			publish(t, b, k, n, n)
			want(k, uint64(n))
		}
	}
	for _, k := range keys {
		must(t, b.Close(context.Background(), k))
	}
	if ke, err, ok := next(); ok {
		t.Fatalf("got %+v, %v after every key closed; want the end", ke, err)
	}
}

// TestEventsOfFrom: the read options, one for all keys or one per key;
// a key behind its history gets its GapError; a key closed and read to its
// end yields nothing.
func TestEventsOfFrom(t *testing.T) {
	b := fanOut(t, WithHistory(5, 1<<20, 0))
	keys := []string{"a", "b"}
	for _, k := range keys {
		publish(t, b, k, 1, 10) // the histories hold 6 to 10
		must(t, b.Close(context.Background(), k))
	}
	for _, c := range []struct {
		from []ReadOption
		want string
	}{
		{nil, "map[a:[6 7 8 9 10] b:[6 7 8 9 10]]"},
		{[]ReadOption{After(8)}, "map[a:[9 10] b:[9 10]]"},
		{[]ReadOption{After(2), After(10)}, "map[a:[gap 3-5 6 7 8 9 10]]"},
		{[]ReadOption{Live(), After(9)}, "map[b:[10]]"},
	} {
		got, err := collectOf(t, b, context.Background(), keys, c.from...)
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("from %v: %v, %v; want %s", c.from, got, err, c.want)
		}
	}
}

// TestEventsOfEnds: what ends the range early ends it once, with its
// error; breaking out of it, or its context ending, lets every key go.
func TestEventsOfEnds(t *testing.T) {
	b := fanOut(t, WithRetention(10*time.Millisecond))
	for _, c := range []struct {
		keys []string
		from []ReadOption
		says string
	}{
		{[]string{"a", "b", "a"}, nil, "key 2 is listed twice"},
		{[]string{"a", "b"}, []ReadOption{Live(), Live(), Live()}, "3 read options for 2 keys"},
	} {
		if _, err := collectOf(t, b, context.Background(), c.keys, c.from...); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("keys %v: %v, want an error saying %q", c.keys, err, c.says)
		}
	}
	if _, err := collectOf(t, newBroker[string](t), context.Background(), []string{"a", "b"}); !errors.Is(err, errEventsOfQueue) {
		t.Errorf("Queue mode: %v", err)
	}
	nan := newBroker[float64](t, WithMode(FanOut))
	for _, err := range nan.EventsOf(context.Background(), []float64{1, math.NaN()}) {
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("a NaN key: %v", err)
		}
	}

	keys := []string{"a", "b", "c"}
	publish(t, b, "b", 1, 3)
	for ke, err := range b.EventsOf(context.Background(), keys) {
		if err != nil || ke.Key != "b" || ke.ID != 1 {
			t.Fatalf("got %+v, %v", ke, err)
		}
		break
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	if got, err := collectOf(t, b, ctx, keys, Live()); !errors.Is(err, context.Canceled) || len(got) != 0 {
		t.Fatalf("got %v, %v; want context.Canceled", got, err)
	}
	// Neither range holds a key any more: closed, they are forgotten.
	for _, k := range keys {
		must(t, b.Close(context.Background(), k))
	}
	waitForgotten(t, b, "a range that ended still holds its keys")
}

// TestEventsOfThousandKeys: 1,000 keys in one range, published to while
// it runs: each key's events once, in order.
func TestEventsOfThousandKeys(t *testing.T) {
	b := fanOut(t)
	keys := make([]string, 1000)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		publish(t, b, keys[i], 1, 2)
	}
	go func() {
		ctx := context.Background()
		for _, k := range keys {
			if err := b.Publish(ctx, k, Event{Data: k + "/3"}); err != nil {
				t.Error(err)
			}
			if err := b.Close(ctx, k); err != nil {
				t.Error(err)
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), patience)
	defer cancel()
	got, err := collectOf(t, b, ctx, keys)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if fmt.Sprint(got[k]) != "[1 2 3]" {
			t.Fatalf("key %s: %v", k, got[k])
		}
	}
}
