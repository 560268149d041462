package store

// Heartbeat and Join go through the node's coalescer (redis_coalesce.go):
// these check, on a real redis-server, that concurrent calls are sent
// together, that each caller gets its own outcome, that a caller giving up
// while queued sends nothing, and that a flushed script cache recovers.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/store/redistest"
)

// gatedCoalescer replaces s's coalescer with one that sends one round trip
// at a time and whose first round trip waits for the returned release, and
// counts the commands each round trip carried.
func gatedCoalescer(s *RedisStore) (release func(), sizes func() []int) {
	gate := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var got []int
	var first atomic.Bool
	s.batch = newCoalescer(func() redis.Pipeliner {
		if first.CompareAndSwap(false, true) {
			<-gate
		}
		return &countingPipe{Pipeliner: s.client.Pipeline(), done: func(n int) {
			mu.Lock()
			got = append(got, n)
			mu.Unlock()
		}}
	}, 1, coalesceMaxBatch)
	return func() { once.Do(func() { close(gate) }) }, func() []int {
		mu.Lock()
		defer mu.Unlock()
		return append([]int(nil), got...)
	}
}

// countingPipe reports how many commands it carried when executed.
type countingPipe struct {
	redis.Pipeliner
	done func(int)
}

func (p *countingPipe) Exec(ctx context.Context) ([]redis.Cmder, error) {
	p.done(p.Len())
	return p.Pipeliner.Exec(ctx)
}

// bothModes runs test against a Redis 7 server (the scripts run as the
// FUNCTION library) and against one that refuses FUNCTION (EVALSHA, as on
// Redis 6.2), whose calls go in different shapes.
func bothModes(t *testing.T, test func(t *testing.T, srv *redistest.Server, functions bool)) {
	t.Run("functions", func(t *testing.T) { test(t, redistest.Start(t), true) })
	t.Run("evalsha", func(t *testing.T) {
		test(t, redistest.StartWith(t, "--rename-command", "FUNCTION", ""), false)
	})
}

// openMode opens a store on srv and checks it runs the scripts as expected.
func openMode(t *testing.T, srv *redistest.Server, functions bool) *RedisStore {
	t.Helper()
	s := openRedis(t, srv, Options{TTL: longTTL, SweepInterval: time.Hour})
	if s.functions != functions {
		t.Fatalf("store uses the FUNCTION library: %v, want %v", s.functions, functions)
	}
	return s
}

