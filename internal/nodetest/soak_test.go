//go:build soak

package nodetest

// The soak under faults (make soak; not part of make test): three gateway
// nodes on one redis-server, simulated browser tabs and API clients, one
// fault every 15 s, and an oracle that derives the truth from what the
// clients did and compares every watching subscriber's view with it every
// 100 ms. What counts as truth and as a divergence: README.md, "Faults".

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/client"
	"github.com/presenced/presenced/store/redistest"
)

const (
	soakTTL       = 3 * time.Second
	soakHeartbeat = time.Second
	soakGrace     = time.Second
	soakRefresh   = time.Second // min(ttl/3, heartbeat): the nodes' stream refresh interval
	soakUsers     = 100
	soakRooms     = 8
	soakTabs      = 240
	soakAPI       = 60
	soakWatchers  = 2 // per node
	faultEvery    = 15 * time.Second
	checkEvery    = 100 * time.Millisecond
	// A divergence counts when it lasts longer than this.
	soakThreshold = soakTTL + time.Second
)

var statusRank = map[string]int{"busy": 3, "online": 2, "away": 1}

// sess is the oracle's record of one session, written only from what its
// client did and saw.
type sess struct {
	user string
	tab  bool
	// Tabs: the room the tab's stream holds and whether the stream is
	// connected (its sync arrived, no disconnect since).
	room      string
	connected bool
	lostAt    time.Time // when the tab's client saw its stream drop
	closedAt  time.Time // when the tab was closed on purpose (zero: open)
	// The last sign of life the client knows the gateway got: a 2xx
	// heartbeat (taken at its answer) or the stream being connected.
	lastAck  time.Time
	lastSend time.Time // when that heartbeat was sent
	status   string
	// statusUnknown: a heartbeat setting another status got no answer (a
	// transport error or a 5xx: it may have been applied); the status is
	// not known until the next acknowledged one.
	statusUnknown bool
	ended         bool // an acknowledged explicit offline after the last ack
	// API clients: rooms joined through the API (acknowledged).
	apiRooms map[string]bool
	// maybeRooms are API joins whose fate no client can know: the session
	// may or may not have expired in the store just before a heartbeat
	// renewed it (the heartbeat's flight overlapped the expiry instant),
	// so its memberships may or may not have survived. Not checked until
	// the client joins or leaves that room again or the session ends.
	maybeRooms map[string]bool
	// roomOp is the last acknowledged join (in) or leave of each room, at
	// its answer: a failover that may lose the last writes makes the ones
	// answered inside its loss window undetermined (lossWindow).
	roomOp map[string]roomOp
	// hist holds the last acknowledged heartbeats and joins (sent,
	// answered): after a failover the store's session deadline may come
	// from an earlier one than the last (acked).
	hist [8]ackRec
	nh   int
	// statusAt is when the session's status last changed (at its answer);
	// statusWin: that change was answered inside a loss window, so it may
	// have been lost with the primary; not known until the next heartbeat
	// answered outside one (every heartbeat carries the status).
	statusAt  time.Time
	statusWin bool
	// closeWin: the tab was closed inside a loss window: the store may
	// have lost its Detach, so the held membership may last until its own
	// deadline (ttl + refresh after the last refresh).
	closeWin bool
	// frozenNode: the tab was closed while its stream's node was frozen
	// (SIGSTOP), the node index, else -1. The node sees the close only when
	// it resumes: the membership may last until then plus the grace.
	frozenNode int
	// winRooms: the maybeRooms that a loss window made undetermined (and
	// nothing else since), so that closeLoss may settle them from roomOp.
	winRooms map[string]bool
	// pending: API rooms made undetermined by a Redis restart that may or
	// may not have become a failover (Sentinel), settled by settleLoss.
	pending map[string]bool
	// limboUntil: an ended API session that a request without an answer
	// may have kept or brought back (an explicit offline that may not have
	// been applied; a join or a heartbeat after the end that may have
	// created it again, the join with its room, limboRooms): until then it
	// may be live in the store, so its user's status and those rooms are
	// not known. The next acknowledged heartbeat renews whatever it is.
	limboUntil time.Time
	limboRooms map[string]bool
}

// limbo records that s, ended, may be live in the store until the latest
// expiry of a sign of life at at, with rooms (o.mu held).
func (s *sess) limbo(o *oracle, at time.Time, rooms map[string]bool) {
	if until := o.lateExpiry(at.Add(soakTTL)); until.After(s.limboUntil) {
		s.limboUntil = until
	}
	if s.limboRooms == nil {
		s.limboRooms = map[string]bool{}
	}
	for r := range rooms {
		s.limboRooms[r] = true
	}
}

type roomOp struct {
	in bool
	at time.Time
}

type ackRec struct{ send, at time.Time }

// alive: the session is live at now.
func (s *sess) alive(now time.Time) bool {
	if s.ended {
		return false
	}
	if s.tab && s.connected && s.closedAt.IsZero() {
		return true
	}
	return now.Before(s.expiry())
}

// expiry: when the session expires if nothing renews it (for a tab not
// connected, or an API session).
func (s *sess) expiry() time.Time {
	last := s.lastAck
	if s.tab && !s.lostAt.IsZero() && s.lostAt.After(last) {
		last = s.lostAt
	}
	if s.tab && !s.closedAt.IsZero() && s.closedAt.After(last) {
		last = s.closedAt
	}
	return last.Add(soakTTL)
}

// inRoom: whether the session is in room at now: 1 yes, 0 no, -1 not
// known (maybeRooms).
func (s *sess) inRoom(o *oracle, room string, now time.Time) int8 {
	if s.tab && s.frozenNode >= 0 && s.room == room && o.thawed != nil {
		// Closed while its node was frozen: not known until the node has
		// resumed and had a grace (and a second of backlog) to carry out
		// the close, whether the session is live or not by then.
		if frozen, at := o.thawed(s.frozenNode); frozen || now.Before(at.Add(soakGrace+time.Second)) {
			return -1
		}
	}
	if !s.alive(now) {
		return 0
	}
	if s.tab {
		if s.closeWin && s.room == room && now.Before(s.closedAt.Add(soakTTL+soakRefresh+500*time.Millisecond)) {
			return -1
		}

		return b2i(s.inRoomTab(room, now))
	}
	if s.apiRooms[room] {
		return 1
	}
	if s.maybeRooms[room] {
		return -1
	}
	return 0
}

