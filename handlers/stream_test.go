package handlers

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/store"
)

func isStatus(user string, st store.Status) func(sseEvent) bool {
	return named("presence-"+user, `data-status="`+string(st)+`"`)
}

func membersWith(count int, users ...string) func(sseEvent) bool {
	return func(ev sseEvent) bool {
		if ev.Event != "members" || membersCount(ev.Data) != count {
			return false
		}
		for _, u := range users {
			if !strings.Contains(ev.Data, `data-presence-user="`+u+`"`) {
				return false
			}
		}
		return true
	}
}

func membersWithout(count int, user string) func(sseEvent) bool {
	return func(ev sseEvent) bool {
		return ev.Event == "members" && membersCount(ev.Data) == count &&
			!strings.Contains(ev.Data, `data-presence-user="`+user+`"`)
	}
}

// Two users in a room see each other join and leave; the state comes first
// on connect; ids are numeric and increasing.
func TestRoomJoinAndLeave(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))

		first, ok := alice.nextEvent(wait)
		if !ok || !membersWith(1, "alice")(first) {
			t.Fatalf("first event = %+v, want the members stack with alice", first)
		}
		second, ok := alice.nextEvent(wait)
		if !ok || second.Event != "typing" || !strings.Contains(second.Data, `data-typing-count="0"`) {
			t.Fatalf("second event = %+v, want the typing line", second)
		}
		id1, err1 := strconv.Atoi(first.ID)
		id2, err2 := strconv.Atoi(second.ID)
		if err1 != nil || err2 != nil || id2 <= id1 {
			t.Fatalf("ids %q, %q: want increasing numbers", first.ID, second.ID)
		}

		bob := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", n.token("bob", "Bob"))
		bob.waitFor("bob's own state", membersWith(2, "alice", "bob"))
		alice.waitFor("bob joining", membersWith(2, "alice", "bob"))

		bob.close() // the tab is gone without a goodbye: he leaves after the grace
		alice.waitFor("bob leaving", membersWithout(1, "bob"))
	})
}

// A status change reaches a /sse/users watcher, as HTML and as JSON.
func TestStatusReachesWatcher(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		viewer := n.token("viewer", "Viewer")
		html := openSSE(t, c, n.base+"/sse/users?ids=bob,carol&label=1", viewer)
		html.waitAll("initial dots", isStatus("bob", store.StatusOffline), isStatus("carol", store.StatusOffline))
		js := openSSE(t, c, n.base+"/sse/users?ids=bob&format=json", viewer)
		sync := js.waitFor("sync", named("sync"))
		if m := decodeJSON(t, sync.Data); m["presence"].(map[string]any)["bob"] != nil {
			t.Fatalf("sync = %s, want bob: null (never seen)", sync.Data)
		}

		bob := n.token("bob", "Bob")
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bob, `{"status":"busy","sessionId":"bob-phone-1"}`))
		ev := html.waitFor("bob busy", isStatus("bob", store.StatusBusy))
		if !strings.Contains(ev.Data, "Busy") {
			t.Errorf("label=1 dot has no label: %s", ev.Data)
		}
		st := js.waitFor("bob busy (json)", named("status", `"to":"busy"`))
		if m := decodeJSON(t, st.Data); m["user"].(map[string]any)["id"] != "bob" || m["from"] != "offline" {
			t.Fatalf("status event = %s", st.Data)
		}
	})
}

// Typing appears and, without a refresh, expires.
func TestTypingAppearsAndExpires(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))
		alice.waitFor("initial typing line", named("typing", `data-typing-count="0"`))

		bob := n.token("bob", "Bob")
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", bob, `{"action":"join","sessionId":"bob-tab-1"}`)) // only members type
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby/typing", bob, `{"typing":true}`))
		alice.waitFor("Bob is typing", named("typing", `data-typing-count="1"`, "Bob is typing"))
		alice.waitFor("typing expired", named("typing", `data-typing-count="0"`))
	})
}

// Two tabs (two streams, two sessions); one closes: the user stays online
// and in the room, and nobody is told otherwise.
func TestMultiTab(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))
		bobTok := n.token("bob", "Bob")
		tab1 := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", bobTok)
		tab2 := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-2", bobTok)
		tab1.waitFor("state", membersWith(2, "bob"))
		tab2.waitFor("state", membersWith(2, "bob"))
		alice.waitFor("bob joined", membersWith(2, "alice", "bob"))

		tab1.close()
		// Well past the grace of tab 1's session and a few expiry sweeps.
		for _, ev := range alice.drain(testGrace*3 + 500*time.Millisecond) {
			if isStatus("bob", store.StatusOffline)(ev) || membersWithout(1, "bob")(ev) {
				t.Fatalf("closing one of two tabs announced bob leaving: %+v", ev)
			}
		}
		r := do(t, c, http.MethodGet, n.base+"/api/presence?userIds=bob", bobTok, "")
		mustOK(t, r)
		if st := r.json(t)["presence"].(map[string]any)["bob"].(map[string]any)["status"]; st != "online" {
			t.Fatalf("bob is %v, want online", st)
		}
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/lobby", bobTok, "")
		if cnt := r.json(t)["count"]; cnt != float64(2) {
			t.Fatalf("room count %v, want 2", cnt)
		}
	})
}

