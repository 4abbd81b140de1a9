package sse

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"
)

// TestEpochAcrossLives: a client's Last-Event-ID from an earlier life of
// its key, the key forgotten and created again or the server restarted, is
// never taken for a position in the current life, in both modes: the client
// gets the current life from its start, with a gap for what can no longer
// be sent (in Queue mode, events read in process). A plain ID without an
// epoch counts as another life too, except 0.
func TestEpochAcrossLives(t *testing.T) {
	for _, mode := range []Mode{Queue, FanOut} {
		t.Run(mode.String(), func(t *testing.T) {
			newB := func(t *testing.T) *Broker[string] {
				return newBroker[string](t, WithMode(mode), WithRetention(time.Millisecond))
			}
			// oldLife streams 57 events to a client, closes the key and
			// returns the ID of the last one the client got.
			oldLife := func(t *testing.T, b *Broker[string], srv *httptest.Server) string {
				t.Helper()
				c := open(t, srv.Client(), srv.URL, "k")
				enqueueSeq(t, b, "k", 1, 57)
				c.expectSeq(t, 1, 57)
				must(t, b.Close(context.Background(), "k"))
				c.expectClose(t)
				return c.wireID(57)
			}
			resume := func(t *testing.T, srv *httptest.Server, id string) *client {
				t.Helper()
				return open(t, srv.Client(), srv.URL, "k", "Last-Event-ID", id)
			}

			t.Run("forgotten and created again", func(t *testing.T) {
				b := newB(t)
				srv, _ := serve(t, b)
				old := oldLife(t, b, srv)
				deadline := time.Now().Add(patience)
				for b.Stats().Closed != 0 { // forgotten
					if time.Now().After(deadline) {
						t.Fatal("the closed key was not forgotten")
					}
					time.Sleep(time.Millisecond)
				}
				enqueueSeq(t, b, "k", 1, 3) // a new life
				c := resume(t, srv, old)
				c.expectSeq(t, 1, 3)
				if oldEpoch, _ := splitID(t, old); c.epoch == oldEpoch {
					t.Fatalf("the new life has the old one's epoch %s", c.epoch)
				}
			})
			t.Run("restart", func(t *testing.T) {
				a := newB(t)
				srvA, _ := serve(t, a)
				old := oldLife(t, a, srvA)
				b := newB(t) // a new process: the key's first life there
				srvB, _ := serve(t, b)
				enqueueSeq(t, b, "k", 1, 3)
				resume(t, srvB, old).expectSeq(t, 1, 3)
				resume(t, srvB, "57").expectSeq(t, 1, 3) // a plain ID is of no life of this key
				resume(t, srvB, "0").expectSeq(t, 1, 3)
			})
			if mode == Queue {
				t.Run("events read in process", func(t *testing.T) {
					b := newB(t)
					srv, _ := serve(t, b)
					enqueueSeq(t, b, "k", 1, 2)
					recv(t, b.Stream("k"), 2) // read once: they cannot be sent again
					enqueueSeq(t, b, "k", 3, 4)
					c := resume(t, srv, "other-57")
					if ev := c.next(t); ev.Type != EventGap || ev.Data != `{"from":1,"to":2}` || ev.ID != "2" {
						t.Fatalf("got %+v, want the gap 1-2", ev)
					}
					c.expectSeq(t, 3, 4)
				})
			}
		})
	}
}

// TestEpochIsPerLife: every life of a key has its own epoch, and the
// handler writes it in every ID.
func TestEpochIsPerLife(t *testing.T) {
	b := newBroker[string](t)
	seen := make(map[string]bool)
	for i := range 100 {
		key := strconv.Itoa(i)
		enqueueSeq(t, b, key, 1, 1)
		epoch := take(t, b, key, SubscribeRequest{}, 1)
		if epoch == "" || seen[epoch] {
			t.Fatalf("key %s: epoch %q, seen before: %v", key, epoch, seen[epoch])
		}
		seen[epoch] = true
	}
	rec := httptest.NewRecorder()
	enqueueSeq(t, b, "w", 1, 1)
	must(t, b.Close(context.Background(), "w"))
	Handler(b, queryKey).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?key=w", nil))
	if plain(rec.Body.String()) == rec.Body.String() {
		t.Fatalf("no epoch in %q", rec.Body.String())
	}
}
