package hub

import (
	"maps"
	"slices"
	"time"

	"github.com/presenced/presenced/store"
)

// Leave debounce (--leave-debounce): the HTML streams show a departure only
// if it still holds when the window is over, so that a reload or a quick
// reconnect (offline beacon, then the same session back a moment later)
// shows nothing at all instead of leave + join (peers.md, "flapping"). The
// store and the JSON streams are never delayed: they report every
// transition as it happens. Joins, typing and status changes other than
// offline are not delayed either.
//
// Room stacks. Each room remembers the member list it last showed (shown,
// from its renders and snapshots). When a read finds a member of shown gone,
// the member is held: renders keep showing it (with the status it was shown
// with, at its place) until the window is over; then the room worker
// re-reads the room and shows whatever is current. A member that came back
// meanwhile is simply current again: its departure was never shown.
//
// Holds and snapshots. A snapshot is always the current state (a new stream,
// a resync): a held member is not in it. So that a render after it does not
// bring the member back for that stream, a hold records the read (seq) that
// first found the member gone, and a connection is shown only the holds
// that began after its last snapshot: it showed those members, and must go
// on showing them until their window ends. The connections of a room thus
// get at most a few variants of one render (one per hold age), each
// rendered once.
//
// Offline dots. An offline presence-{userId} dot is not sent at once: the
// hub remembers which connections are owed it and sends it when the window
// is over, unless a status event of the user (the user is back) came first;
// that event's dot then goes to those connections too. Only the feed
// goroutine touches the pending dots, so they are ordered with every other
// dot without a lock.

// heldMember is a departure a room's HTML streams do not show yet.
type heldMember struct {
	member store.Member
	idx    int       // its place in the list last shown
	since  uint64    // the read that first found it gone
	until  time.Time // when the departure is shown if it still holds
}

// settleLocked applies a render's read (current, numbered seq) to the room's
// holds and returns the holds the render must still show. Holds of members
// that are back end; holds whose window is over end (the render shows the
// departure); members last shown and now gone become held. A read older
// than the room's last shown state changes nothing (a newer one decided).
func (h *Hub) settleLocked(rs *roomState, current []store.Member, seq uint64, now time.Time) []heldMember {
	if h.opt.Debounce <= 0 {
		return nil
	}
	in := memberSet(current)
	if seq < rs.shownSeq {
		var out []heldMember
		for _, hm := range rs.held {
			if !in[hm.member.ID] {
				out = append(out, hm)
			}
		}
		return out
	}
	kept := make([]heldMember, 0, len(rs.held))
	var over map[string]bool
	for _, hm := range rs.held {
		switch {
		case in[hm.member.ID]:
			h.metrics.Debounced.WithLabelValues("member", "returned").Inc()
		case !now.Before(hm.until):
			// Shown gone now: not to be held again.
			h.metrics.Debounced.WithLabelValues("member", "shown").Inc()
			if over == nil {
				over = map[string]bool{}
			}
			over[hm.member.ID] = true
		default:
			kept = append(kept, hm)
		}
	}
	rs.held = h.holdGoneLocked(rs, kept, in, over, seq, now)
	rs.shown = withHeld(current, rs.held)
	rs.shownSeq = seq
	return rs.held
}

// noteSnapshotLocked applies a snapshot's read to the room: members last
// shown and gone in it become held (from this read on, so that the
// snapshot's own connections never get them back), and what it showed is
// remembered. It never ends a hold: the room worker does, with a render
// that every older connection gets.
func (h *Hub) noteSnapshotLocked(rs *roomState, current []store.Member, seq uint64, now time.Time) {
	if h.opt.Debounce <= 0 || seq < rs.shownSeq {
		return
	}
	before := len(rs.held)
	rs.held = h.holdGoneLocked(rs, slices.Clone(rs.held), memberSet(current), nil, seq, now)
	rs.shown = withHeld(current, rs.held)
	rs.shownSeq = seq
	if len(rs.held) > before {
		h.markLocked(rs, false, false) // a worker ends the new holds
	}
}

// holdGoneLocked appends to held every member of the room's shown list that
// is neither in the read (in), nor held already, nor a departure whose
// window just ended (over). held must be a fresh slice: renders keep the
// previous one.
func (h *Hub) holdGoneLocked(rs *roomState, held []heldMember, in, over map[string]bool, seq uint64, now time.Time) []heldMember {
	already := make(map[string]bool, len(held))
	for _, hm := range held {
		already[hm.member.ID] = true
	}
	for i, m := range rs.shown {
		if in[m.ID] || over[m.ID] || already[m.ID] {
			continue
		}
		held = append(held, heldMember{member: m, idx: i, since: seq, until: now.Add(h.opt.Debounce)})
	}
	return held
}