// A stream killed without a clean close of its session: its node dies
// (here: shuts down, which leaves sessions alone exactly like a crash). The
// session expires by its TTL in the shared store and the room's other
// subscribers, on another node, are told.
func TestExpiryAfterNodeLoss(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		a := startNode(t, b.newStore(t))
		bn := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := openSSE(t, c, bn.base+"/sse/room/lobby?sid=alice-tab-1", bn.token("alice", "Alice"))
		bob := openSSE(t, c, a.base+"/sse/room/lobby?sid=bob-tab-1", a.token("bob", "Bob"))
		bob.waitFor("state", membersWith(2, "bob"))
		alice.waitFor("bob joined", membersWith(2, "alice", "bob"))

		a.shutdown()
		eventually(t, "bob's stream closed by the shutdown", bob.ended)
		// Sessions are not ended by a shutdown: bob is still online now.
		ps, err := bn.st.Presence(context.Background(), []string{"bob"})
		if err != nil || ps["bob"] == nil || ps["bob"].Status != store.StatusOnline {
			t.Fatalf("right after the node went away bob = %+v (%v), want online", ps["bob"], err)
		}
		alice.waitAll("bob expired", membersWithout(1, "bob"), isStatus("bob", store.StatusOffline))
		if v := bn.metric("presenced_offline_lateness_seconds_count"); v < 1 {
			t.Errorf("offline lateness not observed (count %v)", v)
		}
	})
}

// The client drops the connection (tab killed): the session leaves the room
// after the leave grace, which the room hears, and expires by its TTL,
// which its watchers hear.
func TestExpiryAfterClientDrop(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		watcher := openSSE(t, c, n.base+"/sse/users?ids=bob", n.token("viewer", ""))
		watcher.waitFor("bob's first dot", isStatus("bob", store.StatusOffline))
		alice := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))
		bob := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", n.token("bob", "Bob"))
		alice.waitFor("bob joined", membersWith(2, "alice", "bob"))
		watcher.waitFor("bob online", isStatus("bob", store.StatusOnline))
		bob.close()
		alice.waitFor("bob left", membersWithout(1, "bob"))
		watcher.waitFor("bob expired", isStatus("bob", store.StatusOffline))
	})
}

// An explicit offline while the stream is open ends the session for good:
// closing the stream afterwards does not bring it back.
func TestExplicitOfflineIsFinal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))
		bobTok := n.token("bob", "Bob")
		bob := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", bobTok)
		alice.waitFor("bob joined", membersWith(2, "alice", "bob"))

		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bobTok, `{"status":"offline","sessionId":"bob-tab-1"}`, "Content-Type", "text/plain;charset=UTF-8"))
		alice.waitAll("bob offline", membersWithout(1, "bob"), isStatus("bob", store.StatusOffline))
		// Longer than a stream refresh: the open stream must not revive it.
		for _, ev := range alice.drain(time.Second) {
			if isStatus("bob", store.StatusOnline)(ev) {
				t.Fatalf("the open stream revived an ended session: %+v", ev)
			}
		}
		bob.close()
		for _, ev := range alice.drain(testGrace * 3) {
			if isStatus("bob", store.StatusOnline)(ev) || membersWith(2, "bob")(ev) {
				t.Fatalf("closing the stream revived an ended session: %+v", ev)
			}
		}
	})
}

// ?format=json: sync first, then join, status, typing, leave as JSON.
func TestRoomStreamJSON(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := openSSE(t, c, n.base+"/sse/room/lobby?format=json", n.token("alice", "Alice"))
		first, ok := alice.nextEvent(wait)
		if !ok || first.Event != "sync" {
			t.Fatalf("first event %+v, want sync", first)
		}
		sync := decodeJSON(t, first.Data)
		if sync["count"] != float64(1) || !store.ValidSessionID(fmt.Sprint(sync["sessionId"])) {
			t.Fatalf("sync = %s", first.Data)
		}
		bob := n.token("bob", "Bob")
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", bob, `{"action":"join","sessionId":"bob-api-1"}`))
		alice.waitFor("join", named("join", `"id":"bob"`))
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bob, `{"status":"away","sessionId":"bob-api-1"}`))
		alice.waitFor("status", named("status", `"id":"bob"`, `"to":"away"`))
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby/typing", bob, `{"typing":true}`))
		alice.waitFor("typing", named("typing", `"id":"bob"`))
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", bob, `{"action":"leave","sessionId":"bob-api-1"}`))
		alice.waitFor("leave", named("leave", `"id":"bob"`))
	}, longTTL)
}

// Two gateways on one backend: a heartbeat on node A reaches a stream on
// node B, and an expiry is announced once on each node, not twice.
func TestTwoGateways(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		a := startNode(t, b.newStore(t))
		bn := startNode(t, b.newStore(t))
		c := newClient(t)
		viewer := a.token("viewer", "Viewer")
		onA := openSSE(t, c, a.base+"/sse/users?ids=carol&format=json", viewer)
		onB := openSSE(t, c, bn.base+"/sse/users?ids=carol&format=json", viewer)
		onA.waitFor("sync", named("sync"))
		onB.waitFor("sync", named("sync"))

		carol := a.token("carol", "Carol")
		mustOK(t, do(t, c, http.MethodPost, a.base+"/api/presence", carol, `{"status":"busy","sessionId":"carol-tab-1"}`))
		onB.waitFor("carol busy on node B", named("status", `"to":"busy"`))
		onA.waitFor("carol busy on node A", named("status", `"to":"busy"`))

		// No more heartbeats: carol expires after the TTL.
		onA.waitFor("carol offline on A", named("status", `"to":"offline"`))
		onB.waitFor("carol offline on B", named("status", `"to":"offline"`))
		for name, s := range map[string]*sseClient{"A": onA, "B": onB} {
			for _, ev := range s.drain(time.Second) {
				if named("status", `"to":"offline"`)(ev) {
					t.Errorf("node %s announced carol's expiry twice", name)
				}
			}
		}
	})
}
