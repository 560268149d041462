//go:build soak

package nodetest

// What the cluster's servers hold of a divergence's user, for the soak's
// divergences file: the user's (or room's) partition's recent events about
// the user and the user's sessions. The key layout is the cluster store's
// (store/lua/cluster/lib.lua, store/cluster_partitions.go), computed here
// again on purpose: the soak reads the servers as an outsider would.

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/internal/redisslot"
	"github.com/presenced/presenced/store"
)

// clusterPrefix is the partition prefix P{tag} of a user or room id with
// the default key prefix.
func clusterPrefix(id string) string {
	const prefix, n = "presence:", store.ClusterPartitions
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	i := int(h.Sum32() % uint32(n))
	width := redisslot.Slots / n
	lo, hi := i*width+width/4, i*width+3*width/4
	for k := 0; ; k++ {
		tag := "p" + strconv.Itoa(i) + "." + strconv.Itoa(k)
		if slot := redisslot.Of(tag); slot >= lo && slot < hi {
			return prefix + "{" + tag + "}"
		}
	}
}

func inspectCluster(addrs []string) func(sk *soak, key string) string {
	rc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	each := make([]*redis.Client, len(addrs))
	for i, a := range addrs {
		each[i] = redis.NewClient(&redis.Options{Addr: a})
	}
	return func(sk *soak, key string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		secs := func(ms int64) string {
			return fmt.Sprintf("%.2f", time.UnixMilli(ms).Sub(sk.started).Seconds())
		}
		var user, room string
		if u, ok := strings.CutPrefix(key, "status:"); ok {
			user = u
		} else if rest, ok := strings.CutPrefix(key, "member:"); ok {
			room, user, _ = strings.Cut(rest, ":")
		}
		var out []string
		// The partition's log: the last events about the user (or about
		// the user in room).
		logOf := clusterPrefix(user)
		if room != "" {
			logOf = clusterPrefix(room)
		}
		msgs, err := rc.XRevRangeN(ctx, logOf+"log", "+", "-", 3000).Result()
		if err != nil {
			out = append(out, "log: "+err.Error())
		}
		var evs []string
		for _, m := range msgs {
			raw, _ := m.Values["e"].(string)
			var e struct {
				K, U, From, To, Room, Rooms string
				At, Dl                      int64
			}
			if json.Unmarshal([]byte(raw), &e) != nil || e.U != user || (room != "" && e.Room != room) {
				continue
			}
			ms, _, _ := strings.Cut(m.ID, "-")
			id, _ := strconv.ParseInt(ms, 10, 64)
			d := fmt.Sprintf("%s %s", secs(id), e.K)
			if e.K == "status" {
				d += fmt.Sprintf(" %s→%s rooms=[%s]", e.From, e.To, e.Rooms)
			} else {
				d += " " + e.Room + " to=" + e.To
			}
			if e.Dl != 0 {
				d += " dl=" + secs(e.Dl)
			}
			evs = append([]string{d}, evs...)
			if len(evs) == 12 {
				break
			}
		}
		out = append(out, "log of "+logOf+": ["+strings.Join(evs, "; ")+"]")
		// Where the partition's channel is subscribed: every server (the
		// nodes subscribe on the shard's primary; a subscription on a
		// replica, or on a node outside the shard, is a lead).
		var subs []string
		for i, c := range each {
			role := "?"
			if info, err := c.Info(ctx, "replication").Result(); err == nil {
				for _, l := range strings.Split(info, "\n") {
					if r, ok := strings.CutPrefix(strings.TrimSpace(l), "role:"); ok {
						role = r
					}
				}
			}
			n, err := c.Do(ctx, "PUBSUB", "SHARDNUMSUB", logOf+"events").Slice()
			cnt := fmt.Sprint(err)
			if err == nil && len(n) == 2 {
				cnt = fmt.Sprint(n[1])
			}
			subs = append(subs, fmt.Sprintf("%s(%s)=%s", addrs[i], role, cnt))
		}
		out = append(out, "channel subscribers per server: "+strings.Join(subs, " "))
		// The user's sessions, their deadlines and the published status.
		up := clusterPrefix(user)
		sess, err := rc.HGetAll(ctx, up+"u/"+user+"/sess").Result()
		st, _ := rc.HGet(ctx, up+"u/"+user+"/user", "st").Result()
		var ss []string
		for sid, rec := range sess {
			dl, _ := rc.ZScore(ctx, up+"deadlines", user+" "+sid).Result()
			ss = append(ss, fmt.Sprintf("%s=%q dl=%s", sid, rec, secs(int64(dl))))
		}
		out = append(out, fmt.Sprintf("st=%q sessions (%v): %s", st, err, strings.Join(ss, ", ")))
		if room != "" {
			rp := clusterPrefix(room)
			ms, _ := rc.HGetAll(ctx, rp+"r/"+room+"/ms").Result()
			var mm []string
			for k, v := range ms {
				if strings.HasPrefix(k, user+" ") {
					sid := strings.TrimPrefix(k, user+" ")
					dl, _ := rc.ZScore(ctx, rp+"mdl", room+" "+user+" "+sid).Result()
					mm = append(mm, fmt.Sprintf("%s=%q dl=%s", sid, v, secs(int64(dl))))
				}
			}
			out = append(out, "memberships: "+strings.Join(mm, ", "))
		}
		return strings.Join(out, " | ")
	}
}
