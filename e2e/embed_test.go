package e2e

import (
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/internal/config"
)

// hostPage is a page of another site that embeds the room's live widget two
// ways: the snippet of examples/embed.html (placeholders wired to the room
// stream with ?token=, htmx and presence.js loaded from the gateway), and the
// server-rendered widget fetched cross-origin from /fragments/room/{room}/live
// (scripts=0: the page loads htmx itself) and handed to htmx.process.
var hostPage = template.Must(template.New("host").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Acme Docs · embed</title>
  <link rel="stylesheet" href="{{.GW}}/static/presence.css">
</head>
<body>
  <header>
    <b>Acme Docs</b>
    <div id="snippet" class="pr-live" hx-ext="sse" sse-connect="{{.Stream}}">
      <div sse-swap="members"><span class="pr-members"><span class="pr-members__count">Connecting…</span></span></div>
      <div sse-swap="typing"></div>
    </div>
  </header>
  <main>
    <h1>Quarterly planning</h1>
    <div id="fetched"></div>
  </main>
  <script src="{{.GW}}/static/vendor/htmx.min.js"></script>
  <script src="{{.GW}}/static/vendor/htmx-ext-sse.js"></script>
  <script src="{{.GW}}/static/presence.js" data-mode="watch"></script>
  <script>
    (function () {
      var el = document.getElementById('fetched');
      fetch({{.Live}}).then(function (res) {
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.text();
      }).then(function (html) {
        el.innerHTML = html;
        htmx.process(el);
        el.setAttribute('data-loaded', '');
      }).catch(function (err) {
        el.setAttribute('data-error', String(err));
      });
    })();
  </script>
</body>
</html>
`))

// TestEmbedCrossOrigin: a host page on a second origin (another port) shows
// the live stack of a room, and follows it when someone joins and types.
func TestEmbedCrossOrigin(t *testing.T) {
	browser(t)
	const room = "planning"

	// The host's origin must be known before the gateway starts (it goes
	// on --allow-origin), and the gateway's URL before the host serves.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hostOrigin := "http://" + ln.Addr().String()
	g := startGateway(t, newStore(t, "memory"), func(c *config.Config) {
		c.AllowOrigins = []string{hostOrigin}
	})

	// The viewer of the host page is Carol; her token rides in ?token=
	// (an EventSource cannot send headers, and gets no cookie cross-site).
	tok := g.token(t, "carol", "Carol")
	data := map[string]string{
		"GW":     g.base,
		"Stream": g.base + "/sse/room/" + room + "?" + url.Values{"token": {tok}}.Encode(),
		"Live":   g.base + "/fragments/room/" + room + "/live?" + url.Values{"scripts": {"0"}, "token": {tok}}.Encode(),
	}
	host := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err := hostPage.Execute(w, data); err != nil {
			t.Errorf("host page: %v", err)
		}
	}))
	host.Listener.Close()
	host.Listener = ln
	host.Start()
	t.Cleanup(host.Close)

	carol := newUser(t, "Carol")
	carol.do(t, "open the host page", chromedp.Navigate(hostOrigin+"/"))
	widgets := []string{"#snippet", "#fetched"}

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("the stack renders", func(t *testing.T) {
		carol.waitFor(t, "the fetched widget", `document.querySelector('#fetched[data-loaded], #fetched[data-error]')`)
		if e, _ := eval[string](carol, `document.getElementById('fetched').getAttribute('data-error') || ''`); e != "" {
			t.Fatalf("fetching the live widget from %s failed: %s", hostOrigin, e)
		}
		for _, w := range widgets {
			carol.waitStack(t, w, room, w+": Carol in the stack", func(s stack) bool {
				return s.Count == "1" && s.has("carol") && strings.Contains(s.Text, "1 person here")
			})
		}
	})

	alice := newUser(t, "Alice")
	step("it updates live when someone joins", func(t *testing.T) {
		alice.signIn(t, g, room)
		for _, w := range widgets {
			s := carol.waitStack(t, w, room, w+": Alice and Carol in the stack", func(s stack) bool {
				return s.Count == "2" && s.has("alice") && s.has("carol") && strings.Contains(s.Text, "2 people here")
			})
			if s.Status["alice"] != "online" {
				t.Errorf("%s: Alice's dot is %q, want online", w, s.Status["alice"])
			}
		}
	})

	step("it shows who is typing", func(t *testing.T) {
		alice.do(t, "type", typeInto(`[data-presence-typing]`, "Morning!"))
		for _, w := range widgets {
			carol.waitStack(t, w, room, w+`: "Alice is typing…"`, func(s stack) bool {
				return s.Typing == "1" && strings.Contains(s.TypeText, "Alice is typing…")
			})
		}
	})

	step("an origin not allowed gets nothing", func(t *testing.T) {
		// The same page from http://localhost:port is another origin, not on
		// --allow-origin: the browser refuses the gateway's answers to it.
		other := strings.Replace(hostOrigin, "127.0.0.1", "localhost", 1)
		mallory := newUser(t, "Mallory")
		mallory.do(t, "open the host page on another origin", chromedp.Navigate(other+"/"))
		mallory.waitFor(t, "the widget fetch to be refused", `document.querySelector('#fetched[data-loaded], #fetched[data-error]')`)
		if e, _ := eval[string](mallory, `document.getElementById('fetched').getAttribute('data-error') || ''`); e == "" {
			t.Fatalf("the live widget was fetched from %s, an origin not on --allow-origin", other)
		}
		if s, err := mallory.readStack("#fetched", room); err != nil || s.Found {
			t.Errorf("a stack rendered on %s: %v (%v)", other, s, err)
		}
	})
}
