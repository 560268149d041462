package handlers

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// roomMembers lists a room's member ids through GET /api/presence/room/{id}.
func roomMembers(t testing.TB, c *http.Client, n *node, room, token string) map[string]bool {
	t.Helper()
	r := do(t, c, http.MethodGet, n.base+"/api/presence/room/"+room, token, "")
	mustOK(t, r)
	out := map[string]bool{}
	for _, m := range r.json(t)["members"].([]any) {
		out[m.(map[string]any)["id"].(string)] = true
	}
	return out
}

func userStatus(t testing.TB, c *http.Client, n *node, user, token string) any {
	t.Helper()
	r := do(t, c, http.MethodGet, n.base+"/api/presence?userIds="+user, token, "")
	mustOK(t, r)
	p, _ := r.json(t)["presence"].(map[string]any)[user].(map[string]any)
	if p == nil {
		return nil
	}
	return p["status"]
}

// The room-switch ghost: a tab's stream for room X closes (SPA navigation)
// and the same session opens room Y at once. The session lives on (Y keeps
// it), but it leaves X after the grace instead of haunting it forever.
func TestRoomSwitchLeavesNoGhost(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bobTok := n.token("bob", "Bob")
		watcher := openSSE(t, c, n.base+"/sse/users?ids=bob&format=json", n.token("viewer", ""))
		watcher.waitFor("sync", named("sync"))
		x := openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		x.waitFor("x state", membersWith(1, "bob"))

		x.close()
		y := openSSE(t, c, n.base+"/sse/room/y?sid=bob-tab-1", bobTok)
		y.waitFor("y state", membersWith(1, "bob"))

		eventually(t, "bob gone from x", func() bool { return !roomMembers(t, c, n, "x", bobTok)["bob"] })
		// Past the grace and a few refreshes: still in y,
		// still online, and never offline in between.
		time.Sleep(testGrace + time.Second + time.Second)
		if !roomMembers(t, c, n, "y", bobTok)["bob"] {
			t.Fatal("bob is not a member of y, where his stream is open")
		}
		if roomMembers(t, c, n, "x", bobTok)["bob"] {
			t.Fatal("bob is back in x")
		}
		if st := userStatus(t, c, n, "bob", bobTok); st != "online" {
			t.Fatalf("bob is %v, want online", st)
		}
		for _, ev := range watcher.drain(100 * time.Millisecond) {
			if named("status", `"to":"offline"`)(ev) {
				t.Fatalf("switching rooms took bob offline: %s", ev.Data)
			}
		}
		if v := n.metric("presenced_stream_room_leaves_total"); v < 1 {
			t.Errorf("room leaves %v", v)
		}
	})
}

// The same with the new room's stream opening before the old one's close
// is processed (the order a browser may well produce).
func TestRoomSwitchOpenFirst(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bobTok := n.token("bob", "Bob")
		x := openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		x.waitFor("x state", membersWith(1, "bob"))
		y := openSSE(t, c, n.base+"/sse/room/y?sid=bob-tab-1", bobTok)
		y.waitFor("y state", membersWith(1, "bob"))
		x.close()
		eventually(t, "bob gone from x", func() bool { return !roomMembers(t, c, n, "x", bobTok)["bob"] })
		if !roomMembers(t, c, n, "y", bobTok)["bob"] || userStatus(t, c, n, "bob", bobTok) != "online" {
			t.Fatal("bob lost y or went offline")
		}
	})
}

// A page that removes an embed (its stream closes) but goes on
// heartbeating the same session: no stream of the session is left on the
// node, the session stays alive, and it still leaves the room. The
// heartbeat comes less often than the grace (as presence.js's 30 s against
// 5 s), so a session cut to the grace would go offline in between: bob must
// stay online throughout.
func TestRemovedEmbedLeavesRoom(t *testing.T) {
	const heartbeat = 2 * testGrace // > the grace, well < the TTL
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bobTok := n.token("bob", "Bob")
		watcher := openSSE(t, c, n.base+"/sse/users?ids=bob&format=json", n.token("viewer", ""))
		watcher.waitFor("sync", named("sync"))
		x := openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		x.waitFor("x state", membersWith(1, "bob"))
		watcher.waitFor("bob online", named("status", `"to":"online"`))
		x.close()
		stop := make(chan struct{})
		done := make(chan struct{})
		hc := newClient(t)
		go func() { // presence.js's heartbeat
			defer close(done)
			for {
				select {
				case <-stop:
					return
				case <-time.After(heartbeat):
				}
				req, _ := http.NewRequest(http.MethodPost, n.base+"/api/presence",
					strings.NewReader(`{"status":"online","sessionId":"bob-tab-1"}`))
				req.Header.Set("Authorization", "Bearer "+bobTok)
				req.Header.Set("Content-Type", "application/json")
				if resp, err := hc.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
		defer func() { close(stop); <-done }()
		eventually(t, "bob gone from x", func() bool { return !roomMembers(t, c, n, "x", bobTok)["bob"] })
		// Past the TTL of the stream's last refresh: the heartbeats alone
		// keep him.
		evs := watcher.drain(testTTL + 500*time.Millisecond)
		for _, ev := range evs {
			if named("status", `"to":"offline"`)(ev) {
				t.Fatalf("bob went offline though he heartbeats: %s", ev.Data)
			}
		}
		if st := userStatus(t, c, n, "bob", bobTok); st != "online" {
			t.Fatalf("bob is %v, want online (he heartbeats)", st)
		}
		if roomMembers(t, c, n, "x", bobTok)["bob"] {
			t.Fatal("bob is back in x")
		}
	})
}

