package store

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

// BenchmarkClusterCost is BenchmarkRedisCost's twin for the ClusterStore
// (issue 13's cluster target: Redis CPU per operation within 1.3× of one
// primary, spread within ±20 % over the shards). Each operation runs on one
// redis-server (single, a RedisStore) and on a 3-primary Redis Cluster
// (cluster, a ClusterStore) in the same run, so that the two can be
// compared on the same box at the same moment. It reports the sum over the
// servers' used_cpu_user+sys per op, each primary's share (p0…p2, in the
// order of their slot ranges), and the spread (max/mean and min/mean of the
// primaries' CPU). BENCHMARKS.md ("Redis Cluster (3 shards)") has the
// figures and the command:
//
//	go test ./store/ -run '^$' -bench BenchmarkClusterCost -benchtime 10000x
//
// Every primary also spends CPU on its own housekeeping (serverCron, the
// cluster bus, the stores' state checks): the idle rate is measured before
// the operations and logged, and idle-µs/op is what it adds to each op.
func BenchmarkClusterCost(b *testing.B) {
	cl := redistest.StartCluster(b, redistest.ClusterConfig{Primaries: 3})
	srv := redistest.Start(b)
	opts := Options{TTL: time.Hour, SweepInterval: time.Hour, LastSeenRetention: time.Hour}
	type backend struct {
		name  string
		nodes []*redistest.Server
		s, s2 Store // s2: a second gateway node on the same Redis (delivered-event)
	}
	ctx := context.Background()
	prefix := redistest.Prefix(b)
	single := backend{name: "single", nodes: []*redistest.Server{srv}}
	sopts := opts
	sopts.KeyPrefix = prefix
	single.s, single.s2 = openRedis(b, srv, sopts), openRedis(b, srv, sopts)
	cluster := backend{name: "cluster", nodes: cl.Primaries(b)}
	cluster.s, cluster.s2 = openCluster(b, cl, sopts), openCluster(b, cl, sopts)
	backends := []backend{single, cluster}

	// Many distinct users and rooms, so that the partitions (and with them
	// the shards) get even shares: each user has a held membership of one
	// of the rooms (sess-0001) and a second, room-less session (sess-0002).
	const users, rooms = 5000, 500
	user := func(i int) Profile {
		return Profile{ID: fmt.Sprintf("user%05d", i%users), Name: fmt.Sprintf("User %d", i%users)}
	}
	room := func(i int) string { return fmt.Sprintf("room-%03d", i%users%rooms) }
	for _, be := range backends {
		for i := range users {
			must(b, be.s.Join(ctx, room(i), Heartbeat{User: user(i), SessionID: "sess-0001", Hold: time.Hour}))
			must(b, be.s.Heartbeat(ctx, Heartbeat{User: user(i), SessionID: "sess-0002"}))
		}
		idle := idleRate(b, be.nodes, 2*time.Second)
		b.Logf("%s: idle Redis CPU per primary %s µs/s", be.name, fmtFloats(idle))
	}

	type op struct {
		name string
		run  func(b *testing.B, be backend, i int)
	}
	// Each op's counter carries on from one run of its sub-benchmark to
	// the next (b.Loop may run it more than once): a stream connect is
	// always a new user, a status change always a change.
	next := map[string]int{}
	items := make([]StreamRefresh, 100)
	ops := []op{
		{name: "heartbeat-refresh", run: func(b *testing.B, be backend, i int) {
			// A heartbeat of an existing session that changes nothing.
			must(b, be.s.Heartbeat(ctx, Heartbeat{User: user(i), SessionID: "sess-0002"}))
		}},
		{name: "join-refresh", run: func(b *testing.B, be backend, i int) {
			// A Join of a room the session already holds (a stream's
			// refresh through Join, the keeper's path before batching).
			must(b, be.s.Join(ctx, room(i), Heartbeat{User: user(i), SessionID: "sess-0001", Hold: time.Hour}))
		}},
		{name: "stream-refresh-100", run: func(b *testing.B, be backend, i int) {
			// A node's keeper refreshing 100 held (session, room) pairs in
			// one RefreshStreams call; op = one item.
			items[i%100] = StreamRefresh{User: user(i), SessionID: "sess-0001", Room: room(i), Hold: time.Hour}
			if i%100 == 99 {
				mustRefresh(b, be.s, items...)
			}
		}},
		{name: "stream-connect", run: func(b *testing.B, be backend, i int) {
			// What a stream does against the store when it opens
			// (handlers/stream.go: keeper.Open's Join, then the hub's
			// snapshot, Members and Typing); the hub's Subscribe is one per
			// node, not per stream. A new user each time; every 1,000 ops
			// start 50 new rooms, so rooms hold 0 to 19 members (10 on
			// average) when joined, as in BenchmarkRedisCost.
			u := Profile{ID: fmt.Sprintf("conn%07d", i), Name: fmt.Sprintf("Conn %d", i)}
			r := fmt.Sprintf("c%d-%02d", i/1000, i%50)
			must(b, be.s.Join(ctx, r, Heartbeat{User: u, SessionID: "sess-0001", Hold: time.Hour}))
			if _, err := be.s.Members(ctx, r); err != nil {
				b.Fatal(err)
			}
			if _, err := be.s.Typing(ctx, r); err != nil {
				b.Fatal(err)
			}
		}},
	}
	for _, o := range ops {
		for _, be := range backends {
			b.Run(o.name+"/"+be.name, func(b *testing.B) {
				key := o.name + "/" + be.name
				c := startClusterCost(b, be.nodes)
				i := next[key]
				for b.Loop() {
					o.run(b, be, i)
					i++
				}
				next[key] = i
				c.report(b)
			})
		}
	}

	// delivered-event: one status change (a user's session goes busy, or
	// back online) as two gateway nodes' feeds receive it; op = one change,
	// counted once both nodes have it. What the change costs Redis does not
	// depend on how many streams each node fans it out to (the feed is one
	// subscription per node); per delivered event is this over N streams.
	// With html, each node also re-reads the member list of the user's room
	// once, as the hub's HTML render does (internal/hub/room.go readFrame).
	for _, html := range []bool{false, true} {
		for _, be := range backends {
			name := "delivered-event/json/" + be.name
			if html {
				name = "delivered-event/html/" + be.name
			}
			b.Run(name, func(b *testing.B) {
				subs := make([]*Subscription, 2)
				for k, s := range []Store{be.s, be.s2} {
					sub, err := s.Subscribe(ctx)
					if err != nil {
						b.Fatal(err)
					}
					defer sub.Close()
					subs[k] = sub
				}
				key := "delivered-event/" + be.name
				c := startClusterCost(b, be.nodes)
				i := next[key]
				for b.Loop() {
					// busy outranks the other session's online: the user's
					// status changes each time.
					u := user(i)
					st := StatusBusy
					if (i/users)%2 == 1 {
						st = StatusOnline
					}
					must(b, be.s.Heartbeat(ctx, Heartbeat{User: u, SessionID: "sess-0001", Status: st}))
					for k, sub := range subs {
						waitStatus(b, sub, u.ID, st)
						if html {
							if _, err := []Store{be.s, be.s2}[k].Members(ctx, room(i)); err != nil {
								b.Fatal(err)
							}
						}
					}
					i++
				}
				next[key] = i
				c.report(b)
			})
		}
	}
}

