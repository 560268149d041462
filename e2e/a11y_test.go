package e2e

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// axeSource is axe-core (pinned, checksummed: scripts/vendor.sh). It lives in
// testdata, not static/, so the gateway never serves it; the tests inject it
// into the page under audit over the DevTools protocol.
//
//go:embed testdata/axe.min.js
var axeSource string

// axeTags are the rule sets audited: WCAG 2.0, 2.1 and 2.2, levels A and AA.
var axeTags = []string{"wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"}

type axeViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

// setScheme emulates prefers-color-scheme (light or dark) in the user's tab.
func (u *user) setScheme(t testing.TB, scheme string) {
	t.Helper()
	ctx, cancel := withTimeout(u.ctx)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	}); err != nil {
		t.Fatalf("%s: emulate prefers-color-scheme: %s: %v", u.name, scheme, err)
	}
	u.waitFor(t, "prefers-color-scheme: "+scheme, fmt.Sprintf(`matchMedia('(prefers-color-scheme: %s)').matches`, scheme))
}

// audit runs axe-core on the user's page and fails the test on any
// violation. Transitions and animations are stopped first, so that colours
// are measured as they end up (a scheme switch fades some of them).
func (u *user) audit(t testing.TB, what string) {
	t.Helper()
	u.still(t)
	start := time.Now()
	defer func() { t.Logf("axe on %s: %s", what, time.Since(start).Round(time.Millisecond)) }()
	if ok, _ := eval[bool](u, `typeof window.axe === 'object'`); !ok {
		if _, err := eval[bool](u, axeSource+";true"); err != nil {
			t.Fatalf("%s: load axe-core: %v", u.name, err)
		}
	}
	tags, _ := json.Marshal(axeTags)
	ctx, cancel := withTimeout(u.ctx)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[string](`axe.run(document, {runOnly: {type: 'tag', values: `+string(tags)+`}, resultTypes: ['violations']})
		.then(r => JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
			nodes: v.nodes.map(n => n.target.join(' ') + ' — ' + (n.failureSummary || '').replace(/\s+/g, ' '))}))))`,
		chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: axe on %s: %v", u.name, what, err)
	}
	var vs []axeViolation
	if err := json.Unmarshal([]byte(out), &vs); err != nil {
		t.Fatalf("%s: axe result: %v: %s", u.name, err, out)
	}
	for _, v := range vs {
		t.Errorf("%s: axe %s (%s): %s", what, v.ID, v.Impact, v.Help)
		for _, n := range v.Nodes {
			t.Logf("    %s", n)
		}
	}
}

// still stops every transition and animation in the user's page (test
// only), so that what is measured or captured is the final state, not a
// colour halfway through a fade.
func (u *user) still(t testing.TB) {
	t.Helper()
	if _, err := eval[bool](u, `(() => {
		if (!document.getElementById('pr-test-still')) {
			const s = document.createElement('style');
			s.id = 'pr-test-still';
			s.textContent = '*,*::before,*::after{transition:none!important;animation:none!important}';
			document.head.appendChild(s);
		}
		return true;
	})()`); err != nil {
		t.Fatalf("%s: stop animations: %v", u.name, err)
	}
}

// seed puts a user into a room with a status, as if from another device,
// for an hour (no heartbeats needed during the test).
func (g *gateway) seed(t testing.TB, room, id, name string, status store.Status) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.st.Join(ctx, room, store.Heartbeat{
		User: store.Profile{ID: id, Name: name}, SessionID: "seed-" + id, Status: status, TTL: time.Hour,
	}); err != nil {
		t.Fatalf("seed %s: %v", id, err)
	}
}

// seedRoom fills a room with one member of each status and a long name.
func (g *gateway) seedRoom(t testing.TB, room string) {
	g.seed(t, room, "bob", "Bob Marley", store.StatusBusy)
	g.seed(t, room, "dana", "Dana Scully", store.StatusAway)
	g.seed(t, room, "max", "Maximiliana Konstantinopoulou-Wellington", store.StatusOnline)
}

