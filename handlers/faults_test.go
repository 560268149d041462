package handlers

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

// The four fault findings of issue 9, at the gateway. Each failed on the
// gateway before the session keeper and the store's held memberships,
// tombstones and state-loss resync.

// Bug 1: a pending leave died with its node. Bob's tab streams room x on
// node A while his session also heartbeats through node B. Node A goes away
// with the stream open (no goodbye, no Detach): the membership is held by
// that stream, so it ends by itself a TTL later, enforced by the store,
// while bob stays online.
func TestHeldMembershipEndsWhenItsNodeDies(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		a := startNode(t, b.newStore(t))
		bn := startNode(t, b.newStore(t))
		c := newClient(t)
		bob := a.token("bob", "Bob")
		x := openSSE(t, c, a.base+"/sse/room/x?sid=bob-tab-1", bob)
		x.waitFor("x state", membersWith(1, "bob"))
		a.shutdown() // like a kill: streams cut, nothing detached, sessions left alone
		// Bob's tab goes on heartbeating, through node B.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(300 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					req, _ := http.NewRequest(http.MethodPost, bn.base+"/api/presence", strings.NewReader(`{"status":"online","sessionId":"bob-tab-1"}`))
					req.Header.Set("Authorization", "Bearer "+bob)
					req.Header.Set("Content-Type", "application/json")
					if res, err := c.Do(req); err == nil {
						res.Body.Close()
					}
				}
			}
		}()
		defer func() { close(stop); <-done }()
		eventually(t, "bob out of x", func() bool { return !roomMembers(t, c, bn, "x", bob)["bob"] })
		if st := userStatus(t, c, bn, "bob", bob); st != "online" {
			t.Fatalf("bob is %v, want online (his session heartbeats)", st)
		}
	}, longTTL)
}

// Bug 1, the other half: a closed stream's leave is due in the store, so a
// node that dies right after the close cannot take it along.
func TestDetachSurvivesItsNode(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		a := startNode(t, b.newStore(t))
		bn := startNode(t, b.newStore(t))
		c := newClient(t)
		bob := a.token("bob", "Bob")
		y := openSSE(t, c, bn.base+"/sse/room/y?sid=bob-tab-1", bob) // keeps the session alive
		y.waitFor("y state", membersWith(1, "bob"))
		x := openSSE(t, c, a.base+"/sse/room/x?sid=bob-tab-1", bob)
		x.waitFor("x state", membersWith(1, "bob"))
		x.close()
		eventually(t, "node A detached x", func() bool { return a.metric("presenced_stream_room_leaves_total") >= 1 })
		a.shutdown() // inside the grace
		eventually(t, "bob out of x", func() bool { return !roomMembers(t, c, bn, "x", bob)["bob"] })
		if !roomMembers(t, c, bn, "y", bob)["bob"] {
			t.Fatal("bob left y too")
		}
	})
}

// Bug 3's shape: a session ended explicitly (through node B) while its
// stream is still open on node A is not revived by A's refreshes.
func TestRefreshDoesNotReviveEndedSession(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		a := startNode(t, b.newStore(t))
		bn := startNode(t, b.newStore(t))
		c := newClient(t)
		bob := a.token("bob", "Bob")
		x := openSSE(t, c, a.base+"/sse/room/x?sid=bob-tab-1", bob)
		x.waitFor("x state", membersWith(1, "bob"))
		mustOK(t, do(t, c, http.MethodPost, bn.base+"/api/presence", bob, `{"status":"offline","sessionId":"bob-tab-1"}`))
		// Several of node A's refresh intervals (500 ms in the tests).
		for range 6 {
			time.Sleep(300 * time.Millisecond)
			if st := userStatus(t, c, bn, "bob", bob); st != "offline" {
				t.Fatalf("bob is %v after his session was ended, want offline", st)
			}
		}
		if roomMembers(t, c, bn, "x", bob)["bob"] {
			t.Fatal("bob is back in x")
		}
		// The client itself can bring it back: an explicit heartbeat.
		mustOK(t, do(t, c, http.MethodPost, bn.base+"/api/presence", bob, `{"status":"online","sessionId":"bob-tab-1"}`))
		eventually(t, "bob back in x (the open stream re-joins)", func() bool { return roomMembers(t, c, bn, "x", bob)["bob"] })
	}, longTTL)
}

// Bug 2: after Redis lost its state, another session's offline must not
// stop bob's open tab: the tab's stream re-creates its session within a
// refresh and keeps it.
func TestOtherSessionOfflineDoesNotStopOpenTab(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	opts := storeOptions()
	opts.KeyPrefix = prefix
	opts.TTL = time.Minute
	st, err := store.NewRedis(context.Background(), srv.URL, opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) { c.TTL = time.Minute })
	c := newClient(t)
	bob := n.token("bob", "Bob")
	tab := openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1", bob)
	tab.waitFor("state", membersWith(1, "bob"))
	srv.Restart(t) // state lost
	eventually(t, "the tab's session re-created", func() bool { return roomMembers(t, c, n, "x", bob)["bob"] })
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bob, `{"status":"online","sessionId":"bob-api-1"}`))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bob, `{"status":"offline","sessionId":"bob-api-1"}`))
	for range 6 { // several refresh intervals
		time.Sleep(300 * time.Millisecond)
		if st := userStatus(t, c, n, "bob", bob); st != "online" {
			t.Fatalf("bob is %v while his tab is open, want online", st)
		}
	}
	if !roomMembers(t, c, n, "x", bob)["bob"] {
		t.Fatal("bob's open tab is out of the room")
	}
}

// Bug 4: a quiet Redis restart (state lost, nothing written after it) must
// resync every stream: a watcher of a user who is gone shows them offline.
func TestQuietRedisRestartResyncsStreams(t *testing.T) {
	srv := redistest.Start(t)
	opts := storeOptions()
	opts.KeyPrefix = redistest.Prefix(t)
	opts.TTL = time.Minute
	st, err := store.NewRedis(context.Background(), srv.URL, opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) { c.TTL = time.Minute })
	c := newClient(t)
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", n.token("carol", "Carol"), `{"status":"busy","sessionId":"carol-api-1"}`))
	w := openSSE(t, c, n.base+"/sse/users?ids=carol", n.token("watcher", "Watcher"))
	w.waitFor("carol busy", isStatus("carol", store.StatusBusy))
	srv.Restart(t)
	w.waitFor("carol offline after the state loss", isStatus("carol", store.StatusOffline))
	if v := n.metric("presenced_feed_resyncs_total"); v < 1 {
		t.Fatalf("resyncs %v, want ≥ 1", v)
	}
}
