package handlers

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

func mintSee(t *testing.T, n *node, id string, see *See) string {
	t.Helper()
	tok, err := n.srv.Auth().MintSee(store.Profile{ID: id, Name: strings.ToUpper(id[:1]) + id[1:]}, time.Hour, nil, see)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// Finding 7: a token with a "see" claim reads only itself, the users it
// lists and the live members of the rooms it lists, on both backends:
// GET /api/presence answers null for anyone else (as for a user never
// seen), dot and avatar fragments show them offline and unknown, room
// member lists and typing lines leave them out. Without the claim
// everything is visible, as before. Before, any token read anyone's status
// and metadata.
func TestSeeClaimLimitsWhatATokenReads(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		post := func(tok, path, body string) { t.Helper(); mustOK(t, do(t, c, http.MethodPost, n.base+path, tok, body)) }
		bob, carol := n.token("bob", "Bob"), n.token("carol", "Carol")
		eve := n.token("eve", "Eve Secret")
		post(bob, "/api/presence", `{"status":"busy","sessionId":"bob-tab-1","metadata":{"page":"/bob"}}`)
		post(carol, "/api/presence/room/r1", `{"action":"join","sessionId":"carol-tab-1"}`)
		post(eve, "/api/presence", `{"status":"online","sessionId":"eve-tab-1","metadata":{"page":"/docs/secret-plan"}}`)
		post(eve, "/api/presence/room/r2", `{"action":"join","sessionId":"eve-tab-1"}`)
		post(bob, "/api/presence/room/r2", `{"action":"join","sessionId":"bob-tab-1"}`)
		post(eve, "/api/presence/room/r2/typing", `{"typing":true}`)

		alice := mintSee(t, n, "alice", &See{Users: []string{"bob"}, Rooms: []string{"r1"}})
		post(alice, "/api/presence", `{"status":"away","sessionId":"alice-tab-1"}`)

		presence := func(tok string) map[string]any {
			t.Helper()
			r := do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice,bob,carol,eve", tok, "")
			mustOK(t, r)
			return r.json(t)["presence"].(map[string]any)
		}
		p := presence(alice)
		for _, u := range []string{"alice", "bob", "carol"} {
			if p[u] == nil {
				t.Fatalf("alice cannot see %s: %v", u, p)
			}
		}
		if p["eve"] != nil {
			t.Fatalf("alice reads eve, whom her token does not list: %v", p["eve"])
		}
		if strings.Contains(fmt.Sprint(p), "secret-plan") {
			t.Fatal("eve's metadata leaked")
		}

		// Fragments: eve is offline and unknown (her name is not shown).
		for _, path := range []string{"/fragments/user/eve/dot?label=1", "/fragments/user/eve/avatar"} {
			r := do(t, c, http.MethodGet, n.base+path, alice, "")
			mustOK(t, r)
			if !strings.Contains(string(r.body), `data-status="offline"`) || strings.Contains(string(r.body), "Eve Secret") {
				t.Fatalf("%s for an unseen user: %s", path, r.body)
			}
		}
		r := do(t, c, http.MethodGet, n.base+"/fragments/user/bob/dot", alice, "")
		if !strings.Contains(string(r.body), `data-status="busy"`) {
			t.Fatalf("a listed user's dot: %s", r.body)
		}

		// Room r2 (allowed: no rooms claim) holds eve and bob: alice sees bob only.
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/r2", alice, "")
		mustOK(t, r)
		if m := r.json(t); m["count"] != float64(1) || strings.Contains(string(r.body), "eve") {
			t.Fatalf("r2 members for alice: %s", r.body)
		}
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/r2/typing", alice, "")
		if string(r.body) != `{"typingUsers":[]}`+"\n" {
			t.Fatalf("r2 typing for alice: %s", r.body)
		}
		for _, path := range []string{"/fragments/room/r2/members", "/fragments/room/r2/typing", "/fragments/room/r2/live"} {
			r := do(t, c, http.MethodGet, n.base+path, alice, "")
			mustOK(t, r)
			if strings.Contains(string(r.body), "eve") || strings.Contains(string(r.body), "Eve") {
				t.Fatalf("%s shows eve to alice: %s", path, r.body)
			}
		}
		if r := do(t, c, http.MethodGet, n.base+"/fragments/room/r2/members", alice, ""); membersCount(string(r.body)) != 1 {
			t.Fatalf("r2 stack count for alice: %s", r.body)
		}

		// Membership is live: once carol leaves r1, alice no longer sees her.
		post(carol, "/api/presence/room/r1", `{"action":"leave","sessionId":"carol-tab-1"}`)
		if p := presence(alice); p["carol"] != nil {
			t.Fatalf("carol left r1 and alice still sees her: %v", p["carol"])
		}

		// An empty claim: only oneself.
		self := mintSee(t, n, "alice", &See{})
		if p := presence(self); p["alice"] == nil || p["bob"] != nil || p["carol"] != nil || p["eve"] != nil {
			t.Fatalf("see:{} reads %v", p)
		}
		// No claim: everyone, as before.
		if p := presence(n.token("zed", "Zed")); p["eve"] == nil || p["bob"] == nil {
			t.Fatalf("a token without see reads %v", p)
		}
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/r2", n.token("zed", "Zed"), "")
		if r.json(t)["count"] != float64(2) {
			t.Fatalf("r2 members without see: %s", r.body)
		}
	})
}

