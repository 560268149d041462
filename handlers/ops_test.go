package handlers

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

func TestHealthReadyMetrics(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		mustOK(t, do(t, c, http.MethodGet, n.base+"/healthz", "", ""))
		r := do(t, c, http.MethodGet, n.base+"/readyz", "", "")
		if r.code != http.StatusOK || r.json(t)["status"] != "ready" {
			t.Fatalf("readyz %d %s", r.code, r.body)
		}
		s := openSSE(t, c, n.base+"/sse/room/lobby", n.token("alice", "Alice"))
		s.waitFor("state", membersWith(1))
		if v := n.metric("presenced_sse_open_streams", `kind="room"`); v != 1 {
			t.Fatalf("open room streams %v, want 1", v)
		}
		mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence", n.token("bob", "Bob"), `{"status":"online"}`))
		r = do(t, c, http.MethodGet, n.base+"/metrics", "", "")
		mustOK(t, r)
		for _, name := range []string{
			"presenced_sse_open_streams", "presenced_heartbeats_total", "presenced_events_published_total",
			"presenced_events_delivered_total", "presenced_fanout_duration_seconds_bucket",
			"presenced_offline_lateness_seconds_bucket", "go_goroutines",
		} {
			if !strings.Contains(string(r.body), name) {
				t.Errorf("/metrics lacks %s", name)
			}
		}
		if v := n.metric("presenced_heartbeats_total", `source="api"`); v < 1 {
			t.Errorf("api heartbeats %v", v)
		}
		s.close()
		eventually(t, "stream gauge back to 0", func() bool { return n.metric("presenced_sse_open_streams", `kind="room"`) == 0 })

		// A node that is shutting down is not ready.
		n.srv.closing.Store(true)
		if r := do(t, c, http.MethodGet, n.base+"/readyz", "", ""); r.code != http.StatusServiceUnavailable {
			t.Fatalf("readyz while closing: %d", r.code)
		}
		n.srv.closing.Store(false)
	})
}

// readyz reports a store that is not reachable.
func TestReadyzStoreDown(t *testing.T) {
	st := store.NewMemory(storeOptions())
	n := startNode(t, st)
	_ = st.Close()
	r := do(t, newClient(t), http.MethodGet, n.base+"/readyz", "", "")
	if r.code != http.StatusServiceUnavailable {
		t.Fatalf("readyz with a closed store: %d %s", r.code, r.body)
	}
}

func TestStaticFiles(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	r := do(t, c, http.MethodGet, n.base+"/static/presence.js", "", "")
	mustOK(t, r)
	etag := r.hdr.Get("ETag")
	if etag == "" || !strings.Contains(r.hdr.Get("Content-Type"), "javascript") || r.hdr.Get("Cache-Control") == "" {
		t.Fatalf("headers %v", r.hdr)
	}
	r = do(t, c, http.MethodGet, n.base+"/static/presence.js", "", "", "If-None-Match", etag)
	if r.code != http.StatusNotModified {
		t.Fatalf("If-None-Match: %d", r.code)
	}
	v := n.srv.static.Version("presence.js")
	r = do(t, c, http.MethodGet, n.base+"/static/presence.js?v="+v, "", "")
	if !strings.Contains(r.hdr.Get("Cache-Control"), "immutable") {
		t.Fatalf("versioned URL not immutable: %v", r.hdr)
	}
	for _, p := range []string{"/static/vendor/htmx.min.js", "/static/vendor/htmx-ext-sse.js", "/static/presence.css"} {
		mustOK(t, do(t, c, http.MethodGet, n.base+p, "", ""))
	}
	if r := do(t, c, http.MethodGet, n.base+"/static/nope.js", "", ""); r.code != http.StatusNotFound {
		t.Fatalf("missing file: %d", r.code)
	}
	if r := do(t, c, http.MethodGet, n.base+"/static/../go.mod", "", ""); r.code == http.StatusOK {
		t.Fatal("path traversal served a file")
	}
}