// A tab gone without a goodbye (no offline, no heartbeat, no stream): its
// session leaves the room after the grace and is gone by its TTL, not cut
// short: the stream's last refresh was its last sign of life.
func TestClosedStreamSessionExpiresByTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bobTok := n.token("bob", "Bob")
		watcher := openSSE(t, c, n.base+"/sse/users?ids=bob&format=json", n.token("viewer", ""))
		watcher.waitFor("sync", named("sync"))
		x := openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		x.waitFor("x state", membersWith(1, "bob"))
		x.close()
		closed := time.Now()
		eventually(t, "bob gone from x", func() bool { return !roomMembers(t, c, n, "x", bobTok)["bob"] })
		if st := userStatus(t, c, n, "bob", bobTok); st != "online" && time.Since(closed) < testTTL/2 {
			t.Fatalf("bob is %v right after leaving x, want online until his TTL", st)
		}
		watcher.waitFor("bob offline", named("status", `"to":"offline"`))
		// The last refresh came at most a refresh interval before the close.
		if d := time.Since(closed); d < testTTL-n.srv.cfg.RefreshInterval()-200*time.Millisecond {
			t.Fatalf("bob went offline %v after his stream closed, before his TTL (%v)", d, testTTL)
		}
	})
}

// A reconnect within the grace (same session, same room) leaves nothing to
// hear: no leave on a JSON watcher of the room, then or later.
func TestReconnectWithinGraceNoLeave(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bobTok := n.token("bob", "Bob")
		js := openSSE(t, c, n.base+"/sse/room/x?sid=alice-tab-1&format=json", n.token("alice", "Alice"))
		js.waitFor("sync", named("sync"))
		x := openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		js.waitFor("bob joined", named("join", `"id":"bob"`))
		x.waitFor("x state", membersWith(2, "bob"))

		x.close()
		x = openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		x.waitFor("x state again", membersWith(2, "bob"))
		// Well past the grace.
		for _, ev := range js.drain(testGrace + time.Second + 1500*time.Millisecond) {
			if ev.Event == "leave" || named("status", `"to":"offline"`)(ev) {
				t.Fatalf("a reconnect within the grace was announced: %s %s", ev.Event, ev.Data)
			}
		}
		if !roomMembers(t, c, n, "x", bobTok)["bob"] {
			t.Fatal("bob is not in x")
		}
	})
}

// An open stream's refresh re-asserts its membership: a Leave that raced it
// (here an API leave of its session; for real, the closed stream's Leave on
// another node) heals within a refresh interval.
func TestStreamRefreshRejoins(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bobTok := n.token("bob", "Bob")
		x := openSSE(t, c, n.base+"/sse/room/x?sid=bob-tab-1&format=json", bobTok)
		x.waitFor("sync", named("sync"))
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/x", bobTok, `{"action":"leave","sessionId":"bob-tab-1"}`))
		x.waitFor("bob left", named("leave", `"id":"bob"`))
		x.waitFor("bob back by the stream's refresh", named("join", `"id":"bob"`))
		if !roomMembers(t, c, n, "x", bobTok)["bob"] {
			t.Fatal("bob is not in x")
		}
	})
}

// Cross-node: the stream of a session in room X closes on node A and comes
// back on node B. Node A does not see it and leaves the room after the
// grace; node B's stream joins it again at its next refresh.
func TestCrossNodeReconnectHeals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		a := startNode(t, b.newStore(t))
		bn := startNode(t, b.newStore(t))
		c := newClient(t)
		bobTok := a.token("bob", "Bob")
		x := openSSE(t, c, a.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		x.waitFor("x state", membersWith(1, "bob"))
		x.close()
		x = openSSE(t, c, bn.base+"/sse/room/x?sid=bob-tab-1", bobTok)
		x.waitFor("x state on node B", membersWith(1, "bob"))
		eventually(t, "node A's leave", func() bool { return a.metric("presenced_stream_room_leaves_total") >= 1 })
		eventually(t, "bob back in x", func() bool { return roomMembers(t, c, bn, "x", bobTok)["bob"] })
		if st := userStatus(t, c, bn, "bob", bobTok); st != "online" {
			t.Fatalf("bob is %v, want online", st)
		}
	})
}
