package handlers

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/r3labs/sse/v2"

	"github.com/presenced/presenced/store"
)

// hub turns the store's change feed into SSE events. It subscribes to the
// feed once per process, keeps the index of open connections (by room, by
// watched user, by user for session bookkeeping), renders each change once
// and fans the bytes out to the interested connections.
//
// Room HTML (members, member-list, typing) is rendered by one worker per
// room with subscribers: a change only marks the room dirty; the worker
// re-reads the room from the store at most once per coalescing window and
// queues the result to every HTML connection of the room. Re-reading instead
// of patching makes every render absolute, so a burst of changes (a reconnect
// storm) costs one render, and a lost or reordered event cannot leave a stack
// wrong. Status dots and the JSON diff events are rendered straight from the
// event, once per variant.
//
// Stale renders never overwrite a snapshot: every store read takes a number
// from seq before it starts, a connection remembers the number of its last
// snapshot, and a render read before that is dropped for it (see conn).
//
// Departures are debounced on the HTML streams (debounce.go), and a closed
// room stream's (session, room) is left after the grace unless reopened
// (leave.go).
type hub struct {
	st       store.Store
	log      *slog.Logger
	m        *metrics
	sse      *sse.Server
	coalesce time.Duration
	debounce time.Duration // --leave-debounce; 0 = off

	seq        atomic.Uint64 // read sequence, see conn.snapSeq
	connSeq    atomic.Uint64
	subscribed atomic.Bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	conns    map[*conn]struct{}
	rooms    map[string]*roomState
	watchers map[string]map[*conn]struct{} // user id → /sse/users connections watching them
	byUser   map[string]map[*conn]struct{} // user id → that user's own room streams
	leaves   map[sessionRoom]*leaveTimer   // scheduled Leaves of closed room streams

	// Offline dots held back by the leave debounce. Only the feed goroutine
	// (run) touches them.
	dots     map[string]*pendingDot
	dotTimer *time.Timer
	dotQueue []dotDue // pending dots in due order (feed goroutine only)
}

// roomState is a room with at least one open connection on this node.
type roomState struct {
	id           string
	conns        map[*conn]struct{}
	json         map[*conn]struct{} // the JSON connections among conns
	dirtyMembers bool
	dirtyTyping  bool
	running      bool          // a worker is rendering this room
	wake         chan struct{} // a waiting worker has something to do
	lastRender   time.Time

	// Leave debounce (debounce.go): the member list last shown, the read it
	// came from, and the departures not shown yet, oldest first.
	shown    []store.Member
	shownSeq uint64
	held     []heldMember
}

// hasHTML reports whether the room has an HTML connection (a worker's
// renders have somewhere to go).
func (rs *roomState) hasHTML() bool { return len(rs.conns) > len(rs.json) }

// hubTimings are the durations the hub works with.
type hubTimings struct {
	coalesce time.Duration // shortest interval between two renders of a room
	debounce time.Duration // --leave-debounce
}

func newHub(st store.Store, sseSrv *sse.Server, m *metrics, log *slog.Logger, t hubTimings) *hub {
	ctx, cancel := context.WithCancel(context.Background())
	dotTimer := time.NewTimer(time.Hour)
	dotTimer.Stop()
	return &hub{
		st: st, sse: sseSrv, m: m, log: log,
		coalesce: t.coalesce, debounce: t.debounce,
		ctx: ctx, cancel: cancel,
		conns:    map[*conn]struct{}{},
		rooms:    map[string]*roomState{},
		watchers: map[string]map[*conn]struct{}{},
		byUser:   map[string]map[*conn]struct{}{},
		leaves:   map[sessionRoom]*leaveTimer{},
		dots:     map[string]*pendingDot{},
		dotTimer: dotTimer,
	}
}

// start subscribes to the feed and runs the dispatch loop until close. The
// first subscription is made before start returns, so that a server reports
// ready only once nothing can be missed.
func (h *hub) start() error {
	sub, err := h.st.Subscribe(h.ctx)
	if err != nil {
		return err
	}
	h.subscribed.Store(true)
	h.wg.Add(1)
	go h.run(sub)
	return nil
}

