package store

// Benchmarks, run on every backend in benchOpeners:
//
//	go test ./store/ -run '^$' -bench . -benchtime 2s
//	PRESENCE_BENCH_BACKEND=memory go test ./store/ -run '^$' -bench Expiry
//	PRESENCE_BENCH_BIG=1 go test ./store/ -run '^$' -bench Expiry -timeout 30m
//
// BenchmarkExpiryLateness reports how late offline transitions are made
// (Event.At − Event.Deadline) as p50-ms, p99-ms and max-ms.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchOpener opens a fresh, empty store for one benchmark and closes it
// when the benchmark ends (Close may also be called earlier).
type benchOpener = func(b *testing.B, opts Options) Store

// benchOpeners is the registry of backends the benchmarks run on. Backends
// other than memory add themselves from their own test file, in an init():
//
//	func init() { benchOpeners["redis"] = func(b *testing.B, opts Options) Store { … } }
var benchOpeners = map[string]func(b *testing.B, opts Options) Store{
	"memory": func(b *testing.B, opts Options) Store {
		m := NewMemory(opts)
		b.Cleanup(func() { _ = m.Close() })
		return m
	},
}

// benchBackends returns the backends to benchmark: all of benchOpeners, or
// those named in PRESENCE_BENCH_BACKEND (comma-separated).
func benchBackends(b *testing.B) map[string]func(b *testing.B, opts Options) Store {
	want := os.Getenv("PRESENCE_BENCH_BACKEND")
	if want == "" {
		return benchOpeners
	}
	out := make(map[string]func(b *testing.B, opts Options) Store)
	for name := range strings.SplitSeq(want, ",") {
		open, ok := benchOpeners[strings.TrimSpace(name)]
		if !ok {
			b.Fatalf("PRESENCE_BENCH_BACKEND: no backend %q (have %v)", name, slices.Sorted(maps.Keys(benchOpeners)))
		}
		out[strings.TrimSpace(name)] = open
	}
	return out
}

// forEachBackend runs fn as a sub-benchmark per backend, in name order.
func forEachBackend(b *testing.B, fn func(b *testing.B, open benchOpener)) {
	backends := benchBackends(b)
	for _, name := range slices.Sorted(maps.Keys(backends)) {
		b.Run(name, func(b *testing.B) { fn(b, backends[name]) })
	}
}

func benchOptions() Options {
	return Options{TTL: 10 * time.Minute, TypingTTL: time.Minute, LastSeenRetention: time.Hour, SweepInterval: 100 * time.Millisecond}
}

func benchUser(i int) Profile {
	return Profile{ID: fmt.Sprintf("user-%05d", i), Name: fmt.Sprintf("User %d", i), Avatar: "https://example.test/a.png"}
}

