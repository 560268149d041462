package main

import (
	"flag"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// heartbeatMain: sustained POST /api/presence {"status":"online","sessionId"}
// from --conc keep-alive connections over --users users, for --duration
// after a --warmup. Closed loop by default (each connection sends its next
// request when the previous answer came); --rate paces an open loop and
// measures latency from each request's scheduled time.
func heartbeatMain(args []string) int {
	var c common
	fs := flag.NewFlagSet("heartbeat", flag.ExitOnError)
	c.register(fs)
	users := fs.Int("users", 10000, "distinct users (one session each), cycled through")
	conc := fs.String("conc", "64", "concurrent connections; a comma-separated list runs one case each")
	duration := fs.Duration("duration", 10*time.Second, "measured time per case")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured time before each case (creates the sessions)")
	rate := fs.Int("rate", 0, "open loop at this many requests/s in total (0 = closed loop)")
	maxReq := fs.Int64("max-requests", 20_000_000, "hard cap on requests per case")
	fs.Parse(args)
	if *duration > 10*time.Minute {
		*duration = 10 * time.Minute
	}
	e, err := setup(&c)
	if err != nil {
		logf("setup: %v", err)
		return 1
	}
	defer e.close()

	reqs := make([][]byte, *users)
	for i := range reqs {
		uid := fmt.Sprintf("hb%06d", i)
		tok := mintToken(c.secret, uid, "HB "+uid, 2*time.Hour)
		body := fmt.Appendf(nil, `{"status":"online","sessionId":"hbsess%06d"}`, i)
		reqs[i] = buildRequest("POST", "127.0.0.1", "/api/presence", tok, body)
	}
	for _, cs := range splitInts(*conc) {
		runHeartbeatCase(&c, e, reqs, cs, *duration, *warmup, *rate, *maxReq)
	}
	return 0
}

func runHeartbeatCase(c *common, e *env, reqs [][]byte, conc int, duration, warmup time.Duration, rate int, maxReq int64) {
	load0 := loadavg()
	var next, sent, errs, non200 atomic.Int64
	var measuring atomic.Bool
	lat := newSamples(1 << 20)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(conc) / float64(rate))
	}
	start := time.Now()
	for w := 0; w < conc; w++ {
		n := e.nodes[w%len(e.nodes)]
		wg.Go(func() {
			hc := newHTTPConn(n.addr, nil, nil, nil)
			defer hc.close()
			local := make([]time.Duration, 0, 1<<16)
			defer func() { lat.addAll(local) }()
			sched := start.Add(time.Duration(w) * interval / time.Duration(conc))
			for {
				select {
				case <-stop:
					return
				default:
				}
				t0 := time.Now()
				if interval > 0 {
					if d := time.Until(sched); d > 0 {
						time.Sleep(d)
					}
					t0 = sched
					sched = sched.Add(interval)
				}
				if sent.Add(1) > maxReq {
					return
				}
				i := next.Add(1) % int64(len(reqs))
				code, _, err := hc.do(reqs[i], 10*time.Second)
				d := time.Since(t0)
				if err != nil {
					errs.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				if code != 200 {
					non200.Add(1)
				}
				if measuring.Load() {
					local = append(local, d)
				}
			}
		})
	}
	time.Sleep(warmup)
	sent0 := sent.Load()
	err0 := errs.Load()
	meter := newCPUMeter(e.cpuPIDs())
	var stats0 map[string][2]float64
	if e.redisU != "" {
		stats0, _ = redisCommandStats(redisAddr(e.redisU))
	}
	waitProf := e.profile(fmt.Sprintf("heartbeat-%s-c%d", c.backend, conc), duration)
	measuring.Store(true)
	t0 := time.Now()
	time.Sleep(duration)
	measuring.Store(false)
	el := time.Since(t0)
	sentN := sent.Load() - sent0
	cpu := meter.stop()
	var stats1 map[string][2]float64
	if stats0 != nil {
		stats1, _ = redisCommandStats(redisAddr(e.redisU))
	}
	close(stop)
	wg.Wait()
	waitProf()
	s := lat.summary()
	logf("heartbeat conc=%d: %.0f/s, p50 %.2f ms, p99 %.2f ms, errors %d, non-200 %d, cpu %v",
		conc, float64(s.N)/el.Seconds(), s.P50, s.P99, errs.Load()-err0, non200.Load(), cpu)
	_ = sentN
	var perHB map[string]any
	if stats1 != nil && s.N > 0 {
		// What Redis ran per heartbeat, from INFO commandstats: EVALSHA
		// calls (fast try + full heartbeat) and their usec, which is the
		// scripts' own time without the network I/O used_cpu includes.
		perHB = map[string]any{}
		for cmd, v := range stats1 {
			if d := (v[0] - stats0[cmd][0]) / float64(s.N); d >= 0.01 && cmd != "info" {
				perHB[cmd] = map[string]any{"calls": round2(d), "usec": round2((v[1] - stats0[cmd][1]) / float64(s.N))}
			}
		}
		logf("heartbeat conc=%d: redis commands per heartbeat %v", conc, perHB)
	}
	c.emit(result{
		Scenario: "heartbeat", Case: fmt.Sprintf("conc=%d nodes=%d rate=%d", conc, len(e.nodes), rate),
		Figures: map[string]any{
			"redis_commands_per_heartbeat": perHB,
			"heartbeats_per_s":             round1(float64(s.N) / el.Seconds()),
			"latency":                      s, "errors": errs.Load() - err0, "non200": non200.Load(),
			"users": len(reqs), "conc": conc, "seconds": round2(el.Seconds()),
			// CPU time per request is less sensitive to a busy machine than
			// the rate: the figure to compare before/after a change.
			"gateway_cpu_us_per_heartbeat": round1(cpuPerReq(cpu, "gateway", s.N, el)),
			"redis_cpu_us_per_heartbeat":   round1(cpuPerReq(cpu, "redis", s.N, el)),
		},
		CPU: toAny(cpu), LoadAvg: load0,
	})
}

// cpuPerReq is the CPU time (µs) that processes whose name starts with
// prefix spent per request.
func cpuPerReq(cpu map[string]float64, prefix string, n int, el time.Duration) float64 {
	if n == 0 {
		return 0
	}
	var pct float64
	for k, v := range cpu {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			pct += v
		}
	}
	return pct / 100 * el.Seconds() * 1e6 / float64(n)
}

func toAny(m map[string]float64) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func splitInts(s string) []int {
	var out []int
	for _, f := range splitComma(s) {
		var n int
		fmt.Sscan(f, &n)
		if n > 0 {
			out = append(out, n)
		}
	}
	return out
}

func splitComma(s string) []string {
	var out []string
	cur := ""
	for _, r := range s {
		if r == ',' {
			if cur != "" {
				out = append(out, cur)
			}
			cur = ""
			continue
		}
		if r != ' ' {
			cur += string(r)
		}
	}
	if cur != "" {
		out = append(out, cur)
	}
	return out
}