// run reads the feed. When the subscription ends (the store closed it as too
// slow, or lost its backend), it subscribes again and re-sends every open
// connection its state, since transitions may have been missed in between.
func (h *hub) run(sub *store.Subscription) {
	defer h.wg.Done()
	defer h.dotTimer.Stop()
	backoff := 50 * time.Millisecond
	for {
	feed:
		for {
			select {
			case ev, ok := <-sub.C():
				if !ok {
					break feed
				}
				if ev.Kind == store.EventResync {
					h.m.feedEvents.WithLabelValues(string(ev.Kind)).Inc()
					h.log.Warn("store feed asked for a resync: re-sending every stream its state")
					h.resyncAll()
					continue
				}
				h.dispatch(ev)
			case <-h.dotTimer.C:
				h.flushDots(time.Now())
			}
		}
		h.subscribed.Store(false)
		if h.ctx.Err() != nil {
			return
		}
		err := sub.Err()
		if errors.Is(err, store.ErrSlowSubscriber) {
			h.log.Warn("store feed dropped this node as too slow: resubscribing and re-sending state", "err", err)
		} else {
			h.log.Error("store feed ended: resubscribing", "err", err)
		}
		for {
			var serr error
			sub, serr = h.st.Subscribe(h.ctx)
			if serr == nil {
				break
			}
			if h.ctx.Err() != nil {
				return
			}
			h.log.Error("store feed subscribe failed", "err", serr, "retry_in", backoff)
			select {
			case <-h.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
		backoff = 50 * time.Millisecond
		h.subscribed.Store(true)
		h.resyncAll()
	}
}

// close stops the feed loop, every room worker and every scheduled Leave,
// and waits for them. Connections must have been closed first (closeConns).
func (h *hub) close() {
	h.mu.Lock()
	h.closed = true
	h.stopLeavesLocked()
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

// closeConns ends every open stream with cause (shutdown: the browsers
// reconnect, to another node; sessions are left to live on).
func (h *hub) closeConns(cause error) {
	h.mu.Lock()
	h.closed = true
	conns := make([]*conn, 0, len(h.conns))
	for c := range h.conns {
		conns = append(conns, c)
	}
	h.mu.Unlock()
	for _, c := range conns {
		c.drop(cause)
	}
}

// add registers a connection. It fails once the hub is closing.
func (h *hub) add(c *conn) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.conns[c] = struct{}{}
	switch c.kind {
	case roomConn:
		rs := h.rooms[c.room]
		if rs == nil {
			rs = &roomState{id: c.room, conns: map[*conn]struct{}{}, json: map[*conn]struct{}{}, wake: make(chan struct{}, 1)}
			h.rooms[c.room] = rs
		}
		rs.conns[c] = struct{}{}
		if c.json {
			rs.json[c] = struct{}{}
		}
		addTo(h.byUser, c.user.ID, c)
		// The session is back in this room before its closed stream's
		// Leave was due.
		h.cancelLeaveLocked(sessionRoom{user: c.user.ID, sid: c.sid, room: c.room})
	case usersConn:
		for _, id := range c.ids {
			addTo(h.watchers, id, c)
		}
	}
	return true
}

// remove unregisters a connection.
func (h *hub) remove(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.conns, c)
	switch c.kind {
	case roomConn:
		if rs := h.rooms[c.room]; rs != nil {
			delete(rs.conns, c)
			delete(rs.json, c)
			if len(rs.conns) == 0 && !rs.running {
				delete(h.rooms, c.room)
			}
		}
		removeFrom(h.byUser, c.user.ID, c)
	case usersConn:
		for _, id := range c.ids {
			removeFrom(h.watchers, id, c)
		}
	}
}

func addTo(m map[string]map[*conn]struct{}, k string, c *conn) {
	s := m[k]
	if s == nil {
		s = map[*conn]struct{}{}
		m[k] = s
	}
	s[c] = struct{}{}
}

func removeFrom(m map[string]map[*conn]struct{}, k string, c *conn) {
	if s := m[k]; s != nil {
		delete(s, c)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

// sessionConns lists this node's open room streams of one session.
func (h *hub) sessionConns(userID, sid string) []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []*conn
	for c := range h.byUser[userID] {
		if c.sid == sid {
			out = append(out, c)
		}
	}
	return out
}

// userConns lists this node's open room streams of one user.
func (h *hub) userConns(userID string) []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*conn, 0, len(h.byUser[userID]))
	for c := range h.byUser[userID] {
		out = append(out, c)
	}
	return out
}