func b2i(b bool) int8 {
	if b {
		return 1
	}
	return 0
}

func (s *sess) inRoomTab(room string, now time.Time) bool {
	if s.tab {
		if s.room != room || !s.closedAt.IsZero() {
			return false
		}
		// A stream lost without a close (its node died or froze) keeps its
		// membership for one refresh interval: the node's last refresh
		// came up to one interval before, and the held membership's
		// deadline is ttl + one refresh after it.
		return s.connected || now.Before(s.lostAt.Add(soakRefresh))
	}
	return false
}

type oracle struct {
	// thawed: whether node is frozen now and when it last resumed (set
	// once, before the clients start).
	thawed   func(node int) (frozen bool, at time.Time)
	mu       sync.Mutex
	sessions map[string]*sess // by session id
	ops      atomic.Int64
	failed   atomic.Int64
	// windows are the loss windows of failovers (Sentinel, Cluster): the
	// writes answered inside one may have been lost with the old primary
	// (asynchronous replication). until is zero while the window is open.
	windows []*lossWindow
}

type lossWindow struct{ from, until time.Time }

// lateExpiry: the latest the store may carry out an expiry due at t (o.mu
// held). An expiry falls due while the primary that holds it is gone
// (within a loss window) happens once a primary is back: the window's end,
// then a sweep (300 ms with margin).
func (o *oracle) lateExpiry(t time.Time) time.Time {
	for _, w := range o.windows {
		if !t.Before(w.from) && (w.until.IsZero() || !t.After(w.until)) {
			if w.until.IsZero() {
				return time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
			}
			t = w.until
		}
	}
	return t.Add(300 * time.Millisecond)
}

// inWindow: t falls inside a loss window (o.mu held).
func (o *oracle) inWindow(t time.Time) bool {
	for _, w := range o.windows {
		if !t.Before(w.from) && (w.until.IsZero() || !t.After(w.until)) {
			return true
		}
	}
	return false
}

// openLoss opens a loss window from from (a margin before the fault: the
// replica may lag the primary) and makes what was answered since
// undetermined: API joins and leaves, status changes, tab closes.
func (o *oracle) openLoss(from time.Time) *lossWindow {
	o.mu.Lock()
	defer o.mu.Unlock()
	w := &lossWindow{from: from}
	o.windows = append(o.windows, w)
	for _, s := range o.sessions {
		for r, op := range s.roomOp {
			if !op.at.Before(from) && (s.apiRooms[r] || !s.maybeRooms[r]) {
				delete(s.apiRooms, r)
				s.maybeRooms[r] = true
				s.winRooms[r] = true
			}
		}
		if !s.statusAt.Before(from) && !s.statusAt.IsZero() {
			s.statusWin = true
		}
		if s.tab && !s.closedAt.IsZero() && !s.closedAt.Before(from) {
			s.closeWin = true
		}
	}
	return w
}

// closeLoss ends the window at until: what was answered after it is
// certain again (the nodes are on the new primary), so the room ops and
// heartbeats answered since until, marked undetermined when they came,
// count as acknowledged.
func (o *oracle) closeLoss(w *lossWindow, until time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	w.until = until
	for _, s := range o.sessions {
		for r := range s.winRooms {
			if op := s.roomOp[r]; op.at.After(until) && !o.inWindow(op.at) {
				delete(s.maybeRooms, r)
				delete(s.winRooms, r)
				if op.in {
					s.apiRooms[r] = true
				}
			}
		}
		if s.statusWin && s.lastAck.After(until) && !o.inWindow(s.lastAck) {
			s.statusWin = false
		}
		if s.closeWin && s.closedAt.After(until) && !o.inWindow(s.closedAt) {
			s.closeWin = false
		}
	}
}

// pendLoss: a Redis restart without its data that may turn into a
// failover instead (Sentinel): every API room is undetermined until
// settleLoss says which it was.
func (o *oracle) pendLoss() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.sessions {
		if s.tab {
			continue
		}
		s.pending = map[string]bool{}
		for r := range s.apiRooms {
			s.pending[r] = true
			s.maybeRooms[r] = true
		}
		s.apiRooms, s.winRooms = map[string]bool{}, map[string]bool{}
	}
}

// settleLoss: lost, the data set was lost (no failover): the pending rooms
// not joined or left since at are gone for good. Otherwise (a failover
// kept the replica's copy, or part of it) they stay undetermined.
func (o *oracle) settleLoss(lost bool, at time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.sessions {
		if lost {
			for r := range s.pending {
				if s.maybeRooms[r] && s.roomOp[r].at.Before(at) {
					delete(s.maybeRooms, r)
				}
			}
		}
		s.pending = nil
	}
}

