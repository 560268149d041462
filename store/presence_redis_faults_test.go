package store

// Redis-only tests of truth under faults (issue 9): a Redis that restarts
// and loses its state, a flushed data set, a node that dies while it holds
// memberships, a flushed script cache. Real redis-server processes.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/store/redistest"
)

// waitResync waits for an EventResync, skipping (and logging) other events.
func waitResync(t testing.TB, sub *Subscription, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed while waiting for a resync: %v", sub.Err())
			}
			if e.Kind == EventResync {
				return
			}
			t.Logf("waitResync: skipping %s", fmtEvent(e))
		case <-timer.C:
			t.Fatalf("no resync within %v", timeout)
		}
	}
}

// noResync fails the test if an EventResync arrives within d.
func noResync(t testing.TB, sub *Subscription, d time.Duration) {
	t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed: %v", sub.Err())
			}
			if e.Kind == EventResync {
				t.Fatal("unexpected resync: Redis lost nothing")
			}
		case <-timer.C:
			return
		}
	}
}

// Issue 9, bug 4: Redis restarts with its state lost and nothing is written
// afterwards. Every node notices by itself and tells every subscriber to
// re-read state; the store then works on the new server (scripts reloaded,
// expiry notifications re-enabled), and refreshes re-create what was lost.
func TestRedisQuietRestartResyncs(t *testing.T) {
	srv := redistest.Start(t)
	opts := stable()
	opts.KeyPrefix = redistest.Prefix(t)
	a, b := openRedis(t, srv, opts), openRedis(t, srv, opts)
	waitReady(t, a)
	waitReady(t, b)
	ctx := context.Background()
	item := StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: longTTL}
	mustRefresh(t, a, item)
	subA, subB := mustSubscribe(t, a), mustSubscribe(t, b)
	// Several state checks pass without a loss: no resync.
	noResync(t, subA, 3*a.stateCheckInterval())

	srv.Restart(t)
	waitResync(t, subA, 15*time.Second)
	waitResync(t, subB, 15*time.Second)

	// The data set is gone...
	if p := presenceOf(t, a, "alice"); p != nil {
		t.Fatalf("after a restart without persistence alice is %+v", p)
	}
	// ...and the next refresh re-creates the session and the membership,
	// with their transitions on every node's feed.
	mustRefresh(t, b, item)
	expectStatus(t, subA, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, subA, "room", "alice", StatusOnline)
	expectStatus(t, subB, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, subB, "room", "alice", StatusOnline)
	wantMembers(t, a, "room", "alice:online")
	// Expiry notifications (lost with CONFIG SET) are on again.
	eventually(t, eventTimeout, "notify-keyspace-events re-enabled", func() bool {
		return strings.Contains(configGet(t, srv, "notify-keyspace-events"), "x")
	})
	// A new subscription after the restart works (its barrier passes).
	sub := mustSubscribe(t, a)
	must(t, b.Heartbeat(ctx, hbeat(bob, sid1, "")))
	expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusOnline)
}

// configGet returns the value of one CONFIG GET parameter.
func configGet(t testing.TB, srv *redistest.Server, name string) string {
	t.Helper()
	s := openRedisClient(t, srv)
	v, err := s.ConfigGet(context.Background(), name).Result()
	if err != nil {
		t.Fatalf("CONFIG GET %s: %v", name, err)
	}
	return v[name]
}

// A flushed data set (FLUSHALL: the connection is not dropped, no event is
// written) is noticed by the periodic check.
func TestRedisFlushAllResyncs(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, srv, stable())
	waitReady(t, s)
	sub := mustSubscribe(t, s)
	mustRefresh(t, s, StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: longTTL})
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)

	if reply := srv.Do(t, "FLUSHALL"); reply != "+OK" {
		t.Fatalf("FLUSHALL: %s", reply)
	}
	waitResync(t, sub, 15*time.Second)
	mustRefresh(t, s, StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: longTTL})
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
}

// Issue 9, bug 1 across nodes: node A holds two streams' memberships and
// dies (one stream was already closing: Detach with a grace). The sessions
// keep heartbeating through node B. B's sweeper ends both memberships at
// their deadlines; nobody needs A's memory.
func TestRedisHeldMembershipOutlivesItsNode(t *testing.T) {
	srv := redistest.Start(t)
	opts := stable()
	opts.KeyPrefix = redistest.Prefix(t)
	a, b := openRedis(t, srv, opts), openRedis(t, srv, opts)
	ctx := context.Background()
	sub := mustSubscribe(t, b)

	mustRefresh(t, a,
		StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: 2 * time.Second},
		StreamRefresh{User: bob, SessionID: sid1, Room: "room", Hold: longTTL})
	must(t, a.Detach(ctx, "room", "bob", sid1, 2*time.Second))
	must(t, a.Close()) // A dies: it will never call Leave
	for range 4 {      // two status and two join events
		nextEvent(t, sub, eventTimeout)
	}
	keepAlive(t, b, hbeat(alice, sid1, ""), hbeat(bob, sid1, ""))

	left := map[string]bool{}
	for len(left) < 2 {
		e := nextEvent(t, sub, expiryTimeout)
		if e.Kind != EventLeave || e.Room != "room" || e.To != StatusOnline || e.Deadline.IsZero() {
			t.Fatalf("got %s, want a leave of room by expiry", fmtEvent(e))
		}
		left[e.User.ID] = true
	}
	wantMembers(t, b, "room")
	wantPresence(t, b, "alice", StatusOnline)
	wantPresence(t, b, "bob", StatusOnline)
	noEvent(t, sub, quietWindow)
}

