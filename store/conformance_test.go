package store

// The conformance suite: the Store contract, checked on every backend.
// presence_memory_test.go runs it on MemoryStore, presence_redis_test.go on
// RedisStore. Each subtest opens its own store with short timings; apart
// from "arrives within a generous bound" no assertion depends on timing, so
// the suite holds on a loaded two-core machine.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds. Events that must come are waited for this long; windows in which
// no event may come are short, so they cost little when all is well.
const (
	eventTimeout  = 10 * time.Second // an event caused by a call
	expiryTimeout = 20 * time.Second // an event caused by a TTL (1–2 s) running out
	quietWindow   = 300 * time.Millisecond
)

// longTTL keeps sessions alive for the whole of a subtest that is not about
// expiry, however slow the machine.
const longTTL = 2 * time.Minute

// opener opens a fresh, empty store for one (sub)test and registers its
// Close with t.Cleanup.
type opener func(t *testing.T, opts Options) Store

// runConformance runs the whole contract suite against one backend.
func runConformance(t *testing.T, open opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, open opener)
	}{
		{"Ready", testReady},
		{"TwoSessionsOneUser", testTwoSessionsOneUser},
		{"StatusAggregation", testStatusAggregation},
		{"JoinEmitsStatusThenJoin", testJoinEmitsStatusThenJoin},
		{"JoinLeave", testJoinLeave},
		{"MembersJoinOrder", testMembersJoinOrder},
		{"EndSessionLeavesRooms", testEndSessionLeavesRooms},
		{"Expiry", testExpiry},
		{"ExpirySecondSessionKeepsMembership", testExpirySecondSessionKeepsMembership},
		{"ExpiryPrunesRoom", testExpiryPrunesRoom},
		{"TTLOverride", testTTLOverride},
		{"Typing", testTyping},
		{"TypingExpiry", testTypingExpiry},
		{"TypingClearedOnLeave", testTypingClearedOnLeave},
		{"LastSeenAndProfile", testLastSeenAndProfile},
		{"Metadata", testMetadata},
		{"PresenceBatch", testPresenceBatch},
		{"InvalidInput", testInvalidInput},
		{"Limits", testLimits},
		{"SlowSubscriber", testSlowSubscriber},
		{"SubscriptionContext", testSubscriptionContext},
		{"Close", testClose},
		{"Concurrent", testConcurrent},
		{"HoldEndsWhileSessionHeartbeats", testHoldEndsWhileSessionHeartbeats},
		{"Detach", testDetach},
		{"DetachNeverExtends", testDetachNeverExtends},
		{"RefreshStreamsRefusesEndedSession", testRefreshStreamsRefusesEndedSession},
		{"EndedRetention", testEndedRetention},
		{"EndingOneSessionSparesAnother", testEndingOneSessionSparesAnother},
		{"RefreshStreamsRecreates", testRefreshStreamsRecreates},
		{"RefreshStreamsBatch", testRefreshStreamsBatch},
		{"TypingOnlyForMembers", testTypingOnlyForMembers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, open)
		})
	}
}

// ---- helpers (shared with the backend-specific tests) ----

var (
	alice = Profile{ID: "alice", Name: "Alice", Avatar: "https://example.test/alice.png"}
	bob   = Profile{ID: "bob", Name: "Bob"}
	carol = Profile{ID: "carol"} // no name: shown by id
)

// Session ids (8–64 characters).
const (
	sid1 = "sess-0001"
	sid2 = "sess-0002"
	sid3 = "sess-0003"
	sid4 = "sess-0004"
)

func hbeat(p Profile, sid string, st Status) Heartbeat {
	return Heartbeat{User: p, SessionID: sid, Status: st}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mustSubscribe opens a change feed that is closed when the test ends.
func mustSubscribe(t testing.TB, s Store) *Subscription {
	t.Helper()
	sub, err := s.Subscribe(context.Background())
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	t.Cleanup(sub.Close)
	if isPartitioned(s) {
		partitionedMu.Lock()
		partitionedSubs[sub] = new([]Event)
		partitionedMu.Unlock()
		t.Cleanup(func() {
			partitionedMu.Lock()
			delete(partitionedSubs, sub)
			partitionedMu.Unlock()
		})
	}
	return sub
}

// nextEvent returns the next event (resync notices are skipped: they are not
// transitions), failing the test if none arrives within timeout or the
// subscription ends.
func nextEvent(t testing.TB, sub *Subscription, timeout time.Duration) Event {
	t.Helper()
	if held := heldEvents(sub); len(*held) > 0 {
		e := (*held)[0]
		*held = (*held)[1:]
		return e
	}
	return receive(t, sub, timeout)
}

func receive(t testing.TB, sub *Subscription, timeout time.Duration) Event {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed while waiting for an event: %v", sub.Err())
			}
			if e.Kind == EventResync {
				continue
			}
			return e
		case <-timer.C:
			t.Fatalf("no event within %v", timeout)
		}
	}
}

// A partitioned backend (ClusterStore) orders the events of one user's
// status, and those of one room, but not one against the other: its
// subscriptions are registered here, and the expect helpers take the next
// event of the order an expected event belongs to, holding back the others
// for later expectations. On every other backend the next event is the
// next event.
var (
	partitionedMu   sync.Mutex
	partitionedSubs = map[*Subscription]*[]Event{}
)

// isPartitioned reports whether a store orders events per user and per
// room only.
func isPartitioned(s Store) bool {
	_, ok := s.(*ClusterStore)
	return ok
}

// heldEvents is a partitioned subscription's held-back events (an empty
// list for any other).
func heldEvents(sub *Subscription) *[]Event {
	partitionedMu.Lock()
	defer partitionedMu.Unlock()
	if h := partitionedSubs[sub]; h != nil {
		return h
	}
	return new([]Event)
}

func partitionedSub(sub *Subscription) bool {
	partitionedMu.Lock()
	defer partitionedMu.Unlock()
	return partitionedSubs[sub] != nil
}

// orderOf is the order an event belongs to on a partitioned backend.
func orderOf(e Event) string {
	if e.Kind == EventStatus {
		return "user " + e.User.ID
	}
	return "room " + e.Room
}

// nextIn returns the next event of order (see orderOf) on a partitioned
// subscription, holding back events of other orders; elsewhere it is
// nextEvent.
func nextIn(t testing.TB, sub *Subscription, timeout time.Duration, order string) Event {
	t.Helper()
	if !partitionedSub(sub) {
		return nextEvent(t, sub, timeout)
	}
	held := heldEvents(sub)
	for i, e := range *held {
		if orderOf(e) == order {
			*held = append((*held)[:i:i], (*held)[i+1:]...)
			return e
		}
	}
	end := time.Now().Add(timeout)
	for {
		left := time.Until(end)
		if left <= 0 {
			t.Fatalf("no event of %s within %v (held back: %d)", order, timeout, len(*held))
		}
		e := receive(t, sub, left)
		if orderOf(e) == order {
			return e
		}
		*held = append(*held, e)
	}
}

// waitEvent returns the first event for which match is true, skipping (and
// logging) the others; it fails the test if none arrives within timeout.
func waitEvent(t testing.TB, sub *Subscription, timeout time.Duration, match func(Event) bool) Event {
	t.Helper()
	end := time.Now().Add(timeout)
	for {
		left := time.Until(end)
		if left <= 0 {
			t.Fatalf("no matching event within %v", timeout)
		}
		e := nextEvent(t, sub, left)
		if match(e) {
			return e
		}
		t.Logf("waitEvent: skipping %s", fmtEvent(e))
	}
}

// noEvent fails the test if an event (other than resync) arrives within d,
// or one is held back (see nextIn).
func noEvent(t testing.TB, sub *Subscription, d time.Duration) {
	t.Helper()
	if held := heldEvents(sub); len(*held) > 0 {
		t.Fatalf("unexpected event: %s", fmtEvent((*held)[0]))
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case e, ok := <-sub.C():
			if !ok {
				t.Fatalf("subscription closed: %v", sub.Err())
			}
			if e.Kind == EventResync {
				continue
			}
			t.Fatalf("unexpected event: %s", fmtEvent(e))
		case <-timer.C:
			return
		}
	}
}

func fmtEvent(e Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s", e.Kind)
	if e.Room != "" {
		fmt.Fprintf(&b, " room=%s", e.Room)
	}
	if e.User.ID != "" {
		fmt.Fprintf(&b, " user=%s", e.User.ID)
	}
	if e.From != "" || e.To != "" {
		fmt.Fprintf(&b, " %s->%s", e.From, e.To)
	}
	if e.Rooms != nil {
		fmt.Fprintf(&b, " rooms=%v", e.Rooms)
	}
	if e.Kind == EventTyping {
		fmt.Fprintf(&b, " typing=%v", e.Typing)
	}
	if !e.Deadline.IsZero() {
		fmt.Fprintf(&b, " late=%v", e.At.Sub(e.Deadline))
	}
	return b.String()
}

// expectStatus reads the next event and checks it is user's status change.
func expectStatus(t testing.TB, sub *Subscription, timeout time.Duration, user string, from, to Status, rooms ...string) Event {
	t.Helper()
	e := nextIn(t, sub, timeout, "user "+user)
	if e.Kind != EventStatus || e.User.ID != user || e.From != from || e.To != to || !slices.Equal(e.Rooms, rooms) {
		t.Fatalf("got %s, want status user=%s %s->%s rooms=%v", fmtEvent(e), user, from, to, rooms)
	}
	checkAt(t, e)
	return e
}

func expectJoin(t testing.TB, sub *Subscription, room, user string, to Status) Event {
	t.Helper()
	e := nextIn(t, sub, eventTimeout, "room "+room)
	if e.Kind != EventJoin || e.Room != room || e.User.ID != user || e.To != to {
		t.Fatalf("got %s, want join room=%s user=%s to=%s", fmtEvent(e), room, user, to)
	}
	checkAt(t, e)
	return e
}