// BenchmarkHeartbeat refreshes the sessions of many users from parallel
// goroutines: the steady state of a busy gateway.
func BenchmarkHeartbeat(b *testing.B) {
	const users = 10000
	forEachBackend(b, func(b *testing.B, open benchOpener) {
		s := open(b, benchOptions())
		ctx := context.Background()
		hbs := make([]Heartbeat, users)
		for i := range hbs {
			hbs[i] = Heartbeat{User: benchUser(i), SessionID: fmt.Sprintf("sess-%05d", i), Status: StatusOnline}
			if err := s.Heartbeat(ctx, hbs[i]); err != nil {
				b.Fatal(err)
			}
		}
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := s.Heartbeat(ctx, hbs[next.Add(1)%users]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkMembers reads a room of 50 members.
func BenchmarkMembers(b *testing.B) {
	const n = 50
	forEachBackend(b, func(b *testing.B, open benchOpener) {
		s := open(b, benchOptions())
		ctx := context.Background()
		for i := range n {
			if err := s.Join(ctx, "room", Heartbeat{User: benchUser(i), SessionID: "sess-0001"}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			ms, err := s.Members(ctx, "room")
			if err != nil || len(ms) != n {
				b.Fatalf("Members: %d, %v", len(ms), err)
			}
		}
	})
}

// BenchmarkPresenceBatch reads the largest batch: 100 users, 90 of them
// known (online or offline) and 10 never seen.
func BenchmarkPresenceBatch(b *testing.B) {
	forEachBackend(b, func(b *testing.B, open benchOpener) {
		s := open(b, benchOptions())
		ctx := context.Background()
		ids := make([]string, MaxBatch)
		for i := range ids {
			ids[i] = benchUser(i).ID
			if i >= 90 {
				continue
			}
			hb := Heartbeat{User: benchUser(i), SessionID: "sess-0001", Metadata: []byte(`{"page":"/inbox"}`)}
			if err := s.Heartbeat(ctx, hb); err != nil {
				b.Fatal(err)
			}
			if i%3 == 0 {
				if err := s.EndSession(ctx, hb.User.ID, hb.SessionID); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			ps, err := s.Presence(ctx, ids)
			if err != nil || len(ps) != MaxBatch {
				b.Fatalf("Presence: %d, %v", len(ps), err)
			}
		}
	})
}

// BenchmarkExpiryLateness starts sessions (each in one of 100 rooms) that
// then stop heartbeating, and measures how late each offline transition is
// made: Event.At − Event.Deadline. 50,000 sessions only with
// PRESENCE_BENCH_BIG=1 (and not under -short).
func BenchmarkExpiryLateness(b *testing.B) {
	sizes := []int{1000}
	if !testing.Short() && os.Getenv("PRESENCE_BENCH_BIG") == "1" {
		sizes = append(sizes, 50000)
	}
	forEachBackend(b, func(b *testing.B, open benchOpener) {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
				benchExpiryLateness(b, open, n)
			})
		}
	})
}

func benchExpiryLateness(b *testing.B, open benchOpener, n int) {
	// Long enough that (on the slower backends) the sessions are all created
	// before the first expires.
	ttl := time.Second + time.Duration(n/10000)*time.Second
	ctx := context.Background()
	var late []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := open(b, Options{
			TTL: ttl, TypingTTL: time.Second, LastSeenRetention: time.Hour,
			SweepInterval: 50 * time.Millisecond, FeedBuffer: 4*n + 1024,
		})
		sub, err := s.Subscribe(ctx)
		if err != nil {
			b.Fatal(err)
		}
		// Create the sessions from a few goroutines (a network backend is
		// latency-bound one call at a time).
		const workers = 8
		var wg sync.WaitGroup
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
		b.StartTimer()
		timeout := time.After(ttl + 5*time.Minute)
		for got := 0; got < n; {
			select {
			case e, ok := <-sub.C():
				if !ok {
					b.Fatalf("feed closed after %d of %d offline events: %v", got, n, sub.Err())
				}
				if e.Kind == EventStatus && e.To == StatusOffline {
					if e.Deadline.IsZero() {
						b.Fatalf("offline event without a deadline: %+v", e)
					}
					late = append(late, e.At.Sub(e.Deadline))
					got++
				}
			case <-timeout:
				b.Fatalf("only %d of %d offline events", got, n)
			}
		}
		b.StopTimer()
		sub.Close()
		_ = s.Close()
	}
	slices.Sort(late)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	pct := func(p float64) time.Duration { return late[min(len(late)-1, int(p*float64(len(late))))] }
	b.ReportMetric(ms(pct(0.50)), "p50-ms")
	b.ReportMetric(ms(pct(0.99)), "p99-ms")
	b.ReportMetric(ms(late[len(late)-1]), "max-ms")
	b.ReportMetric(0, "ns/op") // wall time per op is mostly the TTL: not a useful number
}

// BenchmarkRefreshStreams keeps 1,000 open streams' sessions and held
// memberships alive (users in 100 rooms; the refresh changes nothing): one
// batched RefreshStreams call per op against 1,000 sequential Joins per op
// (what each stream did on its own before); on Redis also the per-item
// EVALSHA shape of the batch. Reports µs/item and, on Redis,
// the server's CPU per item (used_cpu_user+used_cpu_sys deltas) and the
// EVALSHA µs per call from INFO commandstats.
func BenchmarkRefreshStreams(b *testing.B) {
	const n = 1000
	forEachBackend(b, func(b *testing.B, open benchOpener) {
		s := open(b, benchOptions())
		ctx := context.Background()
		items := make([]StreamRefresh, n)
		for i := range items {
			items[i] = StreamRefresh{User: benchUser(i), SessionID: "sess-0001", Room: fmt.Sprintf("room-%02d", i%100), Hold: time.Minute}
		}
		if errs, err := s.RefreshStreams(ctx, items); err != nil || errors.Join(errs...) != nil {
			b.Fatalf("RefreshStreams: %v %v", err, errors.Join(errs...))
		}
		b.Run("batch", func(b *testing.B) {
			cpu := startRedisCPU(b, s)
			for b.Loop() {
				errs, err := s.RefreshStreams(ctx, items)
				if err != nil || errors.Join(errs...) != nil {
					b.Fatalf("RefreshStreams: %v %v", err, errors.Join(errs...))
				}
			}
			reportPerItem(b, n, cpu)
		})
		if rs, ok := s.(*RedisStore); ok {
			// The alternative shape: one heartbeat.lua EVALSHA per item,
			// pipelined (what a sharded cluster would need).
			b.Run("batch-evalsha-per-item", func(b *testing.B) {
				rs.refreshPerItem = true
				defer func() { rs.refreshPerItem = false }()
				cpu := startRedisCPU(b, s)
				for b.Loop() {
					errs, err := s.RefreshStreams(ctx, items)
					if err != nil || errors.Join(errs...) != nil {
						b.Fatalf("RefreshStreams: %v %v", err, errors.Join(errs...))
					}
				}
				reportPerItem(b, n, cpu)
			})
		}
		b.Run("sequential-joins", func(b *testing.B) {
			cpu := startRedisCPU(b, s)
			for b.Loop() {
				for _, it := range items {
					if err := s.Join(ctx, it.Room, Heartbeat{User: it.User, SessionID: it.SessionID, Hold: it.Hold}); err != nil {
						b.Fatal(err)
					}
				}
			}
			reportPerItem(b, n, cpu)
		})
	})
}

// redisCPU is a snapshot of a Redis server's CPU counters (nil for another
// backend).
type redisCPU struct {
	s           *RedisStore
	cpu         float64 // used_cpu_user + used_cpu_sys, seconds
	evalsha     float64 // commandstats: EVALSHA calls
	evalshaUsec float64 // commandstats: EVALSHA usec
}

func startRedisCPU(b *testing.B, s Store) *redisCPU {
	rs, ok := s.(*RedisStore)
	if !ok {
		return nil
	}
	c := &redisCPU{s: rs}
	c.cpu, c.evalsha, c.evalshaUsec = c.read(b)
	return c
}

func (c *redisCPU) read(b *testing.B) (cpu, calls, usec float64) {
	ctx := context.Background()
	info, err := c.s.client.Info(ctx, "cpu", "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	num := func(v string) float64 { f, _ := strconv.ParseFloat(v, 64); return f }
	cpu = num(infoField(info, "used_cpu_user")) + num(infoField(info, "used_cpu_sys"))
	// cmdstat_evalsha:calls=N,usec=U,usec_per_call=…
	for kv := range strings.SplitSeq(infoField(info, "cmdstat_evalsha"), ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "calls":
			calls = num(v)
		case "usec":
			usec = num(v)
		}
	}
	return cpu, calls, usec
}

func reportPerItem(b *testing.B, n int, c *redisCPU) {
	items := float64(b.N) * float64(n)
	b.ReportMetric(float64(b.Elapsed().Microseconds())/items, "µs/item")
	if c == nil {
		return
	}
	cpu, calls, usec := c.read(b)
	b.ReportMetric((cpu-c.cpu)*1e6/items, "redis-cpu-µs/item")
	if calls > c.evalsha {
		b.ReportMetric((usec-c.evalshaUsec)/(calls-c.evalsha), "evalsha-µs/call")
	}
}
