package store

// The fast refresh (store/lua/fast.lua) reads the session record as text
// and moves deadlines in the indexes only: these check that it never takes
// a call that changes something, and that the reapers and Detach read the
// deadlines it moved.

import (
	"context"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

func TestRedisFastRefresh(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	// Room names that are also the record's keys (s, d, r, h) or its
	// status values, and an ordinary one.
	for _, room := range []string{"room-1", "s", "h", "d", "r", "online", "away"} {
		t.Run(room, func(t *testing.T) {
			t.Parallel()
			s := openRedis(t, srv, Options{TTL: longTTL, SweepInterval: 50 * time.Millisecond})
			sub := mustSubscribe(t, s)
			hold := 1500 * time.Millisecond
			// A held membership kept alive by refreshes for longer than its
			// hold: the deadline the reapers read is the refreshed one.
			must(t, s.Join(ctx, room, Heartbeat{User: alice, SessionID: sid1, Hold: hold}))
			expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
			expectJoin(t, sub, room, "alice", StatusOnline)
			for range 8 {
				must(t, s.Join(ctx, room, Heartbeat{User: alice, SessionID: sid1, Hold: hold}))
				mustRefresh(t, s, StreamRefresh{User: alice, SessionID: sid1, Room: room, Hold: hold})
				time.Sleep(hold / 4)
			}
			noEvent(t, sub, quietWindow)
			wantMembers(t, s, room, "alice:online")
			// A status change is never fast: it is announced.
			must(t, s.Join(ctx, room, Heartbeat{User: alice, SessionID: sid1, Status: StatusAway, Hold: hold}))
			expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusAway, room)
			// An API join of a held membership makes it permanent (not
			// fast): Detach then leaves it alone, and it outlives its hold.
			must(t, s.Join(ctx, room, Heartbeat{User: alice, SessionID: sid1}))
			must(t, s.Detach(ctx, room, "alice", sid1, 0))
			time.Sleep(hold + 200*time.Millisecond)
			wantMembers(t, s, room, "alice:away")
			// A second session's held membership: Detach reads the deadline
			// the fast refresh moved, and the grace ends it.
			must(t, s.Join(ctx, room, Heartbeat{User: bob, SessionID: sid1, Hold: time.Second}))
			expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusOnline)
			expectJoin(t, sub, room, "bob", StatusOnline)
			mustRefresh(t, s, StreamRefresh{User: bob, SessionID: sid1, Room: room, Hold: longTTL})
			must(t, s.Detach(ctx, room, "bob", sid1, 300*time.Millisecond))
			expectLeave(t, sub, expiryTimeout, room, "bob", StatusOnline)
			// Stopping the refreshes of a held membership ends it at its
			// refreshed deadline.
			must(t, s.Join(ctx, room, Heartbeat{User: carol, SessionID: sid1, Hold: hold}))
			expectStatus(t, sub, eventTimeout, "carol", StatusOffline, StatusOnline)
			expectJoin(t, sub, room, "carol", StatusOnline)
			mustRefresh(t, s, StreamRefresh{User: carol, SessionID: sid1, Room: room, Hold: hold})
			e := expectLeave(t, sub, expiryTimeout, room, "carol", StatusOnline)
			if e.Deadline.IsZero() {
				t.Fatal("held membership ended without a deadline")
			}
		})
	}
}

// A session kept alive by fast heartbeats past its first TTL expires at
// the refreshed deadline, not the one in its record.
func TestRedisFastHeartbeatExpiry(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, srv, quick()) // TTL 1 s
	sub := mustSubscribe(t, s)
	ctx := context.Background()
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	start := time.Now()
	for time.Since(start) < 2500*time.Millisecond {
		must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
		time.Sleep(200 * time.Millisecond)
	}
	noEvent(t, sub, 100*time.Millisecond)
	e := waitEvent(t, sub, expiryTimeout, isOffline("alice"))
	if e.Deadline.Before(start.Add(2 * time.Second)) {
		t.Fatalf("offline with deadline %v, before the last refreshes (started %v)", e.Deadline, start)
	}
}

// The fast refresh does not move the user record's expiry (fast.lua): a
// session kept alive by fast heartbeats and stream refreshes for several
// times the lastSeen retention keeps its user record, profile and status,
// because the refresh takes the full path (which moves the expiry) once the
// last one is half a retention old. And a fast refresh within that time
// really leaves the expiry alone.
func TestRedisUserRecordOutlivesLongSessions(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	opts := Options{TTL: 300 * time.Millisecond, SweepInterval: 50 * time.Millisecond, LastSeenRetention: time.Second}
	s := openRedis(t, srv, opts)
	must(t, s.Join(ctx, "room-1", Heartbeat{User: alice, SessionID: sid1, Hold: time.Second}))
	start := time.Now()
	for time.Since(start) < 4*time.Second { // retention + ttl is 1.3 s
		must(t, s.Heartbeat(ctx, Heartbeat{User: alice, SessionID: sid1}))
		mustRefresh(t, s, StreamRefresh{User: alice, SessionID: sid1, Room: "room-1", Hold: time.Second})
		time.Sleep(100 * time.Millisecond)
	}
	p, err := s.Presence(ctx, []string{"alice"})
	must(t, err)
	if a := p["alice"]; a == nil || a.Status != StatusOnline || a.Name != alice.Name {
		t.Fatalf("alice after %v of refreshes: %+v, want online with her profile", time.Since(start), a)
	}
	wantMembers(t, s, "room-1", "alice:online")

	// Retention 1 h: the join's full write set the expiry; the fast
	// refreshes after it leave it where it was.
	s2 := openRedis(t, srv, Options{TTL: time.Minute, SweepInterval: time.Hour, LastSeenRetention: time.Hour})
	must(t, s2.Heartbeat(ctx, Heartbeat{User: bob, SessionID: sid1}))
	bobKey := s2.userKey("bob", "user")
	before := srv.Do(t, "PEXPIRETIME", bobKey)
	time.Sleep(20 * time.Millisecond)
	must(t, s2.Heartbeat(ctx, Heartbeat{User: bob, SessionID: sid1}))
	mustRefresh(t, s2, StreamRefresh{User: bob, SessionID: sid1})
	if after := srv.Do(t, "PEXPIRETIME", bobKey); after != before {
		t.Errorf("bob's user record expiry moved by fast refreshes: %s, then %s", before, after)
	}
}
