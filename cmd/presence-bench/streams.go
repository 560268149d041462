package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// streamsMain ramps --n idle room streams (rooms of --room-size distinct
// users; each stream keeps its session alive, so "idle" includes the
// gateway's keep-alive comments and session refreshes) and holds them for
// --hold, then reports the gateways' RSS per stream and CPU while idle.
// Clients run in worker processes of at most --per-proc streams each (the
// open-files limit is per process).
func streamsMain(args []string) int {
	var c common
	fs := flag.NewFlagSet("streams", flag.ExitOnError)
	c.register(fs)
	n := fs.Int("n", 2000, "streams to open in total (spread over the nodes)")
	roomSize := fs.Int("room-size", 10, "streams per room (distinct users)")
	format := fs.String("format", "json", "json or html streams")
	perProc := fs.Int("per-proc", 15000, "client streams per worker process")
	rampConc := fs.Int("ramp-conc", 64, "concurrent stream opens per worker")
	hold := fs.Duration("hold", 30*time.Second, "measure idle CPU over this long once all streams are open")
	settle := fs.Duration("settle", 5*time.Second, "pause between the end of the ramp and the measurement")
	maxRamp := fs.Duration("max-ramp", 10*time.Minute, "give up ramping after this long")
	watch := fs.Bool("watch", false, "open watch-only streams (GET /sse?room=R&watch=1: no join, no session) instead of joining room streams")
	gcWait := fs.Duration("gc-wait", 10*time.Second, "after the hold: force a GC in own gateways and read RSS again after this long (0 = skip)")
	fs.Parse(args)
	*hold = min(*hold, 10*time.Minute)
	e, err := setup(&c)
	if err != nil {
		logf("setup: %v", err)
		return 1
	}
	defer e.close()
	load0 := loadavg()
	time.Sleep(time.Second)
	base := make([]procStat, len(e.nodes))
	baseHeap := make([]map[string]float64, len(e.nodes))
	for i, nd := range e.nodes {
		base[i] = readProc(nd.pid)
		baseHeap[i] = scrapeMetrics(nd.url)
	}
	redisBase := readProc(e.redisPID())

	self, _ := os.Executable()
	addrs := make([]string, len(e.nodes))
	for i, nd := range e.nodes {
		addrs[i] = nd.addr
	}
	type worker struct {
		cmd                                    *exec.Cmd
		stdin                                  io.WriteCloser
		assigned                               int
		opened, failed, closed, keepalive, evs atomic.Int64
		done                                   chan struct{}
	}
	var workers []*worker
	run := time.Now().UnixNano() % 1_000_000
	// The ramp is the connect benchmark: gateway and Redis CPU over it, per
	// stream opened (until its first event: a connect is done when the
	// state arrived).
	rampMeter := newCPUMeter(e.cpuPIDs())
	// A CPU profile of the first seconds of the ramp (with --pprof-dir).
	rampProf := e.profile(fmt.Sprintf("connect-%s-n%d", c.backend, *n), 3*time.Second)
	t0 := time.Now()
	for from := 0; from < *n; from += *perProc {
		to := min(*n, from+*perProc)
		w := &worker{assigned: to - from, done: make(chan struct{})}
		cmd := exec.Command(self, "streams-worker", "--addrs", strings.Join(addrs, ","), "--from", strconv.Itoa(from),
			"--to", strconv.Itoa(to), "--room-size", strconv.Itoa(*roomSize), "--format", *format, "--secret", c.secret,
			"--src-ips", strconv.Itoa(c.srcIPs), "--ramp-conc", strconv.Itoa(*rampConc), "--run", strconv.FormatInt(run, 10),
			"--idle", (3 * c.keepalive).String(), "--watch="+strconv.FormatBool(*watch))
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		w.stdin, _ = cmd.StdinPipe()
		if err := cmd.Start(); err != nil {
			logf("worker: %v", err)
			return 1
		}
		w.cmd = cmd
		go func() {
			defer close(w.done)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				var st struct{ Opened, Failed, Closed, Keepalives, Events int64 }
				if json.Unmarshal(sc.Bytes(), &st) == nil {
					w.opened.Store(st.Opened)
					w.failed.Store(st.Failed)
					w.closed.Store(st.Closed)
					w.keepalive.Store(st.Keepalives)
					w.evs.Store(st.Events)
				}
			}
		}()
		workers = append(workers, w)
	}
	sum := func(f func(w *worker) int64) int64 {
		var s int64
		for _, w := range workers {
			s += f(w)
		}
		return s
	}
	stopWorkers := func() {
		for _, w := range workers {
			w.stdin.Close()
		}
		for _, w := range workers {
			select {
			case <-w.done:
			case <-time.After(60 * time.Second):
				_ = w.cmd.Process.Kill()
			}
			_ = w.cmd.Wait()
		}
	}
	defer stopWorkers()
	lastLog := time.Now()
	for {
		opened, failed := sum(func(w *worker) int64 { return w.opened.Load() }), sum(func(w *worker) int64 { return w.failed.Load() })
		if opened+failed >= int64(*n) || time.Since(t0) > *maxRamp {
			break
		}
		if time.Since(lastLog) > 5*time.Second {
			logf("streams: %d open, %d failed, gateway RSS %s", opened, failed, rssList(e))
			lastLog = time.Now()
		}
		time.Sleep(100 * time.Millisecond)
	}
	ramp := time.Since(t0)
	rampCPU := rampMeter.stop()
	rampProf()
	logf("streams: ramp done in %s: %d open, %d failed", ramp.Round(time.Millisecond), sum(func(w *worker) int64 { return w.opened.Load() }), sum(func(w *worker) int64 { return w.failed.Load() }))
	time.Sleep(*settle)

	pids := e.cpuPIDs()
	for i, w := range workers {
		pids[fmt.Sprintf("client%d", i+1)] = w.cmd.Process.Pid
	}
	meter := newCPUMeter(pids)
	ka0 := sum(func(w *worker) int64 { return w.keepalive.Load() })
	ev0 := sum(func(w *worker) int64 { return w.evs.Load() })
	waitProf := e.profile(fmt.Sprintf("streams-%s-n%d", c.backend, *n), *hold)
	th := time.Now()
	time.Sleep(*hold)
	held := time.Since(th)
	cpu := meter.stop()
	waitProf()
	e.saveProfiles(fmt.Sprintf("streams-%s-n%d", c.backend, *n), "heap", "goroutine")
	delete(cpu, "client") // the parent only watches
	ka := sum(func(w *worker) int64 { return w.keepalive.Load() }) - ka0
	evs := sum(func(w *worker) int64 { return w.evs.Load() }) - ev0
	opened := sum(func(w *worker) int64 { return w.opened.Load() })
	closed := sum(func(w *worker) int64 { return w.closed.Load() })
	failed := sum(func(w *worker) int64 { return w.failed.Load() })

	figs := map[string]any{
		"streams_requested": *n, "streams_open": opened - closed, "open_failed": failed, "closed_during_run": closed,
		"ramp_s": round2(ramp.Seconds()), "hold_s": round2(held.Seconds()), "format": *format, "room_size": *roomSize,
		"keepalives_per_s": round1(float64(ka) / held.Seconds()), "events_per_s_during_hold": round1(float64(evs) / held.Seconds()),
		"nodes": len(e.nodes), "gateway_keepalive": c.keepalive.String(), "gateway_ttl": c.ttl.String(), "watch": *watch,
	}
	// Connect figures: the ramp's rate and the CPU each connect cost.
	var rampOpened int64 = opened
	if rampOpened > 0 && ramp > 0 {
		figs["connects_per_s"] = round1(float64(rampOpened) / ramp.Seconds())
		var gw float64
		for k, v := range rampCPU {
			if strings.HasPrefix(k, "gateway") {
				gw += v
			}
		}
		figs["gateway_cpu_us_per_connect"] = round1(gw / 100 * ramp.Seconds() * 1e6 / float64(rampOpened))
		if v, ok := rampCPU["redis"]; ok {
			figs["redis_cpu_us_per_connect"] = round1(v / 100 * ramp.Seconds() * 1e6 / float64(rampOpened))
		}
		figs["ramp_cpu_percent_of_one_core"] = rampCPU
	}
	live := opened - closed
	var totalRSS, totalBase int64
	for i, nd := range e.nodes {
		st := readProc(nd.pid)
		m := scrapeMetrics(nd.url)
		per := float64(live) / float64(len(e.nodes))
		if v, ok := openStreams(m); ok {
			per = v
		}
		key := fmt.Sprintf("node%d", i+1)
		figs[key] = map[string]any{
			"streams": per, "rss_before_MiB": round1(float64(base[i].RSS) / (1 << 20)), "rss_MiB": round1(float64(st.RSS) / (1 << 20)),
			"rss_per_stream_KiB":         round2(float64(st.RSS-base[i].RSS) / per / 1024),
			"heap_inuse_per_stream_KiB":  round2((m["go_memstats_heap_inuse_bytes"] - baseHeap[i]["go_memstats_heap_inuse_bytes"]) / per / 1024),
			"stack_inuse_per_stream_KiB": round2((m["go_memstats_stack_inuse_bytes"] - baseHeap[i]["go_memstats_stack_inuse_bytes"]) / per / 1024),
			"goroutines":                 m["go_goroutines"],
			"goroutines_per_stream":      round2((m["go_goroutines"] - baseHeap[i]["go_goroutines"]) / per),
			// What /metrics alone says: go_goroutines / presenced_sse_open_streams.
			"go_goroutines_over_open_streams": round2(m["go_goroutines"] / per),
		}
		totalRSS += st.RSS
		totalBase += base[i].RSS
	}
	if live > 0 {
		figs["rss_per_stream_KiB"] = round2(float64(totalRSS-totalBase) / float64(live) / 1024)
	}
	// The same after a forced GC (own gateways: pprof's heap?gc=1) and a
	// pause for the scavenger: an idle gateway allocates too little to run a
	// GC by itself, so the figures above still hold the ramp's garbage and
	// the stacks the ramp grew. This is the floor an idle node settles to.
	if *gcWait > 0 && e.forceGC() {
		time.Sleep(*gcWait)
		var rss int64
		for i, nd := range e.nodes {
			st := readProc(nd.pid)
			m := scrapeMetrics(nd.url)
			per, _ := openStreams(m)
			if per <= 0 {
				continue
			}
			if nf, ok := figs[fmt.Sprintf("node%d", i+1)].(map[string]any); ok {
				nf["after_gc_rss_per_stream_KiB"] = round2(float64(st.RSS-base[i].RSS) / per / 1024)
				nf["after_gc_heap_inuse_per_stream_KiB"] = round2((m["go_memstats_heap_inuse_bytes"] - baseHeap[i]["go_memstats_heap_inuse_bytes"]) / per / 1024)
				nf["after_gc_stack_inuse_per_stream_KiB"] = round2((m["go_memstats_stack_inuse_bytes"] - baseHeap[i]["go_memstats_stack_inuse_bytes"]) / per / 1024)
			}
			rss += st.RSS
		}
		if live > 0 {
			figs["after_gc_rss_per_stream_KiB"] = round2(float64(rss-totalBase) / float64(live) / 1024)
		}
	}
	if e.redisPID() > 0 {
		figs["redis_rss_MiB"] = round1(float64(readProc(e.redisPID()).RSS) / (1 << 20))
		figs["redis_rss_before_MiB"] = round1(float64(redisBase.RSS) / (1 << 20))
	}
	logf("streams: %d open (%d closed during run), RSS/stream %.2f KiB, cpu %v", live, closed, figs["rss_per_stream_KiB"], cpu)
	c.emit(result{Scenario: "streams", Case: fmt.Sprintf("n=%d nodes=%d format=%s", *n, len(e.nodes), *format),
		Figures: figs, CPU: toAny(cpu), LoadAvg: load0})
	return 0
}