func expectLeave(t testing.TB, sub *Subscription, timeout time.Duration, room, user string, to Status) Event {
	t.Helper()
	e := nextIn(t, sub, timeout, "room "+room)
	if e.Kind != EventLeave || e.Room != room || e.User.ID != user || e.To != to {
		t.Fatalf("got %s, want leave room=%s user=%s to=%s", fmtEvent(e), room, user, to)
	}
	checkAt(t, e)
	return e
}

func expectTyping(t testing.TB, sub *Subscription, timeout time.Duration, room string, want ...Typist) Event {
	t.Helper()
	e := nextIn(t, sub, timeout, "room "+room)
	if e.Kind != EventTyping || e.Room != room || !slices.Equal(e.Typing, want) {
		t.Fatalf("got %s, want typing room=%s typing=%v", fmtEvent(e), room, want)
	}
	checkAt(t, e)
	return e
}

func typist(p Profile) Typist { return Typist{ID: p.ID, Name: p.DisplayName()} }

// checkAt checks an event's timestamps: At is set; an expiry's Deadline is
// not after At (nothing expires early).
func checkAt(t testing.TB, e Event) {
	t.Helper()
	if e.At.IsZero() {
		t.Fatalf("%s: At is zero", fmtEvent(e))
	}
	if !e.Deadline.IsZero() && e.At.UnixMilli() < e.Deadline.UnixMilli() {
		t.Fatalf("%s: At %v is before Deadline %v", fmtEvent(e), e.At, e.Deadline)
	}
}

// explicit fails if e carries a Deadline: it was not caused by expiry.
func explicit(t testing.TB, e Event) {
	t.Helper()
	if !e.Deadline.IsZero() {
		t.Fatalf("%s: Deadline set on a transition not caused by expiry", fmtEvent(e))
	}
}

// expiredAt checks that e was caused by an expiry due at deadline dl.
func expiredAt(t testing.TB, e Event, dl time.Time) {
	t.Helper()
	if e.Deadline.IsZero() {
		t.Fatalf("%s: no Deadline on an expiry", fmtEvent(e))
	}
	if e.Deadline.UnixMilli() != dl.UnixMilli() {
		t.Fatalf("%s: Deadline %v, want %v", fmtEvent(e), e.Deadline, dl)
	}
}

// window records when a call was made, for checks of the times a store
// derives from "now" (lastSeen, deadlines), at millisecond precision.
type window struct{ from, to time.Time }

func during(f func()) window {
	w := window{from: time.Now()}
	f()
	w.to = time.Now()
	return w
}

// contains reports whether tm, shifted back by d, falls within the window
// (with a millisecond of slack either side for rounding).
func (w window) contains(tm time.Time, d time.Duration) bool {
	ms := tm.Add(-d).UnixMilli()
	return ms >= w.from.UnixMilli()-1 && ms <= w.to.UnixMilli()+1
}

func presenceOf(t testing.TB, s Store, id string) *Presence {
	t.Helper()
	m, err := s.Presence(context.Background(), []string{id})
	must(t, err)
	p, ok := m[id]
	if !ok {
		t.Fatalf("Presence result lacks key %q", id)
	}
	return p
}

func wantPresence(t testing.TB, s Store, id string, st Status) *Presence {
	t.Helper()
	p := presenceOf(t, s, id)
	if p == nil {
		t.Fatalf("Presence(%s) = nil, want %s", id, st)
	}
	if p.ID != id || p.Status != st {
		t.Fatalf("Presence(%s) = %+v, want status %s", id, *p, st)
	}
	return p
}

func members(t testing.TB, s Store, room string) []Member {
	t.Helper()
	ms, err := s.Members(context.Background(), room)
	must(t, err)
	return ms
}

// wantMembers checks a room's members: ids in order, each with status.
func wantMembers(t testing.TB, s Store, room string, want ...string) []Member {
	t.Helper()
	ms := members(t, s, room)
	got := make([]string, len(ms))
	for i, m := range ms {
		got[i] = m.ID + ":" + string(m.Status)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Members(%s) = %v, want %v", room, got, want)
	}
	return ms
}

func wantTyping(t testing.TB, s Store, room string, want ...Typist) {
	t.Helper()
	got, err := s.Typing(context.Background(), room)
	must(t, err)
	if !slices.Equal(got, want) {
		t.Fatalf("Typing(%s) = %v, want %v", room, got, want)
	}
}

// tick lets the wall clock move on by more than a millisecond. Orders "by
// when each started" (members, typists) are only required to hold between
// starts a millisecond apart: a backend may keep millisecond timestamps and
// break ties by id, which no test relies on.
func tick() { time.Sleep(2 * time.Millisecond) }

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// stable is the options of subtests that are not about expiry.
func stable() Options {
	return Options{TTL: longTTL, TypingTTL: longTTL, SweepInterval: 50 * time.Millisecond, LastSeenRetention: time.Hour}
}

// ---- subtests ----

func testReady(t *testing.T, open opener) {
	s := open(t, stable())
	// A backend may take a moment to connect its feed after it is opened.
	eventually(t, eventTimeout, "Ready", func() bool { return s.Ready(context.Background()) == nil })
	// Once ready, it stays ready.
	for range 5 {
		must(t, s.Ready(context.Background()))
	}
}

func testTwoSessionsOneUser(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
	e := expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	explicit(t, e)
	if e.User != alice {
		t.Fatalf("status event user = %+v, want %+v", e.User, alice)
	}
	var last window
	last = during(func() { must(t, s.Heartbeat(ctx, hbeat(alice, sid2, ""))) })
	noEvent(t, sub, quietWindow)

	// Ending one of two sessions leaves the user online, silently.
	must(t, s.EndSession(ctx, "alice", sid1))
	noEvent(t, sub, quietWindow)
	wantPresence(t, s, "alice", StatusOnline)

	// Ending a session that does not exist (or twice) is not an error.
	must(t, s.EndSession(ctx, "alice", sid1))
	must(t, s.EndSession(ctx, "nobody", sid1))
	noEvent(t, sub, quietWindow)

	// Ending the last one: offline, and Presence still knows the user.
	must(t, s.EndSession(ctx, "alice", sid2))
	e = expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusOffline)
	explicit(t, e)
	p := wantPresence(t, s, "alice", StatusOffline)
	if !last.contains(p.LastSeen, 0) {
		t.Fatalf("lastSeen %v not within the last heartbeat [%v, %v]", p.LastSeen, last.from, last.to)
	}
	if p.Name != "Alice" || p.Avatar != alice.Avatar {
		t.Fatalf("offline profile = %+v", p.Profile)
	}
}

func testStatusAggregation(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, StatusAway)))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusAway)
	wantPresence(t, s, "alice", StatusAway)

	must(t, s.Heartbeat(ctx, hbeat(alice, sid2, StatusOnline))) // online > away
	expectStatus(t, sub, eventTimeout, "alice", StatusAway, StatusOnline)

	must(t, s.Heartbeat(ctx, hbeat(alice, sid3, StatusBusy))) // busy > online
	expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusBusy)
	wantPresence(t, s, "alice", StatusBusy)

	// An empty status keeps the session's; a weaker one elsewhere changes nothing.
	must(t, s.Heartbeat(ctx, hbeat(alice, sid3, "")))
	must(t, s.Heartbeat(ctx, hbeat(alice, sid2, StatusAway)))
	noEvent(t, sub, quietWindow)
	wantPresence(t, s, "alice", StatusBusy)

	// The busy session turns away: sessions are away, away, away.
	must(t, s.Heartbeat(ctx, hbeat(alice, sid3, StatusAway)))
	expectStatus(t, sub, eventTimeout, "alice", StatusBusy, StatusAway)

	// Rooms on a status change: the user's current rooms, sorted.
	must(t, s.Join(ctx, "room-b", hbeat(alice, sid1, "")))
	expectJoin(t, sub, "room-b", "alice", StatusAway)
	must(t, s.Join(ctx, "room-a", hbeat(alice, sid1, "")))
	expectJoin(t, sub, "room-a", "alice", StatusAway)
	must(t, s.Heartbeat(ctx, hbeat(alice, sid2, StatusBusy)))
	expectStatus(t, sub, eventTimeout, "alice", StatusAway, StatusBusy, "room-a", "room-b")
	wantMembers(t, s, "room-a", "alice:busy")

	// Ending the busy session drops the aggregate back.
	must(t, s.EndSession(ctx, "alice", sid2))
	expectStatus(t, sub, eventTimeout, "alice", StatusBusy, StatusAway, "room-a", "room-b")
	wantPresence(t, s, "alice", StatusAway)
}

func testJoinEmitsStatusThenJoin(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	// A join that creates the session: the status change comes first.
	must(t, s.Join(ctx, "room", hbeat(alice, sid1, StatusBusy)))
	explicit(t, expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusBusy))
	e := expectJoin(t, sub, "room", "alice", StatusBusy)
	explicit(t, e)
	if e.User != alice {
		t.Fatalf("join event user = %+v, want %+v", e.User, alice)
	}

	// A join by an existing session: the join only.
	must(t, s.Heartbeat(ctx, hbeat(bob, sid1, StatusAway)))
	expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusAway)
	tick()
	must(t, s.Join(ctx, "room", hbeat(bob, sid1, "")))
	expectJoin(t, sub, "room", "bob", StatusAway)

	// Joining again, or with a second session, is no transition.
	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	must(t, s.Join(ctx, "room", hbeat(alice, sid2, "")))
	must(t, s.Join(ctx, "room", hbeat(bob, sid1, StatusAway)))
	noEvent(t, sub, quietWindow)
	wantMembers(t, s, "room", "alice:busy", "bob:away")
}

