package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// fanoutMain: N room streams (subscribers) in one room, one more user (the
// changer) in that room flips its status with POST /api/presence, and every
// subscriber records when the change reached it. Two clocks are reported:
//   - from_at: receipt − the event's "at" field (when the store made the
//     transition; whole milliseconds, so this over-reads by up to 1 ms);
//   - from_post: receipt − when the changer's POST was written (includes the
//     HTTP request and the store write).
//
// With --nodes 2 (redis) subscribers alternate between the nodes and the
// changer posts to node 1: the same run reports same-node and cross-node.
func fanoutMain(args []string) int {
	var c common
	fs := flag.NewFlagSet("fanout", flag.ExitOnError)
	c.register(fs)
	ns := fs.String("n", "100,1000", "subscriber counts, one case each")
	subUsers := fs.Int("subscriber-users", 100, "distinct users the subscribers are spread over (sessions of the same user share one membership: a join storm of N distinct users is N² join events, which is the ramp, not the fan-out)")
	changes := fs.Int("changes", 20, "status changes per case")
	gap := fs.Duration("gap", 250*time.Millisecond, "pause between two changes (after the previous one reached everyone)")
	wait := fs.Duration("wait", 10*time.Second, "longest wait for one change to reach everyone")
	format := fs.String("format", "json", "subscriber streams: json (status events with \"at\") or html (presence-{user} dots)")
	dialConc := fs.Int("dial-conc", 64, "concurrent stream opens while ramping")
	settle := fs.Duration("settle", 2*time.Second, "pause after the ramp before the first change")
	watch := fs.Bool("watch", false, "watch-only subscribers (GET /sse?room=R&watch=1): they do not join the room")
	fs.Parse(args)
	if *changes > 1000 {
		*changes = 1000
	}
	e, err := setup(&c)
	if err != nil {
		logf("setup: %v", err)
		return 1
	}
	defer e.close()
	run := time.Now().UnixNano() % 1_000_000
	for _, n := range splitInts(*ns) {
		fanoutCase(&c, e, fanoutOpts{n: n, subUsers: subscriberUsers(n, *subUsers), watch: *watch, changes: *changes, gap: *gap, wait: *wait,
			html: *format == "html", dialConc: *dialConc, settle: *settle, room: fmt.Sprintf("fan%d-%d", n, run)})
	}
	return 0
}

type fanoutOpts struct {
	n, subUsers, changes, dialConc int
	gap, wait, settle              time.Duration
	html, watch                    bool
	room                           string
}

// subscriberUsers is how many distinct users n subscriber streams are
// spread over: at least want, and enough that no user holds more than 30
// streams (the store allows 32 live sessions per user, the new keeper 64
// streams per user per node).
func subscriberUsers(n, want int) int {
	return max(want, (n+29)/30)
}

type receipt struct {
	sub  int
	k    int
	recv time.Time
	at   int64 // ms since epoch, from the payload (json)
	to   string
}