// truth: each user's status, and per room each user's membership (1 in,
// -1 not known, absent: out).
func (o *oracle) truth(now time.Time, rooms []string) (status map[string]string, members map[string]map[string]int8) {
	status = map[string]string{}
	members = map[string]map[string]int8{}
	for _, r := range rooms {
		members[r] = map[string]int8{}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for id, s := range o.sessions {
		if !s.alive(now) {
			// A tab closed long ago, or an ended one: forget it.
			if s.tab && !s.closedAt.IsZero() && now.Sub(s.closedAt) > time.Minute {
				delete(o.sessions, id)
			}
			if s.tab && s.frozenNode >= 0 && s.inRoom(o, s.room, now) == -1 && members[s.room][s.user] == 0 {
				members[s.room][s.user] = -1
			}
			if s.ended && now.Before(s.limboUntil) {
				// Ended, but an unanswered request may have kept it.
				status[s.user] = "?"
				for r := range s.limboRooms {
					if members[r][s.user] == 0 {
						members[r][s.user] = -1
					}
				}
			}
			if !s.ended && len(o.windows) > 0 && now.Before(o.lateExpiry(s.expiry())) {
				// Expired by now, unless its expiry fell due while its
				// primary was gone: then it may still be live, with its
				// rooms, for a while. Not known.
				status[s.user] = "?"
				for r := range s.apiRooms {
					if members[r][s.user] == 0 {
						members[r][s.user] = -1
					}
				}
				if s.tab && s.room != "" && members[s.room][s.user] == 0 {
					members[s.room][s.user] = -1
				}
			}
			continue
		}
		switch {
		case status[s.user] == "?":
		case s.statusUnknown || s.statusWin:
			status[s.user] = "?"
		case statusRank[s.status] > statusRank[status[s.user]]:
			status[s.user] = s.status
		}
		for _, r := range rooms {
			switch v := s.inRoom(o, r, now); {
			case v == 1:
				members[r][s.user] = 1
			case v == -1 && members[r][s.user] == 0:
				members[r][s.user] = -1
			}
		}
	}
	return status, members
}

// stateLost is a Redis restart without its data: API memberships are gone
// for good (no client re-asserts them); sessions come back with the
// clients' next heartbeat or the nodes' stream refresh.
func (o *oracle) stateLost() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, s := range o.sessions {
		if !s.tab {
			s.apiRooms, s.maybeRooms, s.winRooms = map[string]bool{}, map[string]bool{}, map[string]bool{}
		}
	}
}

type soak struct {
	t       *testing.T
	o       *oracle
	nodes   []*Node
	frozen  []atomic.Bool
	thawed  []atomic.Int64 // unix nano of the last SIGCONT or restart
	tokens  []string
	users   []string
	rooms   []string
	hc      *http.Client
	ctx     context.Context
	started time.Time
}

func (sk *soak) post(node int, token, path, body string) (int, error) {
	sk.o.ops.Add(1)
	code, _, err := Do(sk.ctx, sk.hc, http.MethodPost, sk.nodes[node].Base+path, token, body)
	if err != nil || code/100 != 2 {
		sk.o.failed.Add(1)
	}
	return code, err
}

// tab simulates one browser tab of a user: a room stream held open,
// heartbeats with its status every second, status changes, typing, and
// closes (with or without an explicit offline) followed by a reopen in a
// fresh session, on a random node and room.
func (sk *soak) tab(ui int, rng *rand.Rand) {
	user, token := sk.users[ui], sk.tokens[ui]
	for sk.ctx.Err() == nil {
		node, room := rng.IntN(len(sk.nodes)), sk.rooms[rng.IntN(len(sk.rooms))]
		sid := fmt.Sprintf("tab-%s-%08x", user, rng.Uint32())
		s := &sess{user: user, tab: true, room: room, status: "online", frozenNode: -1}
		sk.o.mu.Lock()
		sk.o.sessions[sid] = s
		sk.o.mu.Unlock()
		cctx, cancel := context.WithCancel(sk.ctx)
		c, err := client.New(client.Config{
			BaseURL: sk.nodes[node].Base, Room: room, SessionID: sid, Token: token,
			MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second, IdleTimeout: -1,
			OnEvent: func(ev client.Event) {
				now := time.Now()
				sk.o.mu.Lock()
				defer sk.o.mu.Unlock()
				switch {
				case ev.Type == client.EventSync && ev.Topic == "room:"+room:
					s.connected = true
				case ev.Type == client.EventDisconnected && s.connected:
					s.connected, s.lostAt = false, now
				}
			},
		})
		if err != nil {
			sk.t.Errorf("client: %v", err)
			cancel()
			return
		}
		sk.o.ops.Add(1)
		done := make(chan struct{})
		go func() { _ = c.Run(cctx); close(done) }()
		status := "online"
		closeTab := func(offline bool) {
			cancel()
			<-done
			now := time.Now()
			sk.o.mu.Lock()
			if s.connected {
				s.connected, s.lostAt = false, now
			}
			s.closedAt = now
			s.closeWin = sk.o.inWindow(now)
			if sk.frozen[node].Load() {
				s.frozenNode = node
			}
			sk.o.mu.Unlock()
			sk.o.ops.Add(1)
			if offline {
				// Closed first, then offline: as presence.js does on a
				// sign-out, so that no stream of this session re-joins.
				code, err := sk.post(node, token, "/api/presence", `{"status":"offline","sessionId":"`+sid+`"}`)
				if err == nil && code/100 == 2 {
					sk.o.mu.Lock()
					s.ended = true
					sk.o.mu.Unlock()
				}
			}
		}
		open := true
		for open && sk.ctx.Err() == nil {
			select {
			case <-sk.ctx.Done():
			case <-time.After(time.Duration(800+rng.IntN(400)) * time.Millisecond):
			}
			if sk.ctx.Err() != nil {
				break
			}
			switch p := rng.Float64(); {
			case p < 0.05:
				status = []string{"online", "away", "busy"}[rng.IntN(3)]
			case p < 0.10:
				_, _ = sk.post(node, token, "/api/presence/room/"+room+"/typing", fmt.Sprintf(`{"typing":%v}`, rng.IntN(2) == 0))
			case p < 0.13:
				closeTab(false)
				open = false
				continue
			case p < 0.14:
				closeTab(true)
				open = false
				continue
			}
			code, err := sk.post(node, token, "/api/presence", `{"status":"`+status+`","sessionId":"`+sid+`"}`)
			sk.o.mu.Lock()
			if err == nil && code/100 == 2 {
				now := time.Now()
				s.setStatus(sk.o, now, status)
				s.lastAck, s.statusUnknown = now, false
			} else if unknownOutcome(code, err) && status != s.status {
				s.statusUnknown = true
			}
			sk.o.mu.Unlock()
		}
		if open {
			cancel()
			<-done
			return
		}
		select {
		case <-sk.ctx.Done():
		case <-time.After(time.Duration(1000+rng.IntN(4000)) * time.Millisecond):
		}
	}
}

