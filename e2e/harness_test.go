package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/handlers"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

// Timings. The gateway runs with short ones so that expiry and typing stop
// within seconds; no test asserts a duration. waitFor is the upper bound for
// anything to show up in a page (2 shared cores, -race).
const (
	testTTL       = 3 * time.Second
	testHeartbeat = 1 * time.Second
	testTypingTTL = 2 * time.Second
	testGrace     = 500 * time.Millisecond
	waitFor       = 20 * time.Second
	pollEvery     = 150 * time.Millisecond
)

// testSecret signs every token of the tests (fixed, so that tokens can be
// minted outside the gateway too).
var testSecret = []byte("e2e-secret-e2e-secret-e2e-secret-e2e!")

// ---------------------------------------------------------------- browser

// errNoBrowser means no Chromium was found: a skip, except under CI=true.
var errNoBrowser = errors.New("no Chromium found")

var browserState struct {
	once    sync.Once
	ctx     context.Context // a chromedp context whose browser is running
	err     error
	stop    func()
	dataDir string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browserState.stop != nil {
		browserState.stop()
	}
	os.Exit(code)
}

// chromiumPath finds the browser: $PRESENCE_CHROMIUM, then Debian's
// /usr/bin/chromium, then the usual names on PATH.
func chromiumPath() (string, error) {
	if p := os.Getenv("PRESENCE_CHROMIUM"); p != "" {
		lp, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("%w: PRESENCE_CHROMIUM=%q: %v", errNoBrowser, p, err)
		}
		return lp, nil
	}
	for _, p := range []string{"/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"} {
		if lp, err := exec.LookPath(p); err == nil {
			return lp, nil
		}
	}
	return "", fmt.Errorf("%w (looked for /usr/bin/chromium, chromium, chromium-browser, google-chrome; set PRESENCE_CHROMIUM)", errNoBrowser)
}

// startBrowser launches one headless Chromium for the whole test binary.
// Users get their own BrowserContext in it (see newUser): separate cookie
// jars, storage and caches, like separate browser profiles.
func startBrowser() {
	s := &browserState
	path, err := chromiumPath()
	if err != nil {
		s.err = err
		return
	}
	s.dataDir, err = os.MkdirTemp("", "presenced-e2e-chromium-")
	if err != nil {
		s.err = err
		return
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // the tests may run as root (containers, CI)
		chromedp.NoFirstRun,
		chromedp.UserDataDir(s.dataDir),
		chromedp.WindowSize(1200, 800),
		// Without these Chromium keeps trying to reach the internet.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		// The TLS tests use self-signed certificates made in the test.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	allocCtx, allocCancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	s.stop = func() {
		cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
		_ = chromedp.Cancel(cctx)
		ccancel()
		cancel()
		allocCancel()
		_ = os.RemoveAll(s.dataDir)
	}
	// The first Run starts the browser and binds it to ctx (no timeout on
	// it: that would stop the browser); a watchdog bounds the start.
	done := make(chan error, 1)
	go func() { done <- chromedp.Do(ctx) }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		err = errors.New("timed out after 60s")
	}
	if err != nil {
		s.err = fmt.Errorf("start %s: %w", path, err)
		return
	}
	s.ctx = ctx
}

// browser returns the shared browser's root context, skipping the test when
// there is no Chromium (failing it under CI=true).
func browser(t *testing.T) context.Context {
	t.Helper()
	browserState.once.Do(startBrowser)
	if err := browserState.err; err != nil {
		if errors.Is(err, errNoBrowser) {
			if os.Getenv("CI") == "true" {
				t.Fatalf("browser tests need Chromium under CI=true: %v", err)
			}
			t.Skipf("skipping browser test: %v. Install it (apt-get install chromium) or set PRESENCE_CHROMIUM.", err)
		}
		t.Fatalf("browser: %v", err)
	}
	return browserState.ctx
}

// ---------------------------------------------------------------- gateway

// gateway is one presenced node running in-process.
type gateway struct {
	srv *handlers.Server
	st  store.Store
	// base is the origin the browsers use: the gateway's handler behind a
	// recorder of presence reports (see recorder), on its own loopback port.
	base string
	rec  *recorder
}

