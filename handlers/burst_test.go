package handlers

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// Issue 15 through real HTTP: many subscribers (HTML and JSON mixed) on one
// room, 250 users joining within about a second, and one truly stalled
// reader among them. No healthy subscriber is dropped, every subscriber's
// final view equals the room's state, and the stalled one is dropped after
// the write deadline without anyone waiting for it. (The hub-level test in
// internal/hub runs 5,000 subscribers; here 500 real streams keep the
// race detector under its goroutine limit and CI within its time.)
func TestBurstOfJoinsKeepsHealthySubscribers(t *testing.T) {
	if testing.Short() {
		t.Skip("500 streams")
	}
	raiseFileLimit(t, 8192)
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t), func(c *config.Config) { c.WriteDeadline = 2 * time.Second })
		c := newClient(t)
		const subs, joins = 500, 250
		watcher := n.token("watcher", "Watcher")
		stalled := dialStalled(t, n, "/sse/room/class?watch=1&max=100&list=1", watcher)
		defer stalled.Close()
		clients := make([]*sseClient, subs)
		for i := range clients {
			q := "/sse/room/class?watch=1"
			if i%2 == 1 {
				q += "&format=json"
			}
			clients[i] = openSSE(t, c, n.base+q, n.token(fmt.Sprintf("watcher-%04d", i), "Watcher"))
		}
		for i, cl := range clients {
			if i%2 == 1 {
				cl.waitFor("sync", named("sync"))
			} else {
				cl.waitFor("state", named("members"))
			}
		}

		var wg sync.WaitGroup
		for w := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hc := newClient(t)
				for i := w; i < joins; i += 10 {
					id := fmt.Sprintf("student-%03d", i)
					req, _ := http.NewRequest(http.MethodPost, n.base+"/api/presence/room/class", strings.NewReader(`{"action":"join","sessionId":"session-`+id+`"}`))
					req.Header.Set("Authorization", "Bearer "+n.token(id, "Student "+id))
					req.Header.Set("Content-Type", "application/json")
					res, err := hc.Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					res.Body.Close()
					if res.StatusCode != http.StatusOK {
						t.Errorf("join %s: %d", id, res.StatusCode)
					}
					time.Sleep(time.Second / joins * 10)
				}
			}()
		}
		wg.Wait()

		// Every subscriber ends on 250 members.
		for i, cl := range clients {
			if i%2 == 1 {
				got := followJSON(t, cl, joins)
				if got != joins {
					t.Fatalf("JSON subscriber %d ends on %d members, want %d", i, got, joins)
				}
			} else {
				last := -1
				deadline := time.Now().Add(burstWait)
				for last != joins {
					ev, ok := cl.next(time.Until(deadline))
					if !ok {
						ms, _ := n.st.Members(t.Context(), "class")
						t.Fatalf("HTML subscriber %d ends on %d members (store: %d), want %d (stream ended: %v)", i, last, len(ms), joins, cl.ended())
					}
					if ev.Event == "members" {
						last = membersCount(ev.Data)
					}
				}
			}
			if cl.ended() {
				t.Fatalf("subscriber %d was disconnected", i)
			}
		}
		// The stalled reader is dropped (it never reads; the stack with 100
		// avatars and the member list fill its socket), and only it.
		eventually(t, "the stalled reader dropped", func() bool {
			return n.metric("presenced_streams_dropped_total", `reason="stalled"`) >= 1
		})
		if v := n.metric("presenced_streams_dropped_total", `reason="stalled"`); v != 1 {
			t.Fatalf("%v streams dropped as stalled, want exactly the stalled one", v)
		}
		if v := n.metric("presenced_streams_dropped_total", `reason="slow"`); v != 0 {
			t.Fatalf("%v streams dropped as slow, want 0", v)
		}
		if v := n.metric("presenced_sse_open_streams"); v != subs {
			t.Fatalf("%v streams open, want %d", v, subs)
		}
		t.Logf("queue resyncs during the burst: %v", n.metric("presenced_stream_queue_resyncs_total"))
	}, func(o *store.Options) { o.TTL = 30 * time.Minute }) // the joined sessions never heartbeat
}

// followJSON applies a JSON room stream's sync/join/leave events until the
// member count is want (or fails after wait), and returns the count.
func followJSON(t *testing.T, cl *sseClient, want int) int {
	t.Helper()
	members := map[string]bool{}
	deadline := time.Now().Add(burstWait)
	for {
		ev, ok := cl.next(time.Until(deadline))
		if !ok {
			return len(members)
		}
		var body struct {
			Members []struct{ ID string } `json:"members"`
			User    struct{ ID string }   `json:"user"`
		}
		switch ev.Event {
		case "sync":
			_ = json.Unmarshal([]byte(ev.Data), &body)
			clear(members)
			for _, m := range body.Members {
				members[m.ID] = true
			}
		case "join":
			_ = json.Unmarshal([]byte(ev.Data), &body)
			members[body.User.ID] = true
		case "leave":
			_ = json.Unmarshal([]byte(ev.Data), &body)
			delete(members, body.User.ID)
		}
		if len(members) == want {
			return want
		}
	}
}

// burstWait bounds how long a subscriber may take to show the whole burst:
// generous, since the machine running the tests may be shared (this is no
// latency assertion: the benchmark measures that).
const burstWait = time.Minute

func raiseFileLimit(t *testing.T, n uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < n {
		lim.Cur = min(n, lim.Max)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
}
