package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/store"
)

// TestRoom: Alice and Bob, each in an isolated browser context, signed in
// through /login, in one room of the demo. Run on the embedded store and,
// when redis-server is installed, on Redis.
func TestRoom(t *testing.T) {
	for _, backend := range []string{"memory", "redis"} {
		t.Run(backend, func(t *testing.T) {
			browser(t) // skip (or fail under CI) before starting anything
			g := startGateway(t, newStore(t, backend))
			testRoom(t, g, "e2e-"+backend)
		})
	}
}

func testRoom(t *testing.T, g *gateway, room string) {
	alice := newUser(t, "Alice")
	alice.signIn(t, g, room)
	bob := newUser(t, "Bob")
	bob.signIn(t, g, room)

	// The steps build on each other: stop at the first that fails.
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("each sees the other", func(t *testing.T) {
		for _, u := range []*user{alice, bob} {
			s := u.waitStack(t, "", room, "Alice and Bob in the stack", func(s stack) bool {
				return s.Count == "2" && s.has("alice") && s.has("bob") &&
					strings.Contains(s.Text, "2 people here")
			})
			if s.Status["alice"] != "online" || s.Status["bob"] != "online" {
				t.Errorf("%s sees statuses %v, want both online", u.name, s.Status)
			}
		}
	})

	step("typing shows in the other page and goes away", func(t *testing.T) {
		// Real key events in the demo's message box (the data-presence-typing
		// field): presence.js marks typing on input.
		alice.do(t, "type", typeInto(`[data-presence-typing]`, "Hello Bob"))
		bob.waitStack(t, "", room, `"Alice is typing…"`, func(s stack) bool {
			return s.Typing == "1" && strings.Contains(s.TypeText, "Alice is typing…")
		})
		// She stops: presence.js sends typing:false 3 s after the last key
		// (and the server drops the mark after --typing-ttl anyway).
		bob.waitStack(t, "", room, "the typing line to empty", func(s stack) bool {
			return s.Typing == "0" && !strings.Contains(s.TypeText, "typing")
		})
	})

	step("busy status shows in the other page", func(t *testing.T) {
		bob.do(t, "click Busy", chromedp.Click(chromedp.CSS(`[data-presence-set-status="busy"]`)))
		alice.waitStack(t, "", room, "Bob's dot busy", func(s stack) bool {
			return s.Status["bob"] == "busy" && s.Count == "2"
		})
		// Every dot of Bob on Alice's page (stack and member list) follows.
		alice.waitFor(t, "all of Bob's dots busy", `(() => {
			const dots = [...document.querySelectorAll('[data-presence-user="bob"][data-status]')].filter(el => !el.querySelector('[data-status]'));
			return dots.length > 0 && dots.every(el => el.getAttribute('data-status') === 'busy');
		})()`)
	})

	step("hidden tab shows as away", func(t *testing.T) {
		// A real background tab (see user.hide): presence.js reports away
		// on visibilitychange, and online again when the tab is back.
		show := alice.hide(t)
		bob.waitStack(t, "", room, "Alice's dot away", func(s stack) bool {
			return s.Status["alice"] == "away"
		})
		show(t)
		bob.waitStack(t, "", room, "Alice's dot online again", func(s stack) bool {
			return s.Status["alice"] == "online"
		})
	})

	step("closing the tab removes the user", func(t *testing.T) {
		sid, err := eval[string](bob, `window.Presence.sessionId`)
		if err != nil || sid == "" {
			t.Fatalf("Bob's session id: %q, %v", sid, err)
		}
		bob.closeTab(t)
		alice.waitStack(t, "", room, "Bob gone from the stack", func(s stack) bool {
			return s.Count == "1" && !s.has("bob") && s.has("alice") && strings.Contains(s.Text, "1 person here")
		})
		// The page said goodbye itself: pagehide → sendBeacon offline for
		// its session (a beacon's string body is text/plain), rather than
		// leaving it to the leave grace of its closed stream.
		rep, ok := g.rec.waitReport(func(r report) bool { return r.SessionID == sid && r.Status == "offline" })
		if !ok {
			t.Fatalf("no offline report for Bob's session %s: the pagehide beacon did not arrive", sid)
		}
		if !strings.HasPrefix(rep.ContentType, "text/plain") {
			t.Errorf("offline report sent as %q, want text/plain (sendBeacon)", rep.ContentType)
		}
		if rep.Code != 200 {
			t.Errorf("the gateway answered the pagehide beacon with %d, want 200", rep.Code)
		}
		// And Bob stays offline: nothing the closing page sent besides the
		// beacon (its hidden-tab "away", its stream closing) may bring the
		// ended session back, which would show him for a whole TTL.
		for end := time.Now().Add(testTTL + time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
			p, err := g.st.Presence(context.Background(), []string{"bob"})
			if err != nil {
				t.Fatal(err)
			}
			if p["bob"] == nil || p["bob"].Status != store.StatusOffline {
				t.Fatalf("Bob came back after his tab closed: %+v", p["bob"])
			}
		}
	})
}