// TestAccessibility: axe-core finds no WCAG 2.x A/AA violation on the
// sign-in page, the demo page and the live widget on a host page (htmx 2 and
// htmx 4), in light and in dark mode.
func TestAccessibility(t *testing.T) {
	browser(t)
	const room = "a11y"
	host := newHost(t)
	g := startGateway(t, newStore(t, "memory"), func(c *config.Config) { c.AllowOrigins = []string{host.origin} })
	g.seedRoom(t, room)

	alice := newUser(t, "Alice")
	alice.do(t, "open the sign-in page", chromedp.Navigate(g.base+"/login?next="+url.QueryEscape("/?room="+room)))
	for _, scheme := range []string{"light", "dark"} {
		alice.setScheme(t, scheme)
		alice.audit(t, "login ("+scheme+")")
	}

	alice.signIn(t, g, room)
	alice.waitStack(t, "", room, "four people in the stack", func(s stack) bool { return s.Count == "4" })
	alice.waitFor(t, "four people in the roster", `document.querySelectorAll('[data-member-list] .pr-person').length === 4`)
	for _, scheme := range []string{"light", "dark"} {
		alice.setScheme(t, scheme)
		alice.audit(t, "demo ("+scheme+")")
	}

	carol := newUser(t, "Carol")
	for _, v := range []int{2, 4} {
		carol.do(t, "open the host page", chromedp.Navigate(host.widgetPage(t, g, room, v, g.token(t, "carol", "Carol"))))
		carol.waitStack(t, "#fetched", room, "the widget's stack", func(s stack) bool { return s.Count == "5" && s.has("carol") })
		for _, scheme := range []string{"light", "dark"} {
			carol.setScheme(t, scheme)
			carol.audit(t, fmt.Sprintf("widget on htmx %d (%s)", v, scheme))
		}
	}
}

// TestKeyboard: with the keyboard alone (real Tab and Enter key events) the
// status picker and the room list are reached, show a visible focus ring,
// and work: Enter on "Away" sets Alice away for everyone, Enter on a room
// opens it.
func TestKeyboard(t *testing.T) {
	browser(t)
	const room = "keys"
	g := startGateway(t, newStore(t, "memory"))
	alice := newUser(t, "Alice")
	alice.do(t, "set the viewport", chromedp.EmulateViewport(1200, 800))
	alice.signIn(t, g, room)
	alice.waitStack(t, "", room, "Alice in the stack", func(s stack) bool { return s.has("alice") })
	alice.still(t)
	// Start from the top of the page, as after a fresh load.
	if _, err := eval[bool](alice, `(document.activeElement && document.activeElement.blur(), window.scrollTo(0, 0), true)`); err != nil {
		t.Fatal(err)
	}

	// tabTo presses Tab until the focused element matches css, and checks
	// that it shows a keyboard focus ring.
	tabTo := func(t *testing.T, css string) {
		t.Helper()
		sel, _ := json.Marshal(css)
		for i := 0; i < 40; i++ {
			alice.do(t, "press Tab", chromedp.KeyEvent(kb.Tab))
			ok, err := eval[bool](alice, `!!document.activeElement && document.activeElement.matches(`+string(sel)+`)`)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				continue
			}
			ring, err := eval[string](alice, `(() => {
				const el = document.activeElement, cs = getComputedStyle(el);
				if (!el.matches(':focus-visible')) return 'not :focus-visible';
				if (cs.outlineStyle === 'none' || parseFloat(cs.outlineWidth) < 2) return 'no outline: ' + cs.outlineStyle + ' ' + cs.outlineWidth;
				return 'ok';
			})()`)
			if err != nil || ring != "ok" {
				t.Fatalf("%s focused without a visible ring: %s (%v)", css, ring, err)
			}
			return
		}
		active, _ := eval[string](alice, `document.activeElement ? document.activeElement.outerHTML.slice(0, 120) : 'none'`)
		t.Fatalf("40 presses of Tab never reached %s (focus is on %s)", css, active)
	}

	t.Run("the status picker", func(t *testing.T) {
		tabTo(t, `[data-presence-set-status="away"]`)
		alice.do(t, "press Enter", chromedp.KeyEvent(kb.Enter))
		alice.waitFor(t, "Away pressed", `document.querySelector('[data-presence-set-status="away"]').getAttribute('aria-pressed') === 'true' && document.querySelector('[data-presence-set-status="online"]').getAttribute('aria-pressed') === 'false'`)
		deadline := time.Now().Add(waitFor)
		for {
			p, err := g.st.Presence(context.Background(), []string{"alice"})
			if err == nil && p["alice"] != nil && p["alice"].Status == store.StatusAway {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the gateway does not see Alice away: %+v (%v)", p["alice"], err)
			}
			time.Sleep(pollEvery)
		}
	})

	t.Run("the room list", func(t *testing.T) {
		tabTo(t, `.pr-rooms a[href="/?room=random"]`)
		alice.do(t, "press Enter", chromedp.KeyEvent(kb.Enter))
		alice.waitFor(t, "the room random", `location.search === '?room=random' && !!document.querySelector('[data-presence-config][data-room="random"]')`)
	})
}
