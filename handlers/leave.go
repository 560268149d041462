package handlers

import (
	"context"
	"errors"
	"time"

	"github.com/presenced/presenced/store"
)

// Leaving a room whose stream closed. A room stream that closes without an
// explicit offline leaves its session alive for --leave-grace (so that a
// reload comes back without a flap), but the session may well live on: the
// same tab opened a stream for another room (SPA navigation, htmx-boosted
// links), or the page removed an embed and goes on heartbeating. Its
// membership of the closed stream's room would then live on with it: a
// ghost. So the hub schedules a Leave of that (session, room), cancelled
// when a stream of the same (session, room) opens on this node first.
//
// When it is due and another stream of the session is open on this node,
// the session is certainly alive: it leaves the room at once. Otherwise the
// session is probably expiring right now (its TTL was the grace), and a
// Leave just before the expiry would take the room out of the user's
// offline event (subscribers of the room would hear the leave but not the
// offline): the Leave waits one more leaveRecheck, after which it is a
// no-op for an expired session and ends the ghost of one kept alive
// elsewhere (heartbeats, a stream on another node).
//
// A stream of the same (session, room) open on another node is not seen
// here: its periodic refresh joins the room again (Join is idempotent), so
// that race heals within a refresh interval.

// sessionRoom names one session's membership of one room.
type sessionRoom struct{ user, sid, room string }

// leaveTimer is one scheduled Leave; its identity tells a stale timer from
// the current one.
type leaveTimer struct {
	t     *time.Timer
	final bool
}

// leaveRecheck is how long a Leave waits, after the grace, for a session
// that no stream on this node keeps alive: long enough for the store to
// have expired it if nothing else did.
func (h *hub) leaveRecheck() time.Duration { return max(h.grace, time.Second) }

// scheduleLeave makes session k.sid leave k.room after d unless a stream of
// it for that room opens here first.
func (h *hub) scheduleLeave(k sessionRoom, d time.Duration, final bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scheduleLeaveLocked(k, d, final)
}

func (h *hub) scheduleLeaveLocked(k sessionRoom, d time.Duration, final bool) {
	if h.closed {
		return
	}
	h.cancelLeaveLocked(k)
	lt := &leaveTimer{final: final}
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
	alive := false
	for c := range h.byUser[k.user] {
		if c.sid != k.sid || c.ended.Load() {
			continue
		}
		if c.room == k.room {
			h.mu.Unlock() // open again (add cancels, but be sure)
			return
		}
		alive = true
	}
	if !alive && !lt.final {
		h.scheduleLeaveLocked(k, h.leaveRecheck(), true)
		h.mu.Unlock()
		return
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