// api simulates an API client (a device, a bot): heartbeats through a random
// node every second, status changes, room joins and leaves, explicit
// offlines, and silences long enough to expire.
func (sk *soak) api(i, ui int, rng *rand.Rand) {
	user, token := sk.users[ui], sk.tokens[ui]
	sid := fmt.Sprintf("api-%s-%04d", user, i)
	s := &sess{user: user, status: "online", apiRooms: map[string]bool{}, maybeRooms: map[string]bool{},
		roomOp: map[string]roomOp{}, winRooms: map[string]bool{}}
	sk.o.mu.Lock()
	sk.o.sessions[sid] = s
	sk.o.mu.Unlock()
	status := "online"
	for sk.ctx.Err() == nil {
		select {
		case <-sk.ctx.Done():
			return
		case <-time.After(time.Duration(800+rng.IntN(400)) * time.Millisecond):
		}
		node := rng.IntN(len(sk.nodes))
		switch p := rng.Float64(); {
		case p < 0.05:
			status = []string{"online", "away", "busy"}[rng.IntN(3)]
		case p < 0.09:
			room := sk.rooms[rng.IntN(len(sk.rooms))]
			send := time.Now()
			code, err := sk.post(node, token, "/api/presence/room/"+room, `{"action":"join","sessionId":"`+sid+`"}`)
			if err == nil && code/100 == 2 {
				// A join creates or refreshes the session as a heartbeat
				// with no status does.
				sk.o.mu.Lock()
				now := time.Now()
				s.acked(sk.o, send, now, "")
				s.roomOp[room] = roomOp{in: true, at: now}
				if sk.o.inWindow(now) {
					// Answered by a primary that may be losing it.
					s.maybeRooms[room], s.winRooms[room] = true, true
				} else {
					s.apiRooms[room] = true
					delete(s.maybeRooms, room)
					delete(s.winRooms, room)
				}
				sk.o.mu.Unlock()
			} else if unknownOutcome(code, err) {
				// The join may have been applied (and its session renewed,
				// or after an end created again).
				sk.o.mu.Lock()
				s.maybeRooms[room] = true
				delete(s.winRooms, room)
				if s.ended {
					s.limbo(sk.o, time.Now(), map[string]bool{room: true})
				}
				sk.o.mu.Unlock()
			}
		case p < 0.12:
			room := sk.rooms[rng.IntN(len(sk.rooms))]
			// Leave first in the oracle: from the request on, the room
			// may already show it.
			sk.o.mu.Lock()
			delete(s.apiRooms, room)
			sk.o.mu.Unlock()
			code, err := sk.post(node, token, "/api/presence/room/"+room, `{"action":"leave","sessionId":"`+sid+`"}`)
			sk.o.mu.Lock()
			if err == nil && code/100 == 2 {
				now := time.Now()
				s.roomOp[room] = roomOp{at: now}
				if sk.o.inWindow(now) {
					s.maybeRooms[room], s.winRooms[room] = true, true
				} else {
					delete(s.maybeRooms, room)
					delete(s.winRooms, room)
				}
			} else if unknownOutcome(code, err) {
				s.maybeRooms[room] = true // it may not have been applied
				delete(s.winRooms, room)
			}
			sk.o.mu.Unlock()
		case p < 0.14:
			// Ended in the oracle from the request on: the views may show
			// it at once.
			sk.o.mu.Lock()
			rooms := map[string]bool{}
			for r := range s.apiRooms {
				rooms[r] = true
			}
			for r := range s.maybeRooms {
				rooms[r] = true
			}
			wasEnded, lastAck := s.ended, s.lastAck
			s.ended, s.apiRooms, s.maybeRooms, s.winRooms = true, map[string]bool{}, map[string]bool{}, map[string]bool{}
			sk.o.mu.Unlock()
			code, err := sk.post(node, token, "/api/presence", `{"status":"offline","sessionId":"`+sid+`"}`)
			sk.o.mu.Lock()
			switch {
			case err == nil && code/100 == 2:
				s.limboUntil, s.limboRooms = time.Time{}, nil // whatever lived is ended
			case unknownOutcome(code, err) && !wasEnded:
				s.limbo(sk.o, lastAck, rooms) // the session may live on to its expiry
			}
			sk.o.mu.Unlock()
			sleepCtx(sk.ctx, time.Duration(2000+rng.IntN(3000))*time.Millisecond)
			continue
		case p < 0.16:
			// Silent past the TTL: the session expires.
			sleepCtx(sk.ctx, time.Duration(5000+rng.IntN(3000))*time.Millisecond)
			continue
		}
		// Every tick ends with a heartbeat, as a client's timer would.
		send := time.Now()
		code, err := sk.post(node, token, "/api/presence", `{"status":"`+status+`","sessionId":"`+sid+`"}`)
		sk.o.mu.Lock()
		if err == nil && code/100 == 2 {
			s.acked(sk.o, send, time.Now(), status)
		} else if unknownOutcome(code, err) && s.ended {
			s.limbo(sk.o, time.Now(), nil) // it may have created the session again
		} else if unknownOutcome(code, err) && status != s.status {
			s.statusUnknown = true
		}
		sk.o.mu.Unlock()
	}
}