// The see claim is checked where the token is accepted: too many entries
// or bad ids are a 400 on every route.
func TestSeeClaimLimits(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	many := make([]string, MaxSeeUsers+1)
	for i := range many {
		many[i] = fmt.Sprint("u", i)
	}
	rooms := make([]string, MaxSeeRooms+1)
	for i := range rooms {
		rooms[i] = fmt.Sprint("r", i)
	}
	for _, tc := range []struct {
		see  *See
		want string
	}{
		{&See{Users: many}, "see.users lists 501"},
		{&See{Rooms: rooms}, "see.rooms lists 33"},
		{&See{Users: []string{"bad id"}}, "not a valid user id"},
		{&See{Rooms: []string{"<r>"}}, "not a valid room id"},
	} {
		tok := mintSee(t, n, "alice", tc.see)
		for _, rt := range tokenRoutes {
			r := do(t, c, rt.method, n.base+rt.path, tok, rt.body)
			if r.code != http.StatusBadRequest || !strings.Contains(r.json(t)["error"].(string), tc.want) {
				t.Errorf("%s %s with %s: %d %s", rt.method, rt.path, tc.want, r.code, r.body)
			}
		}
	}
	// At the limits it is accepted.
	mustOK(t, do(t, c, http.MethodGet, n.base+"/api/presence?userIds=u1", mintSee(t, n, "alice", &See{Users: many[:MaxSeeUsers], Rooms: rooms[:MaxSeeRooms]}), ""))
}

// viewer.canSee, the one rule every reader applies.
func TestViewerCanSee(t *testing.T) {
	members := map[string][]store.Member{"r1": {{Profile: store.Profile{ID: "m1"}}}, "r2": {{Profile: store.Profile{ID: "m2"}}}}
	of := func(r string) []store.Member { return members[r] }
	all := newViewer(Identity{User: store.Profile{ID: "me"}}, of)
	if !all.seesAll() || !all.canSee("anyone") || all.roomDependent() {
		t.Fatal("no claim must see everyone")
	}
	v := newViewer(Identity{User: store.Profile{ID: "me"}, See: &See{Users: []string{"u1"}, Rooms: []string{"r1"}}}, of)
	for u, want := range map[string]bool{"me": true, "u1": true, "m1": true, "m2": false, "x": false} {
		if v.canSee(u) != want {
			t.Errorf("canSee(%q) = %v, want %v", u, !want, want)
		}
	}
	if v.seesAll() || !v.roomDependent() {
		t.Fatal("a claim with rooms depends on membership")
	}
	ms := v.visibleMembers([]store.Member{{Profile: store.Profile{ID: "m1"}}, {Profile: store.Profile{ID: "m2"}}, {Profile: store.Profile{ID: "me"}}})
	if len(ms) != 2 || ms[0].ID != "m1" || ms[1].ID != "me" {
		t.Fatalf("visible members %v", ms)
	}
	ts := v.visibleTypists([]store.Typist{{ID: "m2"}, {ID: "u1"}})
	if len(ts) != 1 || ts[0].ID != "u1" {
		t.Fatalf("visible typists %v", ts)
	}
}

