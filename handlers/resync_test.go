package handlers

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/presenced/presenced/store"
)

// feedControl lets a test cut the gateway's feed subscription and hold its
// resubscription, as a Redis outage or a slow-subscriber drop would.
type feedControl struct {
	store.Store
	mu   sync.Mutex
	subs []*store.Subscription
	hold chan struct{} // when set, Subscribe waits for it to close
}

func (f *feedControl) Subscribe(ctx context.Context) (*store.Subscription, error) {
	f.mu.Lock()
	hold := f.hold
	f.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	sub, err := f.Store.Subscribe(ctx)
	if err == nil {
		f.mu.Lock()
		f.subs = append(f.subs, sub)
		f.mu.Unlock()
	}
	return sub, err
}

// cut ends the current subscription and holds the next one.
func (f *feedControl) cut() chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = make(chan struct{})
	f.subs[len(f.subs)-1].Close()
	return f.hold
}

// Transitions missed while the feed was down are repaired: every open
// stream is re-sent its state after the resubscription.
func TestFeedLossResyncsStreams(t *testing.T) {
	opts := storeOptions()
	longTTL(&opts)
	mem := store.NewMemory(opts)
	t.Cleanup(func() { _ = mem.Close() })
	fc := &feedControl{Store: sharedStore{mem}}
	n := startNode(t, fc)
	c := newClient(t)
	room := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))
	js := openSSE(t, c, n.base+"/sse/users?ids=bob&format=json", n.token("viewer", ""))
	room.waitFor("state", membersWith(1, "alice"))
	js.waitFor("sync", named("sync"))

	release := fc.cut()
	eventually(t, "not ready while the feed is down", func() bool {
		return do(t, c, http.MethodGet, n.base+"/readyz", "", "").code == http.StatusServiceUnavailable
	})
	// Missed by the gateway: nobody hears of it now.
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", n.token("bob", "Bob"), `{"action":"join","sessionId":"bob-tab-1"}`))
	close(release)

	room.waitFor("members repaired", membersWith(2, "alice", "bob"))
	js.waitFor("sync repaired", named("sync", `"status":"online"`))
	if v := n.metric("presenced_feed_resyncs_total"); v < 1 {
		t.Fatalf("resyncs %v", v)
	}
	eventually(t, "ready again", func() bool {
		return do(t, c, http.MethodGet, n.base+"/readyz", "", "").code == http.StatusOK
	})
	// And live again.
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", n.token("bob", "Bob"), `{"status":"busy","sessionId":"bob-tab-1"}`))
	js.waitFor("live after resync", named("status", `"to":"busy"`))
}
