package store

// Expiry lateness with the Redis sweeper on and off, and the pitfall's bad
// case (many other keys holding a 1 h TTL, so that Redis's own expiry cycle
// rarely samples ours). Benchmarks measure, they do not assert: a case that
// does not get all its offline events within its bounded wait reports how
// many arrived (arrived-%) instead of failing.
//
//	go test ./store/ -run '^$' -bench ExpirySweep -benchtime 1x
//	PRESENCE_BENCH_BIG=1 go test ./store/ -run '^$' -bench ExpirySweep -benchtime 1x -timeout 60m
//
// Quick: 1,000 sessions × sweep {on, off} × other keys {0, 500,000}.
// BIG adds 50,000 sessions (sweep on and off, no other keys).

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presenced/presenced/store/redistest"
)

func BenchmarkExpirySweep(b *testing.B) {
	type tc struct {
		sessions, other int
		sweep           time.Duration
	}
	var cases []tc
	for _, other := range []int{0, 500_000} {
		for _, sw := range []time.Duration{100 * time.Millisecond, time.Hour} {
			cases = append(cases, tc{1000, other, sw})
		}
	}
	if os.Getenv("PRESENCE_BENCH_BIG") == "1" && !testing.Short() {
		for _, sw := range []time.Duration{100 * time.Millisecond, time.Hour} {
			cases = append(cases, tc{50_000, 0, sw})
		}
	}
	for _, c := range cases {
		sweep := "on-100ms"
		if c.sweep >= time.Hour {
			sweep = "off"
		}
		b.Run(fmt.Sprintf("redis/sessions=%d/other-keys=%d/sweep=%s", c.sessions, c.other, sweep), func(b *testing.B) {
			srv := redistest.Start(b)
			for i := 0; i < b.N; i++ {
				benchSweepCase(b, srv, c.sessions, c.other, c.sweep)
			}
		})
	}
	// The embedded store wakes exactly at each deadline: the reference.
	b.Run("memory/sessions=1000", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			benchSweepCase(b, nil, 1000, 0, 0)
		}
	})
}

// latenessOpts is the store options of a lateness case of n sessions: a
// ttl longer than creating them takes on this box, a feed buffer that holds
// every event of the case.
func latenessOpts(n int, sweep time.Duration) Options {
	ttl := 2*time.Second + time.Duration(n/5000)*time.Second
	return Options{TTL: ttl, TypingTTL: time.Second, LastSeenRetention: time.Hour, SweepInterval: sweep, FeedBuffer: 4*n + 1024}
}

func benchSweepCase(b *testing.B, srv *redistest.Server, n, other int, sweep time.Duration) {
	b.StopTimer()
	opts := latenessOpts(n, sweep)
	var s Store
	if srv == nil {
		m := NewMemory(opts)
		b.Cleanup(func() { _ = m.Close() })
		s = m
	} else {
		if other > 0 {
			fillOtherKeys(b, srv.URL, other)
		}
		s = openRedis(b, srv, opts)
		waitReady(b, s)
	}
	benchLateness(b, s, n, 8, opts.TTL, nil)
}

// benchLateness creates n sessions on s (workers goroutines, one Join each, spread
// over 100 rooms), then reports how late past its deadline each one's
// offline event arrives on s's feed. The timer runs from the end of the
// creation to the last event (or the bounded wait). With nodes (the Redis
// servers under s), it also reports their CPU per offline event over that
// phase and logs the commands they ran per offline event.
func benchLateness(b *testing.B, s Store, n, workers int, ttl time.Duration, nodes []*redistest.Server) {
	b.StopTimer()
	ctx := context.Background()
	sub, err := s.Subscribe(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for j := w; j < n; j += workers {
				hb := Heartbeat{User: benchUser(j), SessionID: "sess-0001"}
				if err := s.Join(ctx, fmt.Sprintf("room-%02d", j%100), hb); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	created := time.Since(start)
	b.ReportMetric(created.Seconds(), "create-s")
	if created > ttl {
		b.Logf("creating %d sessions took %s, longer than their ttl %s", n, created, ttl)
	}
	// Bounded: a practically-off sweeper in the bad case may never deliver.
	wait := ttl + 30*time.Second
	var cost *clusterCost
	if nodes != nil {
		cost = &clusterCost{nodes: nodes}
		cost.cpu, cost.evalsha, cost.calls, cost.cmdUsec = readNodes(b, nodes)
	}
	phase := time.Now()
	inPhase := 0 // offline events Redis made after the phase began
	b.StartTimer()
	var late []time.Duration
	timeout := time.After(wait)
collect:
	for len(late) < n {
		select {
		case e, ok := <-sub.C():
			if !ok {
				b.Fatalf("feed closed after %d of %d offline events: %v", len(late), n, sub.Err())
			}
			if e.Kind == EventStatus && e.To == StatusOffline && !e.Deadline.IsZero() {
				late = append(late, e.At.Sub(e.Deadline))
				if !e.At.Before(phase) {
					inPhase++
				}
			}
		case <-timeout:
			break collect
		}
	}
	b.StopTimer()
	if cost != nil && inPhase > 0 {
		cpu, _, calls, cmdUsec := readNodes(b, nodes)
		var sum float64
		per := make([]float64, len(cpu))
		for i := range cpu {
			per[i] = (cpu[i] - cost.cpu[i]) * 1e6 / float64(inPhase)
			sum += per[i]
		}
		b.ReportMetric(sum, "redis-cpu-µs/offline")
		// Per offline event made in this phase: with creation longer than
		// the ttl, the first ones were made while sessions were still being
		// created, outside it.
		b.Logf("per offline event (%d made in the phase): Redis CPU per server µs %s; commands %s", inPhase,
			fmtFloats(per), cmdsPer(cost.calls, cost.cmdUsec, calls, cmdUsec, float64(inPhase)))
	}
	b.ReportMetric(100*float64(len(late))/float64(n), "arrived-%")
	b.ReportMetric(0, "ns/op")
	if len(late) == 0 {
		b.Logf("none of %d offline events arrived within %s", n, wait)
		return
	}
	slices.Sort(late)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(p float64) time.Duration { return late[min(len(late)-1, int(p*float64(len(late))))] }
	b.ReportMetric(ms(pct(0.50)), "p50-ms")
	b.ReportMetric(ms(pct(0.99)), "p99-ms")
	b.ReportMetric(ms(late[len(late)-1]), "max-ms")
	if len(late) < n {
		b.Logf("%d of %d offline events arrived within %s (percentiles are of those that arrived)", len(late), n, wait)
	}
}

// fillOtherKeys writes n unrelated keys with a 1 h TTL, pipelined.
func fillOtherKeys(b *testing.B, url string, n int) {
	b.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		b.Fatal(err)
	}
	c := redis.NewClient(o)
	defer c.Close()
	ctx := context.Background()
	for from := 0; from < n; from += 10_000 {
		pipe := c.Pipeline()
		for i := from; i < min(n, from+10_000); i++ {
			pipe.Set(ctx, "other:"+strconv.Itoa(i), "x", time.Hour)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
