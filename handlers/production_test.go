package handlers

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/internal/tlstest"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

// doHost sends a GET with its own Host header (net/http ignores a "Host"
// entry in req.Header).
func doHost(t *testing.T, c *http.Client, url, host, token string, hdr ...string) response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, hdr: resp.Header, body: b}
}

var streamURLRe = regexp.MustCompile(`sse-connect="([^"]+)"`)

// widgetURLs returns the live widget's stream URL and whether its assets
// are loaded from base.
func widgetURLs(t *testing.T, r response) (stream string, body string) {
	t.Helper()
	mustOK(t, r)
	m := streamURLRe.FindStringSubmatch(string(r.body))
	if m == nil {
		t.Fatalf("no sse-connect in the widget:\n%s", r.body)
	}
	return m[1], string(r.body)
}

func memoryNode(t *testing.T, mutate ...func(*config.Config)) *node {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	return startNode(t, st, mutate...)
}

// With --public-url, a forged Host (and forged X-Forwarded-*) never makes
// it into the widget: its stream and script URLs come from the public URL.
func TestPublicURLNeverFromHost(t *testing.T) {
	const public = "https://presence.example.com"
	n := memoryNode(t, func(c *config.Config) {
		c.PublicURL = public
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")} // even a trusted proxy does not override it
	})
	c := newClient(t)
	tok := n.token("alice", "Alice")
	for _, hdr := range [][]string{
		nil,
		{"X-Forwarded-Host", "evil.example", "X-Forwarded-Proto", "http"},
		{"Origin", "http://evil.example"},
	} {
		r := doHost(t, c, n.base+"/fragments/room/lobby/live?token="+tok, "evil.example", "", hdr...)
		stream, body := widgetURLs(t, r)
		if strings.Contains(body, "evil.example") {
			t.Fatalf("headers %v: evil.example in the widget:\n%s", hdr, body)
		}
		if !strings.HasPrefix(stream, public+"/sse/room/lobby?") || !strings.Contains(body, `src="`+public+`/static/`) {
			t.Fatalf("headers %v: want stream and assets at %s:\n%s", hdr, public, body)
		}
	}
	// Same-origin checks use it too: a cookie POST from the public origin
	// passes although the Host is the loopback address...
	post := func(origin string) int {
		r := do(t, c, http.MethodPost, n.base+"/api/presence", "", `{"status":"online","sessionId":"alice-public-1"}`,
			"Cookie", CookieName+"="+tok, "Origin", origin)
		return r.code
	}
	if code := post(public); code != http.StatusOK {
		t.Fatalf("cookie POST from the public origin: %d", code)
	}
	// ...and one from the Host's own origin does not.
	if code := post(n.base); code != http.StatusForbidden {
		t.Fatalf("cookie POST from %s (not the public URL): %d, want 403", n.base, code)
	}
}

