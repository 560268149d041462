package handlers

import (
	"net/http"
	"testing"
	"time"

	"github.com/presenced/presenced/store"
)

// A token minted with an empty rooms list allows no room (an absent list
// allows any): the empty array must survive minting.
func TestMintEmptyRoomsAllowsNone(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	none, err := n.srv.Auth().Mint(store.Profile{ID: "nobody", Name: "Nobody"}, time.Hour, []string{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := n.srv.Auth().Verify(none)
	if err != nil || id.Rooms == nil || len(id.Rooms) != 0 {
		t.Fatalf("verified rooms %#v (%v), want an empty, non-nil list", id.Rooms, err)
	}
	for _, p := range []string{"/api/presence/room/lobby", "/fragments/room/lobby/members", "/sse/room/lobby"} {
		if r := do(t, c, http.MethodGet, n.base+p, none, ""); r.code != http.StatusForbidden {
			t.Errorf("GET %s with rooms: [] = %d, want 403", p, r.code)
		}
	}
	anyRoom := n.token("anybody", "Anybody") // rooms nil: any room
	mustOK(t, do(t, c, http.MethodGet, n.base+"/api/presence/room/lobby", anyRoom, ""))
}

// A stream does not outlive its token: the server closes it once the token
// would no longer be accepted (exp plus the verifier's leeway), and the
// same token then gets 401.
func TestStreamClosedAtTokenExpiry(t *testing.T) {
	n := memNode(t)
	c := newClient(t)
	tok, err := n.srv.Auth().Mint(store.Profile{ID: "bob", Name: "Bob"}, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	id, err := n.srv.Auth().Verify(tok)
	if err != nil || id.Expires.IsZero() {
		t.Fatalf("identity %+v (%v): want its expiry", id, err)
	}
	room := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1&format=json", tok)
	room.waitFor("sync", named("sync"))
	users := openSSE(t, c, n.base+"/sse/users?ids=bob&format=json", tok)
	users.waitFor("sync", named("sync"))

	eventually(t, "both streams closed by the server", func() bool { return room.ended() && users.ended() })
	if now := time.Now(); now.Before(id.Expires) {
		t.Fatalf("streams closed at %v, before the token's exp %v", now, id.Expires)
	}
	if v := n.metric("presenced_streams_dropped_total", `reason="token_expired"`); v != 2 {
		t.Errorf("token_expired drops = %v, want 2", v)
	}
	if _, code := dialSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1", tok); code != http.StatusUnauthorized {
		t.Fatalf("reconnect with the expired token: %d, want 401", code)
	}
	// A fresh token reconnects the same session.
	again := openSSE(t, c, n.base+"/sse/room/lobby?sid=bob-tab-1&format=json", n.token("bob", "Bob"))
	again.waitFor("sync", named("sync", `"id":"bob"`))
}