// nextHoldDue is when the room's earliest hold ends (zero: none).
func (rs *roomState) nextHoldDue() time.Time {
	var due time.Time
	for _, hm := range rs.held {
		if due.IsZero() || hm.until.Before(due) {
			due = hm.until
		}
	}
	return due
}

// withHeld is current with the held members put back at their places.
func withHeld(current []store.Member, held []heldMember) []store.Member {
	if len(held) == 0 {
		return current
	}
	byIdx := slices.Clone(held)
	slices.SortStableFunc(byIdx, func(a, b heldMember) int { return a.idx - b.idx })
	out := make([]store.Member, 0, len(current)+len(held))
	out = append(out, current...)
	for _, hm := range byIdx {
		out = slices.Insert(out, min(hm.idx, len(out)), hm.member)
	}
	return out
}

func memberSet(ms []store.Member) map[string]bool {
	in := make(map[string]bool, len(ms))
	for _, m := range ms {
		in[m.ID] = true
	}
	return in
}

// pendingDot is an offline dot not sent yet.
type pendingDot struct {
	user  store.Profile
	until time.Time
	conns map[*Subscriber]struct{}
}

// dotDue is a pending dot's place in the due order. Every pending dot is
// due one debounce window after it was created, so creation order is due
// order and a FIFO replaces any search for the earliest: a mass expiry of n
// users costs O(n) on the feed goroutine, not O(n²).
type dotDue struct {
	userID string
	until  time.Time
}

// deferOfflineDot holds an offline dot for conns (feed goroutine only).
func (h *Hub) deferOfflineDot(user store.Profile, conns []*Subscriber, now time.Time) {
	p := h.dots[user.ID]
	if p == nil {
		p = &pendingDot{until: now.Add(h.opt.Debounce), conns: make(map[*Subscriber]struct{}, len(conns))}
		h.dots[user.ID] = p
		h.dotQueue = append(h.dotQueue, dotDue{userID: user.ID, until: p.until})
		if len(h.dotQueue) == 1 {
			h.dotTimer.Reset(h.opt.Debounce)
		}
	}
	p.user = user
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
}

// takePendingDot ends a user's pending offline dot because a newer status
// came (the user is back): it returns conns plus those the dot was owed to,
// which get the newer dot instead (feed goroutine only).
func (h *Hub) takePendingDot(userID string, conns []*Subscriber) []*Subscriber {
	p := h.dots[userID]
	if p == nil {
		return conns
	}
	delete(h.dots, userID)
	h.metrics.Debounced.WithLabelValues("dot", "returned").Inc()
	for _, c := range conns {
		delete(p.conns, c)
	}
	for c := range p.conns {
		conns = append(conns, c)
	}
	return conns
}

// flushDots sends the offline dots whose window is over: the user is still
// offline, since any later status would have taken the pending dot (feed
// goroutine only).
func (h *Hub) flushDots(now time.Time) {
	for len(h.dotQueue) > 0 && !now.Before(h.dotQueue[0].until) {
		due := h.dotQueue[0]
		h.dotQueue = h.dotQueue[1:]
		id := due.userID
		p := h.dots[id]
		if p == nil || !p.until.Equal(due.until) {
			continue // the user came back (and maybe left again: that has its own entry)
		}
		delete(h.dots, id)
		h.metrics.Debounced.WithLabelValues("dot", "shown").Inc()
		d := &dotFrame{user: p.user, status: store.StatusOffline}
		h.pushDots(d, slices.Collect(maps.Keys(p.conns)), nil, h.seq.Add(1))
	}
	if len(h.dotQueue) == 0 {
		h.dotQueue = nil // let the drained backing array go
		return
	}
	h.dotTimer.Reset(max(h.dotQueue[0].until.Sub(now), 0))
}

// clearDots forgets every pending dot: after a resync every stream has
// been sent the current state, and the feed may have missed the statuses
// that would have taken them (feed goroutine only).
func (h *Hub) clearDots() {
	clear(h.dots)
	h.dotQueue = nil
	h.dotTimer.Stop()
}
