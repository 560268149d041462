package store

import (
	"hash/fnv"
	"strconv"

	"github.com/presenced/presenced/internal/redisslot"
)

// ClusterPartitions is how many partitions a ClusterStore spreads users,
// rooms, deadline indexes, event logs and channels over. Each partition is
// one hash slot, and the partitions' slots are spread evenly over the slot
// space, so a cluster whose shards own contiguous, equal slot ranges (what
// redis-cli --cluster create makes) gets an even share on every shard: 16
// over 3 shards is 5/6/5. Every node of a deployment must use the same
// number: it is part of the key layout.
const ClusterPartitions = 16

// partition is one of a ClusterStore's partitions: its keys share the
// hash tag of prefix.
type partition struct {
	index   int
	prefix  string // P{tag}
	channel string // P{tag}events: the partition's shard channel
	slot    int
}

// newPartitions places the partitions: partition i gets the first tag
// "pi.k" (k = 0, 1, …) whose slot falls in the middle half of the i-th of n
// equal slot ranges, so that partitions stay spread however the cluster
// splits its slots into contiguous ranges. Deterministic: every node
// computes the same tags.
func newPartitions(prefix string, n int) []partition {
	parts := make([]partition, n)
	width := redisslot.Slots / n
	for i := range parts {
		lo, hi := i*width+width/4, i*width+3*width/4
		for k := 0; ; k++ {
			tag := "p" + strconv.Itoa(i) + "." + strconv.Itoa(k)
			if slot := redisslot.Of(tag); slot >= lo && slot < hi {
				p := prefix + "{" + tag + "}"
				parts[i] = partition{index: i, prefix: p, channel: p + "events", slot: slot}
				break
			}
		}
	}
	return parts
}

// partOf is the partition of a user or room id.
func partOf(parts []partition, id string) *partition {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return &parts[h.Sum32()%uint32(len(parts))]
}

func (p *partition) key(what string) string { return p.prefix + what }

// The key layout is store/lua/cluster/lib.lua's.
func (p *partition) user(uid, what string) string  { return p.prefix + "u/" + uid + "/" + what }
func (p *partition) room(room, what string) string { return p.prefix + "r/" + room + "/" + what }