// waitStatus reads sub until the status event of uid to st (bounded).
func waitStatus(b *testing.B, sub *Subscription, uid string, st Status) {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e, ok := <-sub.C():
			if !ok {
				b.Fatalf("feed closed: %v", sub.Err())
			}
			if e.Kind == EventStatus && e.User.ID == uid && e.To == st {
				return
			}
		case <-timeout:
			b.Fatalf("no status event %s → %s within 10 s", uid, st)
		}
	}
}

// clusterCost snapshots the CPU and commandstats of several servers.
type clusterCost struct {
	nodes   []*redistest.Server
	cpu     []float64
	calls   map[string]float64
	cmdUsec map[string]float64
	evalsha float64
	start   time.Time
	idle    []float64 // µs of CPU per second per node, measured idle just before
}

func startClusterCost(b *testing.B, nodes []*redistest.Server) *clusterCost {
	c := &clusterCost{nodes: nodes, idle: idleRate(b, nodes, time.Second)}
	c.cpu, c.evalsha, c.calls, c.cmdUsec = readNodes(b, nodes)
	c.start = time.Now()
	return c
}

// readNodes reads every node's used_cpu (s) and sums their commandstats.
func readNodes(b *testing.B, nodes []*redistest.Server) (cpu []float64, evalsha float64, calls, cmdUsec map[string]float64) {
	calls, cmdUsec = map[string]float64{}, map[string]float64{}
	for _, n := range nodes {
		c, u, cl, cu := readCostUsec(b, n)
		cpu = append(cpu, c)
		evalsha += u
		for k, v := range cl {
			calls[k] += v
		}
		for k, v := range cu {
			cmdUsec[k] += v
		}
	}
	return cpu, evalsha, calls, cmdUsec
}

// idleRate is each node's CPU per second (µs/s) over d with no load of
// ours: serverCron, the cluster bus, the stores' state checks.
func idleRate(b *testing.B, nodes []*redistest.Server, d time.Duration) []float64 {
	before, _, _, _ := readNodes(b, nodes)
	t0 := time.Now()
	time.Sleep(d)
	after, _, _, _ := readNodes(b, nodes)
	el := time.Since(t0).Seconds()
	out := make([]float64, len(nodes))
	for i := range nodes {
		out[i] = (after[i] - before[i]) * 1e6 / el
	}
	return out
}

