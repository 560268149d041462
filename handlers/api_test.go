package handlers

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presenced/presenced/store"
)

// memNode is a gateway on the memory backend with sessions that do not
// expire during the test.
func memNode(t *testing.T) *node {
	opts := storeOptions()
	longTTL(&opts)
	st := store.NewMemory(opts)
	t.Cleanup(func() { _ = st.Close() })
	return startNode(t, st)
}

// signed signs arbitrary claims with a key and method.
func signed(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The JSON API with the design card's semantics, through real HTTP.
func TestAPIRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := n.token("alice", "Alice")

		r := do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice,ghost", alice, "")
		mustOK(t, r)
		p := r.json(t)["presence"].(map[string]any)
		if p["alice"] != nil || p["ghost"] != nil {
			t.Fatalf("never seen users must be null: %s", r.body)
		}

		// sendBeacon: text/plain body.
		r = do(t, c, http.MethodPost, n.base+"/api/presence", alice, `{"status":"away","sessionId":"alice-tab-1","metadata":{"page":"/doc/1"}}`, "Content-Type", "text/plain;charset=UTF-8")
		mustOK(t, r)
		if r.json(t)["success"] != true {
			t.Fatalf("answer %s", r.body)
		}
		r = do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice", alice, "")
		a := r.json(t)["presence"].(map[string]any)["alice"].(map[string]any)
		if a["status"] != "away" || a["name"] != "Alice" || a["userId"] != "alice" || a["lastSeen"].(float64) < float64(time.Now().Add(-time.Minute).UnixMilli()) {
			t.Fatalf("presence %s", r.body)
		}
		if md, _ := a["metadata"].(map[string]any); md["page"] != "/doc/1" {
			t.Fatalf("metadata %v", a["metadata"])
		}

		// Rooms.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/doc:1", alice, `{"action":"join","sessionId":"alice-tab-1"}`))
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/doc:1", alice, "")
		mustOK(t, r)
		m := r.json(t)
		if m["count"] != float64(1) || m["members"].([]any)[0].(map[string]any)["id"] != "alice" {
			t.Fatalf("members %s", r.body)
		}
		// Typing.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/doc:1/typing", alice, `{"typing":true}`))
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/doc:1/typing", alice, "")
		if tu := r.json(t)["typingUsers"].([]any); len(tu) != 1 || tu[0].(map[string]any)["name"] != "Alice" {
			t.Fatalf("typing %s", r.body)
		}
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/doc:1/typing", alice, `{"typing":false}`))
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/doc:1/typing", alice, "")
		if string(r.body) != `{"typingUsers":[]}`+"\n" {
			t.Fatalf("typing after stop %q", r.body)
		}
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/doc:1", alice, `{"action":"leave","sessionId":"alice-tab-1"}`))
		r = do(t, c, http.MethodGet, n.base+"/api/presence/room/doc:1", alice, "")
		if r.json(t)["count"] != float64(0) {
			t.Fatalf("members after leave %s", r.body)
		}

		// offline ends the session at once; the user was seen: offline + lastSeen.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", alice, `{"status":"offline","sessionId":"alice-tab-1"}`))
		r = do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice", alice, "")
		a = r.json(t)["presence"].(map[string]any)["alice"].(map[string]any)
		if a["status"] != "offline" || a["lastSeen"].(float64) <= 0 {
			t.Fatalf("after offline %s", r.body)
		}

		// No sessionId: one default session per user; no status: online.
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", alice, `{}`))
		r = do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice", alice, "")
		if r.json(t)["presence"].(map[string]any)["alice"].(map[string]any)["status"] != "online" {
			t.Fatalf("default heartbeat %s", r.body)
		}
	}, longTTL)
}