// newStore opens a store of the given backend ("memory" or "redis") with the
// test timings. The Redis one gets its own redis-server (skipped without one,
// except under CI=true: see redistest).
func newStore(t *testing.T, backend string) store.Store {
	t.Helper()
	opts := store.Options{TTL: testTTL, TypingTTL: testTypingTTL, SweepInterval: 50 * time.Millisecond}
	switch backend {
	case "memory":
		st := store.NewMemory(opts)
		t.Cleanup(func() { _ = st.Close() })
		return st
	case "redis":
		srv := redistest.Start(t)
		opts.KeyPrefix = redistest.Prefix(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := store.NewRedis(ctx, srv.URL, opts, testLogger(t))
		if err != nil {
			t.Fatalf("NewRedis: %v", err)
		}
		t.Cleanup(func() { _ = st.Close() })
		return st
	}
	t.Fatalf("unknown backend %q", backend)
	return nil
}

// startGateway runs a dev-mode gateway on st with the test timings.
func startGateway(t *testing.T, st store.Store, mutate ...func(*config.Config)) *gateway {
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
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := handlers.New(cfg, st, testLogger(t))
	if err != nil {
		t.Fatalf("handlers.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	rec := &recorder{next: srv.Handler()}
	front := httptest.NewServer(rec)
	g := &gateway{srv: srv, st: st, base: front.URL, rec: rec}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// Shutdown ends every stream (also those on the front's port), so
		// that the front can close without waiting for them.
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		front.CloseClientConnections()
		front.Close()
	})
	waitReady(t, g.base)
	return g
}

func waitReady(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		res, err := http.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready at %s: %v", base, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// token mints a token for a user (for embeds, which carry it in ?token=).
func (g *gateway) token(t *testing.T, id, name string) string {
	t.Helper()
	tok, err := g.srv.Auth().Mint(store.Profile{ID: id, Name: name}, time.Hour, nil)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	return tok
}

// recorder serves the gateway's handler and keeps every presence report
// (POST /api/presence): that is how a test tells a pagehide beacon apart
// from the leave grace of a closed stream, which also takes the session out
// of the room.
type recorder struct {
	next    http.Handler
	mu      sync.Mutex
	reports []report
}

type report struct {
	ContentType string // as sent
	Code        int    // the gateway's answer
	Status      string `json:"status"`
	SessionID   string `json:"sessionId"`
}

func (rc *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost && r.URL.Path == "/api/presence" {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		r.Body = io.NopCloser(bytes.NewReader(body))
		var rep report
		if err != nil || json.Unmarshal(body, &rep) != nil {
			rc.next.ServeHTTP(w, r)
			return
		}
		rep.ContentType = r.Header.Get("Content-Type")
		cw := &codeWriter{ResponseWriter: w, code: http.StatusOK}
		rc.next.ServeHTTP(cw, r)
		rep.Code = cw.code
		rc.mu.Lock()
		rc.reports = append(rc.reports, rep)
		rc.mu.Unlock()
		return
	}
	rc.next.ServeHTTP(w, r)
}

// codeWriter remembers the status code of a (non-streaming) response.
type codeWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *codeWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// waitReport waits up to waitFor for a report matching f (recorded once the
// gateway has answered it).
func (rc *recorder) waitReport(f func(report) bool) (report, bool) {
	deadline := time.Now().Add(waitFor)
	for {
		rc.mu.Lock()
		for _, r := range rc.reports {
			if f(r) {
				rc.mu.Unlock()
				return r, true
			}
		}
		rc.mu.Unlock()
		if time.Now().After(deadline) {
			return report{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ------------------------------------------------------------------ users

// user is one person in one isolated browser context (own cookie jar), with
// one tab.
type user struct {
	name   string
	ctx    context.Context // the tab
	cancel context.CancelFunc

	mu      sync.Mutex
	console []string
}

// newUser opens a tab in a new BrowserContext.
func newUser(t *testing.T, name string) *user {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser(t), chromedp.WithNewBrowserContext())
	u := &user{name: name, ctx: ctx, cancel: cancel}
	if err := chromedp.Do(ctx); err != nil { // opens the tab
		cancel()
		t.Fatalf("%s: open tab: %v", name, err)
	}
	msgs := chromedp.Console(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			u.mu.Lock()
			u.console = append(u.console, m.String())
			u.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		u.close()
		<-done
		if t.Failed() {
			u.mu.Lock()
			defer u.mu.Unlock()
			for _, m := range u.console {
				t.Logf("%s console: %s", u.name, m)
			}
		}
	})
	return u
}

// close ends the user's tab and BrowserContext (idempotent).
func (u *user) close() {
	ctx, cancel := context.WithTimeout(u.ctx, 10*time.Second)
	defer cancel()
	_ = chromedp.Cancel(ctx)
	u.cancel()
}

// do runs actions in the user's tab, bounded by waitFor.
func (u *user) do(t testing.TB, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, waitFor)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %s: %v", u.name, what, err)
	}
}

// withTimeout bounds one action on a context that has already run once.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, waitFor)
}

// eval evaluates a JavaScript expression in the user's tab.
func eval[T any](u *user, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(u.ctx, waitFor)
	defer cancel()
	return chromedp.Run(ctx, chromedp.Evaluate[T](expr))
}

// signIn opens the demo's room, is sent to /login (dev mode), signs in with
// the user's name (which sets the presence_token cookie in this user's
// context only) and lands back on the room.
func (u *user) signIn(t testing.TB, g *gateway, room string) {
	t.Helper()
	u.do(t, "open the demo", chromedp.Navigate(g.base+"/?room="+url.QueryEscape(room)))
	ctx, cancel := withTimeout(u.ctx)
	loc, err := chromedp.Run(ctx, chromedp.Location())
	cancel()
	if err != nil || !strings.Contains(loc, "/login") {
		t.Fatalf("%s: expected a redirect to /login, at %q (%v)", u.name, loc, err)
	}
	u.do(t, "sign in",
		typeInto(`form[action="/login"] input[name="name"]`, u.name),
		chromedp.Click(chromedp.CSS(`form[action="/login"] button[type="submit"]`)),
	)
	u.waitFor(t, "the demo page of "+room, fmt.Sprintf(
		`!!document.querySelector('[data-presence-config][data-room=%q] [data-presence-room=%q]') && !!window.Presence && !!window.Presence.sessionId`,
		room, room))
}

// waitFor polls a JavaScript predicate until it is true, or fails the test
// after waitFor.
func (u *user) waitFor(t testing.TB, what, predicate string) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var last error
	for {
		ok, err := eval[bool](u, "(() => { try { return !!("+predicate+"); } catch (e) { return false; } })()")
		if err == nil && ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			page, _ := eval[string](u, `location.href + " :: " + document.body.innerText.slice(0, 300)`)
			t.Fatalf("%s: timed out after %s waiting for %s (last error: %v); page: %s", u.name, waitFor, what, last, page)
		}
		time.Sleep(pollEvery)
	}
}

