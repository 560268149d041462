package store

import (
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

// After a planned failover every node's subscription of a partition is on
// the slot's new primary, none left on the old one (now a replica), and the
// partition's events reach every node through it. The subscriptions are
// pinned to a node (followOnce): this checks that pinning still follows the
// primary. (Here they move even without the store's own check, the slot
// map and ROLE on every health tick, which is for a node that keeps them,
// as a killed primary restarting with a stale nodes.conf did in the
// cluster soak.)
func TestClusterSubscriptionsFollowThePrimary(t *testing.T) {
	c := redistest.StartCluster(t, redistest.ClusterConfig{Replicas: 1})
	opts := Options{TTL: 2 * time.Second, SweepInterval: 50 * time.Millisecond, KeyPrefix: redistest.Prefix(t)}
	a, b := openCluster(t, c, opts), openCluster(t, c, opts)
	waitReady(t, a)
	waitReady(t, b)
	p := partOf(a.parts, "lobby")
	old := c.PrimaryOf(t, p.slot)
	subs := func(s *redistest.Server) string {
		// "channel:count", flattened by DoAll.
		r := c.DoOn(t, s, "PUBSUB", "SHARDNUMSUB", p.channel)
		return r[strings.LastIndexByte(r, ':')+1:]
	}
	eventually(t, 10*time.Second, "both nodes subscribed on the primary", func() bool { return subs(old) == "2" })
	promoted := c.FailoverPrimaryOf(t, p.slot)
	eventually(t, 30*time.Second, "both nodes' subscriptions moved to the promoted primary", func() bool {
		return subs(promoted) == "2" && subs(old) == "0"
	})
	// And the partition's events reach both through them.
	sa, sb := mustSubscribe(t, a), mustSubscribe(t, b)
	must(t, a.Heartbeat(t.Context(), Heartbeat{User: Profile{ID: "lobby"}, SessionID: "session-lobby", TTL: time.Minute}))
	expectStatus(t, sa, eventTimeout, "lobby", StatusOffline, StatusOnline)
	expectStatus(t, sb, eventTimeout, "lobby", StatusOffline, StatusOnline)
}
