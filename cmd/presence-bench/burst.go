package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// burstMain (issue 15): N subscribers of one room, HTML and JSON mixed, are
// all healthy readers; J users join the room within --window (an open loop:
// join j is sent at window·j/J). It reports what the gateway did to the
// healthy subscribers (presenced_streams_dropped_total and
// presenced_stream_queue_resyncs_total deltas, streams the client saw
// closed), how long the joins took to reach them, and whether every
// subscriber ended with the room's state.
//
// Latencies:
//   - json: receipt of the `join` event of user j − when join j's POST was
//     sent, over every (subscriber, join); and per join, the receipt at its
//     last subscriber − the POST ("join → last subscriber");
//   - html: the room's stack is re-rendered (coalesced), so a subscriber sees
//     counts, not joins: the first stack with count ≥ base+k − when the k-th
//     join's POST was answered (the store then holds ≥ k of them), over
//     every (subscriber, k); and the time from the last answer to the last
//     subscriber showing base+J.
func burstMain(args []string) int {
	var c common
	fs := flag.NewFlagSet("burst", flag.ExitOnError)
	c.register(fs)
	ns := fs.String("n", "1000", "subscriber counts, one case each")
	joinsList := fs.String("joins", "250", "users joining within the window, one case each (with every --n)")
	window := fs.Duration("window", time.Second, "the joins are spread evenly over this window")
	htmlShare := fs.Float64("html-share", 0.5, "share of HTML subscribers (the rest read ?format=json)")
	watch := fs.Bool("watch", false, "watch-only subscribers (GET /sse?room=R&watch=1) instead of joining room streams")
	joinConc := fs.Int("join-conc", 64, "HTTP connections the joins are sent from")
	wait := fs.Duration("wait", 60*time.Second, "longest wait for every subscriber to see every join")
	settle := fs.Duration("settle", 2*time.Second, "pause after the ramp")
	dialConc := fs.Int("dial-conc", 64, "concurrent stream opens while ramping")
	fs.Parse(args)
	e, err := setup(&c)
	if err != nil {
		logf("setup: %v", err)
		return 1
	}
	defer e.close()
	run := time.Now().UnixNano() % 1_000_000
	for _, n := range splitInts(*ns) {
		for _, j := range splitInts(*joinsList) {
			burstCase(&c, e, burstOpts{n: min(n, 15000), joins: min(j, 20000), window: *window, htmlShare: *htmlShare, watch: *watch,
				joinConc: max(1, *joinConc), wait: *wait, settle: *settle, dialConc: max(1, *dialConc),
				room: fmt.Sprintf("burst%d-%d-%d", n, j, run)})
		}
	}
	return 0
}

type burstOpts struct {
	n, joins, joinConc, dialConc int
	window, wait, settle         time.Duration
	htmlShare                    float64
	watch                        bool
	room                         string
}

// burstSub is one subscriber's view.
type burstSub struct {
	html bool
	// json: when the join of user j arrived (unix nanos; 0 = not yet).
	seen []int64
	// html: base count, and when the count first reached base+k.
	base    int
	reached []int64
	count   int
	got     atomic.Int64 // joins seen (json) / count above base (html)
}

var countRe = []byte(`data-count="`)

func stackCount(b []byte) (int, bool) {
	i := bytes.Index(b, countRe)
	if i < 0 {
		return 0, false
	}
	rest := b[i+len(countRe):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest[:j]))
	return n, err == nil
}