// acked records an API session's acknowledged heartbeat or join (sent at
// send, answered at now; status "" keeps the session's status, online for a
// new one).
func (s *sess) acked(o *oracle, send, now time.Time, status string) {
	// The store expired the session (if nothing renewed it) at the previous
	// sign of life's apply time + ttl, somewhere in [lastSend, lastAck] +
	// ttl, plus up to a sweep late. After a failover the store's last sign
	// of life may be an earlier one (the later ones lost with the old
	// primary): the earliest expiry counts from the last one answered
	// outside every loss window.
	expLo, expHi := s.sureSend(o).Add(soakTTL), o.lateExpiry(s.lastAck.Add(soakTTL))
	fresh := s.ended || s.lastAck.IsZero()
	switch {
	case fresh || send.After(expHi):
		// Ended, or expired for sure: this starts a new session, online
		// unless told otherwise, without the old one's rooms; unless an
		// unanswered request after the end may have brought it back
		// (limbo): then it renews that one, whose rooms are not known.
		s.apiRooms, s.maybeRooms, s.winRooms = map[string]bool{}, map[string]bool{}, map[string]bool{}
		if s.ended && send.Before(s.limboUntil) {
			for r := range s.limboRooms {
				s.maybeRooms[r] = true
			}
		}
		s.status = "online"
	case now.After(expLo):
		// Its flight overlapped the expiry instant: the rooms may or may
		// not have survived.
		for r := range s.apiRooms {
			s.maybeRooms[r] = true
		}
		s.apiRooms, s.winRooms = map[string]bool{}, map[string]bool{}
	}
	if status != "" {
		// (A join, status "", renews the session without restating it.)
		s.setStatus(o, now, status)
	}
	s.ended, s.lastAck, s.lastSend, s.statusUnknown = false, now, send, false
	s.limboUntil, s.limboRooms = time.Time{}, nil
	s.hist[s.nh%len(s.hist)] = ackRec{send, now}
	s.nh++
}

// sureSend is when the last sign of life answered outside every loss
// window was sent (zero if none is known: the session may have expired at
// any time).
func (s *sess) sureSend(o *oracle) time.Time {
	for i := s.nh - 1; i >= 0 && i >= s.nh-len(s.hist); i-- {
		if a := s.hist[i%len(s.hist)]; !o.inWindow(a.at) {
			return a.send
		}
	}
	if s.nh == 0 {
		return s.lastSend
	}
	return time.Time{}
}

// setStatus records an acknowledged heartbeat's status, answered at now
// (o.mu held).
func (s *sess) setStatus(o *oracle, now time.Time, status string) {
	in := o.inWindow(now)
	if status != s.status {
		s.statusAt = now
	}
	switch {
	case !in:
		// Applied on a primary that keeps it.
		s.statusWin = false
	case status != s.status:
		s.statusWin = true
	}
	s.status = status
}

// unknownOutcome: a request whose answer was lost (the node died or the
// client gave up) or a 5xx may or may not have been applied; a 4xx was
// refused and changed nothing.
func unknownOutcome(code int, err error) bool { return err != nil || code >= 500 }

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

type episode struct {
	sub        string
	key        string
	start, end time.Time
	view       string
	truth      string
	why        string // the oracle's sessions of the user when it began
	// Filled once it passed the threshold: the subscriber's trail for the
	// user and what every node's store answered then (soak_trail_test.go).
	probed       bool
	trail, probe string
}

