package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/handlers"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/internal/tlstest"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

// nginxPath finds nginx ($PRESENCE_NGINX, PATH, Debian's /usr/sbin/nginx).
// Without it the test is skipped, except under CI=true.
func nginxPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("PRESENCE_NGINX"), "nginx", "/usr/sbin/nginx"} {
		if p == "" {
			continue
		}
		if lp, err := exec.LookPath(p); err == nil {
			return lp
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("the proxy test needs nginx under CI=true (apt-get install nginx)")
	}
	t.Skip("skipping the proxy test: no nginx (apt-get install nginx, or set PRESENCE_NGINX)")
	return ""
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// replaceOnce replaces old by new in s, failing when old is not there
// exactly once: if deploy/nginx/presenced.conf changes shape, this test
// must be updated with it rather than silently test something else.
func replaceOnce(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("deploy/nginx/presenced.conf: %q found %d times, want once", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

// startNginx runs deploy/nginx/presenced.conf, with its upstreams, ports
// and certificate paths substituted, as an unprivileged-friendly nginx of
// its own (pid, logs and temp files in a temp dir), HTTPS on httpsPort.
// It returns the plain HTTP port.
func startNginx(t *testing.T, upstreams []string, pair tlstest.Pair, httpsPort int) (httpPort int) {
	t.Helper()
	bin := nginxPath(t)
	dir := t.TempDir()
	certFile, keyFile := pair.Write(t, dir)
	site, err := os.ReadFile(filepath.Join("..", "deploy", "nginx", "presenced.conf"))
	if err != nil {
		t.Fatal(err)
	}
	httpPort = freePort(t)
	conf := string(site)
	conf = replaceOnce(t, conf, "server presenced-1:8080 ", "server "+upstreams[0]+" ")
	conf = replaceOnce(t, conf, "server presenced-2:8080 ", "server "+upstreams[1]+" ")
	conf = replaceOnce(t, conf, "listen 80;", fmt.Sprintf("listen 127.0.0.1:%d;", httpPort))
	conf = replaceOnce(t, conf, "listen [::]:80;", "")
	conf = replaceOnce(t, conf, "listen 443 ssl http2;", fmt.Sprintf("listen 127.0.0.1:%d ssl http2;", httpsPort))
	conf = replaceOnce(t, conf, "listen [::]:443 ssl http2;", "")
	conf = replaceOnce(t, conf, "/etc/nginx/tls/fullchain.pem", certFile)
	conf = replaceOnce(t, conf, "/etc/nginx/tls/privkey.pem", keyFile)
	if err := os.WriteFile(filepath.Join(dir, "presenced.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		// As root nginx would run its workers as nobody, who cannot enter
		// the test's private temp dir.
		user = "user root;"
	}
	main := fmt.Sprintf(`%[2]s
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 512; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/tmp-body;
    proxy_temp_path %[1]s/tmp-proxy;
    fastcgi_temp_path %[1]s/tmp-fastcgi;
    uwsgi_temp_path %[1]s/tmp-uwsgi;
    scgi_temp_path %[1]s/tmp-scgi;
    include %[1]s/presenced.conf;
}
`, dir, user)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"), "-g", "daemon off;"}
	if out, err := exec.Command(bin, append([]string{"-t", "-q"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("nginx -t: %v\n%s\n%s", err, out, conf)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nginx: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt) // fast shutdown (SIGINT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error.log:\n%s", log)
		}
	})
	deadline := time.Now().Add(waitFor)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort), time.Second)
		if err == nil {
			c.Close()
			return httpPort
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx exited:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not listening: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startProxiedGateway runs one plain-HTTP gateway node behind the proxy:
// --public-url is publicURL (may be empty), --trusted-proxies the loopback.
func startProxiedGateway(t *testing.T, st store.Store, publicURL string) *handlers.Server {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.Dev = true
	cfg.Secret = testSecret
	cfg.TTL = testTTL
	cfg.Heartbeat = testHeartbeat
	cfg.TypingTTL = testTypingTTL
	cfg.Keepalive = 2 * time.Second
	cfg.LeaveGrace = testGrace
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.PublicURL = publicURL
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	srv, err := handlers.New(cfg, st, testLogger(t))
	if err != nil {
		t.Fatalf("handlers.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return srv
}

// TestBehindNginx: Chromium → nginx (deploy/nginx/presenced.conf: TLS +
// HTTP/2) → HTTP/1.1 keep-alive → two gateway nodes on one Redis. Eight
// tabs of one profile (more than HTTP/1.1's six) are live and POST, the
// streams are spread over both nodes, and the widget's URLs name the
// public origin.
func TestBehindNginx(t *testing.T) {
	browser(t)
	nginxPath(t)
	rsrv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	pair := tlstest.New(t, "presenced-proxy-e2e", "127.0.0.1", "localhost")

	// The public URL must be known before the gateways start; nginx's port
	// is picked first and handed to it.
	httpsPort := freePort(t)
	public := fmt.Sprintf("https://127.0.0.1:%d", httpsPort)
	var nodes []*handlers.Server
	var upstreams []string
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := store.NewRedis(ctx, rsrv.URL, store.Options{TTL: testTTL, TypingTTL: testTypingTTL,
			SweepInterval: 50 * time.Millisecond, KeyPrefix: prefix}, testLogger(t))
		cancel()
		if err != nil {
			t.Fatalf("NewRedis: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		srv := startProxiedGateway(t, st, public)
		nodes = append(nodes, srv)
		upstreams = append(upstreams, srv.Addr())
	}
	httpPort := startNginx(t, upstreams, pair, httpsPort)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool()}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	waitReadyTLS(t, public, pair)

	// Plain HTTP is sent to HTTPS.
	res, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", httpPort))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMovedPermanently || !strings.HasPrefix(res.Header.Get("Location"), "https://127.0.0.1") {
		t.Fatalf("http: %d %q, want a 301 to https", res.StatusCode, res.Header.Get("Location"))
	}

	// The widget names the public origin, whatever Host the proxy saw.
	g := &gateway{srv: nodes[0], base: public}
	req, _ := http.NewRequest(http.MethodGet, public+"/fragments/room/proxied/live?token="+g.token(t, "probe", "Probe"), nil)
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != http.StatusOK {
		t.Fatalf("live fragment via nginx: %s %d", res.Proto, res.StatusCode)
	}
	if m := regexp.MustCompile(`sse-connect="([^"]+)"`).FindSubmatch(body); m == nil || !strings.HasPrefix(string(m[1]), public+"/sse/room/proxied?") {
		t.Fatalf("widget stream URL %q, want it under %s", m, public)
	}

	const room = "proxied"
	tabs, ids := openTabs(t, g, public, room, 8)
	liveTabs(t, tabs, ids, room, "h2")

	// Every tab holds one stream through the proxy, on one of the nodes
	// (round-robin usually splits them; which node is nginx's choice).
	openStreams := func(n *handlers.Server) int {
		res, err := http.Get("http://" + n.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(res.Body)
		res.Body.Close()
		open := regexp.MustCompile(`presenced_sse_open_streams\{kind="room"\} (\d+)`).FindSubmatch(m)
		if open == nil {
			t.Fatalf("no presenced_sse_open_streams in /metrics")
		}
		var k int
		fmt.Sscan(string(open[1]), &k)
		return k
	}
	deadline := time.Now().Add(waitFor)
	for {
		a, b := openStreams(nodes[0]), openStreams(nodes[1])
		if a+b == len(tabs) {
			t.Logf("streams per node: %d and %d", a, b)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open room streams %d + %d, want one per tab (%d)", a, b, len(tabs))
		}
		time.Sleep(pollEvery)
	}
}

// TestNginxForwardedHeaders: without --public-url, a gateway behind the
// nginx config (and trusting it) derives its origin from nginx's
// X-Forwarded-Proto/Host, port included, also when the browser spoke
// HTTP/2 to nginx: the widget's URLs name the proxy's https origin and a
// cookie POST from a page of that origin passes the same-origin check.
func TestNginxForwardedHeaders(t *testing.T) {
	nginxPath(t)
	pair := tlstest.New(t, "presenced-proxy-e2e", "127.0.0.1")
	httpsPort := freePort(t)
	public := fmt.Sprintf("https://127.0.0.1:%d", httpsPort)
	gw := startProxiedGateway(t, newStore(t, "memory"), "") // no --public-url
	startNginx(t, []string{gw.Addr(), gw.Addr()}, pair, httpsPort)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool()}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	waitReadyTLS(t, public, pair)
	tok, err := gw.Auth().Mint(store.Profile{ID: "alice", Name: "Alice"}, time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := hc.Get(public + "/fragments/room/fwd/live?token=" + tok)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Fatalf("browser side spoke %s, want HTTP/2", res.Proto)
	}
	m := regexp.MustCompile(`sse-connect="([^"]+)"`).FindSubmatch(body)
	if m == nil || !strings.HasPrefix(string(m[1]), public+"/sse/room/fwd?") {
		t.Fatalf("stream URL %q, want it under %s (from X-Forwarded-Proto/Host)", m, public)
	}
	req, _ := http.NewRequest(http.MethodPost, public+"/api/presence", strings.NewReader(`{"status":"online","sessionId":"alice-fwd-1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", public)
	req.Header.Set("Cookie", handlers.CookieName+"="+tok)
	res, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("cookie POST from %s through nginx: %d %s", public, res.StatusCode, b)
	}
}