func testJoinLeave(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
	must(t, s.Join(ctx, "room", hbeat(alice, sid2, "")))
	tick()
	must(t, s.Join(ctx, "room", hbeat(bob, sid1, StatusAway)))
	expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusAway)
	expectJoin(t, sub, "room", "bob", StatusAway)

	ms := wantMembers(t, s, "room", "alice:online", "bob:away")
	if ms[0].Profile != alice || ms[0].LastSeen.IsZero() {
		t.Fatalf("member = %+v", ms[0])
	}

	// alice's second session is still in the room.
	must(t, s.Leave(ctx, "room", "alice", sid1))
	noEvent(t, sub, quietWindow)
	wantMembers(t, s, "room", "alice:online", "bob:away")

	must(t, s.Leave(ctx, "room", "alice", sid2))
	e := expectLeave(t, sub, eventTimeout, "room", "alice", StatusOnline)
	explicit(t, e)
	if e.User != alice {
		t.Fatalf("leave event user = %+v", e.User)
	}
	wantMembers(t, s, "room", "bob:away")
	wantPresence(t, s, "alice", StatusOnline) // leaving a room ends no session

	// Leaving what one is not in is not an error, and no transition.
	must(t, s.Leave(ctx, "room", "alice", sid1))
	must(t, s.Leave(ctx, "other-room", "bob", sid1))
	must(t, s.Leave(ctx, "room", "bob", sid2))
	must(t, s.Leave(ctx, "room", "nobody", sid1))
	noEvent(t, sub, quietWindow)

	// Rejoining puts the user last.
	tick()
	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	expectJoin(t, sub, "room", "alice", StatusOnline)
	wantMembers(t, s, "room", "bob:away", "alice:online")

	// The last member leaving empties the room.
	must(t, s.Leave(ctx, "room", "bob", sid1))
	expectLeave(t, sub, eventTimeout, "room", "bob", StatusAway)
	must(t, s.Leave(ctx, "room", "alice", sid1))
	expectLeave(t, sub, eventTimeout, "room", "alice", StatusOnline)
	wantMembers(t, s, "room")
}

func testMembersJoinOrder(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	// Join order, not id order.
	var want []string
	for _, id := range []string{"user-3", "user-0", "user-5", "user-1", "user-4", "user-2"} {
		tick()
		must(t, s.Join(ctx, "room", hbeat(Profile{ID: id}, sid1, "")))
		want = append(want, id+":online")
	}
	wantMembers(t, s, "room", want...)

	// A second session joining, or a refresh, does not reorder.
	tick()
	must(t, s.Join(ctx, "room", hbeat(Profile{ID: "user-3"}, sid2, "")))
	must(t, s.Join(ctx, "room", hbeat(Profile{ID: "user-1"}, sid1, StatusBusy)))
	want[3] = "user-1:busy"
	wantMembers(t, s, "room", want...)

	// Leaving with every session and coming back moves a user last.
	must(t, s.Leave(ctx, "room", "user-0", sid1))
	tick()
	must(t, s.Join(ctx, "room", hbeat(Profile{ID: "user-0"}, sid1, "")))
	wantMembers(t, s, "room", "user-3:online", "user-5:online", "user-1:busy", "user-4:online", "user-2:online", "user-0:online")
}

func testEndSessionLeavesRooms(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	must(t, s.Join(ctx, "room-b", hbeat(alice, sid1, "")))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room-b", "alice", StatusOnline)
	must(t, s.Join(ctx, "room-c", hbeat(alice, sid1, "")))
	expectJoin(t, sub, "room-c", "alice", StatusOnline)
	must(t, s.Join(ctx, "room-a", hbeat(alice, sid1, "")))
	expectJoin(t, sub, "room-a", "alice", StatusOnline)
	// A busy second session, already in room-c.
	must(t, s.Join(ctx, "room-c", hbeat(alice, sid2, StatusBusy)))
	expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusBusy, "room-a", "room-b", "room-c")
	noEvent(t, sub, quietWindow)

	// Ending sid1: it leaves the rooms only it was in, in order; the
	// aggregate (busy) does not change.
	must(t, s.EndSession(ctx, "alice", sid1))
	explicit(t, expectLeave(t, sub, eventTimeout, "room-a", "alice", StatusBusy))
	expectLeave(t, sub, eventTimeout, "room-b", "alice", StatusBusy)
	noEvent(t, sub, quietWindow)
	wantMembers(t, s, "room-a")
	wantMembers(t, s, "room-b")
	wantMembers(t, s, "room-c", "alice:busy")

	// A busy session without rooms ending while an online one lives.
	must(t, s.Heartbeat(ctx, hbeat(alice, sid3, StatusOnline)))
	must(t, s.Join(ctx, "room-a", hbeat(alice, sid3, "")))
	expectJoin(t, sub, "room-a", "alice", StatusBusy)
	must(t, s.Heartbeat(ctx, hbeat(alice, sid4, StatusAway)))
	noEvent(t, sub, quietWindow)
	must(t, s.EndSession(ctx, "alice", sid2))
	expectLeave(t, sub, eventTimeout, "room-c", "alice", StatusOnline)
	expectStatus(t, sub, eventTimeout, "alice", StatusBusy, StatusOnline, "room-a")

	// The last sessions: leaves with To offline, then offline with the
	// rooms the user was in.
	must(t, s.EndSession(ctx, "alice", sid4)) // away; online remains
	noEvent(t, sub, quietWindow)
	must(t, s.EndSession(ctx, "alice", sid3))
	explicit(t, expectLeave(t, sub, eventTimeout, "room-a", "alice", StatusOffline))
	explicit(t, expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusOffline, "room-a"))
	wantMembers(t, s, "room-a")
	wantPresence(t, s, "alice", StatusOffline)
}

func testExpiry(t *testing.T, open opener) {
	s := open(t, Options{TTL: time.Second, TypingTTL: longTTL, SweepInterval: 50 * time.Millisecond, LastSeenRetention: time.Hour})
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	must(t, s.Join(ctx, "room-b", hbeat(alice, sid1, "")))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room-b", "alice", StatusOnline)
	last := during(func() { must(t, s.Join(ctx, "room-a", hbeat(alice, sid1, ""))) })
	expectJoin(t, sub, "room-a", "alice", StatusOnline)
	must(t, s.SetTyping(ctx, "room-a", alice, true))
	expectTyping(t, sub, eventTimeout, "room-a", typist(alice))

	// The session's TTL runs out: per room (sorted) typing cleared then
	// leave, then offline with the rooms; all carry the session's deadline.
	e := expectTyping(t, sub, expiryTimeout, "room-a")
	dl := e.Deadline
	if dl.IsZero() {
		t.Fatalf("%s: no Deadline on an expiry", fmtEvent(e))
	}
	if !last.contains(dl, time.Second) {
		t.Fatalf("Deadline %v is not the last refresh [%v, %v] + TTL", dl, last.from, last.to)
	}
	expiredAt(t, expectLeave(t, sub, eventTimeout, "room-a", "alice", StatusOffline), dl)
	expiredAt(t, expectLeave(t, sub, eventTimeout, "room-b", "alice", StatusOffline), dl)
	e = expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusOffline, "room-a", "room-b")
	expiredAt(t, e, dl)
	if e.User != alice {
		t.Fatalf("status event user = %+v", e.User)
	}

	wantMembers(t, s, "room-a")
	wantMembers(t, s, "room-b")
	wantTyping(t, s, "room-a")
	p := wantPresence(t, s, "alice", StatusOffline)
	if !last.contains(p.LastSeen, 0) {
		t.Fatalf("lastSeen %v is not the last refresh [%v, %v]", p.LastSeen, last.from, last.to)
	}
	if p.Profile != alice {
		t.Fatalf("profile after expiry = %+v", p.Profile)
	}
	noEvent(t, sub, quietWindow)
}

func testExpirySecondSessionKeepsMembership(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	short := hbeat(alice, sid1, StatusBusy)
	short.TTL = time.Second
	must(t, s.Join(ctx, "room", short))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusBusy)
	expectJoin(t, sub, "room", "alice", StatusBusy)
	must(t, s.Join(ctx, "room", hbeat(alice, sid2, StatusOnline)))

	// sid1 expires: no leave (sid2 is in the room), only the aggregate drops.
	e := expectStatus(t, sub, expiryTimeout, "alice", StatusBusy, StatusOnline, "room")
	if e.Deadline.IsZero() {
		t.Fatalf("%s: no Deadline on an expiry", fmtEvent(e))
	}
	wantMembers(t, s, "room", "alice:online")
	wantPresence(t, s, "alice", StatusOnline)
	noEvent(t, sub, quietWindow)
}

func testExpiryPrunesRoom(t *testing.T, open opener) {
	const n = 30
	s := open(t, Options{TTL: time.Second, TypingTTL: time.Second, SweepInterval: 50 * time.Millisecond, LastSeenRetention: time.Hour})
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	for i := range n {
		p := Profile{ID: fmt.Sprintf("user-%02d", i)}
		must(t, s.Join(ctx, "lobby", hbeat(p, sid1, "")))
		if i%3 == 0 {
			must(t, s.SetTyping(ctx, "lobby", p, true))
		}
	}
	joins, leaves, offline := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for len(offline) < n || len(leaves) < n {
		e := nextEvent(t, sub, expiryTimeout)
		switch {
		case e.Kind == EventJoin:
			joins[e.User.ID] = true
		case e.Kind == EventLeave:
			if e.Room != "lobby" || e.To != StatusOffline || e.Deadline.IsZero() {
				t.Fatalf("bad leave: %s", fmtEvent(e))
			}
			leaves[e.User.ID] = true
		case e.Kind == EventStatus && e.To == StatusOffline:
			// (A partitioned backend does not order the leave against the status.)
			if (!leaves[e.User.ID] && !isPartitioned(s)) || !slices.Equal(e.Rooms, []string{"lobby"}) || e.Deadline.IsZero() {
				t.Fatalf("bad offline (leave first: %v): %s", leaves[e.User.ID], fmtEvent(e))
			}
			offline[e.User.ID] = true
		}
	}
	if len(joins) != n || len(leaves) != n {
		t.Fatalf("joins %d, leaves %d, want %d", len(joins), len(leaves), n)
	}
	wantMembers(t, s, "lobby")
	eventually(t, expiryTimeout, "typing marks expire", func() bool {
		ts, err := s.Typing(ctx, "lobby")
		return err == nil && len(ts) == 0
	})
}

