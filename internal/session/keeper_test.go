package session

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/presenced/presenced/store"
)

// countingStore counts the calls the keeper makes.
type countingStore struct {
	store.Store
	refreshCalls, refreshItems, joins, detaches atomic.Int64
}

func (c *countingStore) RefreshStreams(ctx context.Context, items []store.StreamRefresh) ([]error, error) {
	c.refreshCalls.Add(1)
	c.refreshItems.Add(int64(len(items)))
	return c.Store.RefreshStreams(ctx, items)
}

func (c *countingStore) Join(ctx context.Context, room string, hb store.Heartbeat) error {
	c.joins.Add(1)
	return c.Store.Join(ctx, room, hb)
}

func (c *countingStore) Detach(ctx context.Context, room, user, sid string, grace time.Duration) error {
	c.detaches.Add(1)
	return c.Store.Detach(ctx, room, user, sid, grace)
}

func newKeeper(t *testing.T) (*Keeper, *countingStore) {
	mem := store.NewMemory(store.Options{TTL: 30 * time.Second})
	cs := &countingStore{Store: mem}
	k := New(cs, nil, Options{Refresh: 10 * time.Second, Hold: 40 * time.Second, Grace: 2 * time.Second})
	k.Start()
	t.Cleanup(func() {
		k.Close()
		_ = mem.Close()
	})
	return k, cs
}

// 300 open streams cost one store call per refresh interval, not 300
// tickers and 300 Joins.
func TestOneBatchedRefreshPerInterval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, cs := newKeeper(t)
		for i := range 300 {
			u := store.Profile{ID: fmt.Sprintf("u%03d", i)}
			if _, err := k.Open(context.Background(), Stream{User: u, SessionID: "session-" + u.ID, Room: fmt.Sprintf("r%d", i%10)}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(35 * time.Second) // three intervals
		synctest.Wait()
		if c, n := cs.refreshCalls.Load(), cs.refreshItems.Load(); c != 3 || n != 900 {
			t.Fatalf("%d refresh calls with %d items, want 3 with 900", c, n)
		}
		// Every session is alive well past its 30 s TTL.
		ms, err := cs.Members(context.Background(), "r3")
		if err != nil || len(ms) != 30 {
			t.Fatalf("r3 has %d members (%v), want 30", len(ms), err)
		}
	})
}

// The last stream of a (session, room) detaches it; the store ends the
// membership after the grace. A stream still open keeps it; a shutdown
// detaches nothing.
func TestCloseDetachesLastStreamOnly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, cs := newKeeper(t)
		u := store.Profile{ID: "bob"}
		s := Stream{User: u, SessionID: "session-bob", Room: "x"}
		a, _ := k.Open(context.Background(), s)
		b, _ := k.Open(context.Background(), s)
		k.CloseLease(a, false)
		if cs.detaches.Load() != 0 {
			t.Fatal("detached while another stream of the same session and room is open")
		}
		k.CloseLease(b, false)
		if cs.detaches.Load() != 1 {
			t.Fatal("the last stream's close did not detach")
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if ms, _ := cs.Members(context.Background(), "x"); len(ms) != 0 {
			t.Fatalf("x still has %v after the grace", ms)
		}
		c, _ := k.Open(context.Background(), Stream{User: u, SessionID: "session-bob", Room: "y"})
		k.CloseLease(c, true)
		if cs.detaches.Load() != 1 {
			t.Fatal("a shutdown detached")
		}
	})
}

// Stream caps per session and per user.
func TestStreamCapsPerSessionAndUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		k, _ := newKeeper(t)
		u := store.Profile{ID: "greedy"}
		var leases []*Lease
		for range MaxStreamsPerSession {
			l, err := k.Open(context.Background(), Stream{User: u, SessionID: "session-one"})
			if err != nil {
				t.Fatal(err)
			}
			leases = append(leases, l)
		}
		if _, err := k.Open(context.Background(), Stream{User: u, SessionID: "session-one"}); err != ErrTooManyStreams {
			t.Fatalf("past the session cap: %v", err)
		}
		k.CloseLease(leases[0], false)
		if _, err := k.Open(context.Background(), Stream{User: u, SessionID: "session-one"}); err != nil {
			t.Fatalf("a freed slot: %v", err)
		}
	})
}
