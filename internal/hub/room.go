package hub

import (
	"context"
	"time"

	"github.com/presenced/presenced/store"
)

// roomState is a room with at least one subscriber on this node.
type roomState struct {
	id           string
	subs         map[*Subscriber]*RoomSub
	json         int // the JSON subscribers among subs
	dirtyMembers bool
	dirtyTyping  bool
	running      bool          // a worker is rendering this room
	wake         chan struct{} // a waiting worker has something to do
	lastRender   time.Time

	// Snapshot reads are shared: cached is the last read of the room, good
	// for every snapshot while no change was dispatched after it started
	// (changed < cached.seq); call is a read in flight that a snapshot may
	// wait for instead of reading again.
	changed uint64
	cached  *frame
	call    *roomCall

	// Leave debounce (debounce.go): the member list last shown, the read it
	// came from, and the departures not shown yet, oldest first.
	shown    []store.Member
	shownSeq uint64
	held     []heldMember
}

type roomCall struct {
	seq  uint64
	done chan struct{}
	f    *frame
	err  error
}

func newRoomState(id string) *roomState {
	return &roomState{id: id, subs: map[*Subscriber]*RoomSub{}, wake: make(chan struct{}, 1)}
}

// hasHTML reports whether the room has an HTML subscriber (a worker's
// renders have somewhere to go).
func (rs *roomState) hasHTML() bool { return len(rs.subs) > rs.json }

// invalidate records a change dispatched at seq: reads started before it
// are no longer current.
func (rs *roomState) invalidate(seq uint64) { rs.changed = max(rs.changed, seq) }

// readRoom returns a current read of the room for a snapshot: the cached
// one while nothing changed since it started, the one in flight if it
// started after the last change, or a new one. A reconnect storm of n
// subscribers to one quiet room thus costs one store read, not n.
func (h *Hub) readRoom(room string) (*frame, error) {
	h.mu.Lock()
	rs := h.rooms[room]
	if rs == nil { // unsubscribed meanwhile: read without sharing
		h.mu.Unlock()
		return h.readFrame(room, h.seq.Add(1), true, true)
	}
	if rs.cached != nil && rs.cached.seq > rs.changed {
		f := rs.cached
		h.mu.Unlock()
		h.metrics.SnapshotReads.WithLabelValues("shared").Inc()
		return f, nil
	}
	if c := rs.call; c != nil && c.seq > rs.changed {
		h.mu.Unlock()
		h.metrics.SnapshotReads.WithLabelValues("shared").Inc()
		select {
		case <-c.done:
			return c.f, c.err
		case <-h.ctx.Done():
			return nil, h.ctx.Err()
		}
	}
	c := &roomCall{seq: h.seq.Add(1), done: make(chan struct{})}
	rs.call = c
	h.mu.Unlock()

	h.metrics.SnapshotReads.WithLabelValues("store").Inc()
	c.f, c.err = h.readFrame(room, c.seq, true, true)
	h.mu.Lock()
	if rs.call == c {
		rs.call = nil
	}
	if c.err == nil {
		if rs.cached == nil || rs.cached.seq < c.seq {
			rs.cached = c.f
		}
		if rs.hasHTML() {
			h.noteSnapshotLocked(rs, c.f.members, c.seq, time.Now())
		}
	}
	h.mu.Unlock()
	close(c.done)
	return c.f, c.err
}

