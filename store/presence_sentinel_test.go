package store

// Redis Sentinel: the conformance suite on a primary found through three
// sentinels, and failovers while sessions live (issue 13). Real
// redis-server and redis-sentinel processes (store/redistest).

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

func openURL(t testing.TB, url string, opts Options) *RedisStore {
	t.Helper()
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = redistest.Prefix(t)
	}
	s, err := NewRedis(context.Background(), url, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("NewRedis(%s): %v", url, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestSentinelConformance(t *testing.T) {
	d := redistest.StartSentinel(t)
	runConformance(t, func(t *testing.T, opts Options) Store { return openURL(t, d.URL, opts) })
}

func TestParseSentinelURL(t *testing.T) {
	fo, err := parseSentinelURL("u:p%40ss@h1:26379,[::1]:26380/main/3?sentinel_password=sp")
	if err != nil {
		t.Fatal(err)
	}
	if fo.Username != "u" || fo.Password != "p@ss" || fo.MasterName != "main" || fo.DB != 3 ||
		fo.SentinelPassword != "sp" || len(fo.SentinelAddrs) != 2 || fo.SentinelAddrs[1] != "[::1]:26380" {
		t.Fatalf("parsed %+v", fo)
	}
	fo, err = parseSentinelURL(":secret@h1:26379/mymaster")
	if err != nil || fo.Password != "secret" || fo.Username != "" || fo.DB != 0 || fo.MasterName != "mymaster" {
		t.Fatalf("parsed %+v, %v", fo, err)
	}
	for _, bad := range []string{
		"h1:26379", "h1:26379/", "h1/mymaster", "h1:x/mymaster", ":1/mymaster", "h1:26379,/mymaster",
		"h1:26379/mymaster/x", "h1:26379/mymaster/0/extra", "h1:26379/mymaster?foo=1", "h1:99999/m",
	} {
		if _, err := parseSentinelURL(bad); err == nil {
			t.Errorf("parseSentinelURL(%q) accepted", bad)
		}
	}
	if _, err := NewRedis(context.Background(), "redis+sentinel://h1:26379", Options{}, nil); err == nil {
		t.Error("NewRedis accepted a sentinel url without a master name")
	}
}

// keeper plays a node's stream layer: it refreshes its streams every
// interval and at once after a resync (as the hub does), so that state lost
// in a failover is re-created.
func keeper(t *testing.T, s Store, items []StreamRefresh, every time.Duration) (stop func()) {
	sub := mustSubscribe(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-sub.C():
				if !ok {
					// Closed as a slow subscriber: only refreshes matter here.
					sub = mustSubscribe(t, s)
					continue
				}
				if e.Kind != EventResync {
					continue
				}
			case <-tick.C:
			}
			// Errors while the primary is switching are expected: the next
			// tick retries.
			_, _ = s.RefreshStreams(ctx, items)
		}
	}()
	return func() { cancel(); wg.Wait() }
}

