package handlers

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// One change of a room is rendered once and queued to every subscriber,
// not rendered once per subscriber.
func TestRoomChangeRenderedOnce(t *testing.T) {
	opts := storeOptions()
	longTTL(&opts)
	st := store.NewMemory(opts)
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st)
	c := newClient(t)
	const subs = 6
	clients := make([]*sseClient, subs)
	for i := range clients {
		clients[i] = openSSE(t, c, n.base+fmt.Sprintf("/sse/room/lobby?sid=viewer-tab-%d", i), n.token(fmt.Sprintf("viewer-%d", i), ""))
	}
	for _, cl := range clients {
		cl.waitFor("everyone in", membersWith(subs))
	}
	// Let the renders of the joins settle, then measure one change.
	for _, cl := range clients {
		cl.drain(300 * time.Millisecond)
	}
	pub0 := n.metric("presenced_events_published_total", `event="members"`)
	del0 := n.metric("presenced_events_delivered_total", `event="members"`)
	mustOK(t, do(t, c, http.MethodPost, n.base+"/api/presence/room/lobby", n.token("bob", "Bob"), `{"action":"join","sessionId":"bob-tab-1"}`))
	for _, cl := range clients {
		cl.waitFor("bob", membersWith(subs+1))
	}
	for _, cl := range clients {
		cl.drain(300 * time.Millisecond)
	}
	renders := n.metric("presenced_events_published_total", `event="members"`) - pub0
	deliveries := n.metric("presenced_events_delivered_total", `event="members"`) - del0
	t.Logf("one join: %v members renders, %v deliveries to %d subscribers", renders, deliveries, subs)
	if renders < 1 || renders > 2 || deliveries != renders*subs {
		t.Fatalf("renders %v, deliveries %v for %d subscribers: want each render queued to every subscriber once", renders, deliveries, subs)
	}
}

// An idle stream gets a comment at least every --keepalive.
func TestKeepalive(t *testing.T) {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st) // keepalive 1s
	s := openSSE(t, newClient(t), n.base+"/sse/users?ids=nobody", n.token("viewer", ""))
	s.waitFor("state", named("presence-nobody"))
	deadline := time.Now().Add(wait)
	comments := 0
	for comments < 2 {
		ev, ok := s.next(time.Until(deadline))
		if !ok {
			t.Fatalf("only %d keep-alive comments", comments)
		}
		if ev.Comment != "" {
			comments++
		}
	}
}

// A reconnect with a Last-Event-ID (numeric or not) gets 200 and the state
// first: never r3labs' 400, which makes a browser give up.
func TestReconnectWithLastEventID(t *testing.T) {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st)
	c := newClient(t)
	tok := n.token("alice", "Alice")
	for _, id := range []string{"17", "not-a-number"} {
		s := openSSE(t, c, n.base+"/sse/room/lobby?sid=alice-tab-1", tok, "Last-Event-ID", id)
		first, _ := s.nextEvent(wait)
		if !membersWith(1, "alice")(first) {
			t.Fatalf("Last-Event-ID %q: first event %+v", id, first)
		}
		if _, err := strconv.Atoi(first.ID); err != nil {
			t.Fatalf("non-numeric id %q", first.ID)
		}
		s.close()
	}
}

// Shutdown closes every stream (the client sees the end and would
// reconnect elsewhere) and leaves the sessions alone.
func TestShutdownClosesStreamsKeepsSessions(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		st := b.newStore(t)
		n := startNode(t, st)
		c := newClient(t)
		room := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", n.token("bob", "Bob"))
		users := openSSE(t, c, n.base+"/sse/users?ids=bob", n.token("viewer", ""))
		room.waitFor("state", membersWith(1, "bob"))
		users.waitFor("state", isStatus("bob", store.StatusOnline))

		n.shutdown()
		eventually(t, "room stream closed", room.ended)
		eventually(t, "users stream closed", users.ended)
		ps, err := st.Presence(context.Background(), []string{"bob"})
		if err != nil || ps["bob"] == nil || ps["bob"].Status != store.StatusOnline {
			t.Fatalf("after shutdown bob = %+v (%v): the session must live on", ps["bob"], err)
		}
		if _, err := http.Get(n.base + "/healthz"); err == nil {
			t.Fatal("still accepting connections after shutdown")
		}
	})
}

// A stream outlives the server's ReadTimeout: net/http lifts the read
// deadline of a body-less request once it is read; this guards that the
// server's read-side limits never cut streams.
func TestStreamOutlivesReadTimeout(t *testing.T) {
	st := store.NewMemory(storeOptions())
	t.Cleanup(func() { _ = st.Close() })
	n := startNode(t, st, func(c *config.Config) {
		c.ReadTimeout = 300 * time.Millisecond
		c.Keepalive = 200 * time.Millisecond
	})
	s := openSSE(t, newClient(t), n.base+"/sse/room/lobby?sid=alice-tab-1", n.token("alice", "Alice"))
	s.waitFor("state", membersWith(1, "alice"))
	comments := 0
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
		if ev, ok := s.next(time.Until(deadline)); ok && ev.Comment != "" {
			comments++
		} else if !ok && s.ended() {
			t.Fatal("the stream was cut by the ReadTimeout")
		}
	}
	if s.ended() || comments == 0 {
		t.Fatalf("stream ended %v, %d keep-alives", s.ended(), comments)
	}
}