// waitQueued polls until n calls wait in c's queue (not yet sent).
func waitQueued(t *testing.T, c *coalescer, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		queued := 0
		for _, call := range c.queue {
			if !call.gone {
				queued++
			}
		}
		running := c.running
		c.mu.Unlock()
		if queued == n && running == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d calls queued (want %d), %d senders", queued, n, running)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRedisCoalescedHeartbeats(t *testing.T) { bothModes(t, testCoalescedHeartbeats) }

func testCoalescedHeartbeats(t *testing.T, srv *redistest.Server, functions bool) {
	ctx := context.Background()
	s := openMode(t, srv, functions)
	// A user already at the session limit: one more session is refused.
	full := Profile{ID: "full", Name: "Full"}
	for i := range MaxSessionsPerUser {
		must(t, s.Heartbeat(ctx, Heartbeat{User: full, SessionID: fmt.Sprintf("sess-%04d", i)}))
	}
	// Users with a session already (their heartbeat takes the fast path)
	// and users without (the fast path misses, the full heartbeat runs).
	const n = 40
	for i := range n / 2 {
		must(t, s.Join(ctx, "room-1", Heartbeat{User: Profile{ID: fmt.Sprintf("u%03d", i)}, SessionID: sid1}))
	}

	first := Profile{ID: "first"}
	must(t, s.Heartbeat(ctx, Heartbeat{User: first, SessionID: sid1}))

	release, sizes := gatedCoalescer(s)
	// The first call (a fast refresh) holds the only round trip; the others queue behind it.
	firstDone := make(chan error, 1)
	go func() { firstDone <- s.Heartbeat(ctx, Heartbeat{User: first, SessionID: sid1}) }()
	waitQueued(t, s.batch, 0)
	errs := make([]error, n+1)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Join(ctx, "room-1", Heartbeat{User: Profile{ID: fmt.Sprintf("u%03d", i), Name: "New name"},
				SessionID: sid1, Status: StatusOnline})
		})
	}
	wg.Go(func() {
		errs[n] = s.Heartbeat(ctx, Heartbeat{User: full, SessionID: "sess-extra"})
	})
	waitQueued(t, s.batch, n+1)
	release()
	wg.Wait()
	must(t, <-firstDone)
	for i, err := range errs[:n] {
		if err != nil {
			t.Errorf("join of u%03d: %v", i, err)
		}
	}
	if !errors.Is(errs[n], ErrTooManySessions) {
		t.Errorf("heartbeat over the session limit: %v, want ErrTooManySessions", errs[n])
	}
	got := sizes()
	if functions {
		// The first call's round trip, then all n+1 calls in the next, as
		// refresh_many calls of up to heartbeatChunk items (the fast path
		// and the full heartbeat in one).
		if want := []int{1, (n + heartbeatChunk) / heartbeatChunk}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("commands per round trip: %v, want %v", got, want)
		}
	} else {
		// The first call's, then all n+1 fast tries in one (as one
		// refresh_fast.lua call), then the misses' full heartbeats (the new
		// users' and the full user's, one command each), in as many round
		// trips as it took their callers to queue them.
		rest := 0
		for _, k := range got[min(2, len(got)):] {
			rest += k
		}
		if len(got) < 3 || got[0] != 1 || got[1] != 1 || rest != n/2+1 {
			t.Errorf("commands per round trip: %v, want 1, 1, then %d in all", got, n/2+1)
		}
	}
	pres, err := s.Presence(ctx, []string{"u000", "u039", "first"})
	must(t, err)
	for id, p := range pres {
		if p == nil || p.Status != StatusOnline {
			t.Errorf("%s: %+v, want online", id, p)
		}
	}
	if p := pres["u039"]; p != nil && p.Name != "New name" {
		t.Errorf("u039's name: %q, want the heartbeat's", p.Name)
	}
	wantMembersCount(t, s, "room-1", n)
}

func wantMembersCount(t *testing.T, s Store, room string, n int) {
	t.Helper()
	m, err := s.Members(context.Background(), room)
	must(t, err)
	if len(m) != n {
		t.Errorf("%s has %d members, want %d", room, len(m), n)
	}
}

func TestRedisCoalescedCancelWhileQueued(t *testing.T) { bothModes(t, testCoalescedCancelWhileQueued) }

func testCoalescedCancelWhileQueued(t *testing.T, srv *redistest.Server, functions bool) {
	ctx := context.Background()
	s := openMode(t, srv, functions)
	release, sizes := gatedCoalescer(s)
	defer release()
	firstDone := make(chan error, 1)
	go func() { firstDone <- s.Heartbeat(ctx, Heartbeat{User: bob, SessionID: sid1}) }()
	waitQueued(t, s.batch, 0)

	cctx, cancel := context.WithCancel(ctx)
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- s.Join(cctx, "room-1", Heartbeat{User: alice, SessionID: sid1}) }()
	waitQueued(t, s.batch, 1)
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Fatalf("join cancelled while queued: %v, want context.Canceled", err)
	}
	waitQueued(t, s.batch, 0)
	release()
	must(t, <-firstDone)
	// An already cancelled ctx is refused before queueing.
	if err := s.Heartbeat(cctx, Heartbeat{User: carol, SessionID: sid1}); !errors.Is(err, context.Canceled) {
		t.Fatalf("heartbeat with a cancelled ctx: %v", err)
	}
	pres, err := s.Presence(ctx, []string{"alice", "bob", "carol"})
	must(t, err)
	if pres["alice"] != nil || pres["carol"] != nil {
		t.Errorf("a cancelled call was applied: alice %+v, carol %+v", pres["alice"], pres["carol"])
	}
	if pres["bob"] == nil || pres["bob"].Status != StatusOnline {
		t.Errorf("bob: %+v, want online", pres["bob"])
	}
	wantMembersCount(t, s, "room-1", 0)
	// bob's call (with EVALSHA: its fast try, then its full heartbeat);
	// alice's never went out.
	want := []int{1, 1}
	if functions {
		want = []int{1}
	}
	if got := sizes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("commands per round trip: %v, want %v", got, want)
	}
}

