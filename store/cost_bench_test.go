package store

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

// BenchmarkRedisCost measures the Redis CPU of the store's hot operations
// on one redis-server (issue 13): the server's used_cpu_user+sys delta and
// the sum of INFO commandstats usec, both per operation, plus the commands
// Redis ran per operation. BENCHMARKS.md ("Redis cost per operation", "Redis
// cost pass 2") has the figures and the commands:
//
//	go test ./store/ -run '^$' -bench BenchmarkRedisCost -benchtime 20000x
//
// REDIS_COST_EVALSHA=1 runs it on a server that refuses FUNCTION, so that
// the scripts run as EVALSHA (as on Redis 6.2).
func BenchmarkRedisCost(b *testing.B) {
	var srv *redistest.Server
	if os.Getenv("REDIS_COST_EVALSHA") == "1" {
		srv = redistest.StartWith(b, "--rename-command", "FUNCTION", "")
	} else {
		srv = redistest.Start(b)
	}
	opts := Options{TTL: time.Hour, SweepInterval: time.Hour, KeyPrefix: redistest.Prefix(b)}
	s := openRedis(b, srv, opts)
	ctx := context.Background()
	const users = 1000
	for i := range users {
		u := Profile{ID: fmt.Sprintf("user%04d", i), Name: fmt.Sprintf("User %d", i)}
		must(b, s.Join(ctx, fmt.Sprintf("room-%02d", i%50), Heartbeat{User: u, SessionID: "sess-0001", Hold: time.Hour}))
		must(b, s.Heartbeat(ctx, Heartbeat{User: u, SessionID: "sess-0002"}))
	}
	b.Run("heartbeat-refresh", func(b *testing.B) {
		c := startCost(b, srv)
		i := 0
		for b.Loop() {
			u := Profile{ID: fmt.Sprintf("user%04d", i%users), Name: fmt.Sprintf("User %d", i%users)}
			must(b, s.Heartbeat(ctx, Heartbeat{User: u, SessionID: "sess-0002"}))
			i++
		}
		c.report(b)
	})
	b.Run("heartbeat-refresh-c64", func(b *testing.B) {
		// The same from 64 concurrent callers, as a node under HTTP load
		// calls it: the node's coalescer sends them together.
		c := startCost(b, srv)
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		for range 64 {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= b.N {
						return
					}
					u := Profile{ID: fmt.Sprintf("user%04d", i%users), Name: fmt.Sprintf("User %d", i%users)}
					if err := s.Heartbeat(ctx, Heartbeat{User: u, SessionID: "sess-0002"}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		c.report(b)
	})
	b.Run("stream-refresh-100", func(b *testing.B) {
		// A node's keeper refreshing 100 held (session, room) pairs in one
		// RefreshStreams call (one refresh_many.lua call); op = one item.
		items := make([]StreamRefresh, 100)
		c := startCost(b, srv)
		i := 0
		for b.Loop() {
			u := Profile{ID: fmt.Sprintf("user%04d", i%users), Name: fmt.Sprintf("User %d", i%users)}
			items[i%100] = StreamRefresh{User: u, SessionID: "sess-0001", Room: fmt.Sprintf("room-%02d", i%users%50), Hold: time.Hour}
			if i%100 == 99 {
				mustRefresh(b, s, items...)
			}
			i++
		}
		c.report(b)
	})
	b.Run("join-new-session", func(b *testing.B) {
		// stream-connect's Join alone (rooms of 0 to 19 members).
		c := startCost(b, srv)
		i := 0
		for b.Loop() {
			u := Profile{ID: fmt.Sprintf("join%07d", i), Name: fmt.Sprintf("Join %d", i)}
			must(b, s.Join(ctx, fmt.Sprintf("j%d-%02d", i/1000, i%50), Heartbeat{User: u, SessionID: "sess-0001", Hold: time.Hour}))
			i++
		}
		c.report(b)
	})
	b.Run("members-typing-10", func(b *testing.B) {
		// stream-connect's snapshot reads alone, of rooms of 20 members.
		c := startCost(b, srv)
		i := 0
		for b.Loop() {
			room := fmt.Sprintf("room-%02d", i%50)
			if _, err := s.Members(ctx, room); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Typing(ctx, room); err != nil {
				b.Fatal(err)
			}
			i++
		}
		c.report(b)
	})
	b.Run("stream-connect", func(b *testing.B) {
		// A new user's session joins a room and reads its snapshot, as a
		// stream does when it opens. Every 1,000 ops start 50 new rooms, so
		// rooms hold 0 to 19 members (10 on average) when joined.
		c := startCost(b, srv)
		i := 0
		for b.Loop() {
			u := Profile{ID: fmt.Sprintf("conn%07d", i), Name: fmt.Sprintf("Conn %d", i)}
			room := fmt.Sprintf("c%d-%02d", i/1000, i%50)
			must(b, s.Join(ctx, room, Heartbeat{User: u, SessionID: "sess-0001", Hold: time.Hour}))
			if _, err := s.Members(ctx, room); err != nil {
				b.Fatal(err)
			}
			if _, err := s.Typing(ctx, room); err != nil {
				b.Fatal(err)
			}
			i++
		}
		c.report(b)
	})
}

// cost snapshots a server's CPU and commandstats.
type cost struct {
	srv     *redistest.Server
	cpu     float64
	usec    float64
	calls   map[string]float64
	cmdUsec map[string]float64
}

func startCost(b *testing.B, srv *redistest.Server) *cost {
	c := &cost{srv: srv}
	c.cpu, c.usec, c.calls, c.cmdUsec = readCostUsec(b, srv)
	return c
}

func readCost(b *testing.B, srv *redistest.Server) (cpu, usec float64, calls map[string]float64) {
	cpu, usec, calls, _ = readCostUsec(b, srv)
	return
}

func readCostUsec(b *testing.B, srv *redistest.Server) (cpu, usec float64, calls, cmdUsec map[string]float64) {
	info := srv.DoAll(b, "INFO", "ALL")
	num := func(v string) float64 { f, _ := strconv.ParseFloat(v, 64); return f }
	cpu = num(infoField(info, "used_cpu_user")) + num(infoField(info, "used_cpu_sys"))
	calls = map[string]float64{}
	cmdUsec = map[string]float64{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		cmd, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd || cmd == "info" {
			continue
		}
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "calls":
				calls[cmd] = num(v)
			case "usec":
				cmdUsec[cmd] = num(v)
				if cmd != "evalsha" && cmd != "eval" && cmd != "fcall" {
					continue // counted inside the script's usec
				}
				usec += num(v)
			}
		}
	}
	return cpu, usec, calls, cmdUsec
}

func (c *cost) report(b *testing.B) {
	cpu, usec, calls, cmdUsec := readCostUsec(b, c.srv)
	n := float64(b.N)
	b.ReportMetric((cpu-c.cpu)*1e6/n, "redis-cpu-µs/op")
	b.ReportMetric((usec-c.usec)/n, "cmdstat-µs/op")
	var parts []string
	for cmd, v := range calls {
		if d := (v - c.calls[cmd]) / n; d >= 0.05 {
			parts = append(parts, fmt.Sprintf("%s=%.2f(%.1fµs)", cmd, d, (cmdUsec[cmd]-c.cmdUsec[cmd])/n))
		}
	}
	sort.Strings(parts)
	b.Logf("commands per op: %s", strings.Join(parts, " "))
}
