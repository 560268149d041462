//go:build soak

package nodetest

// The soak's Redis Cluster backend (SOAK_BACKEND=cluster): the three nodes use
// --redis-url redis+cluster://… to 3 primaries with one replica each
// (redistest.StartCluster). Its faults, taken in turn after the node
// faults: a primary killed with SIGKILL (its replica promoted by the
// cluster; the killed node restarted empty, rejoining as the new
// primary's replica), CLIENT KILL TYPE pubsub on one shard's primary (the
// node's sharded subscriptions there), and a slot with keys moved to
// another primary while the soak runs (ASK redirections, then MOVED).

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

func clusterBackend(t *testing.T) *soakBackend {
	c := redistest.StartCluster(t, redistest.ClusterConfig{Primaries: 3, Replicas: 1})
	rng := rand.New(rand.NewPCG(42, 4))
	addrs := c.Seeds() // every server, replicas too
	return &soakBackend{
		inspect: inspectCluster(addrs),
		desc:    "Redis Cluster (3 primaries + 3 replicas, cluster-node-timeout 1 s)", url: c.URL(),
		kinds: []string{"cluster-primary-kill9", "client-kill-pubsub-shard", "slot-move"},
		apply: func(sk *soak, kind string, f *fault) {
			switch kind {
			case "cluster-primary-kill9":
				slot := rng.IntN(redistest.Slots)
				// The promoted replica may lack the shard's last writes.
				w := sk.o.openLoss(f.at.Add(-lossMargin))
				killed := c.KillPrimaryOf(t, slot)
				at := time.Now()
				f.target, f.settled = killed.Addr, at
				heir := c.PrimaryOf(t, slot)
				killed.Restart(t)
				c.Settle(t)
				back := time.Now()
				sk.o.closeLoss(w, at.Add(switchMargin))
				f.note = fmt.Sprintf("primary of slot %d killed; %s promoted, cluster converged after %.1fs; the killed node back as a replica after %.1fs",
					slot, heir.Addr, at.Sub(f.at).Seconds(), back.Sub(f.at).Seconds())
			case "client-kill-pubsub-shard":
				ps := c.Primaries(t)
				p := ps[rng.IntN(len(ps))]
				f.target = p.Addr
				f.note = p.DoAll(t, "CLIENT", "KILL", "TYPE", "pubsub") + " pub/sub connections killed on this shard"
			case "slot-move":
				// A slot that holds keys: the slot of a random key of a
				// random primary.
				ps := c.Primaries(t)
				from := ps[rng.IntN(len(ps))]
				slot := rng.IntN(redistest.Slots)
				if key := from.DoAll(t, "RANDOMKEY"); key != "" {
					slot, _ = strconv.Atoi(from.DoAll(t, "CLUSTER", "KEYSLOT", key))
				}
				from = c.PrimaryOf(t, slot)
				var to *redistest.Server
				for to == nil || to == from {
					to = ps[rng.IntN(len(ps))]
				}
				keys := from.DoAll(t, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot))
				c.MoveSlot(t, slot, to)
				f.target, f.settled = from.Addr, time.Now()
				f.note = fmt.Sprintf("slot %d (%s keys) moved to %s in %.1fs", slot, keys, to.Addr, f.settled.Sub(f.at).Seconds())
			default:
				t.Fatalf("cluster backend: unknown fault %q", kind)
			}
		},
	}
}