func testTTLOverride(t *testing.T, open opener) {
	s := open(t, stable()) // default TTL: minutes
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	// carol's short TTL is lengthened by a refresh without override.
	short := hbeat(carol, sid1, "")
	short.TTL = time.Second
	must(t, s.Heartbeat(ctx, short))
	must(t, s.Heartbeat(ctx, hbeat(carol, sid1, "")))
	expectStatus(t, sub, eventTimeout, "carol", StatusOffline, StatusOnline)

	// alice's long TTL is shortened by a refresh with a short override.
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	short = hbeat(alice, sid1, "")
	short.TTL = time.Second
	last := during(func() { must(t, s.Heartbeat(ctx, short)) })

	e := expectStatus(t, sub, expiryTimeout, "alice", StatusOnline, StatusOffline)
	if !last.contains(e.Deadline, time.Second) {
		t.Fatalf("Deadline %v is not the override refresh [%v, %v] + 1s", e.Deadline, last.from, last.to)
	}
	wantPresence(t, s, "carol", StatusOnline)
}

func testTyping(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	for _, p := range []Profile{alice, bob, carol} {
		must(t, s.Join(ctx, "room", hbeat(p, sid1, "")))
	}
	sub := mustSubscribe(t, s)

	must(t, s.SetTyping(ctx, "room", alice, true))
	explicit(t, expectTyping(t, sub, eventTimeout, "room", typist(alice)))
	tick()
	must(t, s.SetTyping(ctx, "room", carol, true)) // no name: shown by id
	expectTyping(t, sub, eventTimeout, "room", typist(alice), Typist{ID: "carol", Name: "carol"})

	// A refresh is no transition.
	must(t, s.SetTyping(ctx, "room", alice, true))
	noEvent(t, sub, quietWindow)
	wantTyping(t, s, "room", typist(alice), typist(carol))
	wantTyping(t, s, "other-room")

	must(t, s.SetTyping(ctx, "room", alice, false))
	explicit(t, expectTyping(t, sub, eventTimeout, "room", typist(carol)))
	// Stopping when not typing is no transition.
	must(t, s.SetTyping(ctx, "room", alice, false))
	must(t, s.SetTyping(ctx, "other-room", alice, false))
	noEvent(t, sub, quietWindow)

	// The set is ordered by when each started.
	tick()
	must(t, s.SetTyping(ctx, "room", bob, true))
	expectTyping(t, sub, eventTimeout, "room", typist(carol), typist(bob))
	tick()
	must(t, s.SetTyping(ctx, "room", alice, true))
	expectTyping(t, sub, eventTimeout, "room", typist(carol), typist(bob), typist(alice))
	must(t, s.SetTyping(ctx, "room", carol, true))
	wantTyping(t, s, "room", typist(carol), typist(bob), typist(alice))

	must(t, s.SetTyping(ctx, "room", bob, false))
	expectTyping(t, sub, eventTimeout, "room", typist(carol), typist(alice))
	must(t, s.SetTyping(ctx, "room", carol, false))
	expectTyping(t, sub, eventTimeout, "room", typist(alice))
	must(t, s.SetTyping(ctx, "room", alice, false))
	expectTyping(t, sub, eventTimeout, "room")
	wantTyping(t, s, "room")
}

func testTypingExpiry(t *testing.T, open opener) {
	const ttl = 2 * time.Second
	s := open(t, Options{TTL: longTTL, TypingTTL: ttl, SweepInterval: 50 * time.Millisecond, LastSeenRetention: time.Hour})
	ctx := context.Background()
	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	must(t, s.Join(ctx, "room", hbeat(bob, sid1, "")))
	sub := mustSubscribe(t, s)

	must(t, s.SetTyping(ctx, "room", alice, true))
	expectTyping(t, sub, eventTimeout, "room", typist(alice))
	time.Sleep(100 * time.Millisecond)
	aliceSet := during(func() { must(t, s.SetTyping(ctx, "room", alice, true)) }) // refresh
	tick()
	bobSet := during(func() { must(t, s.SetTyping(ctx, "room", bob, true)) })
	expectTyping(t, sub, eventTimeout, "room", typist(alice), typist(bob))

	e := expectTyping(t, sub, expiryTimeout, "room", typist(bob))
	if !aliceSet.contains(e.Deadline, ttl) {
		t.Fatalf("alice's mark: Deadline %v is not her last refresh [%v, %v] + %v", e.Deadline, aliceSet.from, aliceSet.to, ttl)
	}
	e = expectTyping(t, sub, expiryTimeout, "room")
	if !bobSet.contains(e.Deadline, ttl) {
		t.Fatalf("bob's mark: Deadline %v is not his mark [%v, %v] + %v", e.Deadline, bobSet.from, bobSet.to, ttl)
	}
	wantTyping(t, s, "room")
	noEvent(t, sub, quietWindow)
}

func testTypingClearedOnLeave(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)
	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	must(t, s.Join(ctx, "room", hbeat(bob, sid1, "")))
	must(t, s.Join(ctx, "room", hbeat(bob, sid2, "")))
	must(t, s.Join(ctx, "room", hbeat(carol, sid1, "")))
	for _, p := range []Profile{alice, bob, carol} {
		tick()
		must(t, s.SetTyping(ctx, "room", p, true))
	}
	waitEvent(t, sub, eventTimeout, func(e Event) bool { return e.Kind == EventTyping && len(e.Typing) == 3 })

	// Leave: typing cleared first, then the leave.
	must(t, s.Leave(ctx, "room", "alice", sid1))
	explicit(t, expectTyping(t, sub, eventTimeout, "room", typist(bob), typist(carol)))
	expectLeave(t, sub, eventTimeout, "room", "alice", StatusOnline)
	wantTyping(t, s, "room", typist(bob), typist(carol))

	// bob's other session keeps him in the room, and typing.
	must(t, s.Leave(ctx, "room", "bob", sid1))
	noEvent(t, sub, quietWindow)
	// Ending that other session takes him out (sid1 lives on: still online).
	must(t, s.EndSession(ctx, "bob", sid2))
	expectTyping(t, sub, eventTimeout, "room", typist(carol))
	expectLeave(t, sub, eventTimeout, "room", "bob", StatusOnline)
	noEvent(t, sub, quietWindow)

	// Going offline: typing, leave, status.
	must(t, s.EndSession(ctx, "carol", sid1))
	expectTyping(t, sub, eventTimeout, "room")
	expectLeave(t, sub, eventTimeout, "room", "carol", StatusOffline)
	expectStatus(t, sub, eventTimeout, "carol", StatusOnline, StatusOffline, "room")
	wantTyping(t, s, "room")
	wantMembers(t, s, "room")
}

func testLastSeenAndProfile(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	first := during(func() { must(t, s.Heartbeat(ctx, hbeat(alice, sid1, ""))) })
	p := wantPresence(t, s, "alice", StatusOnline)
	if p.Profile != alice || !first.contains(p.LastSeen, 0) {
		t.Fatalf("Presence = %+v, want profile %+v and lastSeen within [%v, %v]", *p, alice, first.from, first.to)
	}

	time.Sleep(5 * time.Millisecond)
	renamed := Profile{ID: "alice", Name: "Alice B.", Avatar: "https://example.test/b.png"}
	second := during(func() { must(t, s.Join(ctx, "room", hbeat(renamed, sid2, ""))) })
	p = wantPresence(t, s, "alice", StatusOnline)
	if p.Profile != renamed || !second.contains(p.LastSeen, 0) {
		t.Fatalf("Presence = %+v, want profile %+v and lastSeen within [%v, %v]", *p, renamed, second.from, second.to)
	}
	ms := wantMembers(t, s, "room", "alice:online")
	if ms[0].Profile != renamed || !second.contains(ms[0].LastSeen, 0) {
		t.Fatalf("member = %+v", ms[0])
	}

	// Offline: the profile and the last sign of life stay readable.
	must(t, s.EndSession(ctx, "alice", sid1))
	must(t, s.EndSession(ctx, "alice", sid2))
	p = wantPresence(t, s, "alice", StatusOffline)
	if p.Profile != renamed || !second.contains(p.LastSeen, 0) {
		t.Fatalf("offline Presence = %+v, want profile %+v and lastSeen within [%v, %v]", *p, renamed, second.from, second.to)
	}
	if presenceOf(t, s, "bob") != nil {
		t.Fatal("a user never seen must read as nil")
	}
}

func testMetadata(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	meta := func(id string) []byte {
		t.Helper()
		p := presenceOf(t, s, id)
		if p == nil {
			t.Fatalf("Presence(%s) = nil", id)
		}
		return p.Metadata
	}
	with := func(m string) Heartbeat {
		h := hbeat(alice, sid1, "")
		h.Metadata = json.RawMessage(m)
		return h
	}

	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
	if m := meta("alice"); len(m) != 0 {
		t.Fatalf("metadata of a user who sent none = %s", m)
	}
	must(t, s.Heartbeat(ctx, with(`{"page": "/inbox", "n": 1}`)))
	if m := meta("alice"); !jsonEqual(m, []byte(`{"page":"/inbox","n":1}`)) {
		t.Fatalf("metadata = %s", m)
	}
	// nil keeps it, including through a join.
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, StatusAway)))
	must(t, s.Join(ctx, "room", hbeat(alice, sid2, "")))
	if m := meta("alice"); !jsonEqual(m, []byte(`{"page":"/inbox","n":1}`)) {
		t.Fatalf("metadata after nil = %s", m)
	}
	// Anything else replaces it whole.
	must(t, s.Heartbeat(ctx, with(`{"tags":["a","b"]}`)))
	if m := meta("alice"); !jsonEqual(m, []byte(`{"tags":["a","b"]}`)) {
		t.Fatalf("replaced metadata = %s", m)
	}
	must(t, s.Heartbeat(ctx, with(`{}`)))
	if m := meta("alice"); !jsonEqual(m, []byte(`{}`)) {
		t.Fatalf("emptied metadata = %s", m)
	}
	// The largest allowed object round-trips.
	big := `{"x":"` + strings.Repeat("y", MaxMetadata-8) + `"}`
	if len(big) != MaxMetadata {
		t.Fatalf("test bug: %d", len(big))
	}
	must(t, s.Heartbeat(ctx, with(big)))
	if m := meta("alice"); !jsonEqual(m, []byte(big)) {
		t.Fatalf("metadata of %d bytes did not round-trip (%d bytes back)", len(big), len(m))
	}
	// It stays readable offline.
	must(t, s.EndSession(ctx, "alice", sid1))
	must(t, s.EndSession(ctx, "alice", sid2))
	wantPresence(t, s, "alice", StatusOffline)
	if m := meta("alice"); !jsonEqual(m, []byte(big)) {
		t.Fatalf("offline metadata lost (%d bytes)", len(m))
	}
	// Another user's metadata is their own.
	must(t, s.Heartbeat(ctx, Heartbeat{User: bob, SessionID: sid1, Metadata: json.RawMessage(`{"b":true}`)}))
	if m := meta("bob"); !jsonEqual(m, []byte(`{"b":true}`)) {
		t.Fatalf("bob's metadata = %s", m)
	}
}

