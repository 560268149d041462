package store

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

// openRedis returns a store on srv with a key prefix of its own, closed when
// the test ends.
func openRedis(t testing.TB, srv *redistest.Server, opts Options) *RedisStore {
	t.Helper()
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = redistest.Prefix(t)
	}
	s, err := NewRedis(context.Background(), srv.URL, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("NewRedis: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestRedisConformance(t *testing.T) {
	srv := redistest.Start(t)
	runConformance(t, func(t *testing.T, opts Options) Store { return openRedis(t, srv, opts) })
}

// The suite again on a server that refuses FUNCTION: the scripts run as
// EVALSHA, as on Redis 6.2 (redis_functions.go).
func TestRedisConformanceEvalsha(t *testing.T) {
	srv := redistest.StartWith(t, "--rename-command", "FUNCTION", "")
	runConformance(t, func(t *testing.T, opts Options) Store {
		s := openRedis(t, srv, opts)
		if s.functions {
			t.Fatal("the store loaded the FUNCTION library on a server without FUNCTION")
		}
		return s
	})
}

func quick() Options {
	return Options{TTL: time.Second, TypingTTL: time.Second, SweepInterval: 50 * time.Millisecond}
}

func isOffline(id string) func(Event) bool {
	return func(e Event) bool { return e.Kind == EventStatus && e.User.ID == id && e.To == StatusOffline }
}

// Two gateway nodes on one Redis both sweep and both get the keyspace event
// for the same expiry; the transition is made once, so each node's feed
// carries exactly one offline event.
func TestRedisTwoNodesOneOfflineEvent(t *testing.T) {
	srv := redistest.Start(t)
	opts := quick()
	opts.KeyPrefix = redistest.Prefix(t)
	a, b := openRedis(t, srv, opts), openRedis(t, srv, opts)
	subA, subB := mustSubscribe(t, a), mustSubscribe(t, b)

	ctx := context.Background()
	for i := range 20 {
		uid := fmt.Sprintf("user%d", i)
		if err := a.Join(ctx, "lobby", Heartbeat{User: Profile{ID: uid}, SessionID: "session-" + uid}); err != nil {
			t.Fatal(err)
		}
	}
	for name, sub := range map[string]*Subscription{"A": subA, "B": subB} {
		offline := map[string]int{}
		leaves := 0
		deadline := time.After(10 * time.Second)
	collect:
		for {
			select {
			case e, ok := <-sub.C():
				if !ok {
					t.Fatalf("node %s: feed closed: %v", name, sub.Err())
				}
				if e.Kind == EventStatus && e.To == StatusOffline {
					offline[e.User.ID]++
				}
				if e.Kind == EventLeave {
					leaves++
				}
			case <-deadline:
				break collect
			}
			if len(offline) == 20 {
				// Give a duplicate time to show up.
				deadline = time.After(time.Second)
			}
		}
		if len(offline) != 20 || leaves != 20 {
			t.Fatalf("node %s: %d users offline, %d leaves; want 20 and 20", name, len(offline), leaves)
		}
		for uid, n := range offline {
			if n != 1 {
				t.Errorf("node %s: %s went offline %d times", name, uid, n)
			}
		}
	}
}

// Pub/sub is fire and forget: a session that expires while a node's
// subscription is down must still produce its offline event on that node
// once it resubscribes (no ghosts).
func TestRedisOfflineEventSurvivesPubSubKill(t *testing.T) {
	srv := redistest.Start(t)
	s := openRedis(t, srv, quick())
	sub := mustSubscribe(t, s)
	ctx := context.Background()
	waitReady(t, s)

	if err := s.Join(ctx, "lobby", Heartbeat{User: Profile{ID: "ghost"}, SessionID: "session-ghost"}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, sub, 5*time.Second, func(e Event) bool { return e.Kind == EventJoin })
	// Kill the pub/sub connection repeatedly across the expiry deadline so the
	// offline event is published while this node is not listening.
	stop := time.Now().Add(1500 * time.Millisecond)
	killed := 0
	for time.Now().Before(stop) {
		reply := srv.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
		if strings.HasPrefix(reply, ":") && reply != ":0" {
			killed++
		}
		time.Sleep(20 * time.Millisecond)
	}
	if killed == 0 {
		t.Fatal("no pub/sub connection was killed")
	}
	e := waitEvent(t, sub, 10*time.Second, isOffline("ghost"))
	if len(e.Rooms) != 1 || e.Rooms[0] != "lobby" {
		t.Fatalf("offline event rooms = %v, want [lobby]", e.Rooms)
	}
	m, err := s.Members(ctx, "lobby")
	if err != nil || len(m) != 0 {
		t.Fatalf("members after expiry = %v, %v; want none", m, err)
	}
	t.Logf("pub/sub connections killed: %d", killed)
}

// With CONFIG refused (as on many managed Redis services) the store starts,
// says what to configure, and sessions still expire through the sweeper.
func TestRedisWithoutKeyspaceNotifications(t *testing.T) {
	srv := redistest.StartWith(t, "--rename-command", "CONFIG", "")
	s := openRedis(t, srv, quick())
	sub := mustSubscribe(t, s)
	ctx := context.Background()
	if err := s.Heartbeat(ctx, Heartbeat{User: Profile{ID: "carol"}, SessionID: "session-carol"}); err != nil {
		t.Fatal(err)
	}
	waitEvent(t, sub, 10*time.Second, isOffline("carol"))
}

// The keyspace notification path alone (sweeper practically off) expires
// sessions: the store enabled notify-keyspace-events itself.
func TestRedisExpiryThroughKeyspaceEvents(t *testing.T) {
	srv := redistest.Start(t)
	opts := quick()
	opts.SweepInterval = time.Hour
	s := openRedis(t, srv, opts)
	if got := srv.Do(t, "CONFIG", "GET", "notify-keyspace-events"); got == "" {
		t.Fatal("no reply to CONFIG GET")
	}
	sub := mustSubscribe(t, s)
	waitReady(t, s)
	ctx := context.Background()
	if err := s.Join(ctx, "room1", Heartbeat{User: Profile{ID: "dave"}, SessionID: "session-dave"}); err != nil {
		t.Fatal(err)
	}
	// Redis expires keys lazily; with a handful of keys its active cycle
	// finds them within a second or so.
	e := waitEvent(t, sub, 15*time.Second, isOffline("dave"))
	if e.Deadline.IsZero() {
		t.Fatal("expiry event without a deadline")
	}
}

// 50,000 live sessions, 1,000 of which stop heartbeating: every one of the
// 1,000 offline events arrives, none of the others goes offline. The bound
// is generous on purpose; BenchmarkExpiryLateness measures the distribution.
func TestRedisBatchExpiryAmongManySessions(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: 50,000 sessions")
	}
	srv := redistest.Start(t)
	s := openRedis(t, srv, Options{TTL: time.Hour, SweepInterval: 100 * time.Millisecond, FeedBuffer: 100000})
	ctx := context.Background()
	const live, expiring = 49000, 1000
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < live; i += 16 {
				uid := fmt.Sprintf("live%d", i)
				if err := s.Heartbeat(ctx, Heartbeat{User: Profile{ID: uid}, SessionID: "session-" + uid}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	sub := mustSubscribe(t, s)
	start := time.Now()
	for i := range expiring {
		uid := fmt.Sprintf("gone%d", i)
		hb := Heartbeat{User: Profile{ID: uid}, SessionID: "session-" + uid, TTL: 2 * time.Second}
		if err := s.Join(ctx, "batch", hb); err != nil {
			t.Fatal(err)
		}
	}
	offline := map[string]bool{}
	var worst time.Duration
	deadline := time.After(time.Until(start.Add(2*time.Second)) + 20*time.Second)
	for len(offline) < expiring {
		select {
		case e, ok := <-sub.C():
			if !ok {
				t.Fatalf("feed closed: %v", sub.Err())
			}
			if e.Kind == EventStatus && e.To == StatusOffline {
				if !strings.HasPrefix(e.User.ID, "gone") {
					t.Fatalf("%s went offline but kept heartbeating", e.User.ID)
				}
				offline[e.User.ID] = true
				worst = max(worst, e.At.Sub(e.Deadline))
			}
		case <-deadline:
			t.Fatalf("%d of %d offline events arrived", len(offline), expiring)
		}
	}
	if m, err := s.Members(ctx, "batch"); err != nil || len(m) != 0 {
		t.Fatalf("room not pruned: %d members, %v", len(m), err)
	}
	t.Logf("1,000 expiries among 50,000 sessions: worst lateness %v", worst)
}

func waitReady(t testing.TB, s Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := s.Ready(context.Background())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store not ready: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func init() {
	benchOpeners["redis"] = func(b *testing.B, opts Options) Store {
		return openRedis(b, redistest.Start(b), opts)
	}
}
