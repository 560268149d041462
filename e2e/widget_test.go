package e2e

import (
	"bytes"
	"context"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// widgetHostPage is a page of another site that fetches the room's live
// widget from /fragments/room/{room}/live?scripts=0&htmx=N and hands it to
// htmx.process, with the htmx N it loads itself from the gateway.
var widgetHostPage = template.Must(template.New("widget-host").Parse(`<!DOCTYPE html>
<html lang="en"{{if .Dark}} data-pr-theme="dark" style="background:#0c0a09;color:#e7e5e4"{{end}}>
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Acme Docs · live widget on htmx {{.Htmx}}</title>
  {{- if eq .Htmx 4}}
  <meta name="htmx-config" content='{"mode":"cors"}'>
  {{- end}}
  <link rel="stylesheet" href="{{.GW}}/static/presence.css">
</head>
<body style="margin:0;font:16px/1.6 Georgia,serif">
  <main style="max-width:40rem;margin:0 auto;padding:2rem">
    <h1>Quarterly planning</h1>
    <p>Who is in the room, live:</p>
    <div id="fetched"></div>
  </main>
  {{- if eq .Htmx 4}}
  <script src="{{.GW}}/static/vendor/htmx4.min.js"></script>
  <script src="{{.GW}}/static/vendor/htmx4-ext-sse.min.js"></script>
  <script src="{{.GW}}/static/presence-htmx4.js"></script>
  {{- else}}
  <script src="{{.GW}}/static/vendor/htmx.min.js"></script>
  <script src="{{.GW}}/static/vendor/htmx-ext-sse.js"></script>
  {{- end}}
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

// host is a second origin (another loopback port) serving host pages.
type host struct {
	origin string
	mu     sync.Mutex
	pages  map[string][]byte
	n      int
}

// newHost listens on a loopback port at once (its origin goes on the
// gateway's --allow-origin before the gateway starts) and serves the pages
// registered with widgetPage.
func newHost(t *testing.T) *host {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &host{origin: "http://" + ln.Addr().String(), pages: map[string][]byte{}}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		page, ok := h.pages[r.URL.Path]
		h.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return h
}

// serve registers a page and returns its URL.
func (h *host) serve(page []byte) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.n++
	path := "/page-" + strconv.Itoa(h.n)
	h.pages[path] = page
	return h.origin + path
}

// widgetPage registers a host page showing room's live widget for htmx
// version v, seen by the holder of tok, and returns its URL.
func (h *host) widgetPage(t *testing.T, g *gateway, room string, v int, tok string, dark ...bool) string {
	t.Helper()
	var b bytes.Buffer
	if err := widgetHostPage.Execute(&b, map[string]any{
		"GW":   g.base,
		"Htmx": v,
		"Dark": len(dark) > 0 && dark[0],
		"Live": g.base + "/fragments/room/" + url.PathEscape(room) + "/live?" + url.Values{
			"scripts": {"0"}, "htmx": {strconv.Itoa(v)}, "token": {tok},
		}.Encode(),
	}); err != nil {
		t.Fatalf("host page: %v", err)
	}
	return h.serve(b.Bytes())
}

// TestLiveWidgetHtmx: the live widget, fetched cross-origin and run by the
// host page's own htmx, on htmx 2.0.11 + htmx-ext-sse and on htmx 4.0.1 +
// its hx-sse extension: it renders the room, then follows it live (someone
// joins, changes status, types, leaves).
func TestLiveWidgetHtmx(t *testing.T) {
	browser(t)
	h := newHost(t)
	g := startGateway(t, newStore(t, "memory"), func(c *config.Config) { c.AllowOrigins = []string{h.origin} })
	for _, v := range []int{2, 4} {
		t.Run("htmx"+strconv.Itoa(v), func(t *testing.T) {
			room := "widget-" + strconv.Itoa(v)
			carol := newUser(t, "Carol")
			carol.do(t, "open the host page", chromedp.Navigate(h.widgetPage(t, g, room, v, g.token(t, "carol", "Carol"))))
			carol.waitFor(t, "the fetched widget", `document.querySelector('#fetched[data-loaded], #fetched[data-error]')`)
			if e, _ := eval[string](carol, `document.getElementById('fetched').getAttribute('data-error') || ''`); e != "" {
				t.Fatalf("fetching the widget failed: %s", e)
			}
			if got, _ := eval[string](carol, `htmx.version`); !strings.HasPrefix(got, strconv.Itoa(v)+".") {
				t.Fatalf("the page runs htmx %q, want %d.x", got, v)
			}
			if v == 4 {
				if ok, _ := eval[bool](carol, `!!document.querySelector('#fetched [hx-sse\\:connect]') && !document.querySelector('#fetched [sse-connect]')`); !ok {
					t.Fatal("the htmx=4 widget is not wired with hx-sse:connect")
				}
			}
			carol.waitStack(t, "#fetched", room, "Carol in the stack", func(s stack) bool {
				return s.Count == "1" && s.has("carol") && strings.Contains(s.Text, "1 person here")
			})

			// Bob joins from elsewhere: only the stream can tell the page.
			g.seed(t, room, "bob", "Bob", store.StatusOnline)
			carol.waitStack(t, "#fetched", room, "Bob joins", func(s stack) bool {
				return s.Count == "2" && s.has("bob") && s.Status["bob"] == "online" && strings.Contains(s.Text, "2 people here")
			})
			// A status change travels as presence-bob: his dot follows in place.
			g.seed(t, room, "bob", "Bob", store.StatusBusy)
			carol.waitStack(t, "#fetched", room, "Bob busy", func(s stack) bool { return s.Status["bob"] == "busy" })
			carol.waitFor(t, "Bob's dot labelled busy", `document.querySelector('#fetched .pr-dot[data-presence-user="bob"]').getAttribute('aria-label') === 'Bob is busy'`)

			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := g.st.SetTyping(ctx, room, store.Profile{ID: "bob", Name: "Bob"}, true); err != nil {
				t.Fatal(err)
			}
			carol.waitStack(t, "#fetched", room, "Bob typing", func(s stack) bool {
				return s.Typing == "1" && strings.Contains(s.TypeText, "Bob is typing…")
			})
			if err := g.st.Leave(ctx, room, "bob", "seed-bob"); err != nil {
				t.Fatal(err)
			}
			carol.waitStack(t, "#fetched", room, "Bob leaves", func(s stack) bool { return s.Count == "1" && !s.has("bob") })
		})
	}
}
