package handlers

import (
	"context"
	"errors"
	"time"

	"github.com/presenced/presenced/store"
)

// Leaving a room whose stream closed. A room stream that closes without an
// explicit offline leaves its session to live on until its TTL (so that a
// reload comes back without a flap), and the session may well live on
// longer: the same tab opened a stream for another room (SPA navigation,
// htmx-boosted links), or the page removed an embed and goes on
// heartbeating. Its membership of the closed stream's room would then live
// on with it: a ghost. So the hub schedules a Leave of that (session, room)
// after --leave-grace, cancelled when a stream of the same (session, room)
// opens on this node first. The Leave touches the membership only: a
// session that nothing keeps alive any more (a crashed tab) leaves the room
// after the grace and goes offline when its TTL runs out.
//
// A stream of the same (session, room) open on another node is not seen
// here: its periodic refresh joins the room again (Join is idempotent), so
// that race heals within a refresh interval.

// sessionRoom names one session's membership of one room.
type sessionRoom struct{ user, sid, room string }

// leaveTimer is one scheduled Leave; its identity tells a stale timer from
// the current one.
type leaveTimer struct{ t *time.Timer }

// scheduleLeave makes session k.sid leave k.room after d unless a stream of
// it for that room opens here first.
func (h *hub) scheduleLeave(k sessionRoom, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scheduleLeaveLocked(k, d)
}

func (h *hub) scheduleLeaveLocked(k sessionRoom, d time.Duration) {
	if h.closed {
		return
	}
	h.cancelLeaveLocked(k)
	lt := &leaveTimer{}
	lt.t = time.AfterFunc(d, func() { h.leaveDue(k, lt) })
	h.leaves[k] = lt
}

// cancelLeaveLocked drops k's scheduled Leave: a stream of it is open.
func (h *hub) cancelLeaveLocked(k sessionRoom) {
	if lt := h.leaves[k]; lt != nil {
		lt.t.Stop()
		delete(h.leaves, k)
	}
}

// stopLeavesLocked drops every scheduled Leave (shutdown: sessions are left
// alone, as they are for streams).
func (h *hub) stopLeavesLocked() {
	for k, lt := range h.leaves {
		lt.t.Stop()
		delete(h.leaves, k)
	}
}

// leaveDue runs when a scheduled Leave is due.
func (h *hub) leaveDue(k sessionRoom, lt *leaveTimer) {
	h.mu.Lock()
	if h.closed || h.leaves[k] != lt {
		h.mu.Unlock()
		return
	}
	delete(h.leaves, k)
	for c := range h.byUser[k.user] {
		if c.sid == k.sid && c.room == k.room && !c.ended.Load() {
			h.mu.Unlock() // open again (add cancels, but be sure)
			return
		}
	}
	h.wg.Add(1)
	h.mu.Unlock()
	defer h.wg.Done()

	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	err := h.st.Leave(ctx, k.room, k.user, k.sid)
	cancel()
	if err != nil {
		if h.ctx.Err() == nil && !errors.Is(err, store.ErrClosed) {
			h.log.Warn("could not take a closed stream's session out of its room", "user", k.user, "room", k.room, "err", err)
		}
		return
	}
	h.m.ghostLeaves.Inc()
	// A stream of the same (session, room) that opened while the Leave ran
	// may have joined before it: join again now rather than at its next
	// refresh.
	for _, c := range h.sessionConns(k.user, k.sid) {
		if c.room == k.room {
			c.pokeRefresh()
		}
	}
}