// Every 4xx row of the contract.
func TestAPIErrors(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	tok := n.token("alice", "Alice")
	limited := n.token("limited", "Limited", "allowed-room")
	big := `{"status":"online","metadata":{"x":"` + strings.Repeat("a", 3000) + `"}}`
	huge := `{"status":"online","pad":"` + strings.Repeat("a", 17<<10) + `"}`
	manyIDs := make([]string, 101)
	for i := range manyIDs {
		manyIDs[i] = fmt.Sprintf("u%d", i)
	}
	now := time.Now()
	expired := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Hour).Unix()})
	noExp := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice"})
	forged := signed(t, jwt.SigningMethodHS256, []byte("some-other-secret-some-other-secret"), jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	hs512 := signed(t, jwt.SigningMethodHS512, testSecret, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	none := signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": now.Add(time.Hour).Unix()})
	badSub := signed(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "al ice", "exp": now.Add(time.Hour).Unix()})

	cases := []struct {
		name, method, path, token, body string
		hdr                             []string
		want                            int
	}{
		{"malformed JSON", "POST", "/api/presence", tok, `{"status":`, nil, 400},
		{"not an object", "POST", "/api/presence", tok, `["online"]`, nil, 400},
		{"empty body", "POST", "/api/presence", tok, ``, nil, 400},
		{"trailing garbage", "POST", "/api/presence", tok, `{"status":"online"} x`, nil, 400},
		{"status of wrong type", "POST", "/api/presence", tok, `{"status":1}`, nil, 400},
		{"unknown status", "POST", "/api/presence", tok, `{"status":"sleeping"}`, nil, 400},
		{"bad session id", "POST", "/api/presence", tok, `{"status":"online","sessionId":"short"}`, nil, 400},
		{"metadata not an object", "POST", "/api/presence", tok, `{"status":"online","metadata":[1]}`, nil, 400},
		{"metadata over 2 KiB", "POST", "/api/presence", tok, big, nil, 400},
		{"body over 16 KiB", "POST", "/api/presence", tok, huge, nil, 413},
		{"unknown action", "POST", "/api/presence/room/lobby", tok, `{"action":"dance"}`, nil, 400},
		{"malformed room body", "POST", "/api/presence/room/lobby", tok, `{`, nil, 400},
		{"bad room id", "POST", "/api/presence/room/bad%20room", tok, `{"action":"join"}`, nil, 400},
		{"bad room id (GET)", "GET", "/api/presence/room/" + strings.Repeat("r", 129), tok, ``, nil, 400},
		{"typing not a bool", "POST", "/api/presence/room/lobby/typing", tok, `{"typing":"yes"}`, nil, 400},
		{"typing missing", "POST", "/api/presence/room/lobby/typing", tok, `{}`, nil, 400},
		{"typing without joining", "POST", "/api/presence/room/not-joined/typing", tok, `{"typing":true}`, nil, 409},
		{"userIds empty", "GET", "/api/presence?userIds=", tok, ``, nil, 400},
		{"userIds missing", "GET", "/api/presence", tok, ``, nil, 400},
		{"userIds over 100", "GET", "/api/presence?userIds=" + strings.Join(manyIDs, ","), tok, ``, nil, 400},
		{"bad user id", "GET", "/api/presence?userIds=ok,not%20ok", tok, ``, nil, 400},
		{"no token", "GET", "/api/presence?userIds=a", "", ``, nil, 401},
		{"garbage token", "GET", "/api/presence?userIds=a", "not.a.jwt", ``, nil, 401},
		{"forged token", "GET", "/api/presence?userIds=a", forged, ``, nil, 401},
		{"expired token", "GET", "/api/presence?userIds=a", expired, ``, nil, 401},
		{"token without exp", "GET", "/api/presence?userIds=a", noExp, ``, nil, 401},
		{"HS512 token", "GET", "/api/presence?userIds=a", hs512, ``, nil, 401},
		{"alg none token", "GET", "/api/presence?userIds=a", none, ``, nil, 401},
		{"invalid sub", "GET", "/api/presence?userIds=a", badSub, ``, nil, 401},
		{"basic auth", "GET", "/api/presence?userIds=a", "", ``, []string{"Authorization", "Basic YTpi"}, 401},
		{"bad ?token=", "GET", "/api/presence?userIds=a&token=x", "", ``, nil, 401},
		{"room not in token", "GET", "/api/presence/room/other-room", limited, ``, nil, 403},
		{"room not in token (join)", "POST", "/api/presence/room/other-room", limited, `{"action":"join"}`, nil, 403},
		{"room not in token (typing)", "POST", "/api/presence/room/other-room/typing", limited, `{"typing":true}`, nil, 403},
		{"room not in token (stream)", "GET", "/sse/room/other-room", limited, ``, nil, 403},
		{"room not in token (fragment)", "GET", "/fragments/room/other-room/members", limited, ``, nil, 403},
		{"wrong method", "DELETE", "/api/presence", tok, ``, nil, 405},
		{"wrong method (room)", "PUT", "/api/presence/room/lobby", tok, `{}`, nil, 405},
		{"wrong method (typing)", "PATCH", "/api/presence/room/lobby/typing", tok, `{}`, nil, 405},
		{"stream without token", "GET", "/sse/room/lobby", "", ``, nil, 401},
		{"stream with bad sid", "GET", "/sse/room/lobby?sid=x", tok, ``, nil, 400},
		{"stream with bad format", "GET", "/sse/room/lobby?format=xml", tok, ``, nil, 400},
		{"users stream without ids", "GET", "/sse/users", tok, ``, nil, 400},
		{"users stream over 100", "GET", "/sse/users?ids=" + strings.Join(manyIDs, ","), tok, ``, nil, 400},
		{"fragment bad size", "GET", "/fragments/user/alice/dot?size=xl", tok, ``, nil, 400},
		{"fragment bad max", "GET", "/fragments/room/lobby/members?max=lots", tok, ``, nil, 400},
		{"fragment bad user", "GET", "/fragments/user/a%20b/dot", tok, ``, nil, 400},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, c, tc.method, n.base+tc.path, tc.token, tc.body, tc.hdr...)
			if r.code != tc.want {
				t.Fatalf("%s %s: status %d, want %d (%s)", tc.method, tc.path, r.code, tc.want, r.body)
			}
			if m := r.json(t); m["error"] == nil || m["error"] == "" {
				t.Fatalf("no {\"error\"} body: %s", r.body)
			}
		})
	}
	// The allowed room is allowed.
	mustOK(t, do(t, c, http.MethodGet, n.base+"/api/presence/room/allowed-room", limited, ""))
}