// sessionEnded is told of an explicit offline for a session (POST
// /api/presence on this node): its streams stop keeping it alive, and do not
// refresh it when they close.
func (h *hub) sessionEnded(userID, sid string) {
	for _, c := range h.sessionConns(userID, sid) {
		c.setEnded(true)
	}
}

// sessionActive is told of a heartbeat for a session: streams of it that an
// earlier offline had stopped resume and re-join their room at once.
func (h *hub) sessionActive(userID, sid string) {
	for _, c := range h.sessionConns(userID, sid) {
		if c.setEnded(false) {
			c.pokeRefresh()
		}
	}
}

// dispatch handles one feed event.
func (h *hub) dispatch(ev store.Event) {
	h.m.feedEvents.WithLabelValues(string(ev.Kind)).Inc()
	switch ev.Kind {
	case store.EventJoin, store.EventLeave:
		start := time.Now()
		js := h.roomChanged(ev.Room, true, false)
		if len(js) > 0 {
			body := memberEventJSON{Room: ev.Room, User: toUser(ev.User), At: ms(ev.At)}
			if ev.Kind == store.EventJoin {
				body.Status = ev.To
			}
			h.fanJSON(js, string(ev.Kind), mustJSON(body))
			h.m.fanout.WithLabelValues("room").Observe(time.Since(start).Seconds())
		}
	case store.EventTyping:
		start := time.Now()
		js := h.roomChanged(ev.Room, false, true)
		if len(js) > 0 {
			h.fanJSON(js, "typing", mustJSON(typingEventJSON{Room: ev.Room, TypingUsers: toTypists(ev.Typing)}))
			h.m.fanout.WithLabelValues("room").Observe(time.Since(start).Seconds())
		}
	case store.EventStatus:
		h.statusChanged(ev)
	}
}

// roomChanged marks a room dirty for its HTML worker and returns its JSON
// connections, which get the diff itself.
func (h *hub) roomChanged(room string, members, typing bool) []*conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	rs := h.rooms[room]
	if rs == nil {
		return nil
	}
	if rs.hasHTML() {
		h.markLocked(rs, members, typing)
	}
	if len(rs.json) == 0 {
		return nil
	}
	js := make([]*conn, 0, len(rs.json))
	for c := range rs.json {
		js = append(js, c)
	}
	return js
}

func (h *hub) fanJSON(conns []*conn, event string, data []byte) {
	h.m.published.WithLabelValues(event).Inc()
	for _, c := range conns {
		c.deliver(outMsg{event: event, data: data})
	}
}