func rssList(e *env) string {
	var s []string
	for _, nd := range e.nodes {
		s = append(s, fmt.Sprintf("%.0fMiB", float64(readProc(nd.pid).RSS)/(1<<20)))
	}
	return strings.Join(s, ",")
}

// openStreams sums presenced_sse_open_streams over its kinds (room, watch,
// users; the old gateway had room and users).
func openStreams(m map[string]float64) (float64, bool) {
	var n float64
	ok := false
	for k, v := range m {
		if strings.HasPrefix(k, "presenced_sse_open_streams") {
			n += v
			ok = true
		}
	}
	return n, ok
}

// sumPrefix sums every series whose name starts with prefix.
func sumPrefix(m map[string]float64, prefix string) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// scrapeMetrics reads the gateway's /metrics (Prometheus text) into a map
// of series → value.
func scrapeMetrics(base string) map[string]float64 {
	out := map[string]float64{}
	cl := &http.Client{Timeout: 10 * time.Second}
	resp, err := cl.Get(base + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil || math.IsNaN(v) {
			continue
		}
		out[l[:i]] = v
	}
	return out
}

// streamsWorkerMain holds streams [from, to) until its stdin closes, and
// prints its counters as a JSON line every 500 ms.
func streamsWorkerMain(args []string) int {
	fs := flag.NewFlagSet("streams-worker", flag.ExitOnError)
	addrs := fs.String("addrs", "", "gateway host:port list")
	from := fs.Int("from", 0, "")
	to := fs.Int("to", 0, "")
	roomSize := fs.Int("room-size", 10, "")
	format := fs.String("format", "json", "")
	secret := fs.String("secret", "", "")
	srcIPs := fs.Int("src-ips", 4, "")
	rampConc := fs.Int("ramp-conc", 64, "")
	runID := fs.String("run", "0", "")
	idle := fs.Duration("idle", 45*time.Second, "a stream silent this long counts as dead")
	watch := fs.Bool("watch", false, "watch-only streams (GET /sse?room=R&watch=1)")
	fs.Parse(args)
	raiseNofile()
	nodes := strings.Split(*addrs, ",")
	for _, a := range nodes {
		if err := checkLoopback(a); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var opened, failed, closed, keepalives, events atomic.Int64
	go func() {
		io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	report := func() {
		fmt.Printf(`{"Opened":%d,"Failed":%d,"Closed":%d,"Keepalives":%d,"Events":%d}`+"\n",
			opened.Load(), failed.Load(), closed.Load(), keepalives.Load(), events.Load())
	}
	go func() {
		for ctx.Err() == nil {
			report()
			time.Sleep(500 * time.Millisecond)
		}
	}()
	var wg sync.WaitGroup
	sem := make(chan struct{}, *rampConc)
	var mu sync.Mutex
	var streams []*sseStream
	tokens := map[int]string{}
	for i := *from; i < *to && ctx.Err() == nil; i++ {
		sem <- struct{}{}
		uid := fmt.Sprintf("hold%s-%07d", *runID, i)
		room := fmt.Sprintf("hold%s-%06d", *runID, i / *roomSize)
		tok := mintToken(*secret, uid, uid, 4*time.Hour)
		_ = tokens
		addr := nodes[i%len(nodes)]
		path := fmt.Sprintf("/sse/room/%s?format=%s&sid=s%07d", room, *format, i)
		if *watch {
			path = fmt.Sprintf("/sse?room=%s&watch=1&format=%s", room, *format)
		}
		wg.Go(func() {
			st, err := openSSE(ctx, addr, srcIP(i, *srcIPs), path, tok, nil, nil)
			if err != nil {
				<-sem
				if failed.Add(1) <= 3 {
					fmt.Fprintf(os.Stderr, "open %s from %s: %v\n", path, srcIP(i, *srcIPs), err)
				}
				return
			}
			mu.Lock()
			streams = append(streams, st)
			mu.Unlock()
			// First bytes of state, then count as open.
			first := true
			for {
				ev, err := st.next(*idle)
				if err != nil {
					if first {
						<-sem
						failed.Add(1)
					} else if ctx.Err() == nil {
						closed.Add(1)
					}
					st.close()
					return
				}
				if first {
					first = false
					opened.Add(1)
					<-sem
				}
				if ev.name == ":" {
					keepalives.Add(1)
				} else {
					events.Add(1)
				}
			}
		})
	}
	<-ctx.Done()
	mu.Lock()
	for _, st := range streams {
		st.close()
	}
	mu.Unlock()
	wg.Wait()
	report()
	return 0
}
