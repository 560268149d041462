package e2e

import (
	"context"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

var sharedPage = template.Must(template.New("shared").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>shared stream</title>
<link rel="stylesheet" href="{{.GW}}/static/presence.css"></head>
<body data-presence-shared>
  <div id="live" class="pr-live" hx-ext="sse" sse-connect="{{.Stream}}">
    <div sse-swap="members"></div>
    <span id="dot" class="pr-dot" data-presence-user="u1" data-status="unknown" sse-swap="presence-u1" hx-swap="outerHTML"></span>
  </div>
  <script src="{{.GW}}/static/vendor/htmx.min.js"></script>
  <script src="{{.GW}}/static/vendor/htmx-ext-sse.js"></script>
  <script src="{{.GW}}/static/presence.js" data-base="{{.GW}}" data-token="{{.Tok}}" data-room="hall"
          data-heartbeat="1000"></script>
</body>
</html>
`))

// One SSE connection per browser (issue 12.2): 12 tabs of one page in one
// browser context over HTTP/1.1 (six connections per origin) are all live on
// one watch-only stream held by the leader tab; every tab's POSTs go
// through; closing the leader hands the stream to another tab.
func TestSharedStreamTwelveTabs(t *testing.T) {
	browser(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostOrigin := "http://" + ln.Addr().String()
	st := newStore(t, "memory")
	g := startGateway(t, st, func(c *config.Config) { c.AllowOrigins = []string{hostOrigin} })
	tok := g.token(t, "viewer", "Viewer")
	host := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = sharedPage.Execute(w, map[string]any{
			"GW": g.base, "Tok": tok,
			"Stream": g.base + "/sse/room/hall?" + url.Values{"token": {tok}, "users": {"u1"}}.Encode(),
		})
	}))
	host.Listener.Close()
	host.Listener = ln
	host.Start()
	t.Cleanup(host.Close)

	first := newUser(t, "Viewer tab 1")
	tabs := []*user{first}
	first.do(t, "open the page", chromedp.Navigate(hostOrigin+"/"))
	for i := 2; i <= 12; i++ {
		ctx, cancel := chromedp.NewContext(first.ctx) // a tab in the same browser context
		if err := chromedp.Do(ctx); err != nil {
			cancel()
			t.Fatalf("open tab %d: %v", i, err)
		}
		u := &user{name: fmt.Sprintf("Viewer tab %d", i), ctx: ctx, cancel: cancel}
		t.Cleanup(u.close)
		u.do(t, "open the page", chromedp.Navigate(hostOrigin+"/"))
		tabs = append(tabs, u)
	}
	sids := map[string]bool{}
	for _, u := range tabs {
		u.waitStack(t, "#live", "hall", "the viewer in the room", func(s stack) bool { return s.has("viewer") })
		sid := mustEval[string](t, u, `Presence.sessionId`)
		if sids[sid] {
			t.Fatalf("%s: session %s shared with another tab", u.name, sid)
		}
		sids[sid] = true
	}
	for sid := range sids {
		if _, ok := g.rec.waitReport(func(r report) bool { return r.SessionID == sid && r.Code == http.StatusOK }); !ok {
			t.Fatalf("no accepted heartbeat of session %s", sid)
		}
	}
	waitStreams(t, g, 1)

	change := func(id string) {
		t.Helper()
		if err := st.Join(context.Background(), "hall", store.Heartbeat{User: store.Profile{ID: id, Name: id}, SessionID: "session-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	change("zed")
	for _, u := range tabs {
		u.waitStack(t, "#live", "hall", "zed's join", func(s stack) bool { return s.has("zed") })
	}
	if err := st.Heartbeat(context.Background(), store.Heartbeat{User: store.Profile{ID: "u1", Name: "U1"}, SessionID: "session-u1", Status: store.StatusBusy}); err != nil {
		t.Fatal(err)
	}
	for _, u := range tabs {
		u.waitFor(t, "u1's dot busy", `document.querySelector('#live [data-presence-user="u1"]').dataset.status === 'busy'`)
	}
	waitStreams(t, g, 1)

	// Close the leader: another tab takes over, state first.
	var leader *user
	var rest []*user
	for _, u := range tabs {
		if mustEval[bool](t, u, `!!(Presence.__shared && Presence.__shared.leader)`) && leader == nil {
			leader = u
		} else {
			rest = append(rest, u)
		}
	}
	if leader == nil {
		t.Fatal("no tab is the leader")
	}
	closeTargetOnly(t, leader)
	change("yan")
	for _, u := range rest {
		u.waitStack(t, "#live", "hall", "yan's join after the handover", func(s stack) bool { return s.has("yan") && s.has("viewer") })
	}
	waitStreams(t, g, 1)
}

// closeTargetOnly closes a tab the way a person does, without cancelling
// its chromedp context: the first tab's context is the parent of the
// others'.
func closeTargetOnly(t *testing.T, u *user) {
	t.Helper()
	c := chromedp.FromContext(u.ctx)
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
}

// waitStreams polls presenced_sse_open_streams until it is n.
func waitStreams(t *testing.T, g *gateway, n float64) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		got := openStreams(t, g)
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v SSE streams open, want %v", got, n)
		}
		time.Sleep(pollEvery)
	}
}
