//go:build soak

package nodetest

// What the soak's divergences file says of a divergence besides the
// oracle's sessions: the diverging subscriber's last events about the user
// (and its last syncs and reconnects), and what each node's store answered
// for the key over the REST API once the divergence passed the threshold.
// The first tells a feed that lost or reordered an event from a store that
// holds the wrong state; the second says which of the two it is.

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/presenced/presenced/client"
)

// trail keeps one subscriber's recent events: per user, and the stream's
// own (syncs, connects, disconnects).
type trail struct {
	started time.Time
	mu      sync.Mutex
	byUser  map[string][]string
	stream  []string
}

const trailLen = 16

func newTrail(started time.Time) *trail {
	return &trail{started: started, byUser: map[string][]string{}}
}

func push(list []string, s string) []string {
	list = append(list, s)
	if len(list) > trailLen {
		list = list[len(list)-trailLen:]
	}
	return list
}

func (tr *trail) add(ev client.Event) {
	at := fmt.Sprintf("%.2f", time.Since(tr.started).Seconds())
	tr.mu.Lock()
	defer tr.mu.Unlock()
	switch ev.Type {
	case client.EventStatus:
		tr.byUser[ev.User.ID] = push(tr.byUser[ev.User.ID], fmt.Sprintf("%s status %s→%s rooms=%v (at %.2f)", at, ev.From, ev.To, ev.Rooms,
			ev.At.Sub(tr.started).Seconds()))
	case client.EventJoin, client.EventLeave:
		tr.byUser[ev.User.ID] = push(tr.byUser[ev.User.ID], fmt.Sprintf("%s %s %s (at %.2f)", at, ev.Type, ev.Room, ev.At.Sub(tr.started).Seconds()))
	case client.EventSync:
		tr.stream = push(tr.stream, at+" sync "+ev.Topic)
	case client.EventConnected:
		tr.stream = push(tr.stream, at+" connected")
	case client.EventDisconnected:
		tr.stream = push(tr.stream, fmt.Sprintf("%s disconnected (%v)", at, ev.Err))
	}
}

func (tr *trail) of(user string) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return fmt.Sprintf("events of %s: [%s]; stream: [%s]", user, strings.Join(tr.byUser[user], "; "), strings.Join(tr.stream, "; "))
}

// probeStores asks every node's store about key ("status:u" or
// "member:r:u") and returns the answers.
func (sk *soak) probeStores(token, key string) string {
	var path string
	if u, ok := strings.CutPrefix(key, "status:"); ok {
		path = "/api/presence?userIds=" + u
	} else if rest, ok := strings.CutPrefix(key, "member:"); ok {
		room, _, _ := strings.Cut(rest, ":")
		path = "/api/presence/room/" + room
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out []string
	for i, n := range sk.nodes {
		code, body, err := Do(ctx, sk.hc, http.MethodGet, n.Base+path, token, "")
		b := string(body)
		if len(b) > 600 {
			b = b[:600] + "…"
		}
		out = append(out, fmt.Sprintf("n%d %.2fs: %d %v %s", i, time.Since(sk.started).Seconds(), code, err, strings.TrimSpace(b)))
	}
	return strings.Join(out, " | ")
}