// statusChanged fans a user's new status out: a dot to HTML connections of
// every room the user is (or was) in and to /sse/users watchers of the user,
// a `status` event to the JSON ones, and a stack re-render of those rooms.
func (h *hub) statusChanged(ev store.Event) {
	start := time.Now()
	if ev.To == store.StatusOffline && !ev.Deadline.IsZero() {
		h.m.offlineLateness.Observe(ev.At.Sub(ev.Deadline).Seconds())
	}
	var html, js []*conn
	h.mu.Lock()
	for _, room := range ev.Rooms {
		rs := h.rooms[room]
		if rs == nil {
			continue
		}
		hasHTML := false
		for c := range rs.conns {
			if c.json {
				js = append(js, c)
			} else {
				html = append(html, c)
				hasHTML = true
			}
		}
		if hasHTML {
			h.markLocked(rs, true, false)
		}
	}
	for c := range h.watchers[ev.User.ID] {
		if c.json {
			js = append(js, c)
		} else {
			html = append(html, c)
		}
	}
	own := make([]*conn, 0, len(h.byUser[ev.User.ID]))
	for c := range h.byUser[ev.User.ID] {
		own = append(own, c)
	}
	h.mu.Unlock()

	// An explicit offline (no deadline: EndSession, possibly on another
	// node) means this user's sessions were ended on purpose: the streams
	// here stop keeping them alive (and do not revive them when they close).
	// Coming back from offline means the user is back: streams resume. A
	// change between live statuses (busy → online when a busy session ended)
	// says nothing about the ended session and must not revive it.
	if ev.To == store.StatusOffline && ev.Deadline.IsZero() {
		for _, c := range own {
			c.setEnded(true)
		}
	} else if ev.From == store.StatusOffline && ev.To != store.StatusOffline {
		for _, c := range own {
			if c.setEnded(false) {
				c.pokeRefresh()
			}
		}
	}

	// Leave debounce: an offline dot waits (debounce.go); any other status
	// goes out now, also to the connections a held offline dot was owed to.
	if ev.To == store.StatusOffline && h.debounce > 0 {
		if len(html) > 0 {
			h.deferOfflineDot(ev.User, html, time.Now())
		}
		html = nil
	} else {
		html = h.takePendingDot(ev.User.ID, html)
	}
	if len(html) > 0 {
		d := &dotRender{ctx: h.ctx, user: ev.User, status: ev.To, pub: h.pub}
		name := dotEvent(ev.User.ID)
		for _, c := range html {
			if b := d.dot(c.dotSize, c.dotLabel); b != nil {
				c.deliver(outMsg{event: name, data: b})
			}
		}
	}
	if len(js) > 0 {
		h.fanJSON(js, "status", mustJSON(statusEventJSON{
			User: toUser(ev.User), From: ev.From, To: ev.To, Rooms: ev.Rooms, At: ms(ev.At),
		}))
	}
	if len(html)+len(js) > 0 {
		h.m.fanout.WithLabelValues("user").Observe(time.Since(start).Seconds())
	}
}

func (h *hub) pub(event string) { h.m.published.WithLabelValues(event).Inc() }