// closeTab closes the user's tab the way a person closes it (the page gets
// pagehide and may send beacons), then disposes of the BrowserContext.
func (u *user) closeTab(t testing.TB) {
	t.Helper()
	c := chromedp.FromContext(u.ctx)
	if c == nil || c.Target == nil {
		t.Fatalf("%s: no tab to close", u.name)
	}
	detached, err := chromedp.Detached(u.ctx)
	if err != nil {
		t.Fatalf("%s: %v", u.name, err)
	}
	ctx, cancel := context.WithTimeout(u.ctx, waitFor)
	defer cancel()
	if _, err := chromedp.CallBrowser(ctx, target.CloseTarget, target.CloseTargetParams{TargetID: c.Target.TargetID}); err != nil {
		t.Fatalf("%s: close tab: %v", u.name, err)
	}
	select {
	case <-detached:
	case <-ctx.Done():
		t.Fatalf("%s: the tab did not close within %s", u.name, waitFor)
	}
	u.close()
}

// typeInto clicks a field and types into it with real key events.
func typeInto(css, text string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Click(chromedp.CSS(css)),
		chromedp.SendKeys(chromedp.CSS(css), text),
	)
}

// hide sends the user's tab to the background for real: it opens another
// tab in the same window of the user's BrowserContext, and Chromium hides
// every tab of a window but the active one (document.visibilityState turns
// "hidden" and visibilitychange fires, as when a person switches tabs).
// show brings the tab back to the front and closes the other one.
func (u *user) hide(t testing.TB) (show func(t testing.TB)) {
	t.Helper()
	other, cancel := chromedp.NewContext(u.ctx, chromedp.WithNewWindow(false))
	// No timeout on the first Run of a tab: it would close the tab.
	if err := chromedp.Do(other, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		t.Fatalf("%s: open a second tab: %v", u.name, err)
	}
	u.waitFor(t, "the page to be hidden", `document.visibilityState === 'hidden'`)
	return func(t testing.TB) {
		t.Helper()
		defer cancel()
		c := chromedp.FromContext(u.ctx)
		ctx, tcancel := withTimeout(u.ctx)
		defer tcancel()
		if _, err := chromedp.CallBrowser(ctx, target.ActivateTarget, target.ActivateTargetParams{TargetID: c.Target.TargetID}); err != nil {
			t.Fatalf("%s: bring the tab to the front: %v", u.name, err)
		}
		u.waitFor(t, "the page to be visible", `document.visibilityState === 'visible'`)
	}
}

