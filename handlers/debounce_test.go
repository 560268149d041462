package handlers

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// showsUser reports whether an HTML fragment has an element of user.
func showsUser(data, user string) bool {
	return strings.Contains(data, `data-presence-user="`+user+`"`)
}

// debounced runs a node whose HTML streams hold departures back for d. The
// gateway's TTL (what clients are told; the store's own TTL stays the
// test's) is raised so that d can be long enough for a loaded machine.
func debounced(d time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		c.TTL = 30 * time.Second
		c.LeaveDebounce = d
	}
}

// The reload flicker: a page reload sends an offline beacon (the session
// ends at once), then the new page opens the room stream again with the same
// session id. The store and the JSON stream report leave and join as they
// happen; the HTML streams of the others show nothing at all: no stack
// without the user, no offline dot.
func TestReloadDoesNotFlickerHTML(t *testing.T) {
	// The reload (beacon, close, reopen, join) must fit in the window: on a
	// loaded CI box 1.5 s was once too short (the stack showed bob leaving
	// before his new stream's join), so 4 s, as the other debounce tests.
	const window = 4 * time.Second
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t), debounced(window))
		c := newClient(t)
		aliceTok, bobTok := n.token("alice", "Alice"), n.token("bob", "Bob")
		room := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1&list=1", aliceTok)
		dots := openSSE(t, c, n.base+"/sse/users?ids=bob", aliceTok)
		js := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-2&format=json", aliceTok)
		room.waitFor("alice's state", membersWith(1, "alice"))
		dots.waitFor("bob's first dot", isStatus("bob", store.StatusOffline))
		js.waitFor("sync", named("sync"))

		bob := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", bobTok)
		bob.waitFor("bob's state", membersWith(2, "bob"))
		room.waitFor("bob in the stack", membersWith(2, "alice", "bob"))
		dots.waitFor("bob online", isStatus("bob", store.StatusOnline))
		js.waitFor("bob joined (json)", named("join", `"id":"bob"`))
		// Let the renders of bob's arrival settle.
		room.drain(300 * time.Millisecond)
		dots.drain(100 * time.Millisecond)

		// The reload: pagehide beacon, the old page's stream goes, the new
		// page's stream comes with the session id kept in sessionStorage.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bobTok,
			`{"status":"offline","sessionId":"bob-tab-1"}`, "Content-Type", "text/plain;charset=UTF-8"))
		bob.close()
		bob = openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", bobTok)
		bob.waitFor("bob's state after the reload", membersWith(2, "alice", "bob"))

		// The JSON stream is honest: leave, then join.
		js.waitFor("bob left (json)", named("leave", `"id":"bob"`))
		js.waitFor("bob back (json)", named("join", `"id":"bob"`))

		// Well past the window: nothing of the departure ever shows.
		quiet := window + 2500*time.Millisecond
		done := make(chan []sseEvent)
		go func() { done <- dots.drain(quiet) }()
		for _, ev := range room.drain(quiet) {
			if ev.Event == "members" && !showsUser(ev.Data, "bob") {
				t.Errorf("the stack showed bob leaving during a reload: %.300s", ev.Data)
			}
			if ev.Event == "member-list" && !showsUser(ev.Data, "bob") {
				t.Errorf("the member list showed bob leaving during a reload: %.300s", ev.Data)
			}
			if isStatus("bob", store.StatusOffline)(ev) {
				t.Errorf("the room stream got an offline dot for bob during a reload")
			}
		}
		for _, ev := range <-done {
			if isStatus("bob", store.StatusOffline)(ev) {
				t.Errorf("the users stream got an offline dot for bob during a reload")
			}
		}
		r := do(t, c, http.MethodGet, n.base+"/api/presence?userIds=bob", bobTok, "")
		mustOK(t, r)
		if st := r.json(t)["presence"].(map[string]any)["bob"].(map[string]any)["status"]; st != "online" {
			t.Fatalf("bob is %v after the reload, want online", st)
		}
		if v := n.metric("presenced_departures_debounced_total", `kind="dot"`, `outcome="returned"`); v < 1 {
			t.Errorf("no offline dot was held back (returned %v)", v)
		}
	})
}

