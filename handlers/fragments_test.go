package handlers

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

const hostile = `<img src=x onerror=alert(1)>`

// assertInert checks a hostile string shows up escaped only.
func assertInert(t *testing.T, what, body string) {
	t.Helper()
	if strings.Contains(body, "<img src=x") {
		t.Fatalf("%s renders the hostile name as markup:\n%s", what, body)
	}
	if !strings.Contains(body, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Fatalf("%s does not show the escaped name:\n%s", what, body)
	}
}

// All user text is escaped, in every fragment and in the SSE events.
func TestHostileNameRendersInert(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	// The avatar is a valid URL (javascript: ones are refused at the token,
	// TestTokenProfileLimits) that tries to break out of its attribute.
	evil, err := n.srv.Auth().Mint(store.Profile{ID: "mallory", Name: hostile, Avatar: `https://img.example/a.png?"onerror="alert(1)`}, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	viewer := n.token("viewer", "Viewer")
	watch := openSSE(t, c, n.base+"/sse/room/lobby?sid=viewer-tab-1", viewer)
	watch.waitFor("state", membersWith(1))

	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", evil, `{"action":"join","sessionId":"mallory-tab-1"}`))
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby/typing", evil, `{"typing":true}`))

	for _, path := range []string{
		"/fragments/user/mallory/dot?label=1",
		"/fragments/user/mallory/avatar",
		"/fragments/room/lobby/members",
		"/fragments/room/lobby/typing",
		"/fragments/room/lobby/live",
	} {
		r := do(t, c, http.MethodGet, n.base+path, viewer, "")
		mustOK(t, r)
		if ct := r.hdr.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
			t.Fatalf("%s: Content-Type %q", path, ct)
		}
		assertInert(t, path, string(r.body))
		if strings.Contains(string(r.body), `"onerror=`) {
			t.Fatalf("%s: the avatar URL broke out of its attribute", path)
		}
	}
	ev := watch.waitFor("mallory in the stack", membersWith(2, "mallory"))
	assertInert(t, "members event", ev.Data)
	ev = watch.waitFor("mallory typing", named("typing", `data-typing-count="1"`))
	assertInert(t, "typing event", ev.Data)
}

var overflowRe = regexp.MustCompile(`data-overflow="(\d+)"`)

// The fragments carry the contract's hooks and texts.
func TestFragments(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	viewer := n.token("viewer", "Viewer")
	names := []string{"Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace"}
	for i, name := range names {
		tok := n.token(strings.ToLower(name), name)
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/team", tok, fmt.Sprintf(`{"action":"join","sessionId":"tab-%d-xxxxx"}`, i)))
	}
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", n.token("bob", "Bob"), `{"status":"busy","sessionId":"tab-1-xxxxx"}`))

	get := func(path string) string {
		t.Helper()
		r := do(t, c, http.MethodGet, n.base+path, viewer, "")
		mustOK(t, r)
		return string(r.body)
	}
	dot := get("/fragments/user/bob/dot?size=lg&label=1")
	for _, want := range []string{`data-presence-user="bob"`, `data-status="busy"`, "Busy"} {
		if !strings.Contains(dot, want) {
			t.Errorf("dot lacks %s:\n%s", want, dot)
		}
	}
	if d := get("/fragments/user/nobody/dot"); !strings.Contains(d, `data-status="offline"`) {
		t.Errorf("never-seen user's dot:\n%s", d)
	}
	av := get("/fragments/user/alice/avatar?size=sm")
	if !strings.Contains(av, `data-presence-user="alice"`) || !strings.Contains(av, `data-status="online"`) {
		t.Errorf("avatar:\n%s", av)
	}

	stack := get("/fragments/room/team/members?max=3")
	if membersCount(stack) != 7 || !strings.Contains(stack, `data-presence-room="team"`) {
		t.Errorf("stack root hooks:\n%s", stack)
	}
	if m := overflowRe.FindStringSubmatch(stack); m == nil || m[1] != "4" {
		t.Errorf("stack overflow badge: %v\n%s", m, stack)
	}
	if got := strings.Count(stack, `class="pr-avatar pr-avatar--`); got != 3 {
		t.Errorf("stack shows %d avatars, want 3", got)
	}
	if !strings.Contains(stack, "+4") || !strings.Contains(stack, "7 people here") {
		t.Errorf("stack texts:\n%s", stack)
	}

	typing := func() string { return get("/fragments/room/team/typing") }
	if ty := typing(); !strings.Contains(ty, `data-typing-count="0"`) {
		t.Errorf("idle typing line:\n%s", ty)
	}
	for i, want := range []string{"Alice is typing…", "Alice and Bob are typing…", "Alice and 2 others are typing…"} {
		tok := n.token(strings.ToLower(names[i]), names[i])
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/team/typing", tok, `{"typing":true}`))
		if ty := typing(); !strings.Contains(ty, want) || !strings.Contains(ty, fmt.Sprintf(`data-typing-count="%d"`, i+1)) {
			t.Errorf("typing line with %d typists lacks %q:\n%s", i+1, want, ty)
		}
	}
}

