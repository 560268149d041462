package e2e

import (
	"context"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// inRoom says whether the store has user id in room.
func inRoom(t *testing.T, st store.Store, room, id string) bool {
	t.Helper()
	ms, err := st.Members(context.Background(), room)
	if err != nil {
		t.Fatalf("Members: %v", err)
	}
	return slices.ContainsFunc(ms, func(m store.Member) bool { return m.ID == id })
}

// A duplicated tab (window.open(location.href): sessionStorage is copied,
// and with it the sid) gets a session of its own; closing it leaves the
// user in the room through the first tab's session.
func TestDuplicatedTabOwnSession(t *testing.T) {
	browser(t)
	st := newStore(t, "memory")
	g := startGateway(t, st)
	a := newUser(t, "Alice")
	a.signIn(t, g, "lobby")
	sid1, err := eval[string](a, `Presence.sessionId`)
	if err != nil {
		t.Fatal(err)
	}
	if stored, _ := eval[string](a, `sessionStorage.getItem('presence.sid')`); stored != sid1 {
		t.Fatalf("sessionStorage has %q, the page runs %q", stored, sid1)
	}

	newTab := chromedp.WaitNewTarget(a.ctx, func(i *target.Info) bool { return strings.Contains(i.URL, "room=lobby") })
	if _, err := eval[bool](a, `(window.open(location.href), true)`); err != nil {
		t.Fatal(err)
	}
	var id target.ID
	select {
	case id = <-newTab:
	case <-time.After(waitFor):
		t.Fatal("window.open opened no tab")
	}
	dctx, dcancel := chromedp.NewContext(a.ctx, chromedp.WithTargetID(id))
	if err := chromedp.Do(dctx); err != nil {
		dcancel()
		t.Fatalf("attach to the duplicate: %v", err)
	}
	dup := &user{name: "Alice (duplicate)", ctx: dctx, cancel: dcancel}
	t.Cleanup(dup.close)
	dup.waitFor(t, "the duplicate's own session and open stream", fmt.Sprintf(
		`Presence.sessionId && Presence.sessionId !== %q && document.querySelector('[sse-connect]').dataset.connection === 'open'`, sid1))
	sid2, _ := eval[string](dup, `Presence.sessionId`)
	if !strings.Contains(mustEval[string](t, dup, `document.querySelector('[sse-connect]').getAttribute('sse-connect')`), "sid="+sid2) {
		t.Fatalf("the duplicate's stream does not run in its session %s", sid2)
	}
	for _, sid := range []string{sid1, sid2} {
		if _, ok := g.rec.waitReport(func(r report) bool { return r.SessionID == sid && r.Status == "online" && r.Code == http.StatusOK }); !ok {
			t.Fatalf("no accepted heartbeat of session %s", sid)
		}
	}

	dup.closeTab(t)
	if _, ok := g.rec.waitReport(func(r report) bool { return r.SessionID == sid2 && r.Status == "offline" }); !ok {
		t.Fatal("the closed duplicate sent no offline beacon for its own session")
	}
	// Past the leave grace and a whole TTL: the first tab's session holds.
	until := time.Now().Add(testTTL + testGrace + time.Second)
	for time.Now().Before(until) {
		if !inRoom(t, st, "lobby", "alice") {
			t.Fatal("closing the duplicated tab took the user out of the room")
		}
		time.Sleep(pollEvery)
	}
	g.rec.mu.Lock()
	defer g.rec.mu.Unlock()
	for _, r := range g.rec.reports {
		if r.SessionID == sid1 && r.Status == "offline" {
			t.Fatal("the first tab's session was reported offline")
		}
	}
}

func mustEval[T any](t *testing.T, u *user, expr string) T {
	t.Helper()
	v, err := eval[T](u, expr)
	if err != nil {
		t.Fatalf("%s: %s: %v", u.name, expr, err)
	}
	return v
}

// Back/forward cache: a page that goes into the cache leaves the room (its
// stream is closed and the offline beacon sent), and comes back when it is
// restored, with its state re-read from a new stream.
func TestBackForwardCache(t *testing.T) {
	browser(t)
	st := newStore(t, "memory")
	g := startGateway(t, st)
	a := newUser(t, "Alice")
	b := newUser(t, "Bob")
	a.signIn(t, g, "lobby")
	b.signIn(t, g, "lobby")
	b.waitStack(t, "", "lobby", "Alice in the lobby", func(s stack) bool { return s.has("alice") && s.has("bob") })

	if _, err := eval[bool](a, `(window.__before = true, addEventListener('pageshow', e => { window.__restored = e.persisted; }), true)`); err != nil {
		t.Fatal(err)
	}
	a.do(t, "go to another room", chromedp.Navigate(g.base+"/?room=design"))
	a.waitFor(t, "the design room", `!!document.querySelector('[data-presence-room="design"]') && !window.__before`)
	b.waitStack(t, "", "lobby", "Alice gone from the lobby while away", func(s stack) bool { return !s.has("alice") && s.has("bob") })

	// history.back(), not chromedp.NavigateBack: that waits for a load event,
	// which a page restored from the back/forward cache does not fire.
	if _, err := eval[bool](a, `(history.back(), true)`); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "the lobby page", `!!document.querySelector('[data-presence-room="lobby"]')`)
	restored, _ := eval[bool](a, `window.__before === true && window.__restored === true`)
	if !restored {
		t.Fatal("the lobby page was not restored from the back/forward cache (reloaded instead)")
	}
	a.waitFor(t, "the stream open again", `document.querySelector('[sse-connect]').dataset.connection === 'open'`)
	b.waitStack(t, "", "lobby", "Alice back in the lobby", func(s stack) bool { return s.has("alice") && s.has("bob") })
	a.waitStack(t, "", "lobby", "Alice's restored page live", func(s stack) bool { return s.has("alice") && s.has("bob") })
	// Live after the restore: a change shows in the restored page.
	if err := st.Join(context.Background(), "lobby", store.Heartbeat{User: store.Profile{ID: "carol", Name: "Carol"}, SessionID: "session-carol"}); err != nil {
		t.Fatal(err)
	}
	a.waitStack(t, "", "lobby", "Carol in the restored page", func(s stack) bool { return s.has("carol") })
}

