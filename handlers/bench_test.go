package handlers

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// BenchmarkRoomFanout: one status change in a room of N open HTML streams,
// until every stream has the new dot, through real sockets. Also reports the
// hub's own part (render once + queue to all, from
// presenced_fanout_duration_seconds).
//
//	go test -run '^$' -bench RoomFanout -benchtime 20x ./handlers/
func BenchmarkRoomFanout(b *testing.B) {
	for _, subs := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) { benchFanout(b, subs) })
	}
}

func benchFanout(b *testing.B, subs int) {
	opts := storeOptions()
	opts.TTL = time.Hour
	st := store.NewMemory(opts)
	b.Cleanup(func() { _ = st.Close() })
	// RateLimit off: the benchmark flips one session's status b.N times.
	n := startNode(b, st, func(c *config.Config) { c.TTL = time.Hour; c.RateLimit = false })
	c := newClient(b)
	c.Transport.(*http.Transport).MaxIdleConnsPerHost = subs + 8

	clients := make([]*sseClient, subs)
	for i := range clients {
		clients[i] = openSSE(b, c, n.base+fmt.Sprintf("/sse/room/bench?sid=viewer-tab-%05d", i), n.token(fmt.Sprintf("v%05d", i), ""))
	}
	for _, cl := range clients {
		cl.waitFor("all in", membersWith(subs))
	}
	actor := n.token("actor", "Actor")
	mustOK(b, do(b, c, http.MethodPost, n.base+"/api/presence/room/bench", actor, `{"action":"join","sessionId":"actor-tab-1"}`))
	for _, cl := range clients {
		cl.waitFor("actor in", membersWith(subs+1))
	}
	sum0 := n.metric("presenced_fanout_duration_seconds_sum", `scope="user"`)
	cnt0 := n.metric("presenced_fanout_duration_seconds_count", `scope="user"`)
	statuses := []string{"busy", "away"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		want := statuses[i%2]
		mustOK(b, do(b, c, http.MethodPost, n.base+"/api/presence", actor, `{"status":"`+want+`","sessionId":"actor-tab-1"}`))
		for _, cl := range clients {
			cl.waitFor("dot", named("presence-actor", `data-status="`+want+`"`))
		}
	}
	b.StopTimer()
	sum1 := n.metric("presenced_fanout_duration_seconds_sum", `scope="user"`)
	cnt1 := n.metric("presenced_fanout_duration_seconds_count", `scope="user"`)
	if cnt1 > cnt0 {
		b.ReportMetric((sum1-sum0)/(cnt1-cnt0)*1e6, "µs-hub-dot-fanout/op")
	}
	b.ReportMetric(n.metric("presenced_sse_open_streams", `kind="room"`), "open-streams")
	rsum := n.metric("presenced_fanout_duration_seconds_sum", `scope="room"`)
	rcnt := n.metric("presenced_fanout_duration_seconds_count", `scope="room"`)
	if rcnt > 0 {
		b.ReportMetric(rsum/rcnt*1e6, "µs-hub-room-fanout/render")
	}
}
