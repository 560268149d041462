package handlers

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

// Finding 5: POST /login's next= is a path of this origin or "/". Before,
// next=/%09/evil.example/ answered Location: /\t/evil.example/, which
// browsers follow to //evil.example/.
func TestLoginNextStaysOnSite(t *testing.T) {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) { c.Dev = true })
	c := newClient(t)
	login := func(rawNext string) string {
		t.Helper()
		// rawNext is sent as it is in the form body (already form-encoded).
		body := "name=Ada&next=" + rawNext
		req, _ := http.NewRequest(http.MethodPost, n.base+"/login", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", n.base)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("login next=%s: %d", rawNext, resp.StatusCode)
		}
		return resp.Header.Get("Location")
	}
	for _, bad := range []string{
		"/%09/evil.example/", "%2F%2Fevil.example", "//evil.example", "/%5Cevil.example", `/\evil.example`,
		"https%3A%2F%2Fevil.example", "https://evil.example", "/%0A/evil.example", "/%0D/evil.example",
		"javascript%3Aalert(1)", "/ok%5C..%5C/evil", "%09//evil.example", "", "evil.example",
	} {
		if loc := login(bad); loc != "/" {
			t.Errorf("next=%s redirected to %q, want /", bad, loc)
		}
		// The sign-in form's hidden field gets the same treatment.
		r := do(t, c, http.MethodGet, n.base+"/login?next="+bad, "", "")
		if strings.Contains(string(r.body), "evil.example") {
			t.Errorf("GET /login?next=%s carries the foreign next into the form", bad)
		}
	}
	for _, good := range []string{"/ok?x=1", "/%3Froom%3Ddesign", "/a/b#c"} {
		want, _ := url.QueryUnescape(good)
		if loc := login(good); loc != want {
			t.Errorf("next=%s redirected to %q, want %q", good, loc, want)
		}
	}
	// Every accepted next resolves to this origin.
	for _, s := range []string{"/ok?x=1", "/a/b#c", "/?room=design"} {
		u, err := url.Parse(n.base)
		if err != nil {
			t.Fatal(err)
		}
		if r := u.ResolveReference(&url.URL{Path: safeNext(s)}); r.Host != u.Host {
			t.Errorf("%q resolves to host %q", s, r.Host)
		}
	}
}

// Finding 6: /readyz says only that the store is unreachable; the detail
// (with its address) goes to the log. Before, an anonymous caller got
// "store: redis: dial tcp 127.0.0.1:PORT: connect: connection refused".
func TestReadyzDoesNotLeak(t *testing.T) {
	want := `{"error":"store unreachable","status":"unavailable"}` + "\n"
	t.Run("memory", func(t *testing.T) {
		st := store.NewMemory(storeOptions())
		n := startNode(t, st)
		_ = st.Close()
		r := do(t, newClient(t), http.MethodGet, n.base+"/readyz", "", "")
		if r.code != http.StatusServiceUnavailable || string(r.body) != want {
			t.Fatalf("readyz with a closed store: %d %s, want 503 %s", r.code, r.body, want)
		}
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		opts := storeOptions()
		opts.KeyPrefix = redistest.Prefix(t)
		st, err := store.NewRedis(context.Background(), srv.URL, opts, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		n := startNode(t, st)
		c := newClient(t)
		mustOK(t, do(t, c, http.MethodGet, n.base+"/readyz", "", ""))
		// Stop redis-server behind the store's back.
		conn, err := net.DialTimeout("tcp", srv.Addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = conn.Write([]byte("SHUTDOWN NOSAVE\r\n"))
		_ = conn.Close()
		var r response
		eventually(t, "readyz to report the store down", func() bool {
			r = do(t, c, http.MethodGet, n.base+"/readyz", "", "")
			return r.code == http.StatusServiceUnavailable
		})
		_, port, _ := net.SplitHostPort(srv.Addr)
		if string(r.body) != want || strings.Contains(string(r.body), port) {
			t.Fatalf("readyz with redis down: %s, want %s", r.body, want)
		}
	})
}

// Finding 6: --metrics-token puts /metrics behind a bearer token (401
// without it or with a wrong one); before, /metrics was open to anyone.
func TestMetricsToken(t *testing.T) {
	const tok = "metrics-secret-0123456789"
	n := startNode(t, memStore(t), func(c *config.Config) { c.MetricsToken = tok })
	c := newClient(t)
	for _, auth := range []string{"", "Bearer wrong-token-0123456789", "Bearer " + tok[:len(tok)-1], "Basic " + tok, tok} {
		var hdr []string
		if auth != "" {
			hdr = []string{"Authorization", auth}
		}
		r := do(t, c, http.MethodGet, n.base+"/metrics", "", "", hdr...)
		if r.code != http.StatusUnauthorized || strings.Contains(string(r.body), "go_goroutines") {
			t.Fatalf("/metrics with Authorization %q: %d, want 401", auth, r.code)
		}
		if r.json(t)["error"] == nil {
			t.Fatalf("401 without a JSON error: %s", r.body)
		}
	}
	r := do(t, c, http.MethodGet, n.base+"/metrics", "", "", "Authorization", "Bearer "+tok)
	mustOK(t, r)
	if !strings.Contains(string(r.body), "go_goroutines") {
		t.Fatalf("metrics body: %.200s", r.body)
	}
}

// Finding 6: --metrics-addr serves /metrics on its own listener only; the
// main address answers 404 for it.
func TestMetricsAddr(t *testing.T) {
	n := startNode(t, memStore(t), func(c *config.Config) { c.MetricsAddr = "127.0.0.1:0" })
	c := newClient(t)
	if r := do(t, c, http.MethodGet, n.base+"/metrics", "", ""); r.code != http.StatusNotFound {
		t.Fatalf("/metrics on the main address: %d, want 404", r.code)
	}
	maddr := n.srv.MetricsAddr()
	if maddr == "" || maddr == n.srv.Addr() {
		t.Fatalf("metrics address %q (main %q)", maddr, n.srv.Addr())
	}
	r := do(t, c, http.MethodGet, "http://"+maddr+"/metrics", "", "")
	mustOK(t, r)
	if !strings.Contains(string(r.body), "presenced_heartbeats_total") {
		t.Fatalf("metrics body: %.200s", r.body)
	}
	// Nothing else is served there.
	for _, p := range []string{"/api/presence?userIds=a", "/healthz", "/"} {
		if r := do(t, c, http.MethodGet, "http://"+maddr+p, n.token("a", "A"), ""); r.code != http.StatusNotFound {
			t.Fatalf("%s on the metrics address: %d, want 404", p, r.code)
		}
	}
}

func memStore(t *testing.T) store.Store {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	return st
}
