package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// latenessMain: --sessions sessions join rooms through the JSON API (one
// request each, then silence); one watcher stream per room records each
// user's offline event. Lateness = receipt − (the session's last heartbeat
// as the client sent it + the gateway's --ttl). The client's send time is
// at or before the store's lastSeen, so this over-reads by up to one request
// latency (reported as create_latency). "at_minus_deadline" uses the event's
// own timestamp (when the gateway made the transition) instead of the
// receipt, to separate expiry from delivery.
func latenessMain(args []string) int {
	var c common
	fs := flag.NewFlagSet("lateness", flag.ExitOnError)
	c.register(fs)
	sessions := fs.Int("sessions", 1000, "sessions that expire")
	rooms := fs.Int("rooms", 100, "rooms they are spread over, each with one watcher stream")
	conc := fs.Int("conc", 32, "concurrent requests while creating the sessions")
	extra := fs.Duration("wait-extra", 60*time.Second, "longest wait past the last deadline")
	otherKeys := fs.Int("other-keys", 0, "redis: first write this many unrelated keys with a 1 h TTL (the pitfall's bad case)")
	fs.Parse(args)
	*extra = min(*extra, 10*time.Minute)
	if *otherKeys > 5_000_000 {
		*otherKeys = 5_000_000
	}
	e, err := setup(&c)
	if err != nil {
		logf("setup: %v", err)
		return 1
	}
	defer e.close()
	load0 := loadavg()
	if *otherKeys > 0 {
		if e.redisU == "" {
			logf("--other-keys needs the redis backend")
			return 2
		}
		t := time.Now()
		if err := fillRedis(strings.TrimSuffix(strings.TrimPrefix(e.redisU, "redis://"), "/0"), *otherKeys); err != nil {
			logf("fill redis: %v", err)
			return 1
		}
		logf("lateness: wrote %d other keys with a 1 h TTL in %s", *otherKeys, time.Since(t).Round(time.Millisecond))
	}
	run := time.Now().UnixNano() % 1_000_000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	type off struct {
		recv time.Time
		at   int64
	}
	var mu sync.Mutex
	offline := make(map[int]off, *sessions)
	var ready atomic.Int64
	var wg sync.WaitGroup
	prefix := fmt.Sprintf("lu%d-", run)
	for r := 0; r < *rooms; r++ {
		room := fmt.Sprintf("late%d-%03d", run, r)
		tok := mintToken(c.secret, fmt.Sprintf("watch%d-%03d", run, r), "Watcher", 2*time.Hour)
		nd := e.nodes[r%len(e.nodes)]
		st, err := openSSE(ctx, nd.addr, srcIP(r, c.srcIPs), "/sse/room/"+room+"?format=json", tok, nil, nil)
		if err != nil {
			logf("watcher %d: %v", r, err)
			return 1
		}
		wg.Go(func() {
			defer st.close()
			for {
				ev, err := st.next(0)
				if err != nil {
					return
				}
				if ev.name == "sync" {
					ready.Add(1)
				}
				if ev.name != "status" {
					continue
				}
				var sj struct {
					User struct {
						ID string `json:"id"`
					} `json:"user"`
					To string `json:"to"`
					At int64  `json:"at"`
				}
				if json.Unmarshal(ev.data, &sj) != nil || sj.To != "offline" || !strings.HasPrefix(sj.User.ID, prefix) {
					continue
				}
				i, _ := strconv.Atoi(strings.TrimPrefix(sj.User.ID, prefix))
				mu.Lock()
				if _, dup := offline[i]; !dup {
					offline[i] = off{ev.at, sj.At}
				}
				mu.Unlock()
			}
		})
	}
	for deadline := time.Now().Add(30 * time.Second); ready.Load() < int64(*rooms) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	metrics0 := scrapeMetrics(e.nodes[0].url)

	// Create the sessions: one join each, then silence.
	logf("lateness: creating %d sessions (ttl %s)", *sessions, c.ttl)
	sent := make([]time.Time, *sessions)
	createLat := make([]time.Duration, *sessions)
	var next, errs atomic.Int64
	var cw sync.WaitGroup
	t0 := time.Now()
	for w := 0; w < *conc; w++ {
		nd := e.nodes[w%len(e.nodes)]
		cw.Go(func() {
			hc := newHTTPConn(nd.addr, nil, nil, nil)
			defer hc.close()
			for {
				i := int(next.Add(1) - 1)
				if i >= *sessions {
					return
				}
				uid := fmt.Sprintf("%s%d", prefix, i)
				tok := mintToken(c.secret, uid, "U"+strconv.Itoa(i), 2*time.Hour)
				room := fmt.Sprintf("late%d-%03d", run, i%*rooms)
				req := buildRequest("POST", "127.0.0.1", "/api/presence/room/"+room, tok,
					fmt.Appendf(nil, `{"action":"join","sessionId":"lsess%07d"}`, i))
				ts := time.Now()
				code, _, err := hc.do(req, 10*time.Second)
				if err != nil || code != 200 {
					errs.Add(1)
					continue
				}
				sent[i] = ts
				createLat[i] = time.Since(ts)
			}
		})
	}
	cw.Wait()
	created := time.Since(t0)
	first := sent[0]
	for _, t := range sent {
		if !t.IsZero() && t.Before(first) {
			first = t
		}
	}
	if created > c.ttl {
		logf("lateness: WARNING creating took %s, longer than the ttl %s: expiries overlapped the creation", created, c.ttl)
	}
	logf("lateness: created in %s (%.0f/s, %d errors); waiting for the offline events", created.Round(time.Millisecond),
		float64(*sessions)/created.Seconds(), errs.Load())
	want := *sessions - int(errs.Load())
	meter := newCPUMeter(e.cpuPIDs())
	waitProf := e.profile(fmt.Sprintf("lateness-%s-s%d", c.backend, *sessions), c.ttl)
	deadline := time.Now().Add(c.ttl + *extra)
	for time.Now().Before(deadline) {
		mu.Lock()
		n := len(offline)
		mu.Unlock()
		if n >= want {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cpu := meter.stop()
	waitProf()
	metrics1 := scrapeMetrics(e.nodes[0].url)
	cancel()
	mu.Lock()
	var late, atLate []time.Duration
	for i, o := range offline {
		if sent[i].IsZero() {
			continue
		}
		dl := sent[i].Add(c.ttl)
		late = append(late, o.recv.Sub(dl))
		atLate = append(atLate, time.UnixMilli(o.at).Sub(dl))
	}
	got := len(offline)
	mu.Unlock()
	var cl []time.Duration
	for i, d := range createLat {
		if !sent[i].IsZero() {
			cl = append(cl, d)
		}
	}
	figs := map[string]any{
		"sessions": *sessions, "created": want, "offline_events": got, "missing": want - got,
		"lateness": summarize(late), "at_minus_deadline": summarize(atLate), "create_latency": summarize(cl),
		"create_s": round2(created.Seconds()), "ttl": c.ttl.String(), "rooms": *rooms, "other_keys": *otherKeys,
		"waited_past_last_deadline_s": round1(extra.Seconds()),
	}
	if c.sweep > 0 {
		figs["sweep_interval"] = c.sweep.String()
	} else if c.backend == "redis" {
		figs["sweep_interval"] = "100ms (default)"
	}
	// The gateway's own histogram (true deadlines, node 1's share).
	hist := map[string]float64{}
	for _, le := range []string{"0.05", "0.1", "0.25", "0.5", "1", "+Inf"} {
		k := `presenced_offline_lateness_seconds_bucket{le="` + le + `"}`
		hist["le_"+le] = metrics1[k] - metrics0[k]
	}
	if n := metrics1["presenced_offline_lateness_seconds_count"] - metrics0["presenced_offline_lateness_seconds_count"]; n > 0 {
		hist["mean_ms"] = round2(1000 * (metrics1["presenced_offline_lateness_seconds_sum"] - metrics0["presenced_offline_lateness_seconds_sum"]) / n)
	}
	figs["gateway_histogram_node1"] = hist
	logf("lateness: %d/%d offline events; lateness %+v", got, want, figs["lateness"])
	cs := fmt.Sprintf("sessions=%d nodes=%d", *sessions, len(e.nodes))
	if c.backend == "redis" {
		cs += fmt.Sprintf(" sweep=%v other-keys=%d", figs["sweep_interval"], *otherKeys)
	}
	c.emit(result{Scenario: "lateness", Case: cs, Figures: figs, CPU: toAny(cpu), LoadAvg: load0})
	return 0
}

// fillRedis writes n keys with a 1 h TTL, pipelined.
func fillRedis(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Minute))
	w := bufio.NewWriterSize(c, 1<<16)
	r := bufio.NewReader(c)
	errc := make(chan error, 1)
	go func() {
		for i := 0; i < n; i++ {
			line, err := r.ReadString('\n')
			if err != nil {
				errc <- err
				return
			}
			if !strings.HasPrefix(line, "+OK") {
				errc <- fmt.Errorf("redis: %s", line)
				return
			}
		}
		errc <- nil
	}()
	for i := 0; i < n; i++ {
		k := "other:" + strconv.Itoa(i)
		fmt.Fprintf(w, "*5\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nx\r\n$2\r\nEX\r\n$4\r\n3600\r\n", len(k), k)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return <-errc
}
