package client_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
	"github.com/presenced/presenced/internal/gatewaytest"
	"github.com/presenced/presenced/store"
)

// sub runs a client until the test ends.
type sub struct {
	t    *testing.T
	c    *client.Client
	done chan error
}

func run(t *testing.T, cfg client.Config) *sub {
	t.Helper()
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 50*time.Millisecond, 500*time.Millisecond
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &sub{t: t, c: c, done: make(chan error, 1)}
	go func() { s.done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range c.Events() { // drain until Run closes it
		}
		if err := <-s.done; !errors.Is(err, context.Canceled) {
			var se *client.StatusError
			if !errors.As(err, &se) {
				t.Errorf("Run returned %v", err)
			}
		}
	})
	return s
}

// next returns the next event of a type, failing after gatewaytest.Wait.
func (s *sub) next(typ client.EventType, match ...func(client.Event) bool) client.Event {
	s.t.Helper()
	timeout := time.After(gatewaytest.Wait)
	for {
		select {
		case ev, ok := <-s.c.Events():
			if !ok {
				s.t.Fatalf("events closed while waiting for %s", typ)
			}
			if ev.Type != typ {
				continue
			}
			if len(match) > 0 && !match[0](ev) {
				continue
			}
			return ev
		case <-timeout:
			s.t.Fatalf("no %s event within %s", typ, gatewaytest.Wait)
		}
	}
}

// expect reads the next event that is not a Connected one and checks its type.
func (s *sub) expect(typ client.EventType) client.Event {
	s.t.Helper()
	timeout := time.After(gatewaytest.Wait)
	for {
		select {
		case ev, ok := <-s.c.Events():
			if !ok {
				s.t.Fatalf("events closed while waiting for %s", typ)
			}
			if ev.Type == client.EventConnected && typ != client.EventConnected {
				continue
			}
			if ev.Type != typ {
				s.t.Fatalf("got %s event %s (%s), want %s", ev.Type, ev.Name, ev.Data, typ)
			}
			return ev
		case <-timeout:
			s.t.Fatalf("no %s event within %s", typ, gatewaytest.Wait)
		}
	}
}

func post(t *testing.T, g *gatewaytest.Gateway, path, token, body string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, g.Base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, res.StatusCode, b)
	}
}

func ids(ms []client.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	slices.Sort(out)
	return out
}

// TestRoomStream: the sync comes first and holds the stream's own user;
// join, status, typing and leave of another user are applied to the view.
func TestRoomStream(t *testing.T) {
	for _, ep := range []client.Endpoint{client.EndpointSSE, client.EndpointRoom} {
		t.Run(map[client.Endpoint]string{client.EndpointSSE: "sse", client.EndpointRoom: "v1"}[ep], func(t *testing.T) {
			g := gatewaytest.Start(t, gatewaytest.Memory(t))
			s := run(t, client.Config{BaseURL: g.Base, Endpoint: ep, Room: "lobby", Token: g.Token("bob", "Bob")})

			s.expect(client.EventConnected)
			ev := s.expect(client.EventSync)
			if ev.Topic != "room:lobby" || ev.Room != "lobby" {
				t.Fatalf("sync topic %q room %q", ev.Topic, ev.Room)
			}
			r, _ := s.c.Room("lobby")
			if !r.Synced || !r.Member || r.SessionID == "" || r.Count != 1 || ids(r.Members)[0] != "bob" {
				t.Fatalf("view after sync: %+v", r)
			}
			if s.c.SessionID() != r.SessionID || !s.c.Synced() {
				t.Fatalf("SessionID %q Synced %v", s.c.SessionID(), s.c.Synced())
			}

			alice := g.Token("alice", "Alice")
			post(t, g, "/api/presence/room/lobby", alice, `{"action":"join","sessionId":"alice-tab1"}`)
			ev = s.next(client.EventJoin, func(e client.Event) bool { return e.User.ID == "alice" })
			if ev.Room != "lobby" || ev.User.Name != "Alice" || ev.To != client.StatusOnline || ev.At.IsZero() {
				t.Fatalf("join: %+v", ev)
			}
			r, _ = s.c.Room("lobby")
			if got := ids(r.Members); !slices.Equal(got, []string{"alice", "bob"}) || r.Count != 2 {
				t.Fatalf("members after join: %v (count %d)", got, r.Count)
			}

			post(t, g, "/api/presence", alice, `{"status":"busy","sessionId":"alice-tab1"}`)
			ev = s.next(client.EventStatus, func(e client.Event) bool { return e.User.ID == "alice" })
			if ev.From != client.StatusOnline || ev.To != client.StatusBusy || !slices.Contains(ev.Rooms, "lobby") {
				t.Fatalf("status: %+v", ev)
			}
			r, _ = s.c.Room("lobby")
			if m, ok := r.Find("alice"); !ok || m.Status != client.StatusBusy {
				t.Fatalf("alice in view: %+v %v", m, ok)
			}

			post(t, g, "/api/presence/room/lobby/typing", alice, `{"typing":true}`)
			ev = s.next(client.EventTyping, func(e client.Event) bool { return len(e.Typing) == 1 })
			r, _ = s.c.Room("lobby")
			if ev.Typing[0].ID != "alice" || len(r.Typing) != 1 || r.Typing[0].Name != "Alice" {
				t.Fatalf("typing: event %+v view %+v", ev.Typing, r.Typing)
			}
			post(t, g, "/api/presence/room/lobby/typing", alice, `{"typing":false}`)
			s.next(client.EventTyping, func(e client.Event) bool { return len(e.Typing) == 0 })
			if r, _ = s.c.Room("lobby"); len(r.Typing) != 0 {
				t.Fatalf("typing after stop: %+v", r.Typing)
			}

			post(t, g, "/api/presence/room/lobby", alice, `{"action":"leave","sessionId":"alice-tab1"}`)
			s.next(client.EventLeave, func(e client.Event) bool { return e.User.ID == "alice" })
			r, _ = s.c.Room("lobby")
			if got := ids(r.Members); !slices.Equal(got, []string{"bob"}) || r.Count != 1 {
				t.Fatalf("members after leave: %v (count %d)", got, r.Count)
			}
		})
	}
}

