package e2e

import (
	"bytes"
	"context"
	"image/png"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// The README's pictures, relative to this package's directory (where go test
// runs). PRESENCE_SCREENSHOT=1 (make screenshots) rewrites them.
const (
	shotDemo      = "../docs/screenshot-demo.png"
	shotDemoDark  = "../docs/screenshot-demo-dark.png"
	shotMobile    = "../docs/screenshot-mobile.png"
	shotEmbedDark = "../docs/screenshot-embed-dark.png"
	embedExample  = "../examples/embed.html"
)

// TestScreenshotDemo: one room seen by Alice: Bob is busy, Dana away, Omar
// typing, Alice has sent a message. It takes the demo in light and dark at
// 1200×800, the demo at 390×844 (a phone), and examples/embed.html (a dark
// host page) with the live widget, checks what each page shows at that
// moment and the PNG's size, and with PRESENCE_SCREENSHOT=1 writes them to
// docs/:
//
//	PRESENCE_SCREENSHOT=1 go test -count=1 -run TestScreenshotDemo ./e2e/
func TestScreenshotDemo(t *testing.T) {
	browser(t)
	const room = "design"
	h := newHost(t)
	g := startGateway(t, newStore(t, "memory"), func(c *config.Config) { c.AllowOrigins = []string{h.origin} })
	g.seed(t, room, "bob", "Bob Marley", store.StatusBusy)
	g.seed(t, room, "omar", "Omar Haddad", store.StatusOnline)
	g.seed(t, room, "dana", "Dana Scully", store.StatusAway)

	alice := newUser(t, "Alice Liddell")
	alice.do(t, "set the viewport", chromedp.EmulateViewport(1200, 800))
	alice.setScheme(t, "light")
	alice.signIn(t, g, room)
	alice.still(t) // no fades caught halfway (a scheme switch fades colours)
	alice.do(t, "send a message", typeInto(`[data-presence-typing]`, "Morning all! Walking through the new onboarding flow at 11.\n"))
	alice.waitFor(t, "the message in the log", `document.querySelectorAll('[data-presence-chat-log] .pr-msg').length === 1`)

	want := func(s stack) bool {
		return s.Count == "4" && s.has("alice-liddell") && s.has("bob") && s.has("omar") && s.has("dana") &&
			strings.Contains(s.Text, "4 people here") &&
			s.Status["alice-liddell"] == "online" && s.Status["bob"] == "busy" && s.Status["dana"] == "away" &&
			s.Typing == "1" && strings.Contains(s.TypeText, "Omar Haddad is typing…")
	}
	// Omar's typing mark lasts --typing-ttl: mark, wait for the page to show
	// everything, capture, and check that it still did after the capture
	// (else mark again).
	capture := func(what string, check func(stack) bool) []byte {
		t.Helper()
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := g.st.SetTyping(ctx, room, store.Profile{ID: "omar", Name: "Omar Haddad"}, true)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			alice.waitStack(t, "", room, what+": four people, Bob busy, Dana away, Omar typing", check)
			alice.waitFor(t, "four people in the member list", `document.querySelectorAll('[data-member-list] [data-presence-user][data-status]').length >= 4`)
			img, err := chromedp.Run(alice.ctxTimeout(t), chromedp.CaptureScreenshot())
			if err != nil {
				t.Fatalf("screenshot: %v", err)
			}
			if s, err := alice.readStack("", room); err == nil && check(s) {
				return img
			}
			if attempt == 3 {
				t.Fatalf("%s: the page kept changing while the screenshot was taken", what)
			}
		}
	}

	light := capture("light", want)
	alice.setScheme(t, "dark")
	dark := capture("dark", want)
	alice.setScheme(t, "light")
	alice.do(t, "a phone's viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile, chromedp.EmulateTouch, chromedp.EmulateScale(2)))
	alice.waitFor(t, "the phone layout", `innerWidth === 390`)
	mobile := capture("mobile", want)

	// The embed example, as published, on its dark host page: only the
	// gateway's address and the token are filled in.
	src, err := os.ReadFile(embedExample)
	if err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(string(src), "http://localhost:8080", g.base)
	carol := newUser(t, "Carol")
	carol.do(t, "set the viewport", chromedp.EmulateViewport(1200, 720))
	carol.setScheme(t, "light") // the host page is dark whatever the OS says
	carol.do(t, "open the embed example", chromedp.Navigate(h.serve([]byte(page))+"?"+url.Values{
		"gateway": {g.base}, "room": {room}, "token": {g.token(t, "carol", "Carol")},
	}.Encode()))
	carol.still(t)
	carol.waitStack(t, "#presence-widget", room, "the embedded stack", func(s stack) bool {
		return s.Count == "5" && s.has("carol") && s.has("bob") && s.Status["bob"] == "busy"
	})
	carol.waitFor(t, "the widget on its dark theme", `getComputedStyle(document.getElementById('presence-widget')).backgroundColor !== 'rgb(255, 255, 255)'`)
	embed, err := chromedp.Run(carol.ctxTimeout(t), chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}

	for _, s := range []struct {
		path string
		img  []byte
		w, h int
	}{
		{shotDemo, light, 1200, 800},
		{shotDemoDark, dark, 1200, 800},
		{shotMobile, mobile, 780, 1688},
		{shotEmbedDark, embed, 1200, 720},
	} {
		pc, err := png.DecodeConfig(bytes.NewReader(s.img))
		if err != nil {
			t.Fatalf("%s: not a PNG: %v", s.path, err)
		}
		if pc.Width != s.w || pc.Height != s.h {
			t.Errorf("%s: %dx%d, want %dx%d", s.path, pc.Width, pc.Height, s.w, s.h)
		}
		if os.Getenv("PRESENCE_SCREENSHOT") != "1" {
			continue
		}
		if err := os.WriteFile(s.path, s.img, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d KiB)", s.path, len(s.img)/1024)
	}
}

// ctxTimeout is the user's tab bounded by waitFor, released at the end of
// the test.
func (u *user) ctxTimeout(t testing.TB) context.Context {
	ctx, cancel := withTimeout(u.ctx)
	t.Cleanup(cancel)
	return ctx
}