// ------------------------------------------------------------------ state

// stack is what a page shows of a room: its avatar stack and its typing
// line, read through the contract's data-* hooks only.
type stack struct {
	Found    bool              `json:"found"`
	Count    string            `json:"count"`  // data-count
	Users    []string          `json:"users"`  // data-presence-user inside the stack, in order, once each
	Status   map[string]string `json:"status"` // user → data-status of their dot in the stack
	Text     string            `json:"text"`   // the stack's text ("2 people here")
	Typing   string            `json:"typing"` // data-typing-count
	TypeText string            `json:"typeText"`
}

func (s stack) String() string {
	if !s.Found {
		return "no stack"
	}
	return fmt.Sprintf("count=%s users=%v status=%v text=%q typing=%s %q", s.Count, s.Users, s.Status, s.Text, s.Typing, s.TypeText)
}

func (s stack) has(id string) bool { return slices.Contains(s.Users, id) }

// stackJS reads a stack below the element matched by scope (a CSS selector;
// "" for the whole document). A user's dot is the innermost element carrying
// their data-presence-user and a data-status.
const stackJS = `((scope, room) => {
	const base = scope ? document.querySelector(scope) : document;
	const out = {found: false, count: "", users: [], status: {}, text: "", typing: "", typeText: ""};
	if (!base) return out;
	const root = base.querySelector('[data-presence-room="' + CSS.escape(room) + '"]');
	if (root) {
		out.found = true;
		out.count = root.getAttribute('data-count') || "";
		root.querySelectorAll('[data-presence-user]').forEach(el => {
			const id = el.getAttribute('data-presence-user');
			if (!out.users.includes(id)) out.users.push(id);
			if (el.hasAttribute('data-status') && !el.querySelector('[data-status]')) out.status[id] = el.getAttribute('data-status');
		});
		out.text = root.textContent.replace(/\s+/g, ' ').trim();
	}
	const ty = base.querySelector('[data-typing-count]');
	if (ty) {
		out.typing = ty.getAttribute('data-typing-count');
		out.typeText = ty.textContent.replace(/\s+/g, ' ').trim();
	}
	return out;
})`

// readStack reads the room's stack in the user's page.
func (u *user) readStack(scope, room string) (stack, error) {
	arg, _ := json.Marshal(scope)
	rarg, _ := json.Marshal(room)
	return eval[stack](u, stackJS+"("+string(arg)+", "+string(rarg)+")")
}

// waitStack polls the room's stack in the user's page until ok holds.
func (u *user) waitStack(t testing.TB, scope, room, what string, ok func(stack) bool) stack {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	var last stack
	var lastErr error
	for {
		s, err := u.readStack(scope, room)
		if err == nil && ok(s) {
			return s
		}
		last, lastErr = s, err
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out after %s waiting for %s; last seen: %v (err %v)", u.name, waitFor, what, last, lastErr)
		}
		time.Sleep(pollEvery)
	}
}

// ---------------------------------------------------------------- logging

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PRESENCE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