// failoverCheck runs the failover scenario: live users held by a keeper on
// node a, one user who stops heartbeating, one who ends their session; then
// fail() moves the primary. Every node announces a resync, and the state
// settles to the truth: the live users online and in the room, the others
// offline. It logs how long each step took.
func failoverCheck(t *testing.T, d *redistest.Sentinel, fail func()) {
	opts := Options{TTL: 2 * time.Second, SweepInterval: 50 * time.Millisecond, KeyPrefix: redistest.Prefix(t)}
	a, b := openURL(t, d.URL, opts), openURL(t, d.URL, opts)
	waitReady(t, a)
	waitReady(t, b)
	ctx := context.Background()
	var items []StreamRefresh
	var live []string
	for i := range 5 {
		uid := fmt.Sprintf("live%d", i)
		live = append(live, uid)
		items = append(items, StreamRefresh{User: Profile{ID: uid}, SessionID: "session-" + uid, Room: "lobby", Hold: opts.TTL})
	}
	mustRefresh(t, a, items...)
	stop := keeper(t, a, items, opts.TTL/3)
	defer stop()
	must(t, b.Join(ctx, "lobby", Heartbeat{User: Profile{ID: "gone"}, SessionID: "session-gone"}))
	must(t, b.Join(ctx, "lobby", Heartbeat{User: Profile{ID: "ended"}, SessionID: "session-ended"}))
	subA, subB := mustSubscribe(t, a), mustSubscribe(t, b)
	must(t, b.EndSession(ctx, "ended", "session-ended"))
	lastGone := time.Now()

	old := d.MasterAddr(t)
	start := time.Now()
	fail()
	eventually(t, 30*time.Second, "sentinels promote the replica", func() bool { return d.MasterAddr(t) != old })
	promoted := time.Since(start)
	waitResync(t, subA, 20*time.Second)
	waitResync(t, subB, 20*time.Second)
	resynced := time.Since(start)

	truth := func(s Store) bool { return showsTruth(s, live, "gone", "ended") }
	eventually(t, 30*time.Second, "state settles on node a", func() bool { return truth(a) })
	eventually(t, 30*time.Second, "state settles on node b", func() bool { return truth(b) })
	settled := time.Since(start)
	t.Logf("after the failover began: primary promoted %v, both nodes resynced %v, state true %v (gone's deadline: %v)",
		promoted.Round(time.Millisecond), resynced.Round(time.Millisecond), settled.Round(time.Millisecond),
		lastGone.Add(opts.TTL).Sub(start).Round(time.Millisecond))

	// And it stays true: the keeper's refreshes on the new primary keep the
	// live users online for longer than a TTL; the others never come back.
	until := time.Now().Add(opts.TTL + time.Second)
	for time.Now().Before(until) {
		if !truth(a) || !truth(b) {
			t.Fatal("state diverged from the truth after it had settled")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The new primary has expiry notifications on and runs the scripts.
	must(t, a.Heartbeat(ctx, Heartbeat{User: Profile{ID: "late"}, SessionID: "session-late", TTL: time.Second}))
	waitEvent(t, subB, expiryTimeout, isOffline("late"))
}

// showsTruth reports whether s shows exactly the live users online and in
// room "lobby", and the gone ones offline.
func showsTruth(s Store, live []string, gone ...string) bool {
	ctx := context.Background()
	p, err := s.Presence(ctx, append(slices.Clone(gone), live...))
	if err != nil {
		return false
	}
	for _, uid := range live {
		if p[uid] == nil || p[uid].Status != StatusOnline {
			return false
		}
	}
	for _, uid := range gone {
		if p[uid] != nil && p[uid].Status != StatusOffline {
			return false
		}
	}
	m, err := s.Members(ctx, "lobby")
	return err == nil && len(m) == len(live)
}

// A planned failover (SENTINEL FAILOVER): the replica is promoted with the
// data set; every node notices the new run_id and resyncs.
func TestSentinelFailover(t *testing.T) {
	d := redistest.StartSentinel(t)
	failoverCheck(t, d, func() {
		if r := d.Sentinels[0].Do(t, "SENTINEL", "FAILOVER", redistest.SentinelMaster); r != "+OK" {
			t.Fatalf("SENTINEL FAILOVER: %s", r)
		}
	})
}

// The primary crashes (SIGKILL): the sentinels agree it is down, elect a
// leader and promote the replica; writes not yet replicated may be lost.
func TestSentinelPrimaryKilled(t *testing.T) {
	d := redistest.StartSentinel(t)
	failoverCheck(t, d, d.Primary.Kill)
}

// A failover whose old primary stays up and is never demoted (the
// sentinels cannot reach it with REPLICAOF: renamed away here, as across a
// partition): go-redis's failover client moves its command connections to
// the new primary but not the pub/sub one. The node must still hear the new
// primary's events: it resubscribes on the state loss it sees.
func TestSentinelFailoverOldPrimaryStaysUp(t *testing.T) {
	noDemote := []string{"--rename-command", "REPLICAOF", "", "--rename-command", "SLAVEOF", ""}
	d := redistest.StartSentinelArgs(t, noDemote, nil)
	opts := Options{TTL: 2 * time.Second, SweepInterval: 50 * time.Millisecond, KeyPrefix: redistest.Prefix(t)}
	a, b := openURL(t, d.URL, opts), openURL(t, d.URL, opts)
	waitReady(t, a)
	waitReady(t, b)
	sub := mustSubscribe(t, a)
	old := d.MasterAddr(t)
	if r := d.Sentinels[0].Do(t, "SENTINEL", "FAILOVER", redistest.SentinelMaster); r != "+OK" {
		t.Fatalf("SENTINEL FAILOVER: %s", r)
	}
	eventually(t, 30*time.Second, "sentinels promote the replica", func() bool { return d.MasterAddr(t) != old })
	waitResync(t, sub, 20*time.Second)
	// The old primary is still a primary, with nobody writing to it.
	if role := d.Primary.DoAll(t, "ROLE"); !strings.HasPrefix(role, "master") {
		t.Fatalf("the old primary was demoted after all (ROLE %s): the test shows nothing", role)
	}
	ctx := context.Background()
	must(t, b.Heartbeat(ctx, Heartbeat{User: Profile{ID: "after"}, SessionID: "session-after"}))
	waitEvent(t, sub, 20*time.Second, func(e Event) bool { return e.Kind == EventStatus && e.User.ID == "after" && e.To == StatusOnline })
}