// The scripts lost (SCRIPT FLUSH; FUNCTION FLUSH, as a restart would):
// every call's first try fails, the scripts are loaded again and the call
// sent again.
func TestRedisCoalescedScriptFlush(t *testing.T) { bothModes(t, testCoalescedScriptFlush) }

func testCoalescedScriptFlush(t *testing.T, srv *redistest.Server, functions bool) {
	ctx := context.Background()
	s := openMode(t, srv, functions)
	const n = 30
	for i := range n / 2 {
		must(t, s.Heartbeat(ctx, Heartbeat{User: Profile{ID: fmt.Sprintf("u%03d", i)}, SessionID: sid1}))
	}
	srv.Do(t, "SCRIPT", "FLUSH")
	if functions {
		srv.Do(t, "FUNCTION", "FLUSH")
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Heartbeat(ctx, Heartbeat{User: Profile{ID: fmt.Sprintf("u%03d", i)}, SessionID: sid1, Status: StatusAway})
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("heartbeat of u%03d after SCRIPT FLUSH: %v", i, err)
		}
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%03d", i)
	}
	pres, err := s.Presence(ctx, ids)
	must(t, err)
	for id, p := range pres {
		if p == nil || p.Status != StatusAway {
			t.Errorf("%s: %+v, want away", id, p)
		}
	}
}

// More fast refreshes than one round trip or one script call carries: they
// go out in round trips of coalesceMaxBatch calls, each as merged script
// calls, and every one is applied.
func TestRedisCoalescedManyFastTries(t *testing.T) { bothModes(t, testCoalescedManyFastTries) }

func testCoalescedManyFastTries(t *testing.T, srv *redistest.Server, functions bool) {
	ctx := context.Background()
	s := openMode(t, srv, functions)
	const n = 2*coalesceMaxBatch + 44
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%04d", i)
		must(t, s.Heartbeat(ctx, Heartbeat{User: Profile{ID: ids[i]}, SessionID: sid1}))
	}
	before := presenceOfAll(t, s, ids)
	first := Profile{ID: "first"}
	must(t, s.Heartbeat(ctx, Heartbeat{User: first, SessionID: sid1}))
	time.Sleep(5 * time.Millisecond) // so that lastSeen moves

	release, sizes := gatedCoalescer(s)
	firstDone := make(chan error, 1)
	go func() { firstDone <- s.Heartbeat(ctx, Heartbeat{User: first, SessionID: sid1}) }()
	waitQueued(t, s.batch, 0)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = s.Heartbeat(ctx, Heartbeat{User: Profile{ID: ids[i], Name: "Renamed"}, SessionID: sid1})
		})
	}
	waitQueued(t, s.batch, n)
	release()
	wg.Wait()
	must(t, <-firstDone)
	for i, err := range errs {
		if err != nil {
			t.Errorf("heartbeat of %s: %v", ids[i], err)
		}
	}
	chunk := refreshChunk // refresh_fast.lua calls
	if functions {
		chunk = heartbeatChunk // refresh_many calls
	}
	perTrip := func(calls int) int { return (calls + chunk - 1) / chunk }
	want := []int{1, perTrip(coalesceMaxBatch), perTrip(coalesceMaxBatch), perTrip(n - 2*coalesceMaxBatch)}
	if got := sizes(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("commands per round trip: %v, want %v", got, want)
	}
	after := presenceOfAll(t, s, ids)
	for _, id := range ids {
		b, a := before[id], after[id]
		if a == nil || a.Name != "Renamed" || !a.LastSeen.After(b.LastSeen) {
			t.Errorf("%s after the coalesced heartbeat: %+v (before: %+v)", id, a, b)
		}
	}
}

// presenceOfAll reads Presence in requests of at most 100 ids.
func presenceOfAll(t *testing.T, s Store, ids []string) map[string]*Presence {
	t.Helper()
	out := map[string]*Presence{}
	for from := 0; from < len(ids); from += 100 {
		p, err := s.Presence(context.Background(), ids[from:min(len(ids), from+100)])
		must(t, err)
		for id, v := range p {
			out[id] = v
		}
	}
	return out
}