// --dev: /login signs in with a cookie; / shows the demo or sends to /login.
func TestDevLoginAndDemo(t *testing.T) {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) { c.Dev = true })
	c := newClient(t)

	r := do(t, c, http.MethodGet, n.base+"/?room=design", "", "")
	if r.code != http.StatusSeeOther || !strings.HasPrefix(r.hdr.Get("Location"), "/login?next=") {
		t.Fatalf("signed out: %d %v", r.code, r.hdr)
	}
	mustOK(t, do(t, c, http.MethodGet, n.base+"/login?next=/%3Froom%3Ddesign", "", ""))

	form := url.Values{"name": {"Ada Lovelace"}, "avatar": {"https://example.com/ada.png"}, "next": {"/?room=design"}}
	req, _ := http.NewRequest(http.MethodPost, n.base+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", n.base)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/?room=design" {
		t.Fatalf("login: %d %v", resp.StatusCode, resp.Header)
	}
	var tok string
	for _, ck := range resp.Cookies() {
		if ck.Name == CookieName {
			tok = ck.Value
			if !ck.HttpOnly || ck.SameSite != http.SameSiteLaxMode {
				t.Fatalf("cookie flags: %+v", ck)
			}
		}
	}
	id, err := n.srv.Auth().Verify(tok)
	if err != nil || id.User.ID != "ada-lovelace" || id.User.Name != "Ada Lovelace" || id.User.Avatar != "https://example.com/ada.png" {
		t.Fatalf("minted identity %+v (%v)", id, err)
	}

	r = do(t, c, http.MethodGet, n.base+"/?room=design", "", "", "Cookie", CookieName+"="+tok)
	mustOK(t, r)
	for _, want := range []string{"Ada Lovelace", `sse-connect="/sse/room/design?`, "data-session-id="} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("demo page lacks %q", want)
		}
	}
	// The cookie is HttpOnly: its token must not be copied into the page.
	if body := string(r.body); strings.Contains(body, tok) || strings.Contains(body, "data-token") {
		t.Error("the demo page exposes the cookie's token")
	}
	// A token the page was given explicitly is handed on to presence.js.
	r = do(t, c, http.MethodGet, n.base+"/?room=design", tok, "")
	mustOK(t, r)
	if !strings.Contains(string(r.body), `data-token="`+tok+`"`) {
		t.Error("the demo page opened with a bearer token does not hand it on")
	}

	// Login from another site is refused; a bad form re-renders with 400.
	req, _ = http.NewRequest(http.MethodPost, n.base+"/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site login: %d", resp.StatusCode)
	}
	bad := url.Values{"name": {""}}
	req, _ = http.NewRequest(http.MethodPost, n.base+"/login", strings.NewReader(bad.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("empty name: %d", resp.StatusCode)
	}
}

// Without --dev there is no /login and no demo.
func TestNoDemoWithoutDev(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	for _, p := range []string{"/", "/login"} {
		if r := do(t, c, http.MethodGet, n.base+p, "", ""); r.code != http.StatusNotFound {
			t.Errorf("%s without --dev: %d", p, r.code)
		}
	}
}

func TestUserIDFromName(t *testing.T) {
	for in, want := range map[string]string{
		"Ada Lovelace": "ada-lovelace",
		"  bob  ":      "bob",
		"x@y.z":        "x@y.z",
		"Élodie":       "lodie",
		"a/b\\c<d>":    "a-b-c-d",
	} {
		if got := userIDFromName(in); got != want {
			t.Errorf("userIDFromName(%q) = %q, want %q", in, got, want)
		}
	}
	if id := userIDFromName("李雷"); !store.ValidUserID(id) || id != userIDFromName("李雷") {
		t.Errorf("non-Latin name gave %q", id)
	}
	if safeNext("//evil.example") != "/" || safeNext("https://evil.example") != "/" || safeNext("/?room=a") != "/?room=a" {
		t.Error("safeNext lets an open redirect through")
	}
}