func testPresenceBatch(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, StatusBusy)))
	must(t, s.Heartbeat(ctx, hbeat(bob, sid1, "")))
	must(t, s.EndSession(ctx, "bob", sid1))

	ids := []string{"alice", "bob"}
	for i := len(ids); i < MaxBatch; i++ {
		ids = append(ids, fmt.Sprintf("ghost-%03d", i))
	}
	got, err := s.Presence(ctx, ids)
	must(t, err)
	if len(got) != MaxBatch {
		t.Fatalf("Presence of %d ids returned %d entries", MaxBatch, len(got))
	}
	for _, id := range ids[2:] {
		if p, ok := got[id]; !ok || p != nil {
			t.Fatalf("Presence[%s] = %v (present %v), want a nil entry", id, p, ok)
		}
	}
	if p := got["alice"]; p == nil || p.Status != StatusBusy || p.Profile != alice {
		t.Fatalf("Presence[alice] = %+v", p)
	}
	if p := got["bob"]; p == nil || p.Status != StatusOffline || p.LastSeen.IsZero() {
		t.Fatalf("Presence[bob] = %+v", p)
	}

	// Duplicates are fine.
	got, err = s.Presence(ctx, []string{"alice", "alice"})
	must(t, err)
	if len(got) != 1 || got["alice"] == nil {
		t.Fatalf("Presence of a duplicated id = %v", got)
	}

	for _, tc := range []struct {
		name string
		ids  []string
		want error
	}{
		{"101 ids", append(slices.Clone(ids), "one-more"), ErrTooManyUsers},
		{"nil", nil, ErrNoUsers},
		{"empty", []string{}, ErrNoUsers},
		{"bad id", []string{"alice", "not valid"}, ErrInvalidUserID},
		{"empty id", []string{""}, ErrInvalidUserID},
	} {
		got, err := s.Presence(ctx, tc.ids)
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Presence error = %v, want %v (an ErrInvalid)", tc.name, err, tc.want)
		}
		if got != nil {
			t.Errorf("%s: Presence returned %v with an error", tc.name, got)
		}
	}
}

func testInvalidInput(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	long := strings.Repeat("a", 129)
	withMeta := func(m string) Heartbeat {
		h := hbeat(alice, sid1, "")
		h.Metadata = json.RawMessage(m)
		return h
	}
	hb := func(id, sid string, st Status) Heartbeat {
		return Heartbeat{User: Profile{ID: id}, SessionID: sid, Status: st}
	}
	cases := []struct {
		name string
		call func() error
		want error
	}{
		{"heartbeat empty user", func() error { return s.Heartbeat(ctx, hb("", sid1, "")) }, ErrInvalidUserID},
		{"heartbeat user with space", func() error { return s.Heartbeat(ctx, hb("al ice", sid1, "")) }, ErrInvalidUserID},
		{"heartbeat user 129 chars", func() error { return s.Heartbeat(ctx, hb(long, sid1, "")) }, ErrInvalidUserID},
		{"heartbeat user non-ascii", func() error { return s.Heartbeat(ctx, hb("alicé", sid1, "")) }, ErrInvalidUserID},
		{"heartbeat user slash", func() error { return s.Heartbeat(ctx, hb("a/b", sid1, "")) }, ErrInvalidUserID},
		{"heartbeat empty session", func() error { return s.Heartbeat(ctx, hb("alice", "", "")) }, ErrInvalidSessionID},
		{"heartbeat session 7 chars", func() error { return s.Heartbeat(ctx, hb("alice", "1234567", "")) }, ErrInvalidSessionID},
		{"heartbeat session 65 chars", func() error { return s.Heartbeat(ctx, hb("alice", strings.Repeat("s", 65), "")) }, ErrInvalidSessionID},
		{"heartbeat session with dot", func() error { return s.Heartbeat(ctx, hb("alice", "sess.0001", "")) }, ErrInvalidSessionID},
		{"heartbeat status offline", func() error { return s.Heartbeat(ctx, hb("alice", sid1, StatusOffline)) }, ErrInvalidStatus},
		{"heartbeat status BUSY", func() error { return s.Heartbeat(ctx, hb("alice", sid1, "BUSY")) }, ErrInvalidStatus},
		{"heartbeat status idle", func() error { return s.Heartbeat(ctx, hb("alice", sid1, "idle")) }, ErrInvalidStatus},
		{"metadata array", func() error { return s.Heartbeat(ctx, withMeta(`[1,2]`)) }, ErrMetadataNotObject},
		{"metadata string", func() error { return s.Heartbeat(ctx, withMeta(`"s"`)) }, ErrMetadataNotObject},
		{"metadata null", func() error { return s.Heartbeat(ctx, withMeta(`null`)) }, ErrMetadataNotObject},
		{"metadata not json", func() error { return s.Heartbeat(ctx, withMeta(`{oops`)) }, ErrMetadataNotObject},
		{"metadata empty", func() error { return s.Heartbeat(ctx, withMeta(``)) }, ErrMetadataNotObject},
		{"metadata too large", func() error {
			return s.Heartbeat(ctx, withMeta(`{"x":"`+strings.Repeat("y", MaxMetadata-7)+`"}`))
		}, ErrMetadataTooLarge},
		{"join empty room", func() error { return s.Join(ctx, "", hbeat(alice, sid1, "")) }, ErrInvalidRoomID},
		{"join room with space", func() error { return s.Join(ctx, "a room", hbeat(alice, sid1, "")) }, ErrInvalidRoomID},
		{"join room 129 chars", func() error { return s.Join(ctx, long, hbeat(alice, sid1, "")) }, ErrInvalidRoomID},
		{"join bad session", func() error { return s.Join(ctx, "room", hb("alice", "short", "")) }, ErrInvalidSessionID},
		{"join bad status", func() error { return s.Join(ctx, "room", hb("alice", sid1, "gone")) }, ErrInvalidStatus},
		{"join bad metadata", func() error {
			h := hbeat(alice, sid1, "")
			h.Metadata = json.RawMessage(`[]`)
			return s.Join(ctx, "room", h)
		}, ErrMetadataNotObject},
		{"leave bad room", func() error { return s.Leave(ctx, "room#1", "alice", sid1) }, ErrInvalidRoomID},
		{"leave bad user", func() error { return s.Leave(ctx, "room", "", sid1) }, ErrInvalidUserID},
		{"leave bad session", func() error { return s.Leave(ctx, "room", "alice", "s") }, ErrInvalidSessionID},
		{"end bad user", func() error { return s.EndSession(ctx, "ali ce", sid1) }, ErrInvalidUserID},
		{"end bad session", func() error { return s.EndSession(ctx, "alice", "sess 0001") }, ErrInvalidSessionID},
		{"typing bad room", func() error { return s.SetTyping(ctx, "", alice, true) }, ErrInvalidRoomID},
		{"typing bad user", func() error { return s.SetTyping(ctx, "room", Profile{ID: "x y"}, true) }, ErrInvalidUserID},
		{"stop typing bad user", func() error { return s.SetTyping(ctx, "room", Profile{}, false) }, ErrInvalidUserID},
		{"members bad room", func() error { _, err := s.Members(ctx, long); return err }, ErrInvalidRoomID},
		{"join negative hold", func() error {
			h := hbeat(alice, sid1, "")
			h.Hold = -time.Second
			return s.Join(ctx, "room", h)
		}, ErrInvalidHold},
		{"detach bad room", func() error { return s.Detach(ctx, "", "alice", sid1, time.Second) }, ErrInvalidRoomID},
		{"detach bad user", func() error { return s.Detach(ctx, "room", "a b", sid1, time.Second) }, ErrInvalidUserID},
		{"detach bad session", func() error { return s.Detach(ctx, "room", "alice", "x", time.Second) }, ErrInvalidSessionID},
		{"typing read bad room", func() error { _, err := s.Typing(ctx, "<room>"); return err }, ErrInvalidRoomID},
	}
	for _, tc := range cases {
		err := tc.call()
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error = %v, want %v (an ErrInvalid)", tc.name, err, tc.want)
		}
	}

	// Nothing changed.
	noEvent(t, sub, quietWindow)
	got, err := s.Presence(ctx, []string{"alice", "al-ice"})
	must(t, err)
	if got["alice"] != nil {
		t.Fatalf("a rejected call created alice: %+v", got["alice"])
	}
	wantMembers(t, s, "room")
	wantTyping(t, s, "room")

	// The limits themselves are valid.
	id128 := strings.Repeat("Az09_.:@-", 14) + "zz"
	room128 := strings.Repeat("r", 128)
	if len(id128) != 128 {
		t.Fatalf("test bug: %d", len(id128))
	}
	must(t, s.Join(ctx, room128, hb(id128, "abcdEFG_", "")))
	must(t, s.Heartbeat(ctx, hb(id128, strings.Repeat("S-", 32), StatusAway)))
	wantMembers(t, s, room128, id128+":online")
	must(t, s.SetTyping(ctx, room128, Profile{ID: id128}, true))
	wantTyping(t, s, room128, Typist{ID: id128, Name: id128})
}

