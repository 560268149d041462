package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
	"github.com/redis/go-redis/v9"
)

func openCluster(t testing.TB, c *redistest.Cluster, opts Options) *ClusterStore {
	t.Helper()
	if opts.KeyPrefix == "" {
		opts.KeyPrefix = redistest.Prefix(t)
	}
	s, err := NewCluster(context.Background(), c.URL(), opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// The whole contract on a 3-primary Redis Cluster: every script call must
// keep to one slot (a cross-slot call fails there with CROSSSLOT).
func TestClusterConformance(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	runConformance(t, func(t *testing.T, opts Options) Store { return openCluster(t, c, opts) })
}

// The same on the EVALSHA path (a cluster whose FUNCTION LOAD is refused).
func TestClusterConformanceEvalsha(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	clusterEvalOnly.Store(true)
	t.Cleanup(func() { clusterEvalOnly.Store(false) }) // after the parallel subtests
	runConformance(t, func(t *testing.T, opts Options) Store {
		s := openCluster(t, c, opts)
		if s.functions.Load() {
			t.Fatal("the FUNCTION library is in use")
		}
		return s
	})
}

// A primary that loses the library (FUNCTION FLUSH: as after a restart
// without persistence) is served at once with the scripts' bodies and gets
// the library again.
func TestClusterFunctionsFlushed(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	s := openCluster(t, c, stable())
	if !s.functions.Load() {
		t.Fatal("the FUNCTION library is not in use on Redis 7")
	}
	sub := mustSubscribe(t, s)
	ctx := context.Background()
	for _, m := range c.Primaries(t) {
		c.DoOn(t, m, "FUNCTION", "FLUSH")
	}
	must(t, s.Join(ctx, "room", hbeat(alice, sid1, "")))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	expectJoin(t, sub, "room", "alice", StatusOnline)
	eventually(t, eventTimeout, "the library loaded again on every primary", func() bool {
		for _, m := range c.Primaries(t) {
			if !strings.Contains(c.DoOn(t, m, "FUNCTION", "LIST"), "presenced_cluster_") {
				return false
			}
		}
		return true
	})
}

// The partitions' slots are spread over the shards: with 3 primaries of
// equal slot ranges each holds its share within ±20 %.
func TestClusterPartitionsSpread(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	parts := newPartitions("presenced:", ClusterPartitions)
	per := map[string]int{}
	for _, p := range parts {
		if got := redistest.Slot(p.key("log")); got != p.slot {
			t.Fatalf("partition %d: key slot %d, want %d", p.index, got, p.slot)
		}
		per[c.PrimaryOf(t, p.slot).Addr]++
	}
	mean := float64(len(parts)) / float64(len(c.Primaries(t)))
	for addr, n := range per {
		if float64(n) < 0.8*mean || float64(n) > 1.2*mean {
			t.Errorf("primary %s holds %d of %d partitions (mean %.1f)", addr, n, len(parts), mean)
		}
	}
	if len(per) != 3 {
		t.Errorf("partitions on %d primaries, want 3: %v", len(per), per)
	}
	// --redis-url picks the backend by its scheme (cmd/presenced's OpenRedis).
	st, err := OpenRedis(context.Background(), c.URL(), Options{KeyPrefix: redistest.Prefix(t)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("OpenRedis(%s): %v", c.URL(), err)
	}
	if _, ok := st.(*ClusterStore); !ok {
		t.Errorf("OpenRedis(%s) = %T, want *ClusterStore", c.URL(), st)
	}
	_ = st.Close()
	// Users and rooms spread over the partitions too.
	hits := make([]int, len(parts))
	for i := range 1600 {
		hits[partOf(parts, fmt.Sprintf("user-%d", i)).index]++
	}
	for i, n := range hits {
		if n < 60 || n > 140 {
			t.Errorf("partition %d holds %d of 1,600 users", i, n)
		}
	}
}

func TestClusterURL(t *testing.T) {
	o, err := parseClusterURL("redis+cluster://u:p@h1:7000?addr=h2:7001&addr=h3:7002&dial_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(o.Addrs, ",") != "h1:7000,h2:7001,h3:7002" || o.Username != "u" || o.Password != "p" ||
		o.DialTimeout != 3*time.Second {
		t.Fatalf("parsed %+v", o)
	}
	if o, err := parseClusterURL("rediss+cluster://h1:7000"); err != nil || o.TLSConfig == nil {
		t.Fatalf("rediss+cluster: %+v, %v", o, err)
	}
	for _, bad := range []string{"redis://h1:7000", "redis+cluster://h1:7000?nonsense=1"} {
		if _, err := parseClusterURL(bad); err == nil {
			t.Errorf("parseClusterURL(%q) accepted", bad)
		}
	}
	if !IsClusterURL("redis+cluster://h:1") || IsClusterURL("redis://h:1") || IsClusterURL("redis+sentinel://h:1/m") {
		t.Error("IsClusterURL")
	}
	if _, err := NewCluster(context.Background(), "redis+cluster://127.0.0.1:1", Options{KeyPrefix: "a{b}:"}, nil); err == nil {
		t.Error("NewCluster accepted a key prefix with a hash tag")
	}
}

// clusterLive is the state the cluster tests hold: users kept alive by a
// keeper on node a (stream-held memberships of room "lobby"), one user
// whose heartbeats stop, and one who ends their session.
type clusterLive struct {
	a, b  *ClusterStore
	live  []string
	stop  func()
	start time.Time
}

func startLive(t *testing.T, c *redistest.Cluster, opts Options) *clusterLive {
	a, b := openCluster(t, c, opts), openCluster(t, c, opts)
	waitReady(t, a)
	waitReady(t, b)
	ctx := context.Background()
	var items []StreamRefresh
	l := &clusterLive{a: a, b: b}
	for i := range 12 {
		uid := fmt.Sprintf("live%d", i)
		l.live = append(l.live, uid)
		items = append(items, StreamRefresh{User: Profile{ID: uid}, SessionID: "session-" + uid, Room: "lobby", Hold: opts.TTL})
	}
	mustRefresh(t, a, items...)
	l.stop = keeper(t, a, items, opts.TTL/3)
	t.Cleanup(l.stop)
	must(t, b.Join(ctx, "lobby", Heartbeat{User: Profile{ID: "gone"}, SessionID: "session-gone"}))
	must(t, b.Join(ctx, "lobby", Heartbeat{User: Profile{ID: "ended"}, SessionID: "session-ended"}))
	must(t, b.EndSession(ctx, "ended", "session-ended"))
	l.start = time.Now()
	return l
}

func (l *clusterLive) truth(s Store) bool { return showsTruth(s, l.live, "gone", "ended") }

// settles waits for both nodes to show the truth, then checks it stays
// true for longer than a TTL (the keeper's refreshes keep the live users;
// the others never come back).
func (l *clusterLive) settles(t *testing.T, ttl time.Duration, what string) {
	t.Helper()
	eventually(t, 30*time.Second, what+": node a shows the truth", func() bool { return l.truth(l.a) })
	eventually(t, 30*time.Second, what+": node b shows the truth", func() bool { return l.truth(l.b) })
	t.Logf("%s: state true on both nodes %v after the start", what, time.Since(l.start).Round(time.Millisecond))
	until := time.Now().Add(ttl + time.Second)
	for time.Now().Before(until) {
		if !l.truth(l.a) || !l.truth(l.b) {
			t.Fatalf("%s: state diverged from the truth after it had settled", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A partition's slot is resharded to another primary while sessions live
// in it: calls keep working (go-redis follows ASK and MOVED), the nodes'
// subscriptions follow the slot to its new owner (the shard ends them with
// sunsubscribe), and expiry and events go on.
func TestClusterReshardWhileLive(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	opts := Options{TTL: 2 * time.Second, SweepInterval: 50 * time.Millisecond, KeyPrefix: redistest.Prefix(t)}
	l := startLive(t, c, opts)
	sub := mustSubscribe(t, l.b)
	parts := l.a.parts
	lobby := partOf(parts, "lobby")
	gone := partOf(parts, "gone")
	for _, p := range []*partition{lobby, gone} {
		from := c.PrimaryOf(t, p.slot)
		var to *redistest.Server
		for _, m := range c.Primaries(t) {
			if m != from {
				to = m
				break
			}
		}
		c.MoveSlot(t, p.slot, to)
		if got := c.PrimaryOf(t, p.slot); got != to {
			t.Fatalf("slot %d owned by %s after the move, want %s", p.slot, got.Addr, to.Addr)
		}
	}
	// gone's session expires in its moved partition; the lobby's leave too.
	waitAll(t, sub, expiryTimeout, isOffline("gone"), func(e Event) bool {
		return e.Kind == EventLeave && e.Room == "lobby" && e.User.ID == "gone"
	})
	l.settles(t, opts.TTL, "after resharding")
	// New events of the moved partitions reach a subscription opened
	// before the move.
	ctx := context.Background()
	must(t, l.a.Join(ctx, "lobby", Heartbeat{User: Profile{ID: "newcomer"}, SessionID: "session-newcomer", TTL: time.Minute}))
	waitEvent(t, sub, eventTimeout, func(e Event) bool {
		return e.Kind == EventJoin && e.Room == "lobby" && e.User.ID == "newcomer"
	})
}

// A primary is killed (SIGKILL) and its replica promoted: writes not yet
// replicated may be lost. Every node notices (resync), the keeper's
// refreshes rebuild the live users' state on the new primary, and no one
// who is gone shows online past the TTL.
func TestClusterPrimaryKilled(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{Replicas: 1})
	opts := Options{TTL: 2 * time.Second, SweepInterval: 50 * time.Millisecond, KeyPrefix: redistest.Prefix(t)}
	l := startLive(t, c, opts)
	subA, subB := mustSubscribe(t, l.a), mustSubscribe(t, l.b)
	start := time.Now()
	c.KillPrimaryOf(t, partOf(l.a.parts, "lobby").slot)
	promoted := time.Since(start)
	waitResync(t, subA, 20*time.Second)
	waitResync(t, subB, 20*time.Second)
	t.Logf("replica promoted %v, both nodes resynced %v after the kill", promoted.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	l.settles(t, opts.TTL, "after the failover")
	// The new primary runs the scripts and has expiry notifications on.
	ctx := context.Background()
	must(t, l.a.Join(ctx, "lobby", Heartbeat{User: Profile{ID: "late"}, SessionID: "session-late", TTL: time.Second}))
	waitEvent(t, subB, expiryTimeout, isOffline("late"))
}

// A planned failover (CLUSTER FAILOVER on a replica): the old primary stays
// up as a replica. Every node notices the new primary, resyncs, and goes on
// with the promoted one: state stays true, events keep coming.
func TestClusterPlannedFailover(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{Replicas: 1})
	opts := Options{TTL: 2 * time.Second, SweepInterval: 50 * time.Millisecond, KeyPrefix: redistest.Prefix(t)}
	l := startLive(t, c, opts)
	subA, subB := mustSubscribe(t, l.a), mustSubscribe(t, l.b)
	lobby := partOf(l.a.parts, "lobby")
	// A user in the same partition, so that the user's and the room's calls
	// both go to the promoted primary. (One failover only: a second one of
	// the same shard would promote the old primary back, with its run_id and
	// all the data: nothing to resync.)
	late := ""
	for i := 0; late == ""; i++ {
		if id := fmt.Sprintf("late-%d", i); partOf(l.a.parts, id) == lobby {
			late = id
		}
	}
	c.FailoverPrimaryOf(t, lobby.slot)
	waitResync(t, subA, 20*time.Second)
	waitResync(t, subB, 20*time.Second)
	l.settles(t, opts.TTL, "after a planned failover")
	ctx := context.Background()
	must(t, l.a.Join(ctx, "lobby", Heartbeat{User: Profile{ID: late}, SessionID: "session-late", TTL: time.Second}))
	waitAll(t, subB, expiryTimeout, isOffline(late), func(e Event) bool {
		return e.Kind == EventLeave && e.Room == "lobby" && e.User.ID == late
	})
}

// CLIENT KILL TYPE pubsub on one shard drops every node's subscriptions of
// the partitions it owns: go-redis reconnects them, and what was published
// meanwhile comes from each partition's log, so no event is lost.
func TestClusterPubSubKilledOnOneShard(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	s := openCluster(t, c, quick())
	waitReady(t, s)
	sub := mustSubscribe(t, s)
	ctx := context.Background()
	shard := c.PrimaryOf(t, partOf(s.parts, "alice").slot)
	for range 5 {
		c.DoOn(t, shard, "CLIENT", "KILL", "TYPE", "pubsub")
		must(t, s.Heartbeat(ctx, Heartbeat{User: alice, SessionID: sid1, TTL: time.Minute}))
		expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
		c.DoOn(t, shard, "CLIENT", "KILL", "TYPE", "pubsub")
		must(t, s.EndSession(ctx, "alice", sid1))
		expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusOffline)
	}
	// Expiry across kills: the session's deadline passes while the
	// subscriptions are being dropped.
	must(t, s.Heartbeat(ctx, Heartbeat{User: alice, SessionID: sid2, TTL: time.Second}))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	for range 5 {
		c.DoOn(t, shard, "CLIENT", "KILL", "TYPE", "pubsub")
		time.Sleep(100 * time.Millisecond)
	}
	waitEvent(t, sub, expiryTimeout, isOffline("alice"))
	waitReady(t, s)
}

// waitAll waits until an event has matched each of matches, in any order
// (events of different partitions are not ordered).
func waitAll(t testing.TB, sub *Subscription, timeout time.Duration, matches ...func(Event) bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	left := append([]func(Event) bool(nil), matches...)
	for len(left) > 0 {
		e := nextEvent(t, sub, max(time.Until(end), time.Millisecond))
		for i, m := range left {
			if m(e) {
				left = append(left[:i], left[i+1:]...)
				break
			}
		}
	}
}

// go-redis logs every failed redial of a killed node; the tests kill nodes
// on purpose.
func init() { redis.SetLogger(discardRedisLog{}) }

type discardRedisLog struct{}

func (discardRedisLog) Printf(context.Context, string, ...any) {}

// Concurrent Heartbeat and Join calls on one node go out in shared batches
// (cluster_coalesce.go), and each caller still gets its own outcome: of
// MaxSessionsPerUser+8 new sessions of one user made at once, exactly
// MaxSessionsPerUser are created and the others refused; other users' calls
// in the same batches all succeed; a call whose context is already over is
// not sent.
func TestClusterConcurrentCallsCoalesced(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	s := openCluster(t, c, stable())
	ctx := context.Background()
	const extra = 8
	errs := make(chan error, MaxSessionsPerUser+extra)
	others := make(chan error, 64)
	var wg sync.WaitGroup
	for i := range MaxSessionsPerUser + extra {
		wg.Add(2)
		go func() {
			defer wg.Done()
			errs <- s.Heartbeat(ctx, Heartbeat{User: alice, SessionID: fmt.Sprintf("session-%03d", i)})
		}()
		go func() {
			defer wg.Done()
			others <- s.Join(ctx, fmt.Sprintf("room-%d", i%5), Heartbeat{User: Profile{ID: fmt.Sprintf("user-%d", i)}, SessionID: sid1})
		}()
	}
	wg.Wait()
	close(errs)
	close(others)
	ok, refused := 0, 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, ErrTooManySessions):
			refused++
		default:
			t.Fatalf("Heartbeat: %v", err)
		}
	}
	if ok != MaxSessionsPerUser || refused != extra {
		t.Fatalf("%d sessions created, %d refused; want %d and %d", ok, refused, MaxSessionsPerUser, extra)
	}
	for err := range others {
		must(t, err)
	}
	total := 0
	for r := range 5 {
		total += len(members(t, s, fmt.Sprintf("room-%d", r)))
	}
	if total != MaxSessionsPerUser+extra {
		t.Fatalf("%d members in the rooms, want %d", total, MaxSessionsPerUser+extra)
	}
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Heartbeat(done, hbeat(bob, sid1, "")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Heartbeat with a cancelled context: %v", err)
	}
	if p := presenceOf(t, s, "bob"); p != nil {
		t.Fatalf("a cancelled heartbeat was applied: %+v", p)
	}
}

// A partition subscription that go-redis re-made after a dropped
// connection but that the shard refused (here: the user lost its channel
// permission just then) is dead while its connection still answers PING.
// The node's probes through the channel stop coming back, so it subscribes
// afresh once it may, and the events published meanwhile come from the log.
func TestClusterSilentlyRefusedSubscriptionHeals(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	for _, n := range c.Nodes {
		c.DoOn(t, n, "ACL", "SETUSER", "gw", "on", ">gw-password", "~*", "&*", "+@all")
	}
	url := strings.Replace(c.URL(), "redis+cluster://", "redis+cluster://gw:gw-password@", 1)
	s, err := NewCluster(context.Background(), url, Options{TTL: time.Minute, SweepInterval: 50 * time.Millisecond,
		KeyPrefix: redistest.Prefix(t)}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	waitReady(t, s)
	sub := mustSubscribe(t, s)
	shard := c.PrimaryOf(t, partOf(s.parts, "alice").slot)
	// Without channel permission the shard drops the subscribed
	// connections; go-redis redials and its SSUBSCRIBE is refused.
	c.DoOn(t, shard, "ACL", "SETUSER", "gw", "resetchannels")
	time.Sleep(500 * time.Millisecond)
	c.DoOn(t, shard, "ACL", "SETUSER", "gw", "allchannels")
	ctx := context.Background()
	eventually(t, eventTimeout, "alice's heartbeat accepted", func() bool {
		return s.Heartbeat(ctx, hbeat(alice, sid1, "")) == nil
	})
	expectStatus(t, sub, 20*time.Second, "alice", StatusOffline, StatusOnline)
}

// The log is the truth and the channel its fast path: an event in a
// partition's log that no channel message brought (here written to the log
// alone; in a failover, published on a node the subscription no longer
// hears) reaches the feed by the partition's periodic log read.
func TestClusterLogReadWithoutChannel(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	s := openCluster(t, c, stable())
	waitReady(t, s)
	sub := mustSubscribe(t, s)
	must(t, s.Heartbeat(context.Background(), hbeat(bob, sid1, ""))) // the subscription is live
	expectStatus(t, sub, eventTimeout, "bob", StatusOffline, StatusOnline)
	p := partOf(s.parts, "alice")
	payload := fmt.Sprintf(`{"k":"status","u":"alice","n":"Alice","a":"","from":"offline","to":"online","rooms":"","at":%d}`,
		time.Now().UnixMilli())
	c.Do(t, "XADD", p.key("log"), "*", "e", payload)
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
}

// An event that did not come through the channel (here: written to the log
// alone), followed by one that did: the channel's message names the entry
// before it, which this node never saw, so the node reads the gap from the
// log at once and delivers both in order. Without that the second one's id
// became the node's last and the first was never delivered: the cluster
// soak's members missing on one node for 40–50 s after a killed primary,
// whose subscription sat on the restarted old primary that the partition's
// messages reached only part of the time.
func TestClusterChannelGapReadFromLog(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{})
	s := openCluster(t, c, stable())
	waitReady(t, s)
	sub := mustSubscribe(t, s)
	ctx := context.Background()
	p := partOf(s.parts, "alice")
	// A user of alice's partition, so that both events are in one log.
	other := ""
	for i := 0; other == ""; i++ {
		if id := fmt.Sprintf("carol-%d", i); partOf(s.parts, id) == p {
			other = id
		}
	}
	must(t, s.Heartbeat(ctx, hbeat(Profile{ID: other}, sid1, ""))) // the subscription is live
	expectStatus(t, sub, eventTimeout, other, StatusOffline, StatusOnline)
	payload := fmt.Sprintf(`{"k":"status","u":"alice","n":"Alice","a":"","from":"offline","to":"online","rooms":"","at":%d}`,
		time.Now().UnixMilli())
	c.Do(t, "XADD", p.key("log"), "*", "e", payload)
	must(t, s.EndSession(ctx, other, sid1))
	// In order. (Without the gap read, alice's entry came first only if the
	// once-a-second log read ran in the milliseconds between the two.)
	first := waitEvent(t, sub, eventTimeout, func(e Event) bool { return e.Kind == EventStatus })
	if first.User.ID != "alice" || first.To != StatusOnline {
		t.Fatalf("first event after the gap: %+v, want alice online (the entry the channel did not bring)", first)
	}
	expectStatus(t, sub, eventTimeout, other, StatusOnline, StatusOffline)
}