func burstCase(c *common, e *env, o burstOpts) {
	load0 := loadavg()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	users := subscriberUsers(o.n, 100)
	toks := make([]string, users)
	for i := range toks {
		uid := fmt.Sprintf("bsub%s-%04d", o.room, i)
		toks[i] = mintToken(c.secret, uid, "Sub "+uid, 2*time.Hour)
	}
	joinerPrefix := "bj" + o.room + "-"
	subs := make([]*burstSub, o.n)
	var ready, failed, closedEarly, closedDuring atomic.Int64
	var bursting atomic.Bool
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.dialConc)
	t0 := time.Now()
	nHTML := 0
	for i := 0; i < o.n; i++ {
		html := float64(i%100) < o.htmlShare*100
		if html {
			nHTML++
		}
		s := &burstSub{html: html}
		if html {
			s.reached = make([]int64, o.joins+1)
		} else {
			s.seen = make([]int64, o.joins)
		}
		subs[i] = s
		format := "json"
		if html {
			format = "html"
		}
		path := fmt.Sprintf("/sse/room/%s?format=%s&sid=bs%07d", o.room, format, i)
		if o.watch {
			path = fmt.Sprintf("/sse?room=%s&watch=1&format=%s", o.room, format)
		}
		sem <- struct{}{}
		nd := e.nodes[i%len(e.nodes)]
		st, err := openSSE(ctx, nd.addr, srcIP(i, c.srcIPs), path, toks[i%users], nil, nil)
		if err != nil {
			<-sem
			if failed.Add(1) <= 3 {
				logf("burst: open stream %d: %v", i, err)
			}
			continue
		}
		wg.Go(func() {
			defer st.close()
			isReady := false
			for {
				ev, err := st.next(0)
				if err != nil {
					if ctx.Err() == nil {
						closedEarly.Add(1)
						if bursting.Load() {
							closedDuring.Add(1)
						}
					}
					if !isReady {
						<-sem
					}
					return
				}
				if !isReady && (ev.name == "sync" || ev.name == "members") {
					isReady = true
					if s.html {
						s.base, _ = stackCount(ev.data)
						s.count = s.base
					}
					ready.Add(1)
					<-sem
					continue
				}
				switch {
				case s.html && ev.name == "members":
					n, ok := stackCount(ev.data)
					if !ok {
						continue
					}
					if !bursting.Load() {
						// The ramp's own joins (joining subscribers): the
						// base is the count when the burst starts.
						s.base, s.count = n, n
						continue
					}
					now := ev.at.UnixNano()
					for k := s.count + 1; k <= n; k++ {
						if d := k - s.base; d >= 1 && d <= o.joins && s.reached[d] == 0 {
							s.reached[d] = now
						}
					}
					if n > s.count {
						s.count = n
						s.got.Store(int64(n - s.base))
					}
				case !s.html && ev.name == "join":
					// A byte search, not json.Unmarshal: the client shares
					// the box with the gateway, and this runs N×J times.
					rest, ok := joinerIndex(ev.data, joinerPrefix)
					if !ok {
						continue
					}
					if j, err := strconv.Atoi(rest); err == nil && j >= 0 && j < o.joins && s.seen[j] == 0 {
						s.seen[j] = ev.at.UnixNano()
						s.got.Add(1)
					}
				}
			}
		})
	}
	for deadline := time.Now().Add(3 * time.Minute); ready.Load()+failed.Load()+closedEarly.Load() < int64(o.n) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	ramp := time.Since(t0)
	logf("burst n=%d joins=%d: %d streams ready in %s (%d failed, %d closed)", o.n, o.joins, ready.Load(), ramp.Round(time.Millisecond), failed.Load(), closedEarly.Load())
	time.Sleep(o.settle)

	// The joins: prebuilt requests, one connection per lane, open loop.
	reqs := make([][]byte, o.joins)
	for j := range reqs {
		uid := fmt.Sprintf("%s%d", joinerPrefix, j)
		tok := mintToken(c.secret, uid, "Joiner "+strconv.Itoa(j), 2*time.Hour)
		reqs[j] = buildRequest("POST", "127.0.0.1", "/api/presence/room/"+o.room, tok, fmt.Appendf(nil, `{"action":"join","sessionId":"bjs%07d"}`, j))
	}
	m0 := make([]map[string]float64, len(e.nodes))
	for i, nd := range e.nodes {
		m0[i] = scrapeMetrics(nd.url)
	}
	sent := make([]time.Time, o.joins)
	answered := make([]time.Time, o.joins)
	var joinErrs atomic.Int64
	meter := newCPUMeter(e.cpuPIDs())
	waitProf := e.profile(fmt.Sprintf("burst-%s-n%d-j%d", c.backend, o.n, o.joins), o.window+2*time.Second)
	bursting.Store(true)
	start := time.Now().Add(20 * time.Millisecond)
	var jwg sync.WaitGroup
	for lane := 0; lane < min(o.joinConc, o.joins); lane++ {
		jwg.Go(func() {
			hc := newHTTPConn(e.nodes[lane%len(e.nodes)].addr, nil, nil, nil)
			defer hc.close()
			for j := lane; j < o.joins; j += o.joinConc {
				at := start.Add(time.Duration(int64(o.window) * int64(j) / int64(o.joins)))
				time.Sleep(time.Until(at))
				sent[j] = time.Now()
				code, body, err := hc.do(reqs[j], 30*time.Second)
				answered[j] = time.Now()
				if err != nil || code != 200 {
					if joinErrs.Add(1) <= 3 {
						logf("burst: join %d: %d %s %v", j, code, body, err)
					}
				}
			}
		})
	}
	jwg.Wait()
	// Wait until every ready subscriber has every join, or --wait.
	complete := func() int {
		k := 0
		for _, s := range subs {
			if s.got.Load() >= int64(o.joins) {
				k++
			}
		}
		return k
	}
	want := int(ready.Load() - closedEarly.Load())
	for deadline := time.Now().Add(o.wait); time.Now().Before(deadline); {
		if complete() >= int(ready.Load()-closedEarly.Load()) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	cpu := meter.stop()
	meterSpan := time.Since(meter.t0)
	bursting.Store(false)
	waitProf()
	m1 := make([]map[string]float64, len(e.nodes))
	for i, nd := range e.nodes {
		m1[i] = scrapeMetrics(nd.url)
	}
	nComplete := complete()
	cancel()
	wg.Wait()

	// Latencies.
	var firstSent, lastSent, lastAnswer time.Time
	var ans []time.Time
	for j := range sent {
		if sent[j].IsZero() {
			continue
		}
		if firstSent.IsZero() || sent[j].Before(firstSent) {
			firstSent = sent[j]
		}
		lastSent = maxTime(lastSent, sent[j])
		lastAnswer = maxTime(lastAnswer, answered[j])
		ans = append(ans, answered[j])
	}
	sortTimes(ans)
	var jsonLat, htmlLat, joinToLast, htmlConv []time.Duration
	lastPerJoin := make([]int64, o.joins)
	var lastSeen int64
	for _, s := range subs {
		if s.html {
			for k := 1; k <= o.joins && k <= len(ans); k++ {
				if t := s.reached[k]; t != 0 {
					htmlLat = append(htmlLat, time.Duration(t-ans[k-1].UnixNano()))
					lastSeen = max(lastSeen, t)
				}
			}
			if t := s.reached[o.joins]; t != 0 {
				htmlConv = append(htmlConv, time.Duration(t-lastAnswer.UnixNano()))
			}
			continue
		}
		for j, t := range s.seen {
			if t == 0 || sent[j].IsZero() {
				continue
			}
			jsonLat = append(jsonLat, time.Duration(t-sent[j].UnixNano()))
			lastPerJoin[j] = max(lastPerJoin[j], t)
			lastSeen = max(lastSeen, t)
		}
	}
	for j, t := range lastPerJoin {
		if t != 0 {
			joinToLast = append(joinToLast, time.Duration(t-sent[j].UnixNano()))
		}
	}
	delta := func(prefix string) float64 {
		var d float64
		for i := range e.nodes {
			d += sumPrefix(m1[i], prefix) - sumPrefix(m0[i], prefix)
		}
		return d
	}
	dropped := map[string]float64{}
	for i := range e.nodes {
		for k, v := range m1[i] {
			if strings.HasPrefix(k, "presenced_streams_dropped_total") {
				if d := v - m0[i][k]; d != 0 {
					dropped[strings.TrimPrefix(k, "presenced_streams_dropped_total")] += d
				}
			}
		}
	}
	sendSpan := lastSent.Sub(firstSent)
	figs := map[string]any{
		"subscribers": o.n, "html_subscribers": nHTML, "json_subscribers": o.n - nHTML, "ready": ready.Load(),
		"open_failed": failed.Load(), "watch": o.watch, "subscriber_users": users, "nodes": len(e.nodes),
		"joins": o.joins, "window_ms": o.window.Milliseconds(), "join_errors": joinErrs.Load(),
		"joins_per_s_sent":                 round1(float64(o.joins) / max(sendSpan, time.Millisecond).Seconds()),
		"join_post_last_answer_ms":         msf(lastAnswer.Sub(firstSent)),
		"healthy_dropped":                  delta("presenced_streams_dropped_total"),
		"dropped_by_reason":                dropped,
		"stream_queue_resyncs":             delta("presenced_stream_queue_resyncs_total"),
		"feed_resyncs":                     delta("presenced_feed_resyncs_total"),
		"client_saw_closed_in_burst":       closedDuring.Load(),
		"client_saw_closed":                closedEarly.Load(),
		"subscribers_complete":             nComplete,
		"subscribers_expected":             want,
		"json_join_latency":                summarize(jsonLat),
		"json_join_to_last_subscriber":     summarize(joinToLast),
		"html_count_latency":               summarize(htmlLat),
		"html_converged_after_last_answer": summarize(htmlConv),
		"ramp_s":                           round2(ramp.Seconds()),
	}
	// CPU per delivered join (json: one event per subscriber and join;
	// html: counted per subscriber and join too, though coalesced renders
	// carry several joins): the figure a starved box distorts least.
	var gw float64
	for k, v := range cpu {
		if strings.HasPrefix(k, "gateway") {
			gw += v
		}
	}
	if d := o.joins * int(ready.Load()); d > 0 {
		figs["gateway_cpu_us_per_join_delivery"] = round2(gw / 100 * meterSpan.Seconds() * 1e6 / float64(d))
		figs["client_cpu_us_per_join_delivery"] = round2(cpu["client"] / 100 * meterSpan.Seconds() * 1e6 / float64(d))
	}
	if lastSeen != 0 {
		figs["first_join_to_last_receipt_ms"] = msf(time.Duration(lastSeen - firstSent.UnixNano()))
	}
	// The final state as an application sees it, through the Go client.
	if len(e.nodes) > 0 && c.server != "bare" {
		view, api, err := verifyRoom(e.nodes[0].url, c.secret, o.room)
		figs["go_client_room_count"], figs["api_room_count"] = view, api
		figs["go_client_agrees"] = err == nil && view == api
		if err != nil {
			logf("burst: Go client check: %v", err)
		}
	}
	logf("burst n=%d joins=%d: dropped %v, queue resyncs %v, complete %d/%d; json join→receipt %+v; join→last %+v; html %+v",
		o.n, o.joins, figs["healthy_dropped"], figs["stream_queue_resyncs"], nComplete, want, figs["json_join_latency"], figs["json_join_to_last_subscriber"], figs["html_count_latency"])
	c.emit(result{Scenario: "burst", Case: fmt.Sprintf("n=%d joins=%d window=%s html=%d watch=%v", o.n, o.joins, o.window, nHTML, o.watch),
		Figures: figs, CPU: toAny(cpu), LoadAvg: load0})
	time.Sleep(time.Second)
}

// joinerIndex finds `"id":"<prefix><digits>"` in a join event's JSON and
// returns the digits.
func joinerIndex(data []byte, prefix string) (string, bool) {
	i := bytes.Index(data, []byte(`"id":"`+prefix))
	if i < 0 {
		return "", false
	}
	rest := data[i+len(`"id":"`)+len(prefix):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return "", false
	}
	return string(rest[:j]), true
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func sortTimes(ts []time.Time) { slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) }) }