func testSlowSubscriber(t *testing.T, open opener) {
	const buffer = 4
	opts := stable()
	opts.FeedBuffer = buffer
	s := open(t, opts)
	ctx := context.Background()
	slow := mustSubscribe(t, s) // never read until the end
	fast := mustSubscribe(t, s)

	// Each event is read by fast before the next is caused, so fast never
	// lags; slow lags by one more each time.
	const n = 3 * buffer
	for i := range n {
		id := fmt.Sprintf("user-%02d", i)
		must(t, s.Heartbeat(ctx, hbeat(Profile{ID: id}, sid1, "")))
		expectStatus(t, fast, eventTimeout, id, StatusOffline, StatusOnline)
	}

	// slow got at most its buffer, in order, then was closed.
	var got []string
	timeout := time.After(eventTimeout)
drain:
	for {
		select {
		case e, ok := <-slow.C():
			if !ok {
				break drain
			}
			if e.Kind != EventResync {
				got = append(got, e.User.ID)
			}
		case <-timeout:
			t.Fatalf("slow subscriber not closed (got %v)", got)
		}
	}
	if !errors.Is(slow.Err(), ErrSlowSubscriber) {
		t.Fatalf("slow subscriber closed with %v, want ErrSlowSubscriber", slow.Err())
	}
	if len(got) > buffer {
		t.Fatalf("slow subscriber got %d events, more than its buffer of %d", len(got), buffer)
	}
	for i, id := range got {
		if want := fmt.Sprintf("user-%02d", i); id != want {
			t.Fatalf("slow subscriber got %v, not a prefix of the feed", got)
		}
	}

	// fast is unaffected, and a new subscription works.
	if err := fast.Err(); err != nil {
		t.Fatalf("fast subscriber: %v", err)
	}
	again := mustSubscribe(t, s)
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
	expectStatus(t, fast, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectStatus(t, again, eventTimeout, "alice", StatusOffline, StatusOnline)
}

func testSubscriptionContext(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()

	// A feed starts now: what happened before Subscribe was called is not
	// delivered (a backend whose events travel through a server must not
	// hand a new subscriber events still in flight from before).
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
	sub := mustSubscribe(t, s)
	must(t, s.Heartbeat(ctx, hbeat(bob, sid1, "")))
	expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusOnline)

	// Ending its context ends a subscription, with the context's error.
	cctx, cancel := context.WithCancel(ctx)
	csub, err := s.Subscribe(cctx)
	must(t, err)
	cancel()
	timeout := time.After(eventTimeout)
	for alive := true; alive; {
		select {
		case _, alive = <-csub.C():
		case <-timeout:
			t.Fatal("subscription not closed after its context ended")
		}
	}
	if !errors.Is(csub.Err(), context.Canceled) {
		t.Fatalf("Err = %v, want context.Canceled", csub.Err())
	}

	// Close ends one, and is idempotent.
	csub, err = s.Subscribe(ctx)
	must(t, err)
	csub.Close()
	csub.Close()
	if _, alive := <-csub.C(); alive {
		t.Fatal("closed subscription delivered an event")
	}
	// The others are unaffected.
	must(t, s.Heartbeat(ctx, hbeat(carol, sid1, "")))
	expectStatus(t, sub, eventTimeout, "carol", StatusOffline, StatusOnline)
}

func testClose(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, "")))
	sub := mustSubscribe(t, s)
	must(t, s.Close())

	timeout := time.After(eventTimeout)
	for alive := true; alive; {
		select {
		case _, alive = <-sub.C():
		case <-timeout:
			t.Fatal("subscription not closed by Close")
		}
	}
	if !errors.Is(sub.Err(), ErrClosed) {
		t.Fatalf("subscription closed with %v, want ErrClosed", sub.Err())
	}
	calls := map[string]func() error{
		"Heartbeat":  func() error { return s.Heartbeat(ctx, hbeat(alice, sid1, "")) },
		"Join":       func() error { return s.Join(ctx, "room", hbeat(alice, sid1, "")) },
		"Leave":      func() error { return s.Leave(ctx, "room", "alice", sid1) },
		"EndSession": func() error { return s.EndSession(ctx, "alice", sid1) },
		"SetTyping":  func() error { return s.SetTyping(ctx, "room", alice, true) },
		"Detach":     func() error { return s.Detach(ctx, "room", "alice", sid1, time.Second) },
		"RefreshStreams": func() error {
			_, err := s.RefreshStreams(ctx, []StreamRefresh{{User: alice, SessionID: sid1, Room: "room", Hold: time.Second}})
			return err
		},
		"Presence":  func() error { _, err := s.Presence(ctx, []string{"alice"}); return err },
		"Members":   func() error { _, err := s.Members(ctx, "room"); return err },
		"Typing":    func() error { _, err := s.Typing(ctx, "room"); return err },
		"Subscribe": func() error { _, err := s.Subscribe(ctx); return err },
		"Ready":     func() error { return s.Ready(ctx) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	_ = s.Close() // a second Close must not panic or hang
}

// testConcurrent hammers one store from many goroutines (run it with -race)
// and checks the final state and the feed against what the calls imply.
func testConcurrent(t *testing.T, open opener) {
	const (
		users  = 50
		rooms  = 5
		rounds = 20
	)
	opts := stable()
	opts.FeedBuffer = 1 << 16
	s := open(t, opts)
	ctx := context.Background()
	sub := mustSubscribe(t, s)

	profile := func(i int) Profile { return Profile{ID: fmt.Sprintf("user-%02d", i), Name: fmt.Sprintf("User %d", i)} }
	roomOf := func(i int) string { return fmt.Sprintf("room-%d", i%rooms) }

	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			p, room := profile(i), roomOf(i)
			check := func(what string, err error) bool {
				if err != nil {
					t.Errorf("%s %s: %v", p.ID, what, err)
					return false
				}
				return true
			}
			for r := range rounds {
				if !check("join", s.Join(ctx, room, hbeat(p, sid1, ""))) ||
					!check("heartbeat", s.Heartbeat(ctx, hbeat(p, sid2, StatusOnline))) ||
					!check("typing on", s.SetTyping(ctx, room, p, true)) {
					return
				}
				_, err := s.Members(ctx, room)
				check("members", err)
				_, err = s.Presence(ctx, []string{p.ID, profile((i + r) % users).ID})
				check("presence", err)
				_, err = s.Typing(ctx, room)
				check("typing read", err)
				if !check("typing off", s.SetTyping(ctx, room, p, false)) ||
					!check("leave", s.Leave(ctx, room, p.ID, sid1)) {
					return
				}
			}
			check("final join", s.Join(ctx, room, hbeat(p, sid1, "")))
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Final state.
	ids := make([]string, users)
	roomByUser := make(map[string]string, users)
	for i := range users {
		ids[i] = profile(i).ID
		roomByUser[ids[i]] = roomOf(i)
	}
	ps, err := s.Presence(ctx, ids)
	must(t, err)
	for _, id := range ids {
		if p := ps[id]; p == nil || p.Status != StatusOnline {
			t.Fatalf("Presence[%s] = %+v, want online", id, p)
		}
	}
	for r := range rooms {
		room := fmt.Sprintf("room-%d", r)
		ms := members(t, s, room)
		if len(ms) != users/rooms {
			t.Fatalf("%s has %d members, want %d", room, len(ms), users/rooms)
		}
		for _, m := range ms {
			if roomByUser[m.ID] != room || m.Status != StatusOnline {
				t.Fatalf("%s: unexpected member %+v", room, m)
			}
		}
		wantTyping(t, s, room)
	}

	// The feed: per user, exactly one status (offline→online) before
	// anything else of theirs, then joins and leaves alternating.
	wantJoins, wantLeaves, wantTypings := users*(rounds+1), users*rounds, users*rounds*2
	status := map[string]int{}
	inRoom := map[string]bool{}
	part := isPartitioned(s)
	key := func(e Event) string {
		if part {
			return e.User.ID + " " + e.Room
		}
		return e.User.ID
	}
	lastTyping := map[string][]Typist{}
	joins, leaves, typings := 0, 0, 0
	for joins < wantJoins || leaves < wantLeaves || typings < wantTypings || len(status) < users {
		e := nextEvent(t, sub, eventTimeout)
		switch e.Kind {
		case EventStatus:
			status[e.User.ID]++
			if status[e.User.ID] > 1 || e.From != StatusOffline || e.To != StatusOnline {
				t.Fatalf("extra or wrong status event: %s", fmtEvent(e))
			}
		case EventJoin:
			joins++
			// A partitioned backend orders a user's joins and leaves per
			// room, and not against their status.
			k := key(e)
			if (!part && status[e.User.ID] != 1) || inRoom[k] || e.To != StatusOnline {
				t.Fatalf("join out of order: %s", fmtEvent(e))
			}
			inRoom[k] = true
		case EventLeave:
			leaves++
			k := key(e)
			if !inRoom[k] || e.To != StatusOnline {
				t.Fatalf("leave out of order: %s", fmtEvent(e))
			}
			inRoom[k] = false
		case EventTyping:
			typings++
			lastTyping[e.Room] = e.Typing
		}
	}
	if joins != wantJoins || leaves != wantLeaves || typings != wantTypings {
		t.Fatalf("feed: %d joins, %d leaves, %d typing events; want %d, %d, %d", joins, leaves, typings, wantJoins, wantLeaves, wantTypings)
	}
	for room, ts := range lastTyping {
		if len(ts) != 0 {
			t.Fatalf("%s: last typing event says %v are typing", room, ts)
		}
	}
	noEvent(t, sub, quietWindow)
}

// testLimits: one user cannot grow without bound: a session past
// MaxSessionsPerUser and a room past MaxRoomsPerSession are refused before
// anything changes, while refreshing what exists keeps working.
func testLimits(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	for i := range MaxSessionsPerUser {
		must(t, s.Heartbeat(ctx, hbeat(alice, fmt.Sprintf("sess-%04d", i), "")))
	}
	sub := mustSubscribe(t, s)
	err := s.Heartbeat(ctx, hbeat(alice, "sess-extra", StatusBusy))
	if !errors.Is(err, ErrTooManySessions) || !errors.Is(err, ErrLimit) {
		t.Fatalf("session %d: err = %v, want ErrTooManySessions", MaxSessionsPerUser+1, err)
	}
	if err := s.Join(ctx, "lobby", hbeat(alice, "sess-extra", "")); !errors.Is(err, ErrTooManySessions) {
		t.Fatalf("join from a session past the limit: err = %v, want ErrTooManySessions", err)
	}
	must(t, s.Heartbeat(ctx, hbeat(alice, "sess-0000", StatusAway))) // an existing one still refreshes
	noEvent(t, sub, 300*time.Millisecond)                            // online stays the aggregate

	for i := range MaxRoomsPerSession {
		must(t, s.Join(ctx, fmt.Sprintf("room-%d", i), hbeat(bob, sid1, "")))
	}
	if err := s.Join(ctx, "one-too-many", hbeat(bob, sid1, "")); !errors.Is(err, ErrTooManyRooms) {
		t.Fatalf("room %d: err = %v, want ErrTooManyRooms", MaxRoomsPerSession+1, err)
	}
	must(t, s.Join(ctx, "room-0", hbeat(bob, sid1, ""))) // rejoining one it is in is fine
	if m, err := s.Members(ctx, "one-too-many"); err != nil || len(m) != 0 {
		t.Fatalf("refused room has members %v, %v", m, err)
	}
	// Another session of the same user may join it.
	must(t, s.Join(ctx, "one-too-many", hbeat(bob, sid2, "")))
}

// ---- stream-held memberships, tombstones, typing membership ----

// held is a heartbeat whose room membership is stream-held for hold.
func held(p Profile, sid string, hold time.Duration) Heartbeat {
	return Heartbeat{User: p, SessionID: sid, Hold: hold}
}

// keepAlive heartbeats the given sessions (no room) every 100 ms until the
// test ends: the session lives on while a membership's own deadline runs.
func keepAlive(t *testing.T, s Store, hbs ...Heartbeat) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			for _, hb := range hbs {
				if err := s.Heartbeat(ctx, hb); err != nil && ctx.Err() == nil {
					t.Errorf("keepAlive heartbeat: %v", err)
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
}

// refresh calls RefreshStreams and fails the test on a whole-call error or a
// result of the wrong length.
func refresh(t testing.TB, s Store, items ...StreamRefresh) []error {
	t.Helper()
	errs, err := s.RefreshStreams(context.Background(), items)
	if err != nil {
		t.Fatalf("RefreshStreams: %v", err)
	}
	if len(errs) != len(items) {
		t.Fatalf("RefreshStreams returned %d results for %d items", len(errs), len(items))
	}
	return errs
}

func mustRefresh(t testing.TB, s Store, items ...StreamRefresh) {
	t.Helper()
	for i, err := range refresh(t, s, items...) {
		if err != nil {
			t.Fatalf("RefreshStreams item %d (%s/%s in %q): %v", i, items[i].User.ID, items[i].SessionID, items[i].Room, err)
		}
	}
}

// Issue 9, bug 1: a membership held by a stream ends at its own deadline
// even while the session keeps heartbeating (the node that held the stream
// died and nobody called Leave). A permanent membership of another session,
// or one an API join made permanent, is unaffected.
func testHoldEndsWhileSessionHeartbeats(t *testing.T, open opener) {
	const hold = 2 * time.Second // the set-up must fit in it on a loaded machine
	s := open(t, stable())       // sessions live for minutes
	ctx := context.Background()
	sub := mustSubscribe(t, s)
	dave := Profile{ID: "dave"}

	// bob: permanent through sid2, held through sid1.
	must(t, s.Join(ctx, "room", hbeat(bob, sid2, "")))
	expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "bob", StatusOnline)
	must(t, s.Join(ctx, "room", held(bob, sid1, hold)))
	// carol: held, then made permanent by an API join of the same session.
	tick()
	must(t, s.Join(ctx, "room", held(carol, sid1, hold)))
	expectStatus(t, sub, eventTimeout, "carol", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "carol", StatusOnline)
	must(t, s.Join(ctx, "room", hbeat(carol, sid1, "")))
	// dave: permanent; a stream's held join of it does not make it held.
	tick()
	must(t, s.Join(ctx, "room", hbeat(dave, sid1, "")))
	expectStatus(t, sub, eventTimeout, "dave", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "dave", StatusOnline)
	must(t, s.Join(ctx, "room", held(dave, sid1, hold)))
	// alice: held, and the last deadline of all.
	tick()
	joined := during(func() { must(t, s.Join(ctx, "room", held(alice, sid1, hold))) })
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)

	keepAlive(t, s, hbeat(alice, sid1, ""), hbeat(bob, sid1, ""), hbeat(carol, sid1, ""), hbeat(dave, sid1, ""))

	// The first event after the joins is alice's leave, at her deadline:
	// bob's held membership ended before it silently (sid2 keeps him in).
	e := expectLeave(t, sub, expiryTimeout, "room", "alice", StatusOnline)
	if !joined.contains(e.Deadline, hold) {
		t.Fatalf("leave Deadline %v is not the join [%v, %v] + %v", e.Deadline, joined.from, joined.to, hold)
	}
	noEvent(t, sub, quietWindow)
	wantMembers(t, s, "room", "bob:online", "carol:online", "dave:online")
	wantPresence(t, s, "alice", StatusOnline) // the session lives on
	// bob's sid1 is out of the room: ending sid2 takes bob out.
	must(t, s.EndSession(ctx, "bob", sid2))
	expectLeave(t, sub, eventTimeout, "room", "bob", StatusOnline)
}

