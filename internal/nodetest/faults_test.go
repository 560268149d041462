package nodetest

import (
	"context"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/store/redistest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// The issue-9 faults with real processes: a node killed with SIGKILL or
// frozen with SIGSTOP, two nodes on one redis-server. handlers/faults_test.go
// covers the same bugs in-process; here the node really loses its memory
// and its timers.

type cluster struct {
	t      *testing.T
	redis  *redistest.Server
	secret string
	c      *http.Client
}

func newCluster(t *testing.T) *cluster {
	if testing.Short() {
		t.Skip("builds and runs gateway processes")
	}
	return &cluster{t: t, redis: redistest.Start(t), secret: Secret(), c: &http.Client{Timeout: 5 * time.Second}}
}

func (cl *cluster) node(name string, o Options) *Node {
	o.RedisURL, o.Secret = cl.redis.URL, cl.secret
	return Start(cl.t, name, o)
}

// heartbeat posts an online heartbeat for (token's user, sid) through base
// every 300 ms until the returned stop is called: the user's session lives
// on through that node whatever happens to the others.
func (cl *cluster) heartbeat(base, token, sid string) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(300 * time.Millisecond)
		defer tick.Stop()
		for {
			code, body, err := Do(ctx, cl.c, http.MethodPost, base+"/api/presence", token, `{"status":"online","sessionId":"`+sid+`"}`)
			if ctx.Err() == nil && (err != nil || code/100 != 2) {
				cl.t.Logf("heartbeat through %s: %d %s %v", base, code, body, err)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return func() { cancel(); wg.Wait() }
}

func (cl *cluster) inRoom(base, room, user, token string) bool {
	cl.t.Helper()
	ms, err := RoomMembers(context.Background(), cl.c, base, room, token)
	if err != nil {
		cl.t.Fatalf("members of %s: %v", room, err)
	}
	_, ok := ms[user]
	return ok
}

func (cl *cluster) status(base, user, token string) string {
	cl.t.Helper()
	st, err := UserStatus(context.Background(), cl.c, base, user, token)
	if err != nil {
		cl.t.Fatalf("status of %s: %v", user, err)
	}
	return st
}

// within polls cond every 50 ms and fails the test when it does not hold
// by the deadline. The deadlines below are set so that the bug each test
// guards against cannot meet them (it would take a TTL or forever), with
// seconds of slack for a loaded machine.
func (cl *cluster) within(d time.Duration, what string, cond func() bool) time.Duration {
	cl.t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			cl.t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// Bug 1: a pending leave died with its node. Bob's tab on node A closes
// (no offline: an SPA navigation) while his session heartbeats through node
// B; A is killed inside the leave grace. The leave is due in the store, so
// bob leaves x about a grace later. The TTL here is 8 s (hold 8 s + one
// refresh): a leave that died with A and ended only by the hold deadline
// would miss the 4 s bound, and an in-memory one would never happen.
func TestKilledNodeInsideGraceStillLeaves(t *testing.T) {
	cl := newCluster(t)
	o := Options{TTL: 8 * time.Second, LeaveGrace: time.Second}
	a, b := cl.node("a", o), cl.node("b", o)
	bob := Token(t, cl.secret, "bob", "Bob")
	stop := cl.heartbeat(b.Base, bob, "bob-tab-1")
	defer stop()
	tab, err := OpenTab(context.Background(), a.Base, "x", "bob-tab-1", bob)
	if err != nil {
		t.Fatal(err)
	}
	cl.within(5*time.Second, "bob in x", func() bool { return cl.inRoom(b.Base, "x", "bob", bob) })
	leaves := a.Metric("presenced_stream_room_leaves_total")
	tab.Close()
	// Node A handed the leave to the store (Detach), then dies inside the
	// 1 s grace.
	cl.within(5*time.Second, "node A detached the stream", func() bool {
		return a.Metric("presenced_stream_room_leaves_total") > leaves
	})
	a.Kill()
	took := cl.within(4*time.Second, "bob out of x after node A was killed inside the grace", func() bool {
		return !cl.inRoom(b.Base, "x", "bob", bob)
	})
	t.Logf("bob left x %v after the kill (grace 1 s)", took.Round(10*time.Millisecond))
	if st := cl.status(b.Base, "bob", bob); st != "online" {
		t.Fatalf("bob is %s, want online: his session heartbeats through node B", st)
	}
}

// Bug 3: a frozen node revived an ended session. Node A holds bob's tab;
// A is frozen, the tab closes, bob's session is ended through node B, A is
// resumed. A's first refresh after waking must not bring bob back: he stays
// offline and out of x (watched for several refresh intervals).
func TestFrozenNodeDoesNotReviveEndedSession(t *testing.T) {
	cl := newCluster(t)
	a, b := cl.node("a", Options{}), cl.node("b", Options{})
	bob := Token(t, cl.secret, "bob", "Bob")
	tab, err := OpenTab(context.Background(), a.Base, "x", "bob-tab-1", bob)
	if err != nil {
		t.Fatal(err)
	}
	cl.within(5*time.Second, "bob in x", func() bool { return cl.inRoom(b.Base, "x", "bob", bob) })
	a.Stop()
	tab.Close() // the kernel closes the socket; A notices only once it runs again
	code, body, err := Do(context.Background(), cl.c, http.MethodPost, b.Base+"/api/presence", bob, `{"status":"offline","sessionId":"bob-tab-1"}`)
	if err != nil || code/100 != 2 {
		t.Fatalf("offline through B: %d %s %v", code, body, err)
	}
	if st := cl.status(b.Base, "bob", bob); st != "offline" {
		t.Fatalf("bob is %s right after his offline, want offline", st)
	}
	time.Sleep(500 * time.Millisecond) // A stays frozen past a refresh interval's worth of due work
	a.Cont()
	cl.within(10*time.Second, "node A serving again", func() bool { return a.Metric("presenced_stream_room_leaves_total") >= 0 })
	// Three refresh intervals (1 s here) after A woke up.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if st := cl.status(b.Base, "bob", bob); st != "offline" {
			t.Fatalf("bob is %s after node A woke up, want offline: A revived his ended session", st)
		}
		if cl.inRoom(b.Base, "x", "bob", bob) {
			t.Fatal("bob is back in x after node A woke up")
		}
	}
}

// A node killed with a stream open (no close, no Detach): the membership
// that stream held ends by its own deadline in the store (ttl + one
// refresh, 4 s here) while bob's session heartbeats through node B. The
// restarted node then serves again on the same address.
func TestKilledNodeHeldMembershipEnds(t *testing.T) {
	cl := newCluster(t)
	a, b := cl.node("a", Options{}), cl.node("b", Options{})
	bob := Token(t, cl.secret, "bob", "Bob")
	stop := cl.heartbeat(b.Base, bob, "bob-tab-1")
	defer stop()
	tab, err := OpenTab(context.Background(), a.Base, "x", "bob-tab-1", bob)
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	cl.within(5*time.Second, "bob in x", func() bool { return cl.inRoom(b.Base, "x", "bob", bob) })
	a.Kill()
	// ttl 3 s + refresh 1 s + 4 s of slack; without held memberships bob
	// would stay as long as node B's heartbeats keep his session alive.
	took := cl.within(8*time.Second, "bob out of x after his stream's node was killed", func() bool {
		return !cl.inRoom(b.Base, "x", "bob", bob)
	})
	t.Logf("bob left x %v after the kill (hold: ttl 3 s + refresh 1 s)", took.Round(10*time.Millisecond))
	if st := cl.status(b.Base, "bob", bob); st != "online" {
		t.Fatalf("bob is %s, want online: his session heartbeats through node B", st)
	}
	a.Restart()
	if cl.inRoom(a.Base, "x", "bob", bob) {
		t.Fatal("the restarted node shows bob in x")
	}
}
