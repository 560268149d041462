package handlers

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/session"
	"github.com/presenced/presenced/store"
)

// One connection, many topics: the page's room (joined), another room
// (watched) and a set of user dots, each with its state first.
func TestOneStreamManyTopics(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		carol := n.token("carol", "Carol")
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/side", carol, `{"action":"join","sessionId":"carol-tab-1"}`))
		s := openSSE(t, c, n.base+"/sse?room=main&rooms=side&users=carol,dave&sid=alice-tab-1", n.token("alice", "Alice"))
		s.waitAll("state of every topic",
			named("members", `data-presence-room="main"`, `data-presence-user="alice"`),
			named("typing"),
			named("members-side", `data-presence-room="side"`, `data-presence-user="carol"`),
			named("typing-side"),
			named("presence-carol", `data-status="online"`),
			named("presence-dave", `data-status="offline"`),
		)
		// Alice joined main only, not the watched room.
		if roomMembers(t, c, n, "side", carol)["alice"] {
			t.Fatal("a watched room was joined")
		}
		if !roomMembers(t, c, n, "main", carol)["alice"] {
			t.Fatal("the stream's room was not joined")
		}
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", carol, `{"status":"busy","sessionId":"carol-tab-1"}`))
		s.waitFor("carol busy", named("presence-carol", `data-status="busy"`))
		s.waitFor("side stack re-rendered", named("members-side", `data-status="busy"`))
	})
}

// Watch-only: a dashboard observes a room without appearing in it, in HTML
// and JSON; the JSON sync says it is not a member.
func TestWatchOnlyStreams(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bob := n.token("bob", "Bob")
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/ops", bob, `{"action":"join","sessionId":"bob-tab-1"}`))
		bot := n.token("bot", "Dashboard")
		html := openSSE(t, c, n.base+"/sse/room/ops?watch=1", bot)
		html.waitFor("state", membersWith(1, "bob"))
		js := openSSE(t, c, n.base+"/sse?room=ops&watch=1&format=json", bot)
		sync := decodeJSON(t, js.waitFor("sync", named("sync")).Data)
		if sync["member"] != false || sync["count"] != float64(1) || sync["topic"] != "room:ops" {
			t.Fatalf("sync %v", sync)
		}
		if _, ok := sync["sessionId"]; ok {
			t.Fatalf("a watch-only sync names a session: %v", sync)
		}
		if roomMembers(t, c, n, "ops", bob)["bot"] {
			t.Fatal("the watcher joined the room")
		}
		if st := userStatus(t, c, n, "bot", bob); st != nil {
			t.Fatalf("the watcher has presence: %v", st)
		}
		// Changes still arrive.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/ops", n.token("eve", "Eve"), `{"action":"join","sessionId":"eve-tab-1"}`))
		html.waitFor("eve joined", membersWith(2, "bob", "eve"))
		js.waitFor("eve's join", named("join", `"id":"eve"`))
	})
}

// A member's JSON stream: its sync lists its own user and says member, and
// its own join is not sent again after that sync.
func TestJoiningJSONStreamOwnJoinNotRepeated(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		s := openSSE(t, c, n.base+"/sse/room/r?format=json&sid=amy-tab-01", n.token("amy", "Amy"))
		sync := decodeJSON(t, s.waitFor("sync", named("sync")).Data)
		if sync["member"] != true || sync["sessionId"] != "amy-tab-01" || sync["count"] != float64(1) {
			t.Fatalf("sync %v", sync)
		}
		for _, e := range s.drain(700 * time.Millisecond) {
			if e.Event == "join" && strings.Contains(e.Data, `"id":"amy"`) {
				t.Fatalf("own join after a sync listing it: %s", e.Data)
			}
		}
	})
}

// Bad stream requests are refused before anything happens.
func TestStreamRequestValidation(t *testing.T) {
	n := startNode(t, newMemoryStore(t))
	c := newClient(t)
	tok := n.token("zed", "Zed", "allowed")
	for _, q := range []struct {
		path string
		code int
	}{
		{"/sse", http.StatusBadRequest},
		{"/sse?room=bad%20id", http.StatusBadRequest},
		{"/sse?rooms=allowed,bad%20id", http.StatusBadRequest},
		{"/sse?users=a,,b", http.StatusBadRequest},
		{"/sse?room=allowed&watch=maybe", http.StatusBadRequest},
		{"/sse?room=allowed&format=xml", http.StatusBadRequest},
		{"/sse?room=other", http.StatusForbidden},
		{"/sse?room=allowed&rooms=other", http.StatusForbidden},
		{"/sse?room=allowed&sid=short", http.StatusBadRequest},
	} {
		_, code := dialSSE(t, c, n.base+q.path, tok)
		if code != q.code {
			t.Errorf("GET %s: %d, want %d", q.path, code, q.code)
		}
	}
	var many []string
	for i := range MaxStreamRooms + 1 {
		many = append(many, fmt.Sprintf("room-%d", i))
	}
	if _, code := dialSSE(t, c, n.base+"/sse?rooms="+strings.Join(many, ","), n.token("zed", "Zed")); code != http.StatusBadRequest {
		t.Errorf("%d rooms: %d, want 400", len(many), code)
	}
	if roomMembers(t, c, n, "allowed", tok)["zed"] {
		t.Fatal("a refused stream joined")
	}
}

// Streams are capped per session and per user (issue 11 finding 3): one
// token cannot hold an unbounded number of them.
func TestStreamCaps(t *testing.T) {
	n := startNode(t, newMemoryStore(t))
	c := newClient(t)
	tok := n.token("greedy", "Greedy")
	for i := range session.MaxStreamsPerSession {
		openSSE(t, c, n.base+fmt.Sprintf("/sse/room/r%d?sid=one-session", i), tok)
	}
	if _, code := dialSSE(t, c, n.base+"/sse/room/rx?sid=one-session", tok); code != http.StatusTooManyRequests {
		t.Fatalf("stream %d of one session: %d, want 429", session.MaxStreamsPerSession+1, code)
	}
	for i := session.MaxStreamsPerSession; i < session.MaxStreamsPerUser; i++ {
		openSSE(t, c, n.base+"/sse/users?ids=a", tok)
	}
	if _, code := dialSSE(t, c, n.base+"/sse/users?ids=a", tok); code != http.StatusTooManyRequests {
		t.Fatalf("stream %d of one user: %d, want 429", session.MaxStreamsPerUser+1, code)
	}
	// Another user is not affected.
	openSSE(t, c, n.base+"/sse/users?ids=a", n.token("other", "Other"))
}

func newMemoryStore(t *testing.T) store.Store {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	return st
}