// TestUsersStream: the users sync maps a never-seen user to nil; a status
// change of a watched user updates the view.
func TestUsersStream(t *testing.T) {
	for _, ep := range []client.Endpoint{client.EndpointSSE, client.EndpointUsers} {
		t.Run(map[client.Endpoint]string{client.EndpointSSE: "sse", client.EndpointUsers: "v1"}[ep], func(t *testing.T) {
			g := gatewaytest.Start(t, gatewaytest.Memory(t))
			s := run(t, client.Config{BaseURL: g.Base, Endpoint: ep, Users: []string{"alice", "ghost"}, Token: g.Token("bob", "Bob")})
			ev := s.expect(client.EventSync)
			if ev.Topic != "users" {
				t.Fatalf("sync topic %q", ev.Topic)
			}
			us := s.c.Users()
			if p, ok := us["alice"]; !ok || p != nil || len(us) != 2 {
				t.Fatalf("users after sync: %v", us)
			}
			post(t, g, "/api/presence", g.Token("alice", "Alice"), `{"status":"away","sessionId":"alice-tab1"}`)
			s.next(client.EventStatus, func(e client.Event) bool { return e.User.ID == "alice" && e.To == client.StatusAway })
			us = s.c.Users()
			if p := us["alice"]; p == nil || p.Status != client.StatusAway || p.Name != "Alice" || p.LastSeenTime().IsZero() {
				t.Fatalf("alice after status: %+v", p)
			}
			if us["ghost"] != nil {
				t.Fatalf("ghost: %+v", us["ghost"])
			}
		})
	}
}

// TestMultiTopicWatch: one /sse connection for a watched room, another
// room and users; every topic gets its sync; watching does not join.
func TestMultiTopicWatch(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.Memory(t))
	alice := g.Token("alice", "Alice")
	post(t, g, "/api/presence/room/ops", alice, `{"action":"join","sessionId":"alice-tab1"}`)
	s := run(t, client.Config{BaseURL: g.Base, Room: "lobby", Watch: true, Rooms: []string{"ops"}, Users: []string{"alice"}, Token: g.Token("bob", "Bob")})
	topics := map[string]bool{}
	for len(topics) < 3 {
		topics[s.expect(client.EventSync).Topic] = true
	}
	for _, tp := range []string{"room:lobby", "room:ops", "users"} {
		if !topics[tp] {
			t.Fatalf("syncs %v: %s missing", topics, tp)
		}
	}
	lobby, _ := s.c.Room("lobby")
	ops, _ := s.c.Room("ops")
	if lobby.Member || lobby.Count != 0 || lobby.SessionID != "" {
		t.Fatalf("watched lobby: %+v", lobby)
	}
	if ops.Member || !slices.Equal(ids(ops.Members), []string{"alice"}) {
		t.Fatalf("ops: %+v", ops)
	}
	if p := s.c.Users()["alice"]; p == nil || p.Status != client.StatusOnline {
		t.Fatalf("alice: %+v", p)
	}
	// A status change reaches both the ops room and the users view.
	post(t, g, "/api/presence", alice, `{"status":"busy","sessionId":"alice-tab1"}`)
	s.next(client.EventStatus, func(e client.Event) bool { return e.To == client.StatusBusy })
	ops, _ = s.c.Room("ops")
	if m, _ := ops.Find("alice"); m.Status != client.StatusBusy || s.c.Users()["alice"].Status != client.StatusBusy {
		t.Fatalf("after busy: room %+v users %+v", m, s.c.Users()["alice"])
	}
}