// describe is what the oracle knows of user's sessions at now, for the
// divergences file.
func (o *oracle) describe(user string, now time.Time, started time.Time) string {
	o.mu.Lock()
	defer o.mu.Unlock()
	at := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return fmt.Sprintf("%.1f", t.Sub(started).Seconds())
	}
	var parts []string
	for id, s := range o.sessions {
		if s.user != user || (!s.alive(now) && now.Sub(s.expiry()) > 10*time.Second) {
			continue
		}
		d := fmt.Sprintf("%s alive=%v status=%s ack=%s", id, s.alive(now), s.status, at(s.lastAck))
		if s.tab {
			d += fmt.Sprintf(" room=%s connected=%v lost=%s closed=%s closeWin=%v", s.room, s.connected, at(s.lostAt), at(s.closedAt), s.closeWin)
		} else {
			var rs []string
			for r, op := range s.roomOp {
				rs = append(rs, fmt.Sprintf("%s:in=%v@%s", r, op.in, at(op.at)))
			}
			sort.Strings(rs)
			d += fmt.Sprintf(" ended=%v api=%v maybe=%v ops=%v", s.ended, keys(s.apiRooms), keys(s.maybeRooms), rs)
		}
		parts = append(parts, d)
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type fault struct {
	at   time.Time
	kind string
	node int
	// target is the Redis server (or shard) a Redis fault hit; note what
	// came of it (a failover, its timings).
	target, note string
	// settled: when the fault's action was over (the node restarted or
	// resumed, the new primary in place); recovery: from at to oracle
	// agreement (see recovery), negative if there was none before the next
	// fault.
	settled  time.Time
	recovery time.Duration
}

// soakBackend is the Redis deployment under the soak and its own faults.
type soakBackend struct {
	desc  string // for the report: "one Redis", …
	url   string
	kinds []string // its Redis faults, taken in turn after the node faults
	// apply runs one Redis fault (in the test's goroutine) and fills f's
	// target, note and, if its action outlasts apply, settled.
	apply func(sk *soak, kind string, f *fault)
	// inspect, if set, reads what the backend's servers hold of a
	// divergence's user (its partition's recent events, its sessions) for
	// the divergences file; called from any goroutine.
	inspect func(sk *soak, key string) string
}

// soakBackends are the SOAK_BACKEND values.
var soakBackends = map[string]func(t *testing.T) *soakBackend{
	"single":   singleBackend,
	"sentinel": sentinelBackend,
	"cluster":  clusterBackend,
}

// singleBackend: one redis-server; the faults of the first soak.
func singleBackend(t *testing.T) *soakBackend {
	redis := redistest.StartWith(t, "--enable-debug-command", "local")
	return &soakBackend{
		desc: "one Redis", url: redis.URL,
		kinds: []string{"client-kill-pubsub", "redis-shutdown-nosave", "debug-sleep-1"},
		apply: func(sk *soak, kind string, f *fault) {
			f.target = redis.Addr
			switch kind {
			case "client-kill-pubsub":
				redis.Do(t, "CLIENT", "KILL", "TYPE", "pubsub")
			case "redis-shutdown-nosave":
				redis.Restart(t)
				sk.o.stateLost()
			case "debug-sleep-1":
				redis.Do(t, "DEBUG", "SLEEP", "1")
			}
		},
	}
}

// checkRec is one oracle check, for the recovery times: ok when every
// subscriber was checked (none excused), oldest the age of the oldest
// divergence then running.
type checkRec struct {
	at     time.Time
	ok     bool
	oldest time.Duration
}

// agreeAge: a divergence younger than this is the ordinary churn of a
// running system (a closed tab's leave grace of 1 s plus a sweep, an event
// in flight); the oracle "agrees" while none is older.
const agreeAge = 2 * time.Second

// recovery is the time from the fault to the first check, not before the
// fault settled, from which the oracle agrees for agreeAge: every
// subscriber checked, no divergence older than agreeAge. (A divergence
// running at that check then ended within agreeAge.) -1 when that did not
// happen before limit.
func recovery(checks []checkRec, f fault, limit time.Time) time.Duration {
	for i, c := range checks {
		if c.at.Before(f.settled) {
			continue
		}
		if c.at.After(limit) {
			break
		}
		// Up to a check past agreeAge, so that a divergence that began at
		// c (age 0 there) is seen older than agreeAge if it is still on.
		good, j := true, i
		for ; j < len(checks) && !checks[j].at.After(c.at.Add(agreeAge+checkEvery)); j++ {
			if !checks[j].ok || checks[j].oldest > agreeAge {
				good = false
				break
			}
		}
		if good && j < len(checks) {
			return c.at.Sub(f.at)
		}
	}
	return -1
}

func TestSoak(t *testing.T) {
	dur := 10 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SOAK_DURATION: %v", err)
		}
		dur = d
	}
	backendName := os.Getenv("SOAK_BACKEND")
	if backendName == "" {
		backendName = "single"
	}
	newBackend, ok := soakBackends[backendName]
	if !ok {
		t.Fatalf("SOAK_BACKEND=%q: not one of single, sentinel, cluster", backendName)
	}
	backend := newBackend(t)
	secret := Secret()
	sk := &soak{t: t, o: &oracle{sessions: map[string]*sess{}},
		hc: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	for i := range 3 {
		sk.nodes = append(sk.nodes, Start(t, fmt.Sprintf("n%d", i), Options{
			RedisURL: backend.url, Secret: secret, TTL: soakTTL, Heartbeat: soakHeartbeat, LeaveGrace: soakGrace,
		}))
	}
	sk.frozen = make([]atomic.Bool, len(sk.nodes))
	sk.thawed = make([]atomic.Int64, len(sk.nodes))
	sk.o.thawed = func(n int) (bool, time.Time) { return sk.frozen[n].Load(), time.Unix(0, sk.thawed[n].Load()) }
	for i := range soakUsers {
		u := fmt.Sprintf("u%03d", i)
		sk.users = append(sk.users, u)
		sk.tokens = append(sk.tokens, Token(t, secret, u, "User "+u))
	}
	for i := range soakRooms {
		sk.rooms = append(sk.rooms, fmt.Sprintf("r%d", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	sk.ctx = ctx
	sk.started = time.Now()
	var wg sync.WaitGroup
	for i := range soakTabs {
		wg.Add(1)
		go func() { defer wg.Done(); sk.tab(i%soakUsers, rand.New(rand.NewPCG(uint64(i), 1))) }()
	}
	for i := range soakAPI {
		wg.Add(1)
		go func() { defer wg.Done(); sk.api(i, (i*7)%soakUsers, rand.New(rand.NewPCG(uint64(i), 2))) }()
	}

	// Watch-only JSON subscribers on every node: all rooms, all users.
	type watcher struct {
		name  string
		node  int
		c     *client.Client
		token string
		tr    *trail
	}
	var watchers []watcher
	for n := range sk.nodes {
		for w := range soakWatchers {
			tok := Token(t, secret, fmt.Sprintf("watch-%d-%d", n, w), "Watcher")
			tr := newTrail(sk.started)
			c, err := client.New(client.Config{
				BaseURL: sk.nodes[n].Base, Rooms: sk.rooms, Users: sk.users, Watch: true, Token: tok,
				MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second, IdleTimeout: -1,
				OnEvent: tr.add,
			})
			if err != nil {
				t.Fatal(err)
			}
			watchers = append(watchers, watcher{fmt.Sprintf("n%d/w%d", n, w), n, c, tok, tr})
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.Run(ctx) }()
		}
	}

	// The oracle's check, every 100 ms.
	var (
		emu      sync.Mutex
		open     = map[string]*episode{} // sub|key → running divergence
		long     []*episode
		longest  episode
		checks   atomic.Int64
		recs     []checkRec
		episodes int   // divergences of any length
		unknown  int64 // membership checks skipped as not known
		excusedN int64 // subscriber checks skipped (frozen, just resumed, reconnecting)
		checkErr sync.WaitGroup
	)
	closeEp := func(k string, ep *episode, at time.Time) {
		ep.end = at
		episodes++
		if d := ep.end.Sub(ep.start); d > longest.end.Sub(longest.start) {
			longest = *ep
		}
		if ep.end.Sub(ep.start) > soakThreshold {
			long = append(long, ep)
		}
		delete(open, k)
	}
	checkErr.Add(1)
	go func() {
		defer checkErr.Done()
		tick := time.NewTicker(checkEvery)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			now := time.Now()
			if now.Sub(sk.started) < 5*time.Second {
				continue // warm-up: everyone connecting
			}
			status, members := sk.o.truth(now, sk.rooms)
			checks.Add(1)
			emu.Lock()
			allChecked := true
			for _, w := range watchers {
				// A subscriber is excused while its node is frozen (it
				// cannot send anything), for a second after its node
				// resumed or restarted (the backlog arriving), and while it
				// is not synced (reconnecting: its view is the last one
				// seen, on purpose stale).
				excused := sk.frozen[w.node].Load() ||
					now.Sub(time.Unix(0, sk.thawed[w.node].Load())) < time.Second || !w.c.Synced()
				seen := map[string]bool{}
				if excused {
					excusedN++
					allChecked = false
				}
				if !excused {
					users := w.c.Users()
					for _, u := range sk.users {
						view := "offline"
						if p := users[u]; p != nil {
							view = string(p.Status)
						}
						truth := status[u]
						if truth == "" {
							truth = "offline"
						}
						if truth == "?" {
							unknown++
							if ep := open[w.name+"|status:"+u]; ep != nil {
								closeEp(w.name+"|status:"+u, ep, now)
							}
							continue
						}
						k := w.name + "|status:" + u
						seen[k] = true
						if view != truth {
							if ep := open[k]; ep == nil {
								open[k] = &episode{sub: w.name, key: "status:" + u, start: now, view: view, truth: truth,
									why: sk.o.describe(u, now, sk.started)}
							}
						} else if ep := open[k]; ep != nil {
							closeEp(k, ep, now)
						}
					}
					for _, r := range sk.rooms {
						room, _ := w.c.Room(r)
						in := map[string]bool{}
						for _, m := range room.Members {
							in[m.ID] = true
						}
						for _, u := range sk.users {
							k := w.name + "|member:" + r + ":" + u
							seen[k] = true
							truth := members[r][u]
							if truth == -1 {
								// Not known: not checked.
								unknown++
								if ep := open[k]; ep != nil {
									closeEp(k, ep, now)
								}
								continue
							}
							if in[u] != (truth == 1) {
								if ep := open[k]; ep == nil {
									open[k] = &episode{sub: w.name, key: "member:" + r + ":" + u, start: now,
										why:  sk.o.describe(u, now, sk.started),
										view: fmt.Sprint(in[u]), truth: fmt.Sprint(truth == 1)}
								}
							} else if ep := open[k]; ep != nil {
								closeEp(k, ep, now)
							}
						}
					}
				}
				// An excused subscriber's running divergences end here.
				for k, ep := range open {
					if strings.HasPrefix(k, w.name+"|") && !seen[k] {
						closeEp(k, ep, now)
					}
				}
				// A divergence past the threshold: keep what explains it.
				for k, ep := range open {
					if !strings.HasPrefix(k, w.name+"|") || ep.probed || now.Sub(ep.start) <= soakThreshold {
						continue
					}
					ep.probed = true
					user := ep.key[strings.LastIndex(ep.key, ":")+1:]
					ep.trail = w.tr.of(user)
					checkErr.Add(1)
					go func(key, token string) {
						defer checkErr.Done()
						p := sk.probeStores(token, key)
						if backend.inspect != nil {
							p += "\n    servers: " + backend.inspect(sk, key)
						}
						emu.Lock()
						ep.probe = p
						emu.Unlock()
					}(ep.key, w.token)
				}
			}
			var oldest time.Duration
			for _, ep := range open {
				oldest = max(oldest, now.Sub(ep.start))
			}
			recs = append(recs, checkRec{at: now, ok: allChecked, oldest: oldest})
			emu.Unlock()
		}
	}()

	// The faults, one every 15 s, in turn: the node faults, then the
	// backend's own.
	kinds := append([]string{"kill9+restart", "sigstop/sigcont"}, backend.kinds...)
	var faults []fault
	frng := rand.New(rand.NewPCG(42, 3))
	deadline := sk.started.Add(dur)
	for i := 0; ; i++ {
		next := sk.started.Add(time.Duration(i+1) * faultEvery)
		if next.After(deadline) {
			break
		}
		time.Sleep(time.Until(next))
		kind := kinds[i%len(kinds)]
		n := frng.IntN(len(sk.nodes))
		f := fault{at: time.Now(), kind: kind, node: -1}
		switch kind {
		case "kill9+restart":
			f.node = n
			sk.nodes[n].Kill()
			time.Sleep(time.Second)
			sk.nodes[n].start()
			sk.thawed[n].Store(time.Now().UnixNano())
		case "sigstop/sigcont":
			f.node = n
			sk.frozen[n].Store(true)
			sk.nodes[n].Stop()
			time.Sleep(time.Duration(2000+frng.IntN(2000)) * time.Millisecond)
			sk.nodes[n].Cont()
			sk.thawed[n].Store(time.Now().UnixNano())
			sk.frozen[n].Store(false)
		default:
			backend.apply(sk, kind, &f)
		}
		if f.settled.IsZero() {
			f.settled = time.Now()
		}
		faults = append(faults, f)
		t.Logf("%6.1fs fault %s node %d %s %s (settled +%.1fs)", f.at.Sub(sk.started).Seconds(), kind, f.node, f.target, f.note,
			f.settled.Sub(f.at).Seconds())
	}
	time.Sleep(time.Until(deadline))
	// Close the running divergences at the end (a divergence still open
	// counts with its length so far).
	cancel()
	checkErr.Wait()
	emu.Lock()
	end := time.Now()
	for k, ep := range open {
		closeEp(k, ep, end)
	}
	emu.Unlock()
	wg.Wait()

	// The report.
	var b strings.Builder
	elapsed := end.Sub(sk.started)
	fmt.Fprintf(&b, "soak (SOAK_BACKEND=%s): %v, 3 nodes on %s, %d tabs + %d API clients over %d users and %d rooms, %d watch-only subscribers\n",
		backendName, elapsed.Round(time.Second), backend.desc, soakTabs, soakAPI, soakUsers, soakRooms, len(watchers))
	fmt.Fprintf(&b, "started %s (fault and divergence times below are seconds from then)\n", sk.started.UTC().Format("15:04:05.000"))
	fmt.Fprintf(&b, "timings: --ttl %v --heartbeat %v --leave-grace %v; divergence threshold ttl + 1 s = %v\n", soakTTL, soakHeartbeat, soakGrace, soakThreshold)
	fmt.Fprintf(&b, "operations: %d (%d refused or failed, mostly during faults), %.0f/s; oracle checks: %d (every %v, %d keys per subscriber)\n",
		sk.o.ops.Load(), sk.o.failed.Load(), float64(sk.o.ops.Load())/elapsed.Seconds(), checks.Load(), checkEvery, soakUsers*(1+soakRooms))
	byKind := map[string]int{}
	for _, f := range faults {
		byKind[f.kind]++
	}
	fmt.Fprintf(&b, "faults: %d:", len(faults))
	for _, k := range kinds {
		fmt.Fprintf(&b, " %s %d,", k, byKind[k])
	}
	b.WriteString("\n")
	// Recovery: from each fault to oracle agreement (see recovery).
	for i := range faults {
		limit := end
		if i+1 < len(faults) {
			limit = faults[i+1].at
		}
		faults[i].recovery = recovery(recs, faults[i], limit)
	}
	fmt.Fprintf(&b, "recovery (fault to oracle agreement: every subscriber checked and no divergence older than %v for %v), by kind: median / max, not recovered before the next fault:\n",
		agreeAge, agreeAge)
	for _, k := range kinds {
		var ds []time.Duration
		none := 0
		for _, f := range faults {
			if f.kind != k {
				continue
			}
			if f.recovery < 0 {
				none++
				continue
			}
			ds = append(ds, f.recovery)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		med, mx := "-", "-"
		if len(ds) > 0 {
			med, mx = fmt.Sprintf("%.1fs", ds[len(ds)/2].Seconds()), fmt.Sprintf("%.1fs", ds[len(ds)-1].Seconds())
		}
		fmt.Fprintf(&b, "  %-24s %2d faults: %s / %s, %d not recovered\n", k, byKind[k], med, mx, none)
	}
	b.WriteString("faults (at, kind, target, settled after, recovered after, what came of it):\n")
	for _, f := range faults {
		target := f.target
		if f.node >= 0 {
			target = fmt.Sprintf("node n%d", f.node)
		}
		rec := "not before the next fault"
		if f.recovery >= 0 {
			rec = fmt.Sprintf("%.1fs", f.recovery.Seconds())
		}
		fmt.Fprintf(&b, "  %6.1fs %-24s %-22s settled +%.1fs, recovered %s %s\n", f.at.Sub(sk.started).Seconds(), f.kind, target,
			f.settled.Sub(f.at).Seconds(), rec, f.note)
	}
	cause := func(ep *episode) string {
		var last *fault
		for i := range faults {
			if !faults[i].at.After(ep.start) {
				last = &faults[i]
			}
		}
		if last == nil || ep.start.Sub(last.at) > faultEvery {
			return "no fault before it"
		}
		if last.node < 0 {
			return fmt.Sprintf("%.1fs after %s at %.1fs (%s %s)", ep.start.Sub(last.at).Seconds(), last.kind,
				last.at.Sub(sk.started).Seconds(), last.target, last.note)
		}
		return fmt.Sprintf("%.1fs after %s at %.1fs (node %d)", ep.start.Sub(last.at).Seconds(), last.kind,
			last.at.Sub(sk.started).Seconds(), last.node)
	}
	fmt.Fprintf(&b, "divergences of any length: %d; subscriber checks excused (frozen, just resumed, reconnecting): %d of %d; checks not known (skipped): %d\n",
		episodes, excusedN, checks.Load()*int64(len(watchers)), unknown)
	fmt.Fprintf(&b, "divergences past %v: %d\n", soakThreshold, len(long))
	sort.Slice(long, func(i, j int) bool { return long[i].end.Sub(long[i].start) > long[j].end.Sub(long[j].start) })
	for i, ep := range long {
		if i == 50 {
			fmt.Fprintf(&b, "  … %d more\n", len(long)-50)
			break
		}
		fmt.Fprintf(&b, "  %s %s: view %s, truth %s, for %v from %.1fs (%s)\n", ep.sub, ep.key, ep.view, ep.truth,
			ep.end.Sub(ep.start).Round(100*time.Millisecond), ep.start.Sub(sk.started).Seconds(), cause(ep))
	}
	if longest.sub != "" {
		fmt.Fprintf(&b, "longest divergence: %v, %s %s (view %s, truth %s) from %.1fs, %s\n",
			longest.end.Sub(longest.start).Round(100*time.Millisecond), longest.sub, longest.key, longest.view, longest.truth,
			longest.start.Sub(sk.started).Seconds(), cause(&longest))
	}
	t.Log("\n" + b.String())
	out := filepath.Join("..", "..", "bin", "soak")
	if err := os.MkdirAll(out, 0o755); err == nil {
		_ = os.WriteFile(filepath.Join(out, "report.txt"), []byte(b.String()), 0o644)
		_ = os.WriteFile(filepath.Join(out, "report-"+backendName+".txt"), []byte(b.String()), 0o644)
		// Every divergence past the threshold, in the order they began,
		// and each node's log (its current process), for the analysis.
		var all strings.Builder
		sort.Slice(long, func(i, j int) bool { return long[i].start.Before(long[j].start) })
		for _, ep := range long {
			fmt.Fprintf(&all, "%.1fs +%v %s %s: view %s, truth %s (%s)\n    oracle then: %s\n    subscriber: %s\n    stores past the threshold: %s\n",
				ep.start.Sub(sk.started).Seconds(), ep.end.Sub(ep.start).Round(100*time.Millisecond), ep.sub, ep.key, ep.view, ep.truth,
				cause(ep), ep.why, ep.trail, ep.probe)
		}
		_ = os.WriteFile(filepath.Join(out, "divergences-"+backendName+".txt"), []byte(all.String()), 0o644)
		for i, n := range sk.nodes {
			_ = os.WriteFile(filepath.Join(out, fmt.Sprintf("%s-n%d.log", backendName, i)), []byte(n.Log()), 0o644)
		}
	}
	if len(long) > 0 {
		t.Errorf("%d divergences lasted longer than %v", len(long), soakThreshold)
	}
}