// A stream closing (Detach) ends its membership after the grace, on its
// own; a refresh of the same (session, room) within the grace cancels it; a
// permanent membership is not detachable; grace 0 ends it at once.
func testDetach(t *testing.T, open opener) {
	const grace = 2 * time.Second // bob's refresh must come within it on a loaded machine
	s := open(t, stable())
	ctx := context.Background()
	erin := Profile{ID: "erin"}
	for _, p := range []Profile{alice, bob, erin} {
		must(t, s.Join(ctx, "room", held(p, sid1, longTTL)))
		tick()
	}
	must(t, s.Join(ctx, "room", hbeat(carol, sid1, ""))) // permanent
	sub := mustSubscribe(t, s)

	// bob's stream closes first, then alice's; bob's comes straight back.
	must(t, s.Detach(ctx, "room", "bob", sid1, grace))
	detached := during(func() { must(t, s.Detach(ctx, "room", "alice", sid1, grace)) })
	mustRefresh(t, s, StreamRefresh{User: bob, SessionID: sid1, Room: "room", Hold: longTTL})
	must(t, s.Detach(ctx, "room", "carol", sid1, 0))
	// Detaching what does not exist is no error and no transition.
	must(t, s.Detach(ctx, "room", "nobody", sid1, grace))
	must(t, s.Detach(ctx, "other-room", "alice", sid1, grace))
	must(t, s.Detach(ctx, "room", "alice", sid2, grace))

	e := expectLeave(t, sub, expiryTimeout, "room", "alice", StatusOnline)
	if !detached.contains(e.Deadline, grace) {
		t.Fatalf("leave Deadline %v is not the detach [%v, %v] + %v", e.Deadline, detached.from, detached.to, grace)
	}
	noEvent(t, sub, quietWindow) // bob's cancelled detach was due before alice's
	wantMembers(t, s, "room", "bob:online", "erin:online", "carol:online")
	wantPresence(t, s, "alice", StatusOnline)

	// Grace 0: the held membership ends now.
	must(t, s.Detach(ctx, "room", "erin", sid1, 0))
	if e := expectLeave(t, sub, eventTimeout, "room", "erin", StatusOnline); e.Deadline.IsZero() {
		t.Fatalf("%s: a held membership's end carries its deadline", fmtEvent(e))
	}
	wantMembers(t, s, "room", "bob:online", "carol:online")
	noEvent(t, sub, quietWindow)
}

// Detach only ever moves a deadline earlier: a held membership already due
// sooner than the grace ends when it was due.
func testDetachNeverExtends(t *testing.T, open opener) {
	const hold = time.Second
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)
	joined := during(func() { must(t, s.Join(ctx, "room", held(alice, sid1, hold))) })
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
	must(t, s.Detach(ctx, "room", "alice", sid1, longTTL))
	e := expectLeave(t, sub, expiryTimeout, "room", "alice", StatusOnline)
	if !joined.contains(e.Deadline, hold) {
		t.Fatalf("leave Deadline %v is not the join [%v, %v] + %v", e.Deadline, joined.from, joined.to, hold)
	}
}

