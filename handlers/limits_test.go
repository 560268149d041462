package handlers

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/store"
)

// every route that takes a token, with a request that would succeed.
var tokenRoutes = []struct{ method, path, body string }{
	{http.MethodPost, "/api/presence", `{"status":"online","sessionId":"limits-tab-1"}`},
	{http.MethodGet, "/api/presence?userIds=alice", ""},
	{http.MethodPost, "/api/presence/room/lobby", `{"action":"join","sessionId":"limits-tab-1"}`},
	{http.MethodGet, "/api/presence/room/lobby", ""},
	{http.MethodPost, "/api/presence/room/lobby/typing", `{"typing":true}`},
	{http.MethodGet, "/api/presence/room/lobby/typing", ""},
	{http.MethodGet, "/sse/room/lobby?sid=limits-tab-1", ""},
	{http.MethodGet, "/sse/users?ids=alice", ""},
	{http.MethodGet, "/fragments/user/alice/dot", ""},
	{http.MethodGet, "/fragments/user/alice/avatar", ""},
	{http.MethodGet, "/fragments/room/lobby/members", ""},
	{http.MethodGet, "/fragments/room/lobby/typing", ""},
	{http.MethodGet, "/fragments/room/lobby/live", ""},
}

// Finding 4 (sizes): a token whose name is over 64 characters, whose
// avatar is over 2 KiB or not an http(s) URL or a path, is refused with a
// 400 and a clear JSON error on every route, and changes nothing. Before,
// a 40,000-character name was accepted and fanned out on every join.
func TestTokenProfileLimits(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	mint := func(p store.Profile) string {
		tok, err := n.srv.Auth().Mint(p, time.Hour, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, tc := range []struct {
		what string
		p    store.Profile
		want string
	}{
		{"65-character name", store.Profile{ID: "mallory", Name: strings.Repeat("é", 65)}, "at most 64"},
		{"20,000-character name", store.Profile{ID: "mallory", Name: strings.Repeat("x", 20_000)}, "at most 64"},
		{"token over 32 KiB", store.Profile{ID: "mallory", Name: strings.Repeat("x", 40_000)}, "at most 32768 allowed"},
		{"CR in name", store.Profile{ID: "mallory", Name: "Eve\revent: members"}, "control characters"},
		{"javascript: avatar", store.Profile{ID: "mallory", Avatar: "javascript:alert(1)"}, "http(s) URL"},
		{"data: avatar", store.Profile{ID: "mallory", Avatar: "data:image/svg+xml,<svg/onload=alert(1)>"}, "http(s) URL"},
		{"protocol-relative avatar", store.Profile{ID: "mallory", Avatar: "//evil.example/a.png"}, "http(s) URL"},
		{"backslash avatar", store.Profile{ID: "mallory", Avatar: `/\evil.example/a.png`}, "http(s) URL"},
		{"avatar over 2 KiB", store.Profile{ID: "mallory", Avatar: "https://img.example/" + strings.Repeat("a", 2048)}, "at most 2048"},
	} {
		tok := mint(tc.p)
		for _, rt := range tokenRoutes {
			r := do(t, c, rt.method, n.base+rt.path, tok, rt.body)
			if r.code != http.StatusBadRequest {
				t.Errorf("%s: %s %s = %d, want 400", tc.what, rt.method, rt.path, r.code)
				continue
			}
			if msg, _ := r.json(t)["error"].(string); !strings.Contains(msg, tc.want) {
				t.Errorf("%s: %s %s error %q, want it to say %q", tc.what, rt.method, rt.path, msg, tc.want)
			}
		}
	}
	// Nothing changed: mallory was never seen, the room is empty.
	viewer := n.token("viewer", "Viewer")
	r := do(t, c, http.MethodGet, n.base+"/api/presence?userIds=mallory", viewer, "")
	mustOK(t, r)
	if p := r.json(t)["presence"].(map[string]any); p["mallory"] != nil {
		t.Fatalf("a refused token left presence behind: %s", r.body)
	}
	if m := roomMembers(t, c, n, "lobby", viewer); len(m) != 0 {
		t.Fatalf("a refused token joined the room: %v", m)
	}

	// At the limits, and with the avatar forms allowed, it works.
	for _, p := range []store.Profile{
		{ID: "ok1", Name: strings.Repeat("é", 64), Avatar: "https://img.example/a.png?s=64"},
		{ID: "ok2", Name: "Bob", Avatar: "/avatars/bob.png"},
		{ID: "ok3", Name: "Carol", Avatar: "http://img.example/" + strings.Repeat("a", 2048-len("http://img.example/"))},
		{ID: strings.Repeat("d", 128)}, // no name: the 128-character id is shown
	} {
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", mint(p), `{"status":"online"}`))
	}
}

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (f *fakeClock) Now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.now }
func (f *fakeClock) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

// limitedNode is a memory node whose rate limiters run on a fake clock
// (set between New and Start, so that no request can race with it).
func limitedNode(t *testing.T) (*node, *fakeClock) {
	opts := storeOptions()
	longTTL(&opts)
	st := store.NewMemory(opts)
	t.Cleanup(func() { _ = st.Close() })
	srv, err := New(testConfig(), st, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	srv.lim = newLimits(true, clk.Now, nil)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, srv: srv, st: st, base: "http://" + srv.Addr()}
	t.Cleanup(n.shutdown)
	return n, clk
}

func must429(t *testing.T, r response, what, says string) {
	t.Helper()
	if r.code != http.StatusTooManyRequests {
		t.Fatalf("%s: %d %s, want 429", what, r.code, r.body)
	}
	ra, err := strconv.Atoi(r.hdr.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("%s: Retry-After %q, want whole seconds ≥ 1", what, r.hdr.Get("Retry-After"))
	}
	if msg, _ := r.json(t)["error"].(string); !strings.Contains(msg, says) {
		t.Fatalf("%s: error %q, want it to say %q", what, msg, says)
	}
}

// Finding 4 (rates): heartbeats, status changes, room joins/leaves and
// typing marks are limited per session (typing per user) by token buckets:
// the burst passes, the next one gets 429 with Retry-After and a JSON
// error and changes nothing, other sessions are not affected, and tokens
// come back at the rate. Before, one session sent 4,386 heartbeats/s and
// 4,475 status flips in 3 s, all 200.
func TestRateLimits(t *testing.T) {
	n, clk := limitedNode(t)
	c := newClient(t)
	alice := n.token("alice", "Alice")
	post := func(path, body string) response { return do(t, c, http.MethodPost, n.base+path, alice, body) }

	// Heartbeats: 20 at once, then 5 a second.
	hb := `{"status":"online","sessionId":"alice-tab-1"}`
	for i := range HeartbeatRule.Burst {
		if r := post("/api/presence", hb); r.code != http.StatusOK {
			t.Fatalf("heartbeat %d: %d %s", i+1, r.code, r.body)
		}
	}
	must429(t, post("/api/presence", hb), "heartbeat past the burst", "heartbeats")
	mustOK(t, post("/api/presence", `{"status":"online","sessionId":"alice-tab-2"}`)) // another session
	clk.Advance(time.Second)
	for i := range 5 {
		if r := post("/api/presence", hb); r.code != http.StatusOK {
			t.Fatalf("heartbeat %d after 1 s: %d %s", i+1, r.code, r.body)
		}
	}
	must429(t, post("/api/presence", hb), "sixth heartbeat within that second", "heartbeats")

	// Status changes: 10 at once, then 1 a second; a refused change
	// changes nothing.
	bob := n.token("bob", "Bob")
	flip := func(st string) response {
		return do(t, c, http.MethodPost, n.base+"/api/presence", bob, `{"status":"`+st+`","sessionId":"bob-tab-1"}`)
	}
	sts := []string{"online", "busy"}
	for i := range StatusRule.Burst {
		if r := flip(sts[i%2]); r.code != http.StatusOK {
			t.Fatalf("status change %d: %d %s", i+1, r.code, r.body)
		}
	}
	// The last accepted was "busy"; a repeat is a heartbeat, not a change.
	mustOK(t, flip("busy"))
	must429(t, flip("away"), "status change past the burst", "status changes")
	if st := userStatus(t, c, n, "bob", bob); st != "busy" {
		t.Fatalf("a refused status change applied: bob is %v", st)
	}
	clk.Advance(time.Second)
	mustOK(t, flip("away"))
	must429(t, flip("online"), "second change within the second", "status changes")

	// Room joins and leaves: 20 at once, then 2 a second.
	acts := []string{"join", "leave"}
	for i := range RoomRule.Burst {
		if r := post("/api/presence/room/lobby", `{"action":"`+acts[i%2]+`","sessionId":"alice-tab-1"}`); r.code != http.StatusOK {
			t.Fatalf("room action %d: %d %s", i+1, r.code, r.body)
		}
	}
	must429(t, post("/api/presence/room/lobby", `{"action":"join","sessionId":"alice-tab-1"}`), "join past the burst", "room joins and leaves")
	if m := roomMembers(t, c, n, "lobby", alice); m["alice"] {
		t.Fatal("a refused join joined the room")
	}

	// Typing marks: 20 at once, then 5 a second, per user (typing needs
	// membership: another session of alice's joins, within its own limit).
	mustOK(t, post("/api/presence/room/lobby", `{"action":"join","sessionId":"alice-tab-2"}`))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", bob, `{"action":"join","sessionId":"bob-tab-1"}`))
	for i := range TypingRule.Burst {
		if r := post("/api/presence/room/lobby/typing", `{"typing":true}`); r.code != http.StatusOK {
			t.Fatalf("typing %d: %d %s", i+1, r.code, r.body)
		}
	}
	must429(t, post("/api/presence/room/lobby/typing", `{"typing":true}`), "typing past the burst", "typing marks")
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby/typing", bob, `{"typing":true}`))
}

// A client behaving like presence.js never meets a limit: over ten
// (fake) minutes it heartbeats every 30 s, changes status every 20 s,
// marks typing every 2 s and switches rooms every 15 s.
func TestNormalClientNeverLimited(t *testing.T) {
	n, clk := limitedNode(t)
	c := newClient(t)
	tok := n.token("carol", "Carol")
	sts := []string{"online", "away", "busy"}
	for sec := 0; sec < 600; sec++ {
		var reqs [][2]string
		if sec%30 == 0 {
			reqs = append(reqs, [2]string{"/api/presence", `{"status":"online","sessionId":"carol-tab-1"}`})
		}
		if sec%20 == 0 {
			reqs = append(reqs, [2]string{"/api/presence", `{"status":"` + sts[(sec/20)%3] + `","sessionId":"carol-tab-1"}`})
		}
		if sec%15 == 0 {
			reqs = append(reqs, [2]string{"/api/presence/room/lobby", `{"action":"leave","sessionId":"carol-tab-1"}`},
				[2]string{"/api/presence/room/lobby", `{"action":"join","sessionId":"carol-tab-1"}`})
		}
		if sec%2 == 0 { // typing needs membership: after the join
			reqs = append(reqs, [2]string{"/api/presence/room/lobby/typing", `{"typing":true}`})
		}
		for _, rq := range reqs {
			if r := do(t, c, http.MethodPost, n.base+rq[0], tok, rq[1]); r.code != http.StatusOK {
				t.Fatalf("second %d: POST %s %s: %d %s", sec, rq[0], rq[1], r.code, r.body)
			}
		}
		clk.Advance(time.Second)
	}
}