func fanoutCase(c *common, e *env, o fanoutOpts) {
	load0 := loadavg()
	logf("fanout n=%d: opening %d streams on %d node(s)", o.n, o.n, len(e.nodes))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	toks := make([]string, o.subUsers)
	for i := range toks {
		uid := fmt.Sprintf("fsub%d-%04d", o.n, i) // per case: the sessions of an earlier case live on until their TTL
		toks[i] = mintToken(c.secret, uid, "Sub "+uid, 2*time.Hour)
	}
	changer := fmt.Sprintf("changer-%s", o.room)
	chTok := mintToken(c.secret, changer, "Changer", 2*time.Hour)
	dotEvent := "presence-" + changer

	receipts := make(chan receipt, 1<<16)
	var ready, failed, closedEarly atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.dialConc)
	streams := make([]*sseStream, o.n)
	format := "json"
	if o.html {
		format = "html"
	}
	t0 := time.Now()
	for i := 0; i < o.n; i++ {
		sem <- struct{}{}
		n := e.nodes[i%len(e.nodes)]
		path := fmt.Sprintf("/sse/room/%s?format=%s&sid=fs%d-%07d", o.room, format, o.n, i)
		if o.watch {
			path = fmt.Sprintf("/sse?room=%s&watch=1&format=%s", o.room, format)
		}
		st, err := openSSE(ctx, n.addr, srcIP(i, c.srcIPs), path, toks[i%len(toks)], nil, nil)
		if err != nil {
			<-sem
			failed.Add(1)
			if failed.Load() <= 3 {
				logf("open stream %d: %v", i, err)
			}
			continue
		}
		streams[i] = st
		wg.Go(func() {
			defer st.close()
			gotSync := o.html
			// JSON streams see the changer's join (k=0) as a join event; HTML
			// streams get no dot for it (the join re-renders the stack), so
			// their first dot is change 1.
			k := 0
			if o.html {
				k = 1
			}
			for {
				ev, err := st.next(0)
				if err != nil {
					if ctx.Err() == nil {
						closedEarly.Add(1)
					}
					if !gotSync {
						<-sem
					}
					return
				}
				if !gotSync && (ev.name == "sync" || ev.name == "members") {
					gotSync = true
					ready.Add(1)
					<-sem
				}
				switch {
				case !o.html && (ev.name == "status" || ev.name == "join"):
					var sj struct {
						User struct {
							ID string `json:"id"`
						} `json:"user"`
						To string `json:"to"`
						At int64  `json:"at"`
					}
					if json.Unmarshal(ev.data, &sj) == nil && sj.User.ID == changer {
						// The changer's join (k=0) arrives as a join event; each
						// flip after it as a status event.
						if ev.name == "join" {
							k = 0
						}
						receipts <- receipt{sub: i, k: k, recv: ev.at, at: sj.At, to: sj.To}
						k++
					}
				case o.html && ev.name == dotEvent:
					to := ""
					if j := strings.Index(string(ev.data), `data-status="`); j >= 0 {
						rest := string(ev.data[j+13:])
						to = rest[:strings.IndexByte(rest, '"')]
					}
					receipts <- receipt{sub: i, k: k, recv: ev.at, to: to}
					k++
				}
			}
		})
		if o.html {
			// HTML streams send members first; opening is enough.
			ready.Add(1)
			<-sem
		}
	}
	// Wait for every stream's first state.
	for deadline := time.Now().Add(2 * time.Minute); ready.Load()+failed.Load()+closedEarly.Load() < int64(o.n) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	ramp := time.Since(t0)
	logf("fanout n=%d: %d streams ready in %s (%d failed, %d closed)", o.n, ready.Load(), ramp.Round(time.Millisecond), failed.Load(), closedEarly.Load())
	time.Sleep(o.settle)

	// The changer joins (k=0: offline → online), then flips M times.
	hc := newHTTPConn(e.nodes[0].addr, nil, nil, nil)
	defer hc.close()
	post := func(path, body string) (time.Time, time.Time, error) {
		req := buildRequest("POST", "127.0.0.1", path, chTok, []byte(body))
		ts := time.Now()
		code, b, err := hc.do(req, 10*time.Second)
		if err == nil && code != 200 {
			err = fmt.Errorf("%s: %d %s", path, code, b)
		}
		return ts, time.Now(), err
	}
	type change struct{ sent, answered time.Time }
	chs := make([]change, 0, o.changes+1)
	got := map[int]int{}
	var recs []receipt
	expect := int(ready.Load())
	collect := func(k int) {
		deadline := time.After(o.wait)
		for got[k] < expect {
			select {
			case r := <-receipts:
				recs = append(recs, r)
				got[r.k]++
			case <-deadline:
				logf("change %d reached %d of %d subscribers within %s", k, got[k], expect, o.wait)
				return
			}
		}
	}
	sid := fmt.Sprintf("changer%06d", o.n)
	ts, ta, err := post("/api/presence/room/"+o.room, fmt.Sprintf(`{"action":"join","sessionId":"%s"}`, sid))
	if err != nil {
		logf("changer join: %v", err)
		return
	}
	chs = append(chs, change{ts, ta})
	if o.html {
		time.Sleep(o.settle) // no per-subscriber signal for the join: let it settle
	} else {
		collect(0)
	}
	meter := newCPUMeter(e.cpuPIDs())
	tChanges := time.Now()
	profDur := time.Duration(o.changes) * (o.gap + 50*time.Millisecond)
	waitProf := e.profile(fmt.Sprintf("fanout-%s-n%d", c.backend, o.n), profDur)
	for k := 1; k <= o.changes; k++ {
		time.Sleep(o.gap)
		status := "busy"
		if k%2 == 0 {
			status = "online"
		}
		ts, ta, err := post("/api/presence", fmt.Sprintf(`{"status":"%s","sessionId":"%s"}`, status, sid))
		if err != nil {
			logf("change %d: %v", k, err)
			break
		}
		chs = append(chs, change{ts, ta})
		collect(k)
	}
	cpu := meter.stop()
	changesTook := time.Since(tChanges)
	waitProf()
	cancel()
	for _, st := range streams {
		if st != nil {
			st.close()
		}
	}
	wg.Wait()
	// drain
	for len(receipts) > 0 {
		r := <-receipts
		recs = append(recs, r)
	}

	// Latencies of changes 1..M (k=0 is the join).
	fromAt := map[string][]time.Duration{}
	fromPost := map[string][]time.Duration{}
	wrong := 0
	perChangeMax := make([]time.Duration, len(chs))
	for _, r := range recs {
		if r.k == 0 || r.k >= len(chs) {
			continue
		}
		want := "busy"
		if r.k%2 == 0 {
			want = "online"
		}
		if r.to != want {
			wrong++
		}
		grp := "all"
		groups := []string{grp}
		if len(e.nodes) > 1 {
			if r.sub%len(e.nodes) == 0 {
				groups = append(groups, "same-node")
			} else {
				groups = append(groups, "cross-node")
			}
		}
		dp := r.recv.Sub(chs[r.k].sent)
		perChangeMax[r.k] = max(perChangeMax[r.k], dp)
		for _, g := range groups {
			fromPost[g] = append(fromPost[g], dp)
			if !o.html {
				fromAt[g] = append(fromAt[g], r.recv.Sub(time.UnixMilli(r.at)))
			}
		}
	}
	var postLat []time.Duration
	for _, ch := range chs[1:] {
		postLat = append(postLat, ch.answered.Sub(ch.sent))
	}
	figs := map[string]any{
		"subscribers": o.n, "ready": ready.Load(), "open_failed": failed.Load(), "closed_early": closedEarly.Load(),
		"changes": len(chs) - 1, "wrong_order": wrong, "ramp_s": round2(ramp.Seconds()),
		"post_latency": summarize(postLat), "format": map[bool]string{true: "html", false: "json"}[o.html],
		"subscriber_users": o.subUsers, "nodes": len(e.nodes), "watch": o.watch,
	}
	for g, d := range fromPost {
		figs["from_post_"+g] = summarize(d)
	}
	for g, d := range fromAt {
		figs["from_at_"+g] = summarize(d)
	}
	figs["last_receipt_per_change"] = summarize(perChangeMax[1:])
	// Gateway CPU per delivered event (all nodes), over the changes phase:
	// the figure to compare before/after a change of the fan-out path.
	if n := len(fromPost["all"]); n > 0 {
		figs["gateway_cpu_us_per_delivery"] = round2(cpuPerReq(cpu, "gateway", n, changesTook))
		figs["client_cpu_us_per_delivery"] = round2(cpuPerReq(cpu, "client", n, changesTook))
	}
	logf("fanout n=%d: from_post %+v", o.n, figs["from_post_all"])
	if !o.html {
		logf("fanout n=%d: from_at   %+v", o.n, figs["from_at_all"])
	}
	c.emit(result{Scenario: "fanout", Case: fmt.Sprintf("n=%d nodes=%d format=%s watch=%v", o.n, len(e.nodes), figs["format"], o.watch),
		Figures: figs, CPU: toAny(cpu), LoadAvg: load0})
	time.Sleep(time.Second)
}