// switchable sends every request to the node currently chosen, the way a
// load balancer moves clients off a node that went away.
type switchable struct {
	target atomic.Pointer[url.URL]
	next   http.RoundTripper
}

func (s *switchable) RoundTrip(r *http.Request) (*http.Response, error) {
	u := s.target.Load()
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host, r.Host = u.Scheme, u.Host, u.Host
	return s.next.RoundTrip(r)
}

// TestReconnectResync: node A shuts down; the client sees the stream end,
// reconnects (to node B, same store) and the new sync replaces the view,
// including a join it missed while it was away; its session id is kept.
func TestReconnectResync(t *testing.T) {
	st := gatewaytest.Memory(t)
	a := gatewaytest.Start(t, st)
	b := gatewaytest.Start(t, st)
	sw := &switchable{next: &http.Transport{}}
	ua, _ := url.Parse(a.Base)
	sw.target.Store(ua)

	s := run(t, client.Config{BaseURL: "http://presenced.invalid", HTTPClient: &http.Client{Transport: sw},
		Room: "lobby", Token: a.Token("bob", "Bob")})
	s.expect(client.EventSync)
	sid := s.c.SessionID()
	if sid == "" {
		t.Fatal("no session id after the first sync")
	}

	// Node B is where the client will land; alice joins while the client
	// is between nodes, so only the resync can tell it.
	ub, _ := url.Parse(b.Base)
	sw.target.Store(ub)
	a.Shutdown()
	s.next(client.EventDisconnected)
	if s.c.Synced() {
		t.Fatal("view still marked synced after the stream ended")
	}
	post(t, b, "/api/presence/room/lobby", b.Token("alice", "Alice"), `{"action":"join","sessionId":"alice-tab1"}`)

	ev := s.next(client.EventSync)
	if ev.Topic != "room:lobby" {
		t.Fatalf("resync topic %q", ev.Topic)
	}
	r, _ := s.c.Room("lobby")
	if got := ids(r.Members); !slices.Equal(got, []string{"alice", "bob"}) || !r.Synced {
		t.Fatalf("view after resync: %v synced %v", got, r.Synced)
	}
	if r.SessionID != sid {
		t.Fatalf("session id %q after reconnect, was %q", r.SessionID, sid)
	}
	// And it is live on node B.
	post(t, b, "/api/presence/room/lobby", b.Token("carol", "Carol"), `{"action":"join","sessionId":"carol-tab1"}`)
	s.next(client.EventJoin, func(e client.Event) bool { return e.User.ID == "carol" })
}

// TestCRInDisplayName: a display name holding bare CRs and text that looks
// like SSE fields arrives as one join event with the name intact; no event
// is split off it.
func TestCRInDisplayName(t *testing.T) {
	st := gatewaytest.Memory(t)
	g := gatewaytest.Start(t, st)
	s := run(t, client.Config{BaseURL: g.Base, Room: "lobby", Token: g.Token("bob", "Bob")})
	s.expect(client.EventSync)
	name := "Mallory\revent: leave\rdata: {\"room\":\"lobby\",\"user\":{\"id\":\"bob\"}}\r\rid: 9\rretry: 1"
	// Tokens with control characters in the name are refused (400): the
	// profile comes in through the store, as any other source of names could.
	if err := st.Join(context.Background(), "lobby", store.Heartbeat{User: store.Profile{ID: "mallory", Name: name}, SessionID: "mallory-tab1"}); err != nil {
		t.Fatal(err)
	}
	ev := s.next(client.EventJoin, func(e client.Event) bool { return e.User.ID != "bob" })
	if ev.User.ID != "mallory" || ev.User.Name != name {
		t.Fatalf("name %q, want %q", ev.User.Name, name)
	}
	// Up to the marker join, nothing else arrives: no event was made of
	// the name.
	post(t, g, "/api/presence/room/lobby", g.Token("zed", "Zed"), `{"action":"join","sessionId":"zed-tab1"}`)
	for {
		ev := s.expect(client.EventJoin)
		if ev.User.ID == "zed" {
			break
		}
		if ev.User.ID != "mallory" { // a repeated join of hers would be harmless
			t.Fatalf("after mallory: %+v", ev)
		}
	}
	r, _ := s.c.Room("lobby")
	if m, ok := r.Find("mallory"); !ok || m.Name != name || !slices.Equal(ids(r.Members), []string{"bob", "mallory", "zed"}) {
		t.Fatalf("view: %+v", r.Members)
	}
}

