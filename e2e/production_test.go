package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/handlers"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/internal/tlstest"
	"github.com/presenced/presenced/store"
)

// startTLSGateway runs a dev-mode gateway serving HTTPS itself (HTTP/2)
// with a self-signed certificate; the browser reaches it directly.
func startTLSGateway(t *testing.T, st store.Store) *gateway {
	t.Helper()
	pair := tlstest.New(t, "presenced-e2e", "127.0.0.1", "localhost")
	certFile, keyFile := pair.Write(t, t.TempDir())
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
	cfg.TLSCert, cfg.TLSKey = certFile, keyFile
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
	g := &gateway{srv: srv, st: st, base: "https://" + srv.Addr()}
	waitReadyTLS(t, g.base, pair)
	return g
}

func waitReadyTLS(t *testing.T, base string, pair tlstest.Pair) {
	t.Helper()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool()}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(waitFor)
	for {
		res, err := c.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready at %s: %v", base, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tabView is what one demo tab shows, read through the contract's data-*
// hooks: the protocol its page came over, the stack's member count, the
// room roster (every member, with the status of their dot).
type tabView struct {
	Proto  string            `json:"proto"`
	Count  string            `json:"count"`
	Roster map[string]string `json:"roster"`
}

const tabViewJS = `((room) => {
	const out = {proto: "", count: "", roster: {}};
	const nav = performance.getEntriesByType('navigation')[0];
	if (nav) out.proto = nav.nextHopProtocol;
	const stack = document.querySelector('.pr-roomhead__stack [data-presence-room="' + CSS.escape(room) + '"]');
	if (stack) out.count = stack.getAttribute('data-count') || "";
	document.querySelectorAll('.pr-roster__list [data-presence-user][data-status]').forEach(el => {
		if (!el.querySelector('[data-status]')) out.roster[el.getAttribute('data-presence-user')] = el.getAttribute('data-status');
	});
	return out;
})`

// openTabs opens n tabs of the demo page, tab i signed in (?token=) as
// user{i}, all in ONE browser context: they share its connection pool, so
// over HTTP/1.1 only six tabs get their stream (six connections per origin,
// each held by a stream) and the rest stay frozen; the test then fails with
// Count:6 (seen with HTTP/2 switched off on the gateway).
func openTabs(t *testing.T, g *gateway, base, room string, n int) ([]*user, []string) {
	t.Helper()
	root := newUser(t, "context") // the BrowserContext; its own tab stays blank
	tabs := make([]*user, n)
	ids := make([]string, n)
	errs := make([]chan error, n)
	for i := range n {
		ids[i] = fmt.Sprintf("user%02d", i)
		// A tab in the context's one window, as a person's many tabs are:
		// all but the active one hidden (presence.js reports them away).
		ctx, cancel := chromedp.NewContext(root.ctx, chromedp.WithNewWindow(false))
		tabs[i] = &user{name: "tab " + ids[i], ctx: ctx, cancel: cancel}
		t.Cleanup(tabs[i].close)
		// All at once, as tabs restored by a browser start. No timeout on
		// a tab's first Run (it would close the tab); the navigation
		// returns once the page has loaded.
		errs[i] = make(chan error, 1)
		url := base + "/?room=" + room + "&token=" + g.token(t, ids[i], "User "+ids[i])
		go func() { errs[i] <- chromedp.Do(ctx, chromedp.Navigate(url)) }()
	}
	deadline := time.After(waitFor)
	for i := range n {
		select {
		case err := <-errs[i]:
			if err != nil {
				t.Fatalf("%s: open the demo: %v", tabs[i].name, err)
			}
		case <-deadline:
			t.Fatalf("%s (tab %d of %d) did not load within %s: the browser is out of connections to the origin?", tabs[i].name, i+1, n, waitFor)
		}
	}
	return tabs, ids
}

// waitTab polls a tab's view until ok holds.
func waitTab(t *testing.T, u *user, room, what string, ok func(tabView) bool) tabView {
	t.Helper()
	arg, _ := json.Marshal(room)
	deadline := time.Now().Add(waitFor)
	var last tabView
	var lastErr error
	for {
		v, err := eval[tabView](u, tabViewJS+"("+string(arg)+")")
		if err == nil && ok(v) {
			return v
		}
		last, lastErr = v, err
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out after %s waiting for %s; last seen %+v (err %v)", u.name, waitFor, what, last, lastErr)
		}
		time.Sleep(pollEvery)
	}
}

// everyone reports whether the roster shows each of ids with one of
// statuses.
func everyone(v tabView, ids []string, statuses ...string) bool {
	if len(v.Roster) != len(ids) {
		return false
	}
	for _, id := range ids {
		if !slices.Contains(statuses, v.Roster[id]) {
			return false
		}
	}
	return true
}

// eachTab runs f for every tab at once (chromedp drives targets
// concurrently) and fails on the first error.
func eachTab(t *testing.T, tabs []*user, f func(i int, u *user) error) {
	t.Helper()
	errs := make(chan error, len(tabs))
	for i, u := range tabs {
		go func() { errs <- f(i, u) }()
	}
	for range tabs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// liveTabs: every tab gets its state, then sees every tab's status change
// (one POST from each tab, made by clicking its Busy button).
func liveTabs(t *testing.T, tabs []*user, ids []string, room, wantProto string) {
	t.Helper()
	n := fmt.Sprint(len(ids))
	for i, u := range tabs {
		// Present: online, or away for a hidden tab.
		v := waitTab(t, u, room, "every tab's user in the stack and roster", func(v tabView) bool {
			return v.Count == n && everyone(v, ids, "online", "away")
		})
		if v.Proto != wantProto {
			t.Fatalf("tab %d came over %q, want %q", i, v.Proto, wantProto)
		}
	}
	// A DOM click (the listener presence.js installs) in every tab at once;
	// each sends its POST /api/presence.
	eachTab(t, tabs, func(i int, u *user) error {
		if _, err := eval[bool](u, `(document.querySelector('[data-presence-set-status="busy"]').click(), true)`); err != nil {
			return fmt.Errorf("tab %d: click Busy: %v", i, err)
		}
		return nil
	})
	for _, u := range tabs {
		waitTab(t, u, room, "every tab's user busy (each tab's POST went through)", func(v tabView) bool {
			return v.Count == n && everyone(v, ids, "busy")
		})
	}
	// And a plain fetch POST from each tab answers 200.
	eachTab(t, tabs, func(i int, u *user) error {
		ctx, cancel := withTimeout(u.ctx)
		defer cancel()
		code, err := chromedp.Run(ctx, chromedp.Evaluate[int](`fetch('/api/presence', {method: 'POST', headers: {'Content-Type': 'application/json',
			'Authorization': 'Bearer ' + document.querySelector('[data-presence-config]').dataset.token},
			body: JSON.stringify({status: 'busy', sessionId: window.Presence.sessionId})}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("tab %d: fetch POST /api/presence: %d %v", i, code, err)
		}
		return nil
	})
}

// TestManyTabsOverHTTP2: twelve tabs of one browser profile on one origin,
// each holding its stream, all live over the gateway's own TLS + HTTP/2.
func TestManyTabsOverHTTP2(t *testing.T) {
	browser(t)
	g := startTLSGateway(t, newStore(t, "memory"))
	const room = "h2-tabs"
	tabs, ids := openTabs(t, g, g.base, room, 12)
	liveTabs(t, tabs, ids, room, "h2")
}
