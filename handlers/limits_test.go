package handlers

import (
	"net/http"
	"strings"
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
	} {
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", mint(p), `{"status":"online"}`))
	}
}
