package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presenced/presenced/client"
)

// TestGoClientSeesBrowser: a Go subscriber (package client) watches the
// room a person uses in Chromium, and its view follows what she does: she
// arrives, types, goes busy and closes the tab.
func TestGoClientSeesBrowser(t *testing.T) {
	browser(t)
	g := startGateway(t, newStore(t, "memory"))
	const room = "e2e-client"
	c, err := client.New(client.Config{BaseURL: g.base, Room: room, Watch: true, Token: g.token(t, "observer", "Observer")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range c.Events() {
		}
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run: %v", err)
		}
	})
	// wait reads events until the view satisfies ok.
	wait := func(what string, ok func(client.Room) bool) {
		t.Helper()
		timeout := time.After(waitFor)
		for {
			if r, _ := c.Room(room); r.Synced && ok(r) {
				return
			}
			select {
			case _, open := <-c.Events():
				if !open {
					t.Fatalf("client stopped waiting for %s", what)
				}
			case <-timeout:
				r, _ := c.Room(room)
				t.Fatalf("the Go client never saw %s: %+v", what, r)
			}
		}
	}
	wait("the empty room", func(r client.Room) bool { return r.Count == 0 && !r.Member })

	alice := newUser(t, "Alice")
	alice.signIn(t, g, room)
	wait("Alice arrive", func(r client.Room) bool {
		m, ok := r.Find("alice")
		return ok && m.Name == "Alice" && m.Status == client.StatusOnline && r.Count == 1
	})

	alice.do(t, "type", typeInto(`[data-presence-typing]`, "Hello"))
	wait("Alice typing", func(r client.Room) bool { return len(r.Typing) == 1 && r.Typing[0].ID == "alice" })

	alice.do(t, "click Busy", chromedp.Click(chromedp.CSS(`[data-presence-set-status="busy"]`)))
	wait("Alice busy", func(r client.Room) bool { m, _ := r.Find("alice"); return m.Status == client.StatusBusy })

	alice.closeTab(t)
	wait("Alice leave", func(r client.Room) bool { _, ok := r.Find("alice"); return !ok && r.Count == 0 })
}