// readFrame reads what a render needs.
func (h *Hub) readFrame(room string, seq uint64, members, typing bool) (*frame, error) {
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	f := &frame{room: room, seq: seq, haveMembers: members, haveTyping: typing}
	var err error
	if members {
		if f.members, err = h.st.Members(ctx, room); err != nil {
			return nil, err
		}
	}
	if typing {
		if f.typists, err = h.st.Typing(ctx, room); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// markLocked marks a room dirty and makes sure a worker will render it.
func (h *Hub) markLocked(rs *roomState, members, typing bool) {
	rs.dirtyMembers = rs.dirtyMembers || members
	rs.dirtyTyping = rs.dirtyTyping || typing
	if rs.running {
		select {
		case rs.wake <- struct{}{}:
		default:
		}
		return
	}
	if !h.closed {
		rs.running = true
		h.wg.Add(1)
		go h.roomWorker(rs)
	}
}

// roomWorker renders one room while it is dirty, at most once per
// coalescing window, and while departures are held (leave debounce) waits
// for the earliest one's window to end and renders the room then. It exits
// when there is nothing left to do.
func (h *Hub) roomWorker(rs *roomState) {
	defer h.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		h.mu.Lock()
		wait := time.Until(rs.lastRender.Add(h.opt.Coalesce))
		h.mu.Unlock()
		if wait > 0 {
			timer.Reset(wait)
			select {
			case <-h.ctx.Done():
				h.workerExit(rs)
				return
			case <-timer.C:
			}
		}
		h.mu.Lock()
		if !rs.hasHTML() {
			rs.held = nil // nobody left to show them to
		}
		due := rs.nextHoldDue()
		if !due.IsZero() && !time.Now().Before(due) {
			rs.dirtyMembers = true // a window ended: show the room as it is now
		}
		dm, dt := rs.dirtyMembers, rs.dirtyTyping
		if (!dm && !dt && due.IsZero()) || len(rs.subs) == 0 || h.ctx.Err() != nil {
			// Decided and marked not running under one lock hold: a change
			// marked after this starts a new worker.
			h.workerExitLocked(rs)
			h.mu.Unlock()
			return
		}
		if !dm && !dt {
			// Only held departures: wait for the first window to end, or
			// for a change (markLocked wakes us).
			h.mu.Unlock()
			timer.Reset(time.Until(due))
			select {
			case <-h.ctx.Done():
				h.workerExit(rs)
				return
			case <-timer.C:
			case <-rs.wake:
				timer.Stop()
			}
			continue
		}
		rs.dirtyMembers, rs.dirtyTyping = false, false
		rs.lastRender = time.Now()
		h.mu.Unlock()

		if err := h.renderRoom(rs, dm, dt); err != nil {
			if h.ctx.Err() != nil {
				h.workerExit(rs)
				return
			}
			h.log.Warn("room render failed; retrying", "room", rs.id, "err", err)
			h.mu.Lock()
			rs.dirtyMembers = rs.dirtyMembers || dm
			rs.dirtyTyping = rs.dirtyTyping || dt
			rs.lastRender = time.Now().Add(time.Second) // back off a store in trouble
			h.mu.Unlock()
		}
	}
}

func (h *Hub) workerExit(rs *roomState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.workerExitLocked(rs)
}

func (h *Hub) workerExitLocked(rs *roomState) {
	rs.running = false
	if len(rs.subs) == 0 && h.rooms[rs.id] == rs {
		delete(h.rooms, rs.id)
	}
}

// renderRoom reads a room once, renders it once per variant and queues it
// to every HTML subscriber of the room.
func (h *Hub) renderRoom(rs *roomState, members, typing bool) error {
	seq := h.seq.Add(1)
	f, err := h.readFrame(rs.id, seq, members, typing)
	if err != nil {
		return err
	}
	start := time.Now()
	type target struct {
		s    *Subscriber
		r    RoomSub
		from int
	}
	h.mu.Lock()
	if members {
		f.held = h.settleLocked(rs, f.members, seq, start)
	}
	if members && typing && (rs.cached == nil || rs.cached.seq < seq) {
		// A full read: snapshots may share it (without the holds).
		rs.cached = &frame{room: f.room, seq: seq, members: f.members, typists: f.typists, haveMembers: true, haveTyping: true}
	}
	targets := make([]target, 0, len(rs.subs))
	for s, r := range rs.subs {
		if s.spec.Format == HTML {
			targets = append(targets, target{s: s, r: *r})
		}
	}
	h.mu.Unlock()
	topic := roomTopic(rs.id)
	for _, t := range targets {
		from := len(f.held)
		if len(f.held) > 0 {
			from = f.heldFrom(t.s.snapshotSeq(topic))
		}
		tf := f
		if t.s.filtered() {
			// Its own view of the room: not shared with anyone.
			tf = &frame{room: f.room, seq: f.seq, members: t.s.visibleMembers(f.members), typists: t.s.visibleTypists(f.typists),
				haveMembers: f.haveMembers, haveTyping: f.haveTyping}
			from = 0
		}
		for _, m := range tf.html(h, t.r, t.s.spec.View, from) {
			t.s.push(&item{key: m.Event, topic: topic, msg: m, seq: seq, render: true})
		}
	}
	h.metrics.Fanout.WithLabelValues("room").Observe(time.Since(start).Seconds())
	return nil
}