// Cookie-authenticated changes are refused cross-site; bearer and ?token=
// requests need no such check.
func TestCrossSiteCookieRequests(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	tok := n.token("alice", "Alice")
	cookie := []string{"Cookie", CookieName + "=" + tok}
	body := `{"status":"online","sessionId":"alice-tab-1"}`
	withHdr := func(extra ...string) []string { return append(append([]string{}, cookie...), extra...) }

	cases := []struct {
		name string
		hdr  []string
		tok  string
		path string
		want int
	}{
		{"cookie, cross-site Origin", withHdr("Origin", "https://evil.example"), "", "/api/presence", 403},
		{"cookie, null Origin", withHdr("Origin", "null"), "", "/api/presence", 403},
		{"cookie, null Origin, Sec-Fetch-Site same-origin", withHdr("Origin", "null", "Sec-Fetch-Site", "same-origin"), "", "/api/presence", 200},
		{"cookie, null Origin, Sec-Fetch-Site cross-site", withHdr("Origin", "null", "Sec-Fetch-Site", "cross-site"), "", "/api/presence", 403},
		{"cookie, Sec-Fetch-Site cross-site", withHdr("Sec-Fetch-Site", "cross-site"), "", "/api/presence", 403},
		{"cookie, Sec-Fetch-Site same-site", withHdr("Sec-Fetch-Site", "same-site"), "", "/api/presence", 403},
		{"cookie, same Origin", withHdr("Origin", n.base), "", "/api/presence", 200},
		{"cookie, Sec-Fetch-Site same-origin", withHdr("Sec-Fetch-Site", "same-origin"), "", "/api/presence", 200},
		{"cookie, no browser headers (not a browser)", withHdr(), "", "/api/presence", 200},
		{"bearer, cross-site Origin", []string{"Origin", "https://evil.example"}, tok, "/api/presence", 200},
		{"?token=, cross-site Origin", []string{"Origin", "https://evil.example"}, "", "/api/presence?token=" + tok, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, c, http.MethodPost, n.base+tc.path, tc.tok, body, tc.hdr...)
			if r.code != tc.want {
				t.Fatalf("status %d, want %d: %s", r.code, tc.want, r.body)
			}
		})
	}
	// The room stream joins the room: a cookie one from another site is refused too.
	r := do(t, c, http.MethodGet, n.base+"/sse/room/lobby", "", "", withHdr("Origin", "https://evil.example")...)
	if r.code != http.StatusForbidden {
		t.Fatalf("cross-site cookie stream: %d", r.code)
	}
	// Reads with a cookie are fine from anywhere (CORS decides who may read).
	r = do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice", "", "", withHdr("Origin", "https://evil.example")...)
	mustOK(t, r)
	if r.hdr.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS granted to an origin not on the allow-list")
	}
}

// TestSessionLimit: one token holder cannot open sessions without bound; the
// one past the limit gets 429 and changes nothing, existing ones keep working.
func TestSessionLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		alice := n.token("alice", "Alice")
		for i := range store.MaxSessionsPerUser {
			mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", alice, fmt.Sprintf(`{"status":"online","sessionId":"tab-%04d"}`, i)))
		}
		r := do(t, c, http.MethodPost, n.base+"/api/presence", alice, `{"status":"busy","sessionId":"tab-extra"}`)
		if r.code != http.StatusTooManyRequests {
			t.Fatalf("session past the limit: %d %s, want 429", r.code, r.body)
		}
		if msg, _ := r.json(t)["error"].(string); msg == "" {
			t.Fatalf("429 without an error message: %s", r.body)
		}
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", alice, `{"status":"online","sessionId":"tab-0000"}`))
		r = do(t, c, http.MethodGet, n.base+"/api/presence?userIds=alice", alice, "")
		if st := r.json(t)["presence"].(map[string]any)["alice"].(map[string]any)["status"]; st != "online" {
			t.Fatalf("the refused busy session changed the status to %v", st)
		}
	})
}