// X-Forwarded-Proto/Host count only from --trusted-proxies.
func TestForwardedHeadersOnlyFromTrustedProxies(t *testing.T) {
	c := newClient(t)
	fwd := []string{"X-Forwarded-Proto", "https", "X-Forwarded-Host", "proxied.example"}

	untrusted := memoryNode(t, func(c *config.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")} // not the loopback test client
	})
	tok := untrusted.token("alice", "Alice")
	stream, body := widgetURLs(t, doHost(t, c, untrusted.base+"/fragments/room/lobby/live?token="+tok, "gw.example", "", fwd...))
	if !strings.HasPrefix(stream, "http://gw.example/sse/") || strings.Contains(body, "proxied.example") || strings.Contains(body, "https://") {
		t.Fatalf("untrusted peer's X-Forwarded-* was believed: stream %q\n%s", stream, body)
	}

	trusted := memoryNode(t, func(c *config.Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	stream, _ = widgetURLs(t, doHost(t, c, trusted.base+"/fragments/room/lobby/live?token="+tok, "gw.example", "", fwd...))
	if !strings.HasPrefix(stream, "https://proxied.example/sse/room/lobby?") {
		t.Fatalf("trusted proxy's X-Forwarded-* ignored: stream %q", stream)
	}
	// Without --public-url and no proxy headers: the Host, as before.
	stream, _ = widgetURLs(t, doHost(t, c, trusted.base+"/fragments/room/lobby/live?token="+tok, "gw.example:8443", ""))
	if !strings.HasPrefix(stream, "http://gw.example:8443/sse/") {
		t.Fatalf("plain request: stream %q", stream)
	}
}

// X-Forwarded-For names the client only when the peer is trusted.
func TestRealIPFromTrustedProxiesOnly(t *testing.T) {
	for _, tc := range []struct {
		proxies, peer, want string
	}{
		{"", "127.0.0.1:5000", "127.0.0.1"},
		{"10.0.0.0/8", "127.0.0.1:5000", "127.0.0.1"},               // loopback is not trusted by default
		{"10.0.0.0/8", "192.168.1.1:5000", "192.168.1.1"},           // nor private ranges
		{"127.0.0.0/8", "127.0.0.1:5000", "10.1.2.3"},               // the nearest untrusted hop
		{"127.0.0.0/8,10.0.0.0/8", "127.0.0.1:5000", "203.0.113.7"}, // both hops trusted
	} {
		ps, err := config.ParsePrefixes(tc.proxies)
		if err != nil {
			t.Fatal(err)
		}
		s := &Server{cfg: config.Config{TrustedProxies: ps}}
		e := echo.New()
		e.IPExtractor = s.ipExtractor()
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		req.RemoteAddr = tc.peer
		req.Header.Set("X-Forwarded-For", "203.0.113.7, 10.1.2.3")
		if got := e.NewContext(req, httptest.NewRecorder()).RealIP(); got != tc.want {
			t.Errorf("proxies %q, peer %s: RealIP %s, want %s", tc.proxies, tc.peer, got, tc.want)
		}
	}
}

// Every labelled series exists at 0 from the start; requests are counted
// by route pattern and code, never by raw path.
func TestMetricsSeriesAndHTTPRequests(t *testing.T) {
	n := memoryNode(t)
	c := newClient(t)
	metrics := func() string {
		r := do(t, c, http.MethodGet, n.base+"/metrics", "", "")
		mustOK(t, r)
		return string(r.body)
	}
	m := metrics()
	for _, want := range []string{
		`presenced_streams_dropped_total{reason="slow"} 0`,
		`presenced_streams_dropped_total{reason="token_expired"} 0`,
		`presenced_events_published_total{event="members"} 0`,
		`presenced_feed_events_total{kind="resync"} 0`,
		`presenced_fanout_duration_seconds_count{scope="user"} 0`,
		`presenced_http_requests_total{code="200",method="POST",route="/api/presence"} 0`,
		`presenced_http_requests_total{code="200",method="GET",route="/sse/room/:roomId"} 0`,
		`presenced_http_request_duration_seconds_count{code="200",method="GET",route="/api/presence/room/:roomId"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("missing from the start: %s", want)
		}
	}
	if t.Failed() {
		t.Fatalf("metrics:\n%s", m)
	}
	tok := n.token("alice", "Alice")
	mustOK(t, do(t, c, http.MethodGet, n.base+"/api/presence/room/lobby-1", tok, ""))
	mustOK(t, do(t, c, http.MethodGet, n.base+"/api/presence/room/lobby-2", tok, ""))
	if r := do(t, c, http.MethodGet, n.base+"/api/presence/room/lobby-3", "bad-token", ""); r.code != http.StatusUnauthorized {
		t.Fatalf("bad token: %d", r.code)
	}
	if r := do(t, c, http.MethodGet, n.base+"/no/such/path-4711", "", ""); r.code != http.StatusNotFound {
		t.Fatalf("unknown path: %d", r.code)
	}
	m = metrics()
	for _, want := range []string{
		`presenced_http_requests_total{code="200",method="GET",route="/api/presence/room/:roomId"} 2`,
		`presenced_http_requests_total{code="401",method="GET",route="/api/presence/room/:roomId"} 1`,
		`presenced_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`presenced_http_request_duration_seconds_count{code="200",method="GET",route="/api/presence/room/:roomId"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("missing after requests: %s", want)
		}
	}
	for _, never := range []string{"lobby-1", "path-4711"} {
		if strings.Contains(m, never) {
			t.Errorf("a raw path (%s) became a label", never)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", m)
	}
}

// Native TLS: HTTP/2 for the API and the streams, and a new certificate
// on ReloadTLS (SIGHUP) without a restart; a bad one keeps the old.
func TestTLSServesHTTP2AndReloads(t *testing.T) {
	dir := t.TempDir()
	first := tlstest.New(t, "first", "127.0.0.1")
	certFile, keyFile := first.Write(t, dir)
	n := memoryNode(t, func(c *config.Config) { c.TLSCert, c.TLSKey = certFile, keyFile })
	base := "https://" + n.srv.Addr()
	second := tlstest.New(t, "second", "127.0.0.1")
	pool := first.Pool()
	pool.AddCert(second.Cert)
	client := func() *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr}
	}
	peer := func(c *http.Client) (proto, cn string) {
		resp, err := c.Get(base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Proto, resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	c := client()
	if proto, cn := peer(c); proto != "HTTP/2.0" || cn != "first" {
		t.Fatalf("got %s with certificate %q, want HTTP/2.0 and first", proto, cn)
	}
	tok := n.token("alice", "Alice")
	s := openSSE(t, c, base+"/sse/room/lobby?sid=alice-tls-1", tok)
	s.waitFor("the state over HTTP/2", membersWith(1, "alice"))
	if s.resp.ProtoMajor != 2 {
		t.Fatalf("stream over %s", s.resp.Proto)
	}
	mustOK(t, do(t, c, http.MethodPost, base+"/api/presence", n.token("bob", "Bob"), `{"status":"online","sessionId":"bob-tls-1"}`))
	mustOK(t, do(t, c, http.MethodPost, base+"/api/presence/room/lobby", n.token("bob", "Bob"), `{"action":"join","sessionId":"bob-tls-1"}`))
	s.waitFor("bob's join on the same HTTP/2 connection", membersWith(2, "alice", "bob"))

	second.Write(t, dir)
	if err := n.srv.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if _, cn := peer(client()); cn != "second" {
		t.Fatalf("after ReloadTLS a new connection got %q", cn)
	}
	if err := os.WriteFile(keyFile, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.srv.ReloadTLS(); err == nil {
		t.Fatal("a garbage key was accepted")
	}
	if _, cn := peer(client()); cn != "second" {
		t.Fatalf("after a bad reload a new connection got %q, want the previous certificate", cn)
	}
}

// The Redis store's error counts are on the gateway's /metrics.
func TestRedisErrorsOnMetrics(t *testing.T) {
	srv := redistest.Start(t)
	opts := storeOptions()
	opts.KeyPrefix = redistest.Prefix(t)
	st, err := store.NewRedis(context.Background(), srv.URL, opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st)
	r := do(t, newClient(t), http.MethodGet, n.base+"/metrics", "", "")
	mustOK(t, r)
	if !strings.Contains(string(r.body), `presenced_redis_errors_total{command="evalsha"} 0`) {
		t.Fatalf("no Redis error series on /metrics:\n%s", r.body)
	}
}