// A real departure is shown once the window is over: the stack without the
// user, the offline dot on the room and users streams. Meanwhile other
// changes are not held back: a join shows at once, with the departing user
// still in the stack.
func TestDepartureShownAfterDebounce(t *testing.T) {
	const window = 4 * time.Second
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t), debounced(window))
		c := newClient(t)
		aliceTok, bobTok := n.token("alice", "Alice"), n.token("bob", "Bob")
		room := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", aliceTok)
		dots := openSSE(t, c, n.base+"/sse/users?ids=bob&label=1", aliceTok)
		js := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-2&format=json", aliceTok)
		room.waitFor("alice's state", membersWith(1, "alice"))
		js.waitFor("sync", named("sync"))
		bob := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", bobTok)
		room.waitFor("bob in the stack", membersWith(2, "alice", "bob"))
		dots.waitFor("bob online", isStatus("bob", store.StatusOnline))

		// Bob closes the tab for good: beacon, stream gone, no return.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bobTok, `{"status":"offline","sessionId":"bob-tab-1"}`))
		bob.close()
		// (In either order: on a Redis Cluster a room's events and a user's
		// status travel in different partitions.)
		js.waitAll("bob left and offline (json, at once)", named("leave", `"id":"bob"`),
			named("status", `"id":"bob"`, `"to":"offline"`))

		// Carol joins while bob's departure is held: shown at once, bob
		// still in the stack.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", n.token("carol", "Carol"), `{"action":"join","sessionId":"carol-tab-1"}`))
		room.waitFor("carol joining, bob still shown", membersWith(3, "alice", "bob", "carol"))

		// After the window: bob gone from the stack, offline dots.
		room.waitAll("bob's departure shown", membersWith(2, "alice", "carol"), isStatus("bob", store.StatusOffline))
		ev := dots.waitFor("bob's offline dot", isStatus("bob", store.StatusOffline))
		if !strings.Contains(ev.Data, "Offline") {
			t.Errorf("the held dot lost its variant (label=1): %s", ev.Data)
		}
		// And it stays shown.
		for _, ev := range room.drain(500 * time.Millisecond) {
			if ev.Event == "members" && showsUser(ev.Data, "bob") {
				t.Errorf("bob came back in the stack: %.300s", ev.Data)
			}
		}
		if v := n.metric("presenced_departures_debounced_total", `kind="member"`, `outcome="shown"`); v < 1 {
			t.Errorf("no held departure was shown (%v)", v)
		}
	}, longTTL)
}

// A stream that connects while a departure is held gets the current state,
// and later renders of the room do not bring the departed user back for it;
// the older stream keeps showing the user until the window is over.
func TestSnapshotDuringDebounce(t *testing.T) {
	const window = 4 * time.Second
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t), debounced(window))
		c := newClient(t)
		aliceTok, bobTok := n.token("alice", "Alice"), n.token("bob", "Bob")
		old := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", aliceTok)
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", bobTok, `{"action":"join","sessionId":"bob-tab-1"}`))
		old.waitFor("bob in the stack", membersWith(2, "alice", "bob"))
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", bobTok, `{"action":"leave","sessionId":"bob-tab-1"}`))

		late := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-2", aliceTok)
		first := late.waitFor("the late stream's state", named("members"))
		if showsUser(first.Data, "bob") {
			t.Fatalf("a snapshot showed a departed member: %.300s", first.Data)
		}
		// A change that re-renders the room while bob is held.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", n.token("carol", "Carol"), `{"action":"join","sessionId":"carol-tab-1"}`))
		late.waitFor("carol joining (late stream)", membersWith(2, "alice", "carol"))
		old.waitFor("carol joining (old stream, bob still shown)", membersWith(3, "alice", "bob", "carol"))
		old.waitFor("bob's departure shown", membersWith(2, "alice", "carol"))
		for _, ev := range late.drain(500 * time.Millisecond) {
			if ev.Event == "members" && showsUser(ev.Data, "bob") {
				t.Errorf("the late stream was shown a departed member: %.300s", ev.Data)
			}
		}
	}, longTTL)
}

// --leave-debounce 0 turns it off: nothing is held back.
func TestDebounceOff(t *testing.T) {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) { c.LeaveDebounce = 0 })
	c := newClient(t)
	bobTok := n.token("bob", "Bob")
	room := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))
	bob := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", bobTok)
	room.waitFor("bob in the stack", membersWith(2, "alice", "bob"))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bobTok, `{"status":"offline","sessionId":"bob-tab-1"}`))
	bob.close()
	room.waitAll("bob gone", membersWithout(1, "bob"), isStatus("bob", store.StatusOffline))
	if v := n.metric("presenced_departures_debounced_total"); v != 0 {
		t.Fatalf("departures held with the debounce off: %v", v)
	}
}
