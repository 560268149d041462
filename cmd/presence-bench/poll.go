package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// pollMain runs the seed's design and ours side by side against the same
// gateway and the same changes. One user (the changer) in a room of
// --members others changes status (busy ↔ online, with metadata {"v": k})
// every --change-every ± --jitter.
//   - poll watchers do what the design card's client does: GET
//     /api/presence?userIds=<the room's users> every --presence-interval
//     (30 s) and GET /api/presence/room/{room} every --room-interval (10 s),
//     each at a random phase, each on its own keep-alive connection;
//   - push watchers hold one /sse/room/{room}?format=json stream.
//
// Staleness of change k at a watcher = when the watcher first held a
// response showing k (or later) − when the changer's POST was written. Bytes
// are application bytes both ways (HTTP headers, bodies, chunk framing),
// counted on each watcher's connections. --scale shrinks every interval and
// the duration (0.1 = ten times faster) for a quick run; the per-hour bytes
// at the design card's intervals are then extrapolated from bytes per
// request, and labelled so.
func pollMain(args []string) int {
	var c common
	fs := flag.NewFlagSet("poll", flag.ExitOnError)
	c.register(fs)
	watchers := fs.Int("watchers", 100, "watchers of each kind")
	members := fs.Int("members", 9, "room members besides the changer (the push watchers' users)")
	pInt := fs.Duration("presence-interval", 30*time.Second, "design card: GET /api/presence refetchInterval")
	rInt := fs.Duration("room-interval", 10*time.Second, "design card: GET /api/presence/room refetchInterval")
	every := fs.Duration("change-every", 12*time.Second, "mean time between two status changes (> room interval, so a room poll never misses one)")
	jitter := fs.Duration("jitter", 2*time.Second, "± spread of the change times")
	duration := fs.Duration("duration", 6*time.Minute, "time during which changes are made (then one more presence interval to let polls catch up)")
	scale := fs.Float64("scale", 1, "multiply every interval and the duration by this (0.1 for a quick run)")
	fs.Parse(args)
	sc := func(d time.Duration) time.Duration { return time.Duration(float64(d) * *scale) }
	P, R, every_, jit, dur := sc(*pInt), sc(*rInt), sc(*every), sc(*jitter), min(sc(*duration), 30*time.Minute)
	e, err := setup(&c)
	if err != nil {
		logf("setup: %v", err)
		return 1
	}
	defer e.close()
	load0 := loadavg()
	run := time.Now().UnixNano() % 1_000_000
	room := fmt.Sprintf("poll%d", run)
	changer := fmt.Sprintf("pchanger%d", run)
	chTok := mintToken(c.secret, changer, "Changer", 3*time.Hour)
	ids := changer
	mtoks := make([]string, *members)
	for m := range mtoks {
		uid := fmt.Sprintf("pmember%d-%d", run, m)
		mtoks[m] = mintToken(c.secret, uid, "Member", 3*time.Hour)
		ids += "," + uid
	}
	nd := e.nodes[0]
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The change log.
	type change struct {
		sent   time.Time
		status string
	}
	var clMu sync.RWMutex
	changes := []change{}
	versionAt := func(t time.Time, status string) int {
		clMu.RLock()
		defer clMu.RUnlock()
		for k := len(changes) - 1; k >= 0; k-- {
			if changes[k].sent.Before(t) && changes[k].status == status {
				return k
			}
		}
		return -1
	}
	sentAt := func(k int) time.Time {
		clMu.RLock()
		defer clMu.RUnlock()
		return changes[k].sent
	}
	// Staleness per kind.
	var stMu sync.Mutex
	stale := map[string][]time.Duration{}
	var measuring atomic.Bool
	record := func(kind string, seen *int, v int, at time.Time) {
		for k := *seen + 1; k <= v; k++ {
			if k >= 1 && measuring.Load() {
				stMu.Lock()
				stale[kind] = append(stale[kind], at.Sub(sentAt(k)))
				stMu.Unlock()
			}
		}
		if v > *seen {
			*seen = v
		}
	}

	// The changer joins first (k = 0).
	hc := newHTTPConn(nd.addr, nil, nil, nil)
	defer hc.close()
	sid := fmt.Sprintf("pchgsess%d", run)
	postChange := func(k int, status, path, body string) error {
		req := buildRequest("POST", "127.0.0.1", path, chTok, []byte(body))
		clMu.Lock()
		changes = append(changes, change{time.Now(), status})
		clMu.Unlock()
		code, b, err := hc.do(req, 10*time.Second)
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, b)
		}
		return err
	}
	if err := postChange(0, "online", "/api/presence/room/"+room, fmt.Sprintf(`{"action":"join","sessionId":"%s"}`, sid)); err != nil {
		logf("changer join: %v", err)
		return 1
	}
	if err := postChange(0, "online", "/api/presence", fmt.Sprintf(`{"status":"online","sessionId":"%s","metadata":{"v":0}}`, sid)); err != nil {
		logf("changer: %v", err)
		return 1
	}
	clMu.Lock()
	changes = changes[1:] // keep one k=0 entry
	clMu.Unlock()

	var wg sync.WaitGroup
	// Push watchers.
	var pushRd, pushWr, pushSetup atomic.Int64
	var kaBytes, kaN, evBytes, evN atomic.Int64
	var pushReady atomic.Int64
	for i := 0; i < *watchers; i++ {
		var rd, wr atomic.Int64
		path := fmt.Sprintf("/sse/room/%s?format=json&sid=pw%07d", room, i)
		st, err := openSSE(ctx, nd.addr, srcIP(i, c.srcIPs), path, mtoks[i%*members], &rd, &wr)
		if err != nil {
			logf("push watcher %d: %v", i, err)
			return 1
		}
		wg.Go(func() {
			defer st.close()
			seen := 0
			last := int64(0)
			synced := false
			for {
				ev, err := st.next(0)
				if err != nil {
					pushRd.Add(rd.Load())
					pushWr.Add(wr.Load())
					return
				}
				b := rd.Load()
				if !synced && ev.name == "sync" {
					synced = true
					pushSetup.Add(b + wr.Load())
					pushReady.Add(1)
				} else if synced && measuring.Load() {
					if ev.name == ":" {
						kaBytes.Add(b - last)
						kaN.Add(1)
					} else {
						evBytes.Add(b - last)
						evN.Add(1)
					}
				}
				last = b
				if ev.name == "status" {
					var sj struct {
						User struct {
							ID string `json:"id"`
						} `json:"user"`
						To string `json:"to"`
					}
					if json.Unmarshal(ev.data, &sj) == nil && sj.User.ID == changer {
						record("push", &seen, versionAt(ev.at, sj.To), ev.at)
					}
				}
			}
		})
	}
	for deadline := time.Now().Add(30 * time.Second); pushReady.Load() < int64(*watchers) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	// Poll watchers.
	var pollRd, pollWr, pReq, rReq, pollErr atomic.Int64
	var pBytes, rBytes atomic.Int64
	stop := make(chan struct{})
	presencePath := "/api/presence?userIds=" + q(ids)
	roomPath := "/api/presence/room/" + room
	for i := 0; i < *watchers; i++ {
		tok := mtoks[i%*members]
		seenP, seenR := 0, 0
		var seenMu sync.Mutex
		seenAny := 0
		loop := func(interval time.Duration, path string, nreq, nbytes *atomic.Int64, parse func([]byte, time.Time) int, src int) {
			var rd, wr atomic.Int64
			h := newHTTPConn(nd.addr, srcIP(src, c.srcIPs), &rd, &wr)
			defer func() { h.close(); pollRd.Add(rd.Load()); pollWr.Add(wr.Load()) }()
			req := buildRequest("GET", "127.0.0.1", path, tok, nil)
			next := time.Now().Add(time.Duration(rand.Int64N(int64(interval))))
			for {
				select {
				case <-stop:
					return
				case <-time.After(time.Until(next)):
				}
				next = next.Add(interval)
				b0 := rd.Load() + wr.Load()
				code, body, err := h.do(req, 10*time.Second)
				now := time.Now()
				if err != nil || code != 200 {
					pollErr.Add(1)
					continue
				}
				if measuring.Load() {
					nreq.Add(1)
					nbytes.Add(rd.Load() + wr.Load() - b0)
				}
				v := parse(body, now)
				seenMu.Lock()
				record("poll", &seenAny, v, now)
				seenMu.Unlock()
			}
		}
		parseP := func(body []byte, now time.Time) int {
			var pr struct {
				Presence map[string]*struct {
					Status   string `json:"status"`
					Metadata struct {
						V *int `json:"v"`
					} `json:"metadata"`
				} `json:"presence"`
			}
			if json.Unmarshal(body, &pr) != nil || pr.Presence[changer] == nil || pr.Presence[changer].Metadata.V == nil {
				return -1
			}
			v := *pr.Presence[changer].Metadata.V
			seenP = max(seenP, v)
			return v
		}
		parseR := func(body []byte, now time.Time) int {
			var rr struct {
				Members []struct {
					ID     string `json:"id"`
					Status string `json:"status"`
				} `json:"members"`
			}
			if json.Unmarshal(body, &rr) != nil {
				return -1
			}
			for _, m := range rr.Members {
				if m.ID == changer {
					v := versionAt(now, m.Status)
					seenR = max(seenR, v)
					return v
				}
			}
			return -1
		}
		wg.Go(func() { loop(P, presencePath, &pReq, &pBytes, parseP, 2*i) })
		wg.Go(func() { loop(R, roomPath, &rReq, &rBytes, parseR, 2*i+1) })
	}
	// Let every poller make its first poll before measuring.
	logf("poll: %d push + %d poll watchers; presence every %s, room every %s, a change every %s±%s for %s",
		*watchers, *watchers, P, R, every_, jit, dur)
	time.Sleep(P + time.Second)
	pollRd0, pollWr0 := sumConnBytes(&pollRd, &pollWr)
	_ = pollRd0
	_ = pollWr0
	meter := newCPUMeter(e.cpuPIDs())
	measuring.Store(true)
	tm := time.Now()
	nChanges := 0
	for k := 1; time.Since(tm) < dur; k++ {
		wait := every_
		if jit > 0 {
			wait += time.Duration(rand.Int64N(int64(2*jit))) - jit
		}
		time.Sleep(wait)
		status := "busy"
		if k%2 == 0 {
			status = "online"
		}
		if err := postChange(k, status, "/api/presence", fmt.Sprintf(`{"status":"%s","sessionId":"%s","metadata":{"v":%d}}`, status, sid, k)); err != nil {
			logf("change %d: %v", k, err)
			break
		}
		nChanges = k
	}
	// One more presence interval so that every poller sees the last change.
	time.Sleep(P + time.Second)
	measuring.Store(false)
	el := time.Since(tm)
	cpu := meter.stop()
	close(stop)
	cancel()
	wg.Wait()

	stMu.Lock()
	pushS, pollS := summarize(stale["push"]), summarize(stale["poll"])
	stMu.Unlock()
	hours := el.Hours()
	W := float64(*watchers)
	pollPerHour := float64(pBytes.Load()+rBytes.Load()) / W / hours
	pushPerHour := float64(kaBytes.Load()+evBytes.Load()) / W / hours
	meanP := float64(pBytes.Load()) / float64(max(1, pReq.Load()))
	meanR := float64(rBytes.Load()) / float64(max(1, rReq.Load()))
	meanKA := float64(kaBytes.Load()) / float64(max(1, kaN.Load()))
	meanEv := float64(evBytes.Load()) / float64(max(1, evN.Load()))
	evPerChange := float64(evN.Load()) / W / float64(max(1, nChanges))
	designChangesPerHour := 3600 / every.Seconds()
	designPoll := meanP*3600/pInt.Seconds() + meanR*3600/rInt.Seconds()
	designPush := meanKA*3600/c.keepalive.Seconds() + meanEv*evPerChange*designChangesPerHour
	figs := map[string]any{
		"watchers_each": *watchers, "members": *members + 1, "changes": nChanges, "scale": *scale,
		"presence_interval": P.String(), "room_interval": R.String(), "change_every": every_.String(), "measured_s": round1(el.Seconds()),
		"staleness_push": pushS, "staleness_poll": pollS,
		"staleness_ratio_p50":  round1(pollS.P50 / max(pushS.P50, 0.001)),
		"staleness_ratio_mean": round1(pollS.Mean / max(pushS.Mean, 0.001)),
		// Polling staleness grows with the poll interval (≈ uniform over it);
		// push staleness does not. Scaled runs extrapolate to the design
		// card's intervals by dividing the polling figure by the scale.
		"staleness_ratio_p50_at_design_intervals":   round1(pollS.P50 / *scale / max(pushS.P50, 0.001)),
		"staleness_poll_p50_ms_at_design_intervals": round1(pollS.P50 / *scale),
		"poll_bytes_per_client_hour_measured":       int64(pollPerHour), "push_bytes_per_client_hour_measured": int64(pushPerHour),
		"bytes_per_presence_poll": int64(meanP), "bytes_per_room_poll": int64(meanR),
		"bytes_per_keepalive": int64(meanKA), "bytes_per_push_event": int64(meanEv), "push_events_per_change": round2(evPerChange),
		"design_card_poll_bytes_per_client_hour": int64(designPoll),
		"design_card_push_bytes_per_client_hour": int64(designPush),
		"design_card_bytes_ratio":                round1(designPoll / max(designPush, 1)),
		"design_card_assumption":                 fmt.Sprintf("polls every %s and %s, keep-alive every %s, one status change every %s", *pInt, *rInt, c.keepalive, *every),
		"push_connect_bytes":                     pushSetup.Load() / int64(*watchers), "poll_errors": pollErr.Load(),
		"poll_requests": pReq.Load() + rReq.Load(),
	}
	logf("poll: staleness push %+v", pushS)
	logf("poll: staleness poll %+v", pollS)
	logf("poll: bytes/client/hour at the design card's rates: poll %d, push %d", int64(designPoll), int64(designPush))
	c.emit(result{Scenario: "poll", Case: fmt.Sprintf("watchers=%d scale=%g", *watchers, *scale), Figures: figs, CPU: toAny(cpu), LoadAvg: load0})
	return 0
}

func sumConnBytes(a, b *atomic.Int64) (int64, int64) { return a.Load(), b.Load() }