// TestUnauthorized: a bad token ends Run with a 401 StatusError; with a
// TokenFunc the client retries and the fresh token gets in.
func TestUnauthorized(t *testing.T) {
	g := gatewaytest.Start(t, gatewaytest.Memory(t))
	c, err := client.New(client.Config{BaseURL: g.Base, Room: "lobby", Token: "not-a-token", OnEvent: func(client.Event) {}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatewaytest.Wait)
	defer cancel()
	var se *client.StatusError
	if err := c.Run(ctx); !errors.As(err, &se) || se.Code != http.StatusUnauthorized || se.Message == "" {
		t.Fatalf("Run: %v", err)
	}

	var calls atomic.Int32
	good := g.Token("bob", "Bob")
	s := run(t, client.Config{BaseURL: g.Base, Room: "lobby", TokenFunc: func(context.Context) (string, error) {
		if calls.Add(1) == 1 {
			return "expired-or-bad", nil
		}
		return good, nil
	}})
	if ev := s.expect(client.EventDisconnected); !errors.As(ev.Err, &se) || se.Code != 401 || ev.Retry <= 0 {
		t.Fatalf("first attempt: %+v", ev)
	}
	s.expect(client.EventSync)

	// A forbidden room is not retried.
	c, _ = client.New(client.Config{BaseURL: g.Base, Room: "secret", Token: g.Token("bob", "Bob", "lobby"), OnEvent: func(client.Event) {}})
	if err := c.Run(ctx); !errors.As(err, &se) || se.Code != http.StatusForbidden {
		t.Fatalf("Run on a forbidden room: %v", err)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]client.Config{
		"no base":          {Room: "r"},
		"no topic":         {BaseURL: "http://x"},
		"room ep, no room": {BaseURL: "http://x", Endpoint: client.EndpointRoom},
		"users ep, room":   {BaseURL: "http://x", Endpoint: client.EndpointUsers, Users: []string{"a"}, Room: "r"},
		"client timeout":   {BaseURL: "http://x", Room: "r", HTTPClient: &http.Client{Timeout: time.Second}},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}

// TestForeignLineEndsAndIdle: a server (not presenced) that ends lines with
// LF, CRLF and bare CR, mixed the way r3labs alone gets wrong, then goes
// silent: the client reads both events, and after IdleTimeout closes the
// stream and connects again (ErrIdle).
func TestForeignLineEndsAndIdle(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") != "json" || r.URL.Query().Get("users") != "alice" {
			http.Error(w, `{"error":"bad query"}`, http.StatusBadRequest)
			return
		}
		conns.Add(1)
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		io.WriteString(w, "\uFEFF: hi\r\n\r\n"+
			"event: sync\ndata: {\"topic\":\"users\",\"presence\":{\"alice\":null}}\n\r"+
			"event: status\r\ndata: {\"user\":{\"id\":\"alice\",\"name\":\"A\\rlice\",\"avatar\":\"\"},\r\ndata: \"from\":\"offline\",\"to\":\"busy\",\"at\":5}\r\n\r")
		w.(http.Flusher).Flush()
		<-r.Context().Done() // silent from here on
	}))
	t.Cleanup(srv.Close)
	s := run(t, client.Config{BaseURL: srv.URL, Users: []string{"alice"}, IdleTimeout: 300 * time.Millisecond})
	if ev := s.expect(client.EventSync); ev.Topic != "users" {
		t.Fatalf("sync: %+v", ev)
	}
	ev := s.expect(client.EventStatus)
	if ev.User.Name != "A\rlice" || ev.To != client.StatusBusy {
		t.Fatalf("status: %+v (%s)", ev, ev.Data)
	}
	if p := s.c.Users()["alice"]; p == nil || p.Status != client.StatusBusy {
		t.Fatalf("alice: %+v", p)
	}
	if ev := s.expect(client.EventDisconnected); !errors.Is(ev.Err, client.ErrIdle) {
		t.Fatalf("disconnected: %v", ev.Err)
	}
	s.expect(client.EventSync)
	if conns.Load() < 2 {
		t.Fatalf("%d connections", conns.Load())
	}
}