// Origin policy: a stream requested by a page of an origin --allow-origin
// does not list is refused with 403 before it joins anything. Before, the
// stream joined the room and CORS only hid the answer from the page.
func TestStreamFromForeignOriginRefused(t *testing.T) {
	st := memStore(t)
	n := startNode(t, st, func(c *config.Config) { c.AllowOrigins = []string{"https://host.example"} })
	c := newClient(t)
	mallory := n.token("mallory", "Mallory")
	for _, origin := range []string{"https://evil.example", "http://host.example", "https://host.example.evil.example", "null", "not a url"} {
		for _, path := range []string{"/sse/room/lobby?sid=mallory-tab-1", "/sse/users?ids=alice"} {
			if _, code := dialSSE(t, c, n.base+path, mallory, "Origin", origin); code != http.StatusForbidden {
				t.Errorf("%s from %q: %d, want 403", path, origin, code)
			}
		}
		// Also when the token comes in the URL, as a leaked ?token= would.
		if _, code := dialSSE(t, c, n.base+"/sse/room/lobby?sid=mallory-tab-1&token="+mallory, "", "Origin", origin); code != http.StatusForbidden {
			t.Errorf("?token= stream from %q: %d, want 403", origin, code)
		}
	}
	viewer := n.token("viewer", "Viewer")
	if m := roomMembers(t, c, n, "lobby", viewer); len(m) != 0 {
		t.Fatalf("a refused stream joined the room: %v", m)
	}
	if p := userStatus(t, c, n, "mallory", viewer); p != nil {
		t.Fatalf("a refused stream made mallory present: %v", p)
	}
	// Allowed: the listed origin, this gateway's own, and no Origin at all.
	for _, origin := range []string{"https://host.example", n.base, ""} {
		var hdr []string
		if origin != "" {
			hdr = []string{"Origin", origin}
		}
		s := openSSE(t, c, n.base+"/sse/users?ids=alice&format=json", mallory, hdr...)
		s.waitFor("sync", named("sync"))
		s.close()
	}
	s := openSSE(t, c, n.base+"/sse/room/lobby?sid=mallory-tab-1&format=json", mallory, "Origin", "https://host.example")
	s.waitFor("sync", named("sync", "mallory"))
}

// The see claim on streams (issue 11 finding 7): /sse/users and room
// streams, HTML and JSON, show only whom the token may see, and send no
// change of anyone else.
func TestSeeClaimOnStreams(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		bob, carol := n.token("bob", "Bob"), n.token("carol", "Carol Secret")
		for _, tok := range []string{bob, carol} {
			mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/r", tok, `{"action":"join","sessionId":"tab-of-`+map[string]string{bob: "bob", carol: "carol"}[tok]+`"}`))
		}
		dave := mintSee(t, n, "dave", &See{Users: []string{"bob"}})

		users := openSSE(t, c, n.base+"/sse/users?ids=bob,carol", dave)
		users.waitAll("dots", named("presence-bob", `data-status="online"`), named("presence-carol", `data-status="offline"`))
		js := openSSE(t, c, n.base+"/sse?room=r&watch=1&users=carol&format=json", dave)
		var room, us map[string]any
		for room == nil || us == nil {
			d := decodeJSON(t, js.waitFor("syncs", named("sync")).Data)
			if d["topic"] == "users" {
				us = d
			} else {
				room = d
			}
		}
		if room["count"] != float64(1) || strings.Contains(fmt.Sprint(room), "carol") {
			t.Fatalf("room sync shows an unseen member: %v", room)
		}
		if p := us["presence"].(map[string]any); p["carol"] != nil {
			t.Fatalf("users sync shows carol: %v", us)
		}
		html := openSSE(t, c, n.base+"/sse/room/r?watch=1&list=1", dave)
		ev := html.waitFor("stack", named("members"))
		if membersCount(ev.Data) != 1 || strings.Contains(ev.Data, "carol") || strings.Contains(ev.Data, "Secret") {
			t.Fatalf("stack shows carol: %s", ev.Data)
		}

		// Carol's changes reach nobody of dave's; bob's do.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", carol, `{"status":"busy","sessionId":"tab-of-carol"}`))
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", bob, `{"status":"busy","sessionId":"tab-of-bob"}`))
		users.waitFor("bob busy", named("presence-bob", `data-status="busy"`))
		js.waitFor("bob busy (json)", named("status", `"id":"bob"`))
		html.waitFor("bob busy (stack)", named("members", `data-status="busy"`))
		for _, s := range []*sseClient{users, js, html} {
			for _, e := range s.drain(300 * time.Millisecond) {
				if strings.Contains(e.Data, "carol") || strings.Contains(e.Data, "Secret") {
					t.Fatalf("carol reached a stream of dave's: %s %s", e.Event, e.Data)
				}
			}
		}
	}, longTTL)
}

// A see claim that lists rooms follows who is in them: a user who joins the
// room becomes visible on an open stream (within a review interval).
func TestSeeRoomsFollowMembership(t *testing.T) {
	defer func(d time.Duration) { viewReview = d }(viewReview)
	viewReview = 200 * time.Millisecond
	n := startNode(t, newMemoryStore(t))
	c := newClient(t)
	dave := mintSee(t, n, "dave", &See{Rooms: []string{"team"}})
	eve := n.token("eve", "Eve")
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", eve, `{"status":"busy","sessionId":"tab-of-eve"}`))
	s := openSSE(t, c, n.base+"/sse/users?ids=eve", dave)
	s.waitFor("eve unseen", named("presence-eve", `data-status="offline"`))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/team", eve, `{"action":"join","sessionId":"tab-of-eve"}`))
	s.waitFor("eve seen once in the room", named("presence-eve", `data-status="busy"`))
}