// The live widget works embedded on an allow-listed origin: CORS, absolute
// stream and asset URLs, the token carried in the stream URL.
func TestLiveWidgetCrossOrigin(t *testing.T) {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) { c.AllowOrigins = []string{"https://host.example"} })
	c := newClient(t)
	tok := n.token("alice", "Alice")

	// Preflight (htmx sends HX-* headers).
	r := do(t, c, http.MethodOptions, n.base+"/fragments/room/lobby/live?token="+tok, "", "",
		"Origin", "https://host.example", "Access-Control-Request-Method", "GET", "Access-Control-Request-Headers", "hx-request,hx-current-url")
	if r.code != http.StatusNoContent || r.hdr.Get("Access-Control-Allow-Origin") != "https://host.example" ||
		!strings.Contains(strings.ToLower(r.hdr.Get("Access-Control-Allow-Headers")), "hx-request") {
		t.Fatalf("preflight: %d %v", r.code, r.hdr)
	}
	r = do(t, c, http.MethodGet, n.base+"/fragments/room/lobby/live?max=3&token="+url.QueryEscape(tok), "", "",
		"Origin", "https://host.example", "HX-Request", "true")
	mustOK(t, r)
	if r.hdr.Get("Access-Control-Allow-Origin") != "https://host.example" {
		t.Fatalf("no CORS for an allowed origin: %v", r.hdr)
	}
	// htmx-ext-sse opens streams withCredentials: a listed origin needs it.
	if r.hdr.Get("Access-Control-Allow-Credentials") != "true" {
		t.Fatalf("no Allow-Credentials for a listed origin: %v", r.hdr)
	}
	body := string(r.body)
	m := regexp.MustCompile(`sse-connect="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no sse-connect in the widget:\n%s", body)
	}
	stream := strings.ReplaceAll(m[1], "&amp;", "&")
	if !strings.HasPrefix(stream, n.base+"/sse/room/lobby?") || !strings.Contains(stream, "token=") || !strings.Contains(stream, "max=3") {
		t.Fatalf("stream URL %q: want absolute, with the token", stream)
	}
	if !strings.Contains(body, n.base+"/static/") {
		t.Fatalf("assets are not absolute:\n%s", body)
	}
	// The stream URL works as given, cross-origin, without any header.
	s := openSSE(t, c, stream, "", "Origin", "https://host.example")
	s.waitFor("state", membersWith(1, "alice"))
	if s.resp.Header.Get("Access-Control-Allow-Origin") != "https://host.example" {
		t.Fatalf("stream without CORS: %v", s.resp.Header)
	}

	// Not on the allow-list: no CORS headers.
	r = do(t, c, http.MethodGet, n.base+"/fragments/room/lobby/live?token="+tok, "", "", "Origin", "https://other.example")
	if r.hdr.Get("Access-Control-Allow-Origin") != "" {
		t.Fatal("CORS granted to an origin not on the allow-list")
	}
	// Same origin: relative URLs, and a cookie token is never copied into the page.
	r = do(t, c, http.MethodGet, n.base+"/fragments/room/lobby/live", "", "", "Cookie", CookieName+"="+tok, "Sec-Fetch-Site", "same-origin")
	mustOK(t, r)
	if strings.Contains(string(r.body), tok) || !strings.Contains(string(r.body), `sse-connect="/sse/room/lobby?`) {
		t.Fatalf("same-origin widget:\n%s", r.body)
	}
}

// ?htmx=4 renders the widget for htmx 4 (hx-sse:connect, the htmx 4 scripts
// and the sse-swap adapter), ?htmx=2 or none for htmx 2, anything else is a
// 400. Both carry the same stream URL and the contract's hooks.
func TestLiveWidgetHtmxVersion(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	tok := n.token("alice", "Alice")
	get := func(q string) response {
		t.Helper()
		return do(t, c, http.MethodGet, n.base+"/fragments/room/lobby/live"+q, "", "", "Cookie", CookieName+"="+tok, "Sec-Fetch-Site", "same-origin")
	}
	for _, q := range []string{"", "?htmx=2"} {
		r := get(q)
		mustOK(t, r)
		b := string(r.body)
		if !strings.Contains(b, `sse-connect="/sse/room/lobby?`) || !strings.Contains(b, `hx-ext="sse"`) ||
			!strings.Contains(b, "/static/vendor/htmx.min.js") || strings.Contains(b, "htmx4") || strings.Contains(b, "hx-sse:connect") {
			t.Errorf("%q: not the htmx 2 widget:\n%s", q, b)
		}
	}
	r := get("?htmx=4")
	mustOK(t, r)
	b := string(r.body)
	for _, want := range []string{
		`hx-sse:connect="/sse/room/lobby?`, `data-htmx="4"`, `data-presence-live="lobby"`, `data-presence-room="lobby"`,
		`sse-swap="members"`, `sse-swap="typing"`, "/static/vendor/htmx4.min.js", "/static/vendor/htmx4-ext-sse.min.js",
		"/static/presence-htmx4.js", "/static/presence.js",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("htmx=4 widget lacks %s:\n%s", want, b)
		}
	}
	if strings.Contains(b, "sse-connect=") || strings.Contains(b, "/static/vendor/htmx.min.js") || strings.Contains(b, "htmx-config") {
		t.Errorf("htmx=4 widget (same origin) carries htmx 2 wiring or a CORS config:\n%s", b)
	}
	if r := get("?htmx=4&scripts=0"); !strings.Contains(string(r.body), "hx-sse:connect=") || strings.Contains(string(r.body), "<script") {
		t.Errorf("htmx=4&scripts=0:\n%s", r.body)
	}
	for _, bad := range []string{"?htmx=3", "?htmx=4.0", "?htmx=x"} {
		if r := get(bad); r.code != http.StatusBadRequest || !strings.Contains(string(r.body), "htmx must be 2 or 4") {
			t.Errorf("%s: %d %s, want 400", bad, r.code, r.body)
		}
	}
}