func (c *clusterCost) report(b *testing.B) {
	el := time.Since(c.start).Seconds()
	cpu, evalsha, calls, cmdUsec := readNodes(b, c.nodes)
	n := float64(b.N)
	per := make([]float64, len(cpu))
	var sum, idle float64
	for i := range cpu {
		per[i] = (cpu[i] - c.cpu[i]) * 1e6 / n
		sum += per[i]
		idle += c.idle[i] * el / n
	}
	b.ReportMetric(sum, "redis-cpu-µs/op")
	b.ReportMetric(idle, "idle-µs/op")
	b.ReportMetric((evalsha-c.evalsha)/n, "evalsha-µs/op")
	if len(per) > 1 {
		mean := sum / float64(len(per))
		lo, hi := per[0], per[0]
		for i, v := range per {
			b.ReportMetric(v, fmt.Sprintf("p%d-µs/op", i))
			lo, hi = min(lo, v), max(hi, v)
		}
		b.ReportMetric(hi/mean, "max/mean")
		b.ReportMetric(lo/mean, "min/mean")
	}
	b.Logf("N=%d per primary µs/op %s; commands per op: %s", b.N, fmtFloats(per), cmdsPer(c.calls, c.cmdUsec, calls, cmdUsec, n))
}

// cmdsPer lists the commands run between two commandstats snapshots, per
// op: name=calls(usec).
func cmdsPer(calls0, usec0, calls, usec map[string]float64, n float64) string {
	var parts []string
	for cmd, v := range calls {
		if d := (v - calls0[cmd]) / n; d >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s=%.2f(%.1fµs)", cmd, d, (usec[cmd]-usec0[cmd])/n))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

func fmtFloats(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = fmt.Sprintf("%.1f", f)
	}
	return strings.Join(s, " / ")
}

// BenchmarkClusterExpirySweep is BenchmarkExpirySweep's twin for the
// ClusterStore (issue 13: offline lateness p99 ≤ 250 ms past the deadline
// at 50,000 sessions on one primary and on the cluster), with one
// redis-server's case in the same run for comparison. Each case starts
// its own servers. Quick: 1,000 sessions, sweeper on (100 ms); BIG adds
// 50,000 sessions with the sweeper on and off (keyspace notifications
// only):
//
//	go test ./store/ -run '^$' -bench ClusterExpirySweep -benchtime 1x
//	PRESENCE_BENCH_BIG=1 go test ./store/ -run '^$' -bench ClusterExpirySweep -benchtime 1x -timeout 60m
func BenchmarkClusterExpirySweep(b *testing.B) {
	// More workers than BenchmarkExpirySweep's 8: a cluster Join of a new
	// session is three round trips, and 8 workers take longer than the ttl
	// to create the sessions (which then expire while others are still
	// being created).
	const latenessWorkers = 32
	type tc struct {
		sessions int
		sweep    time.Duration
	}
	cases := []tc{{1000, 100 * time.Millisecond}}
	if os.Getenv("PRESENCE_BENCH_BIG") == "1" && !testing.Short() {
		cases = append(cases, tc{50_000, 100 * time.Millisecond}, tc{50_000, time.Hour})
	}
	for _, c := range cases {
		sweep := "on-100ms"
		if c.sweep >= time.Hour {
			sweep = "off"
		}
		for _, backend := range []string{"single", "cluster"} {
			b.Run(fmt.Sprintf("%s/sessions=%d/sweep=%s", backend, c.sessions, sweep), func(b *testing.B) {
				opts := latenessOpts(c.sessions, c.sweep)
				// Longer than creating the sessions takes on the cluster
				// (~35 s for 50,000 on this box), so that creation and expiry
				// do not overlap, as BenchmarkExpirySweep intends.
				opts.TTL = 2*time.Second + time.Duration(c.sessions/1000)*time.Second
				opts.KeyPrefix = redistest.Prefix(b)
				for i := 0; i < b.N; i++ {
					var s Store
					var nodes []*redistest.Server
					if backend == "single" {
						srv := redistest.Start(b)
						s, nodes = openRedis(b, srv, opts), []*redistest.Server{srv}
					} else {
						cl := redistest.StartCluster(b, redistest.ClusterConfig{Primaries: 3})
						s, nodes = openCluster(b, cl, opts), cl.Primaries(b)
					}
					waitReady(b, s)
					benchLateness(b, s, c.sessions, latenessWorkers, opts.TTL, nodes)
				}
			})
		}
	}
}
