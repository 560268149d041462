package e2e

import (
	"bytes"
	"image/png"
	"os"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// screenshotPath is where PRESENCE_SCREENSHOT=1 writes the README's picture
// (relative to this package's directory, where go test runs).
const screenshotPath = "../docs/screenshot-demo.png"

// TestScreenshotDemo: three users in one room, seen by Alice at 1200×800:
// Bob is busy, Omar is typing, Alice has sent a message. It always takes the
// screenshot and checks what the page shows at that moment; with
// PRESENCE_SCREENSHOT=1 it also (re)writes docs/screenshot-demo.png:
//
//	PRESENCE_SCREENSHOT=1 go test -count=1 -run TestScreenshotDemo ./e2e/
func TestScreenshotDemo(t *testing.T) {
	browser(t)
	const room = "design"
	g := startGateway(t, newStore(t, "memory"))

	alice := newUser(t, "Alice")
	alice.do(t, "set the viewport", chromedp.EmulateViewport(1200, 800))
	alice.signIn(t, g, room)
	bob := newUser(t, "Bob")
	bob.signIn(t, g, room)
	bob.do(t, "click Busy", chromedp.Click(chromedp.CSS(`[data-presence-set-status="busy"]`)))
	omar := newUser(t, "Omar") // not Carol: her avatar colour is Bob's
	omar.signIn(t, g, room)

	alice.do(t, "send a message", typeInto(`[data-presence-typing]`, "Morning both! Walking through the new onboarding flow at 11.\n"))
	alice.waitFor(t, "the message in the log", `document.querySelectorAll('[data-presence-chat-log] .pr-msg').length === 1`)

	want := func(s stack) bool {
		return s.Count == "3" && s.has("alice") && s.has("bob") && s.has("omar") &&
			strings.Contains(s.Text, "3 people here") &&
			s.Status["alice"] == "online" && s.Status["bob"] == "busy" && s.Status["omar"] == "online" &&
			s.Typing == "1" && strings.Contains(s.TypeText, "Omar is typing…")
	}
	// Omar's typing mark lasts a few seconds: type, wait for Alice's page
	// to show everything, capture, and check that it still did after the
	// capture (else type again).
	var shot []byte
	for attempt := 1; ; attempt++ {
		omar.do(t, "type", typeInto(`[data-presence-typing]`, "Sure, I'll bring the "))
		alice.waitStack(t, "", room, "three people, Bob busy, Omar typing", want)
		alice.waitFor(t, "three people in the member list", `document.querySelectorAll('[data-member-list] [data-presence-user][data-status]').length >= 3`)
		ctx, cancel := withTimeout(alice.ctx)
		img, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		cancel()
		if err != nil {
			t.Fatalf("screenshot: %v", err)
		}
		if s, err := alice.readStack("", room); err == nil && want(s) {
			shot = img
			break
		}
		if attempt == 3 {
			t.Fatal("the page kept changing while the screenshot was taken")
		}
		// Not chromedp.SetValue(…, ""): v0.23 reports "could not set value
		// on node" for an empty value (seen when a loaded machine made the
		// first capture miss).
		if _, err := eval[bool](omar, "(document.querySelector('[data-presence-typing]').value = '', true)"); err != nil {
			t.Fatalf("Omar: clear: %v", err)
		}
	}

	pc, err := png.DecodeConfig(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if pc.Width != 1200 || pc.Height != 800 {
		t.Errorf("screenshot is %dx%d, want 1200x800", pc.Width, pc.Height)
	}
	if os.Getenv("PRESENCE_SCREENSHOT") != "1" {
		return
	}
	if err := os.WriteFile(screenshotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d KiB)", screenshotPath, len(shot)/1024)
}
