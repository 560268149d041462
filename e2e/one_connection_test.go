package e2e

import (
	"context"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// onePage is a host page with a room's live widget (fetched with
// connect=0: it takes the page's stream) and twenty user dots, all under one
// sse-connect: GET /sse?room=…&users=… (issue 8: one connection per page).
var onePage = template.Must(template.New("one").Parse(`<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>one connection</title>
<link rel="stylesheet" href="{{.GW}}/static/presence.css"></head>
<body hx-ext="sse" sse-connect="{{.Stream}}">
  <div id="widget"></div>
  <ul id="people">{{range .Users}}
    <li><span class="pr-dot" data-presence-user="{{.}}" data-status="unknown" sse-swap="presence-{{.}}" hx-swap="outerHTML"></span> {{.}}</li>{{end}}
  </ul>
  <script src="{{.GW}}/static/vendor/htmx.min.js"></script>
  <script src="{{.GW}}/static/vendor/htmx-ext-sse.js"></script>
  <script src="{{.GW}}/static/presence.js" data-mode="watch"></script>
  <script>
    fetch({{.Live}}).then(function (r) { return r.text(); }).then(function (html) {
      var el = document.getElementById('widget');
      el.innerHTML = html;
      htmx.process(el);
      el.setAttribute('data-loaded', '');
    });
  </script>
</body>
</html>
`))

// A page with a room and 20 user dots holds exactly one SSE connection in
// real Chromium, and every part of it is live over that one connection.
// With watch=1 the viewer is not in the room (a dashboard).
func TestOnePagePerConnection(t *testing.T) {
	browser(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostOrigin := "http://" + ln.Addr().String()
	st := newStore(t, "memory")
	g := startGateway(t, st, func(c *config.Config) { c.AllowOrigins = []string{hostOrigin} })

	var users []string
	for i := range 20 {
		users = append(users, fmt.Sprintf("u%02d", i))
	}
	ctx := context.Background()
	for _, id := range users[:10] { // half of them online
		if err := st.Heartbeat(ctx, store.Heartbeat{User: store.Profile{ID: id, Name: strings.ToUpper(id)}, SessionID: "session-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Join(ctx, "hall", store.Heartbeat{User: store.Profile{ID: "u00", Name: "U00"}, SessionID: "session-u00"}); err != nil {
		t.Fatal(err)
	}
	tok := g.token(t, "viewer", "Viewer")
	q := url.Values{"room": {"hall"}, "watch": {"1"}, "users": {strings.Join(users, ",")}, "token": {tok}}
	data := map[string]any{
		"GW":     g.base,
		"Users":  users,
		"Stream": g.base + "/sse?" + q.Encode(),
		"Live":   g.base + "/fragments/room/hall/live?" + url.Values{"scripts": {"0"}, "connect": {"0"}, "token": {tok}}.Encode(),
	}
	host := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = onePage.Execute(w, data)
	}))
	host.Listener.Close()
	host.Listener = ln
	host.Start()
	t.Cleanup(host.Close)

	v := newUser(t, "Viewer")
	v.do(t, "open the page", chromedp.Navigate(hostOrigin+"/"))
	v.waitFor(t, "the widget", `document.querySelector('#widget[data-loaded] [data-presence-room="hall"]')`)
	v.waitFor(t, "every dot's state", `[...document.querySelectorAll('#people [data-presence-user]')].every(d => d.dataset.status === 'online' || d.dataset.status === 'offline') && document.querySelectorAll('#people [data-status="online"]').length === 10`)
	v.waitStack(t, "#widget", "hall", "u00 in the stack", func(s stack) bool { return s.Count == "1" && s.has("u00") })

	if n := openStreams(t, g); n != 1 {
		t.Fatalf("%v SSE streams open for one page, want 1", n)
	}
	// Live over that one connection: a dot and the stack.
	if err := st.Heartbeat(ctx, store.Heartbeat{User: store.Profile{ID: "u15", Name: "U15"}, SessionID: "session-u15", Status: store.StatusBusy}); err != nil {
		t.Fatal(err)
	}
	v.waitFor(t, "u15 busy", `document.querySelector('#people [data-presence-user="u15"]').dataset.status === 'busy'`)
	if err := st.Join(ctx, "hall", store.Heartbeat{User: store.Profile{ID: "u03", Name: "U03"}, SessionID: "session-u03"}); err != nil {
		t.Fatal(err)
	}
	s := v.waitStack(t, "#widget", "hall", "u03 joined", func(s stack) bool { return s.Count == "2" && s.has("u03") })
	if s.has("viewer") {
		t.Fatalf("a watch-only viewer is in the stack: %v", s)
	}
	ms, err := st.Members(ctx, "hall")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == "viewer" {
			t.Fatal("the watch-only viewer joined the room")
		}
	}
	if n := openStreams(t, g); n != 1 {
		t.Fatalf("%v SSE streams open after the updates, want 1", n)
	}
}

// openStreams sums presenced_sse_open_streams from /metrics.
func openStreams(t *testing.T, g *gateway) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.base+"/metrics", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		n, err := res.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	var sum float64
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, "presenced_sse_open_streams{") {
			var v float64
			fmt.Sscanf(line[strings.LastIndexByte(line, ' ')+1:], "%g", &v)
			sum += v
		}
	}
	return sum
}