// markLocked marks a room dirty and makes sure a worker will render it.
func (h *hub) markLocked(rs *roomState, members, typing bool) {
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
func (h *hub) roomWorker(rs *roomState) {
	defer h.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		h.mu.Lock()
		wait := time.Until(rs.lastRender.Add(h.coalesce))
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
		if (!dm && !dt && due.IsZero()) || len(rs.conns) == 0 || h.ctx.Err() != nil {
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

func (h *hub) workerExit(rs *roomState) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.workerExitLocked(rs)
}

func (h *hub) workerExitLocked(rs *roomState) {
	rs.running = false
	if len(rs.conns) == 0 && h.rooms[rs.id] == rs {
		delete(h.rooms, rs.id)
	}
}

// renderRoom reads a room once, renders it once per variant and queues it to
// every HTML connection of the room.
func (h *hub) renderRoom(rs *roomState, members, typing bool) error {
	seq := h.seq.Add(1)
	r, err := h.readRoom(h.ctx, rs.id, seq, members, typing)
	if err != nil {
		return err
	}
	start := time.Now()
	h.mu.Lock()
	if members {
		r.held = h.settleLocked(rs, r.members, seq, start)
	}
	conns := make([]*conn, 0, len(rs.conns))
	for c := range rs.conns {
		if !c.json {
			conns = append(conns, c)
		}
	}
	h.mu.Unlock()
	for _, c := range conns {
		for _, m := range r.htmlFor(c) {
			c.deliver(m)
		}
	}
	h.m.fanout.WithLabelValues("room").Observe(time.Since(start).Seconds())
	return nil
}

// readRoom reads what a render needs.
func (h *hub) readRoom(ctx context.Context, room string, seq uint64, members, typing bool) (*roomRender, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r := &roomRender{ctx: h.ctx, room: room, seq: seq, pub: h.pub, haveMembers: members, haveTyping: typing}
	var err error
	if members {
		if r.members, err = h.st.Members(ctx, room); err != nil {
			return nil, err
		}
	}
	if typing {
		if r.typists, err = h.st.Typing(ctx, room); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// snapshotRoom sends conns (all in room) the room's whole state. It is the
// first thing a room stream gets, and what every stream gets again after a
// resync.
func (h *hub) snapshotRoom(ctx context.Context, room string, conns []*conn, initial bool) {
	seq := h.seq.Add(1)
	live := conns[:0:0]
	for _, c := range conns {
		if c.beginSnapshot(seq, initial) {
			live = append(live, c)
		}
	}
	if len(live) == 0 {
		return
	}
	r, err := h.readRoom(ctx, room, seq, true, true)
	if err != nil && ctx.Err() != nil {
		return // the stream (or the node) is going away anyway
	}
	if err != nil {
		for _, c := range live {
			// Without its state a stream would be wrong until the next
			// change: close it, the client reconnects and tries again.
			c.drop(errNoState)
		}
		h.log.Warn("room snapshot failed", "room", room, "err", err)
		return
	}
	h.mu.Lock()
	if rs := h.rooms[room]; rs != nil {
		h.noteSnapshotLocked(rs, r.members, seq, time.Now())
	}
	h.mu.Unlock()
	for _, c := range live {
		if c.json {
			m := r.jsonSyncFor(c)
			h.pub("sync")
			c.endSnapshot([]outMsg{m})
		} else {
			c.endSnapshot(r.htmlFor(c))
		}
	}
}

// snapshotUsers sends a /sse/users connection every watched user's current
// dot (or a JSON sync).
func (h *hub) snapshotUsers(ctx context.Context, c *conn, initial bool) {
	seq := h.seq.Add(1)
	if !c.beginSnapshot(seq, initial) {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ps, err := h.st.Presence(rctx, c.ids)
	if err != nil && ctx.Err() != nil {
		return
	}
	if err != nil {
		c.drop(errNoState)
		h.log.Warn("users snapshot failed", "err", err)
		return
	}
	if c.json {
		sync := usersSyncJSON{Presence: make(map[string]*presenceJSON, len(c.ids))}
		for _, id := range c.ids {
			sync.Presence[id] = toPresence(id, ps[id])
		}
		h.pub("sync")
		c.endSnapshot([]outMsg{{event: "sync", data: mustJSON(sync), seq: seq}})
		return
	}
	msgs := make([]outMsg, 0, len(c.ids))
	for _, id := range c.ids {
		user, status := shownAs(id, ps[id])
		d := &dotRender{ctx: h.ctx, user: user, status: status, pub: h.pub}
		if b := d.dot(c.dotSize, c.dotLabel); b != nil {
			msgs = append(msgs, outMsg{event: dotEvent(id), data: b, seq: seq})
		}
	}
	c.endSnapshot(msgs)
}

// resyncAll re-sends every open connection its state, with a few store
// reads at a time: one read per room, one per watcher.
func (h *hub) resyncAll() {
	h.m.resyncs.Inc()
	h.clearDots()
	h.mu.Lock()
	rooms := map[string][]*conn{}
	var watchers []*conn
	for c := range h.conns {
		switch c.kind {
		case roomConn:
			rooms[c.room] = append(rooms[c.room], c)
		case usersConn:
			watchers = append(watchers, c)
		}
	}
	h.mu.Unlock()
	if len(rooms)+len(watchers) == 0 {
		return
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		sem := make(chan struct{}, 4)
		var wg sync.WaitGroup
		run := func(f func()) {
			select {
			case sem <- struct{}{}:
			case <-h.ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				f()
			}()
		}
		for room, conns := range rooms {
			run(func() { h.snapshotRoom(h.ctx, room, conns, false) })
		}
		for _, c := range watchers {
			run(func() { h.snapshotUsers(h.ctx, c, false) })
		}
		wg.Wait()
	}()
}