// A Redis that lost its script cache (SCRIPT FLUSH, or a restart) answers
// the pipelined EVALSHAs with NOSCRIPT: RefreshStreams reloads the scripts
// and runs those items again, once.
func TestRedisRefreshStreamsAfterScriptFlush(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, srv, stable())
	sub := mustSubscribe(t, s)
	if reply := srv.Do(t, "SCRIPT", "FLUSH"); reply != "+OK" {
		t.Fatalf("SCRIPT FLUSH: %s", reply)
	}
	mustRefresh(t, s,
		StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: longTTL},
		StreamRefresh{User: bob, SessionID: sid1})
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
	expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusOnline)
	noEvent(t, sub, quietWindow)
}

// A failure of the whole call is reported once, not as N item errors.
func TestRedisRefreshStreamsWholeCallFailure(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, srv, stable())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	errs, err := s.RefreshStreams(ctx, []StreamRefresh{
		{User: alice, SessionID: sid1, Room: "room", Hold: longTTL},
		{User: bob, SessionID: sid1},
	})
	if !errors.Is(err, context.Canceled) || errs != nil {
		t.Fatalf("RefreshStreams with a cancelled context = %v, %v; want nil, context.Canceled", errs, err)
	}
	if p := presenceOf(t, s, "alice"); p != nil {
		t.Fatalf("a failed call created alice: %+v", p)
	}
}

// openRedisClient is a plain client on srv, closed when the test ends.
func openRedisClient(t testing.TB, srv *redistest.Server) *redis.Client {
	t.Helper()
	o, err := redis.ParseURL(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(o)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// The per-item shape of RefreshStreams (one heartbeat.lua call per item,
// the shape a sharded cluster needs) passes the same RefreshStreams
// subtests as the default refresh_many.lua shape.
func TestRedisRefreshStreamsPerItem(t *testing.T) {
	srv := redistest.Start(t)
	open := func(t *testing.T, opts Options) Store {
		s := openRedis(t, srv, opts)
		s.refreshPerItem = true
		return s
	}
	for name, fn := range map[string]func(*testing.T, opener){
		"RefreshStreamsRefusesEndedSession": testRefreshStreamsRefusesEndedSession,
		"EndingOneSessionSparesAnother":     testEndingOneSessionSparesAnother,
		"RefreshStreamsBatch":               testRefreshStreamsBatch,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, open)
		})
	}
	t.Run("AfterScriptFlush", func(t *testing.T) {
		s := open(t, stable())
		sub := mustSubscribe(t, s)
		if reply := srv.Do(t, "SCRIPT", "FLUSH"); reply != "+OK" {
			t.Fatalf("SCRIPT FLUSH: %s", reply)
		}
		mustRefresh(t, s, StreamRefresh{User: carol, SessionID: sid1, Room: "room", Hold: longTTL})
		expectStatus(t, sub, eventTimeout, "carol", StatusOffline, StatusOnline)
		expectJoin(t, sub, "room", "carol", StatusOnline)
	})
}

// Two live nodes both sweep the membership deadline index: each held
// membership that runs out is ended once, so each node's feed carries
// exactly one leave per user and nothing else.
func TestRedisTwoNodesOneLeavePerHeldMembership(t *testing.T) {
	const n = 20
	srv := redistest.Start(t)
	opts := stable()
	opts.KeyPrefix = redistest.Prefix(t)
	a, b := openRedis(t, srv, opts), openRedis(t, srv, opts)
	var items []StreamRefresh
	for i := range n {
		items = append(items, StreamRefresh{User: Profile{ID: fmt.Sprintf("user-%02d", i)}, SessionID: sid1, Room: "lobby", Hold: longTTL})
	}
	mustRefresh(t, a, items...)
	subA, subB := mustSubscribe(t, a), mustSubscribe(t, b)
	ctx := context.Background()
	for i, it := range items { // half detached through each node
		node := a
		if i%2 == 1 {
			node = b
		}
		must(t, node.Detach(ctx, "lobby", it.User.ID, sid1, time.Second))
	}
	for name, sub := range map[string]*Subscription{"A": subA, "B": subB} {
		left := map[string]int{}
		for len(left) < n {
			e := nextEvent(t, sub, expiryTimeout)
			if e.Kind != EventLeave || e.Room != "lobby" || e.To != StatusOnline {
				t.Fatalf("node %s: got %s, want only leaves", name, fmtEvent(e))
			}
			left[e.User.ID]++
		}
		noEvent(t, sub, quietWindow)
		for id, c := range left {
			if c != 1 {
				t.Fatalf("node %s: %s left %d times", name, id, c)
			}
		}
	}
	wantMembers(t, a, "lobby")
}

// A Redis that refuses INFO (some managed services rename it) still works,
// and a lost data set is still noticed through the epoch token.
func TestRedisWithoutInfo(t *testing.T) {
	srv := redistest.StartWith(t, "--rename-command", "INFO", "")
	s := openRedis(t, srv, stable())
	waitReady(t, s)
	sub := mustSubscribe(t, s)
	if reply := srv.Do(t, "FLUSHALL"); reply != "+OK" {
		t.Fatalf("FLUSHALL: %s", reply)
	}
	waitResync(t, sub, 15*time.Second)
}