// The demo opened with ?token= (no cookie) is live: its stream carries the
// token.
func TestDemoWithTokenQuery(t *testing.T) {
	browser(t)
	st := newStore(t, "memory")
	g := startGateway(t, st)
	tok := g.token(t, "dana", "Dana")
	d := newUser(t, "Dana")
	d.do(t, "open the demo with a token", chromedp.Navigate(g.base+"/?room=lobby&token="+url.QueryEscape(tok)))
	d.waitFor(t, "an open stream", `document.querySelector('[sse-connect]').dataset.connection === 'open'`)
	d.waitStack(t, "", "lobby", "Dana in her stack", func(s stack) bool { return s.has("dana") })
	if err := st.Join(context.Background(), "lobby", store.Heartbeat{User: store.Profile{ID: "erin", Name: "Erin"}, SessionID: "session-erin"}); err != nil {
		t.Fatal(err)
	}
	d.waitStack(t, "", "lobby", "Erin joined", func(s stack) bool { return s.has("erin") && s.has("dana") })
}

var refreshPage = template.Must(template.New("refresh").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>token refresh</title>
<link rel="stylesheet" href="{{.GW}}/static/presence.css"></head>
<body>
  <div id="live" class="pr-live" hx-ext="sse" sse-connect="{{.Stream}}">
    <div sse-swap="members"></div>
  </div>
  <script src="{{.GW}}/static/vendor/htmx.min.js"></script>
  <script src="{{.GW}}/static/vendor/htmx-ext-sse.js"></script>
  <script>
    window.__log = [];
    document.addEventListener('presence:token', function () { window.__log.push(['token', Date.now()]); });
    new MutationObserver(function () {
      window.__log.push([document.getElementById('live').dataset.connection, Date.now()]);
    }).observe(document.getElementById('live'), { attributes: true, attributeFilter: ['data-connection'] });
  </script>
  <script src="{{.GW}}/static/presence.js" data-base="{{.GW}}" data-token="{{.Tok}}" data-room="hall"
          data-heartbeat="1000" data-token-url="/token"></script>
</body>
</html>
`))

// Token refresh: with 5 s tokens from the host's endpoint the page stays
// live for 30 s, its POSTs keep succeeding, and data-connection is open
// again after every renewal.
func TestTokenRefresh(t *testing.T) {
	browser(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostOrigin := "http://" + ln.Addr().String()
	st := newStore(t, "memory")
	g := startGateway(t, st, func(c *config.Config) { c.AllowOrigins = []string{hostOrigin} })
	viewer := store.Profile{ID: "viewer", Name: "Viewer"}
	mint := func() string {
		tok, err := g.srv.Auth().Mint(viewer, 5*time.Second, nil)
		if err != nil {
			t.Errorf("Mint: %v", err)
		}
		return tok
	}
	first := mint()
	var minted int
	host := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			minted++
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"token":%q}`, mint())
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = refreshPage.Execute(w, map[string]any{
			"GW": g.base, "Tok": first,
			"Stream": g.base + "/sse/room/hall?" + url.Values{"token": {first}}.Encode(),
		})
	}))
	host.Listener.Close()
	host.Listener = ln
	host.Start()
	t.Cleanup(host.Close)

	v := newUser(t, "Viewer")
	start := time.Now()
	v.do(t, "open the page", chromedp.Navigate(hostOrigin+"/"))
	v.waitStack(t, "#live", "hall", "the viewer in the room", func(s stack) bool { return s.has("viewer") })
	sid := mustEval[string](t, v, `Presence.sessionId`)

	time.Sleep(time.Until(start.Add(25 * time.Second)))
	if err := st.Join(context.Background(), "hall", store.Heartbeat{User: store.Profile{ID: "zed", Name: "Zed"}, SessionID: "session-zed"}); err != nil {
		t.Fatal(err)
	}
	v.waitStack(t, "#live", "hall", "Zed's join at 25 s", func(s stack) bool { return s.has("zed") && s.has("viewer") })
	time.Sleep(time.Until(start.Add(30 * time.Second)))
	// (Zed, who sends no heartbeats, has expired by now: another join.)
	if err := st.Join(context.Background(), "hall", store.Heartbeat{User: store.Profile{ID: "yan", Name: "Yan"}, SessionID: "session-yan"}); err != nil {
		t.Fatal(err)
	}
	v.waitStack(t, "#live", "hall", "Yan's join at 30 s", func(s stack) bool { return s.has("yan") && s.has("viewer") })

	renewals := mustEval[int](t, v, `Presence.__tokens.renewals`)
	if renewals < 5 {
		t.Fatalf("%d renewals in 30 s of 5 s tokens, want at least 5", renewals)
	}
	// Every renewal is followed by an open stream (the last one may still be
	// reconnecting: poll).
	v.waitFor(t, "open after every renewal", `(() => {
		const l = window.__log; let want = false;
		for (const [k] of l) { if (k === 'token') want = true; else if (k === 'open') want = false; }
		return !want && l.filter(e => e[0] === 'token').length >= 5 && document.getElementById('live').dataset.connection === 'open';
	})()`)

	g.rec.mu.Lock()
	var ok, unauthorized, late int
	for _, r := range g.rec.reports {
		if r.SessionID != sid {
			continue
		}
		switch r.Code {
		case http.StatusOK, http.StatusNoContent:
			ok++
		case http.StatusUnauthorized:
			unauthorized++
		}
	}
	reps := slices.Clone(g.rec.reports)
	g.rec.mu.Unlock()
	for i := len(reps) - 1; i >= 0 && late < 3; i-- {
		if reps[i].SessionID == sid {
			if reps[i].Code != http.StatusOK && reps[i].Code != http.StatusNoContent {
				t.Fatalf("a late heartbeat failed: %+v", reps[i])
			}
			late++
		}
	}
	t.Logf("30 s on 5 s tokens: %d renewals, %d tokens minted, %d heartbeats accepted, %d answered 401 (then retried)", renewals, minted, ok, unauthorized)
	if ok < 20 {
		t.Fatalf("only %d accepted heartbeats in 30 s at 1 s", ok)
	}
}