// Issue 9, bug 3: a stream's refresh (from a node that was frozen while the
// session was ended elsewhere) must not revive a session ended explicitly.
// The client itself (an explicit Heartbeat or Join) can.
func testRefreshStreamsRefusesEndedSession(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	sub := mustSubscribe(t, s)
	item := StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: longTTL}

	mustRefresh(t, s, item) // creates the session and the membership
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
	must(t, s.EndSession(ctx, "alice", sid1))
	expectLeave(t, sub, eventTimeout, "room", "alice", StatusOffline)
	expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusOffline, "room")

	for range 3 { // refused every time, and nothing changes
		if errs := refresh(t, s, item); !errors.Is(errs[0], ErrSessionEnded) {
			t.Fatalf("refresh of an ended session: %v, want ErrSessionEnded", errs[0])
		}
	}
	noSession := item
	noSession.Room = ""
	if errs := refresh(t, s, noSession); !errors.Is(errs[0], ErrSessionEnded) {
		t.Fatalf("room-less refresh of an ended session: %v, want ErrSessionEnded", errs[0])
	}
	noEvent(t, sub, quietWindow)
	wantPresence(t, s, "alice", StatusOffline)
	wantMembers(t, s, "room")

	// The tab comes back: an explicit heartbeat revives the session, and the
	// stream's refreshes work again.
	must(t, s.Heartbeat(ctx, hbeat(alice, sid1, StatusAway)))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusAway)
	mustRefresh(t, s, item)
	expectJoin(t, sub, "room", "alice", StatusAway)
	mustRefresh(t, s, item)
	noEvent(t, sub, quietWindow)

	// An explicit Join revives an ended session too.
	must(t, s.EndSession(ctx, "alice", sid1))
	expectLeave(t, sub, eventTimeout, "room", "alice", StatusOffline)
	expectStatus(t, sub, eventTimeout, "alice", StatusAway, StatusOffline, "room")
	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
	mustRefresh(t, s, item)

	// Ending a session that no longer exists (it expired while the stream's
	// node was frozen) still leaves its tombstone.
	must(t, s.EndSession(ctx, "bob", sid1))
	if errs := refresh(t, s, StreamRefresh{User: bob, SessionID: sid1, Room: "room", Hold: longTTL}); !errors.Is(errs[0], ErrSessionEnded) {
		t.Fatalf("refresh after ending a gone session: %v, want ErrSessionEnded", errs[0])
	}
	noEvent(t, sub, quietWindow)
	wantMembers(t, s, "room", "alice:online")
}

// A tombstone stands for Options.EndedRetention only.
func testEndedRetention(t *testing.T, open opener) {
	opts := stable()
	opts.EndedRetention = time.Second
	s := open(t, opts)
	ctx := context.Background()
	item := StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: longTTL}
	mustRefresh(t, s, item)
	must(t, s.EndSession(ctx, "alice", sid1))
	// Each refused attempt changes nothing; once the tombstone is gone the
	// refresh re-creates the session.
	eventually(t, expiryTimeout, "refresh accepted after EndedRetention", func() bool {
		errs := refresh(t, s, item)
		if errs[0] != nil && !errors.Is(errs[0], ErrSessionEnded) {
			t.Fatalf("refresh: %v", errs[0])
		}
		return errs[0] == nil
	})
	wantMembers(t, s, "room", "alice:online")
}

// Issue 9, bug 2: "ended" is a property of one session, never of a user.
// Ending user U's API session leaves U's open stream (another session)
// refreshing, and another user's session of the same id is unaffected.
func testEndingOneSessionSparesAnother(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	tab := StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: longTTL}
	mustRefresh(t, s, tab)
	must(t, s.Heartbeat(ctx, hbeat(alice, sid2, ""))) // the API session
	mustRefresh(t, s, StreamRefresh{User: bob, SessionID: sid2, Room: "room", Hold: longTTL})
	sub := mustSubscribe(t, s)

	must(t, s.EndSession(ctx, "alice", sid2))
	noEvent(t, sub, quietWindow) // sid1 keeps alice online and in the room
	mustRefresh(t, s, tab, StreamRefresh{User: bob, SessionID: sid2, Room: "room", Hold: longTTL})
	noEvent(t, sub, quietWindow)
	wantMembers(t, s, "room", "alice:online", "bob:online")
	wantPresence(t, s, "alice", StatusOnline)
	// Still refused for the ended session itself.
	if errs := refresh(t, s, StreamRefresh{User: alice, SessionID: sid2}); !errors.Is(errs[0], ErrSessionEnded) {
		t.Fatalf("refresh of the ended session: %v, want ErrSessionEnded", errs[0])
	}
}

// A session (and its membership) that vanished — expired here; lost with a
// Redis restart in the Redis-only tests — is re-created by the next refresh,
// with exactly the transitions of a first join; a refresh that changes
// nothing emits nothing.
func testRefreshStreamsRecreates(t *testing.T, open opener) {
	s := open(t, Options{TTL: 2 * time.Second, TypingTTL: longTTL, SweepInterval: 50 * time.Millisecond, LastSeenRetention: time.Hour})
	sub := mustSubscribe(t, s)
	item := StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: 10 * time.Second}

	mustRefresh(t, s, item)
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
	// Nobody refreshes: the session expires (the hold is longer: the
	// session's end takes the membership with it).
	e := expectLeave(t, sub, expiryTimeout, "room", "alice", StatusOffline)
	expiredAt(t, expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusOffline, "room"), e.Deadline)

	mustRefresh(t, s, item)
	explicit(t, expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline))
	explicit(t, expectJoin(t, sub, "room", "alice", StatusOnline))
	wantMembers(t, s, "room", "alice:online")
	mustRefresh(t, s, item)
	mustRefresh(t, s, StreamRefresh{User: alice, SessionID: sid1})
	noEvent(t, sub, 200*time.Millisecond) // well within the TTL just refreshed
}

// One call, many streams: per-item results in item order, each transition
// exactly once, and nothing on a second identical call.
func testRefreshStreamsBatch(t *testing.T, open opener) {
	const n = 40
	s := open(t, stable())
	ctx := context.Background()
	must(t, s.EndSession(ctx, "ended-user", sid1))
	sub := mustSubscribe(t, s)

	var items []StreamRefresh
	for i := range n {
		p := Profile{ID: fmt.Sprintf("user-%02d", i), Name: fmt.Sprintf("User %d", i)}
		room := ""
		if i%4 != 0 {
			room = fmt.Sprintf("room-%d", i%3)
		}
		items = append(items, StreamRefresh{User: p, SessionID: sid1, Room: room, Hold: longTTL})
	}
	bad := len(items)
	items = append(items,
		StreamRefresh{User: Profile{ID: "not valid"}, SessionID: sid1},
		StreamRefresh{User: alice, SessionID: "short"},
		StreamRefresh{User: alice, SessionID: sid1, Room: "bad room"},
		StreamRefresh{User: alice, SessionID: sid1, Room: "room", Hold: -time.Second},
		StreamRefresh{User: Profile{ID: "ended-user"}, SessionID: sid1, Room: "room", Hold: longTTL},
	)
	want := []error{ErrInvalidUserID, ErrInvalidSessionID, ErrInvalidRoomID, ErrInvalidHold, ErrSessionEnded}
	errs := refresh(t, s, items...)
	for i, err := range errs {
		if i < bad {
			if err != nil {
				t.Fatalf("item %d: %v", i, err)
			}
			continue
		}
		if !errors.Is(err, want[i-bad]) {
			t.Fatalf("item %d: %v, want %v", i, err, want[i-bad])
		}
	}
	status, joins := map[string]int{}, map[string]int{}
	for len(status) < n || len(joins) < n*3/4 {
		e := nextEvent(t, sub, eventTimeout)
		switch e.Kind {
		case EventStatus:
			status[e.User.ID]++
		case EventJoin:
			if status[e.User.ID] != 1 && !isPartitioned(s) {
				t.Fatalf("join before status: %s", fmtEvent(e))
			}
			joins[e.User.ID+" "+e.Room]++
		default:
			t.Fatalf("unexpected event: %s", fmtEvent(e))
		}
	}
	noEvent(t, sub, quietWindow)
	for k, c := range status {
		if c != 1 {
			t.Fatalf("%s: %d status events", k, c)
		}
	}
	for k, c := range joins {
		if c != 1 {
			t.Fatalf("%s: %d join events", k, c)
		}
	}
	mustRefresh(t, s, items[:bad]...)
	noEvent(t, sub, quietWindow)
	if ms := members(t, s, "room-1"); len(ms) != 10 {
		t.Fatalf("room-1 has %d members, want 10", len(ms))
	}
	if errs, err := s.RefreshStreams(ctx, nil); err != nil || len(errs) != 0 {
		t.Fatalf("empty RefreshStreams = %v, %v", errs, err)
	}
}

// Issue 11: only a member of a room may start typing in it; stopping always
// succeeds.
func testTypingOnlyForMembers(t *testing.T, open opener) {
	s := open(t, stable())
	ctx := context.Background()
	must(t, s.Join(ctx, "other-room", hbeat(alice, sid1, "")))
	sub := mustSubscribe(t, s)

	notMember := func(what string) {
		t.Helper()
		err := s.SetTyping(ctx, "room", alice, true)
		if !errors.Is(err, ErrNotMember) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrLimit) {
			t.Fatalf("%s: SetTyping = %v, want ErrNotMember (and not ErrInvalid/ErrLimit)", what, err)
		}
	}
	notMember("member of another room")
	if err := s.SetTyping(ctx, "room", bob, true); !errors.Is(err, ErrNotMember) {
		t.Fatalf("unknown user: SetTyping = %v, want ErrNotMember", err)
	}
	must(t, s.SetTyping(ctx, "room", alice, false)) // stopping is always fine
	noEvent(t, sub, quietWindow)
	wantTyping(t, s, "room")
	wantMembers(t, s, "room")

	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	expectJoin(t, sub, "room", "alice", StatusOnline)
	must(t, s.SetTyping(ctx, "room", alice, true))
	expectTyping(t, sub, eventTimeout, "room", typist(alice))

	must(t, s.Leave(ctx, "room", "alice", sid1))
	expectTyping(t, sub, eventTimeout, "room")
	expectLeave(t, sub, eventTimeout, "room", "alice", StatusOnline)
	notMember("after leaving")

	// A held membership counts while it lasts.
	must(t, s.Join(ctx, "room", held(alice, sid2, 2*time.Second)))
	expectJoin(t, sub, "room", "alice", StatusOnline)
	must(t, s.SetTyping(ctx, "room", alice, true))
	expectTyping(t, sub, eventTimeout, "room", typist(alice))
	expectTyping(t, sub, expiryTimeout, "room") // the hold ends: typing cleared, then the leave
	expectLeave(t, sub, eventTimeout, "room", "alice", StatusOnline)
	notMember("after the hold ended")
	noEvent(t, sub, quietWindow)
}
