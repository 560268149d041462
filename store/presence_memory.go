package store

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"
)

// MemoryStore is the one-process backend: all state lives in memory behind
// one mutex. Expiry is driven by a min-heap of deadlines (sessions,
// stream-held memberships, typing marks, EndSession tombstones, offline
// users' retention) and a single goroutine whose timer is set
// to the earliest one, so transitions happen when they are due rather than
// on the next tick of a sweep.
type MemoryStore struct {
	opts Options
	feed *feed

	mu      sync.Mutex
	closed  bool
	users   map[string]*memUser
	rooms   map[string]*memRoom
	ended   map[sessionKey]*memEnded // EndSession tombstones
	queue   deadlineHeap
	armed   time.Time // what the expiry timer is set for; zero while idle
	seq     uint64    // orders memberships and typing marks
	pending []Event   // events of the operation in progress (under mu)

	wake    chan struct{} // an earlier deadline was queued
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when the expiry goroutine returns
}

var _ Store = (*MemoryStore)(nil)

// expiryBatch bounds how many due deadlines the expiry goroutine handles per
// hold of the lock, so that a mass expiry does not stall every request.
const expiryBatch = 256

type memUser struct {
	profile   Profile
	metadata  json.RawMessage
	lastSeen  time.Time
	status    Status // the aggregate last published
	sessions  map[string]*memSession
	rooms     map[string]*memMember // rooms the user is a member of
	retention deadline              // queued while the user has no session
}

type memSession struct {
	id     string
	user   *memUser
	status Status
	rooms  map[string]*memHold // the rooms this session joined
	expiry deadline
}

// memHold is one session's membership of one room. Its expiry is queued
// while the membership is stream-held (joined with Hold > 0) and idle while
// it is permanent (it then lives as long as the session).
type memHold struct {
	session *memSession
	room    string
	expiry  deadline
}

// sessionKey names one session of one user.
type sessionKey struct{ user, session string }

// memEnded is the tombstone of a session ended by EndSession.
type memEnded struct {
	key    sessionKey
	expiry deadline
}

type memRoom struct {
	id      string
	members map[string]*memMember // by user id
	typing  map[string]*memTypist // by user id
}

type memMember struct {
	user     *memUser
	seq      uint64 // when the user became a member
	sessions int    // how many of the user's sessions joined
}

type memTypist struct {
	room   *memRoom
	id     string
	name   string
	seq    uint64 // when the user started typing
	expiry deadline
}

// NewMemory returns a running in-memory store. Close stops its expiry
// goroutine.
func NewMemory(opts Options) *MemoryStore {
	opts = opts.withDefaults()
	m := &MemoryStore{
		opts:    opts,
		feed:    newFeed(opts.FeedBuffer),
		users:   make(map[string]*memUser),
		rooms:   make(map[string]*memRoom),
		ended:   make(map[sessionKey]*memEnded),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	go m.expire()
	return m
}

// lockOpen takes the lock for a call, unless the call's context is done or
// the store is closed; on success the caller holds m.mu.
func (m *MemoryStore) lockOpen(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return ErrClosed
	}
	return nil
}

// Heartbeat implements Store.
func (m *MemoryStore) Heartbeat(ctx context.Context, hb Heartbeat) error {
	if err := validateHeartbeat(hb); err != nil {
		return err
	}
	if err := m.lockOpen(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if err := m.checkLimitsLocked(hb, ""); err != nil {
		return err
	}
	m.clearEndedLocked(hb.User.ID, hb.SessionID)
	m.heartbeatLocked(hb, time.Now())
	m.flushLocked()
	return nil
}

// clearEndedLocked forgets a session's tombstone: an explicit Heartbeat or
// Join is the client itself coming back to that session.
func (m *MemoryStore) clearEndedLocked(userID, sessionID string) {
	if e := m.ended[sessionKey{userID, sessionID}]; e != nil {
		m.queue.cancel(&e.expiry)
		delete(m.ended, e.key)
	}
}

// RefreshStreams implements Store.
func (m *MemoryStore) RefreshStreams(ctx context.Context, items []StreamRefresh) ([]error, error) {
	errs := make([]error, len(items))
	valid := 0
	for i, it := range items {
		if errs[i] = validateRefresh(it); errs[i] == nil {
			valid++
		}
	}
	if valid == 0 {
		return errs, nil
	}
	if err := m.lockOpen(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	now := time.Now()
	for i, it := range items {
		if errs[i] != nil {
			continue
		}
		if m.ended[sessionKey{it.User.ID, it.SessionID}] != nil {
			errs[i] = ErrSessionEnded
			continue
		}
		hb := Heartbeat{User: it.User, SessionID: it.SessionID, Hold: it.Hold}
		if errs[i] = m.checkLimitsLocked(hb, it.Room); errs[i] != nil {
			continue
		}
		s := m.heartbeatLocked(hb, now)
		if it.Room != "" {
			m.joinLocked(s, it.Room, it.Hold, now)
		}
	}
	m.flushLocked()
	return errs, nil
}

// Detach implements Store.
func (m *MemoryStore) Detach(ctx context.Context, roomID, userID, sessionID string, grace time.Duration) error {
	if err := validateRoomSession(roomID, userID, sessionID); err != nil {
		return err
	}
	if err := m.lockOpen(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	u := m.users[userID]
	if u == nil {
		return nil
	}
	s := u.sessions[sessionID]
	if s == nil {
		return nil
	}
	h := s.rooms[roomID]
	if h == nil || !h.expiry.queued() {
		return nil // not in the room, or a permanent membership
	}
	now := time.Now()
	if grace <= 0 {
		m.leaveRoomLocked(s, roomID, u.status, now, now)
		m.flushLocked()
		return nil
	}
	if at := now.Add(grace); at.Before(h.expiry.at) {
		m.scheduleLocked(&h.expiry, at)
	}
	return nil
}

// checkLimitsLocked refuses a new session past MaxSessionsPerUser and a new
// room past MaxRoomsPerSession, before anything changes.
func (m *MemoryStore) checkLimitsLocked(hb Heartbeat, roomID string) error {
	u := m.users[hb.User.ID]
	if u == nil {
		return nil
	}
	s := u.sessions[hb.SessionID]
	if s == nil {
		if len(u.sessions) >= MaxSessionsPerUser {
			return ErrTooManySessions
		}
		return nil
	}
	if _, in := s.rooms[roomID]; roomID != "" && !in && len(s.rooms) >= MaxRoomsPerSession {
		return ErrTooManyRooms
	}
	return nil
}

// EndSession implements Store.
func (m *MemoryStore) EndSession(ctx context.Context, userID, sessionID string) error {
	if err := validateSession(userID, sessionID); err != nil {
		return err
	}
	if err := m.lockOpen(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	now := time.Now()
	// The tombstone is recorded even when the session is already gone (it
	// may have expired while a frozen node still holds a stream of it).
	m.markEndedLocked(sessionKey{userID, sessionID}, now)
	u := m.users[userID]
	if u == nil {
		return nil
	}
	s := u.sessions[sessionID]
	if s == nil {
		return nil
	}
	m.endSessionLocked(s, now, time.Time{})
	m.flushLocked()
	return nil
}

// markEndedLocked records (or renews) a session's tombstone.
func (m *MemoryStore) markEndedLocked(k sessionKey, now time.Time) {
	e := m.ended[k]
	if e == nil {
		e = &memEnded{key: k}
		e.expiry = deadline{index: -1, kind: deadlineEnded, ended: e}
		m.ended[k] = e
	}
	m.scheduleLocked(&e.expiry, now.Add(m.opts.EndedRetention))
}

// Join implements Store.
func (m *MemoryStore) Join(ctx context.Context, roomID string, hb Heartbeat) error {
	if !ValidRoomID(roomID) {
		return ErrInvalidRoomID
	}
	if err := validateHeartbeat(hb); err != nil {
		return err
	}
	if err := m.lockOpen(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if err := m.checkLimitsLocked(hb, roomID); err != nil {
		return err
	}
	now := time.Now()
	m.clearEndedLocked(hb.User.ID, hb.SessionID)
	s := m.heartbeatLocked(hb, now)
	m.joinLocked(s, roomID, hb.Hold, now)
	m.flushLocked()
	return nil
}

// joinLocked puts session s into a room (announcing the user's join if it
// is their first session there) and sets the membership's deadline: hold 0
// makes it permanent; hold > 0 moves a new or held membership's deadline to
// now+hold and leaves a permanent one permanent.
func (m *MemoryStore) joinLocked(s *memSession, roomID string, hold time.Duration, now time.Time) {
	h := s.rooms[roomID]
	if h == nil {
		h = &memHold{session: s, room: roomID}
		h.expiry = deadline{index: -1, kind: deadlineMember, hold: h}
		s.rooms[roomID] = h
		u := s.user
		mem := u.rooms[roomID]
		if mem == nil {
			r := m.roomLocked(roomID)
			m.seq++
			mem = &memMember{user: u, seq: m.seq}
			r.members[u.profile.ID] = mem
			u.rooms[roomID] = mem
			m.emit(Event{Kind: EventJoin, Room: roomID, User: u.profile, To: u.status, At: now, Members: len(r.members)})
		}
		mem.sessions++
		if hold > 0 {
			m.scheduleLocked(&h.expiry, now.Add(hold))
		}
		return
	}
	switch {
	case hold <= 0:
		m.queue.cancel(&h.expiry)
	case h.expiry.queued():
		m.scheduleLocked(&h.expiry, now.Add(hold))
	}
}

// Leave implements Store.
func (m *MemoryStore) Leave(ctx context.Context, roomID, userID, sessionID string) error {
	if err := validateRoomSession(roomID, userID, sessionID); err != nil {
		return err
	}
	if err := m.lockOpen(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	u := m.users[userID]
	if u == nil {
		return nil
	}
	s := u.sessions[sessionID]
	if s == nil {
		return nil
	}
	if _, in := s.rooms[roomID]; !in {
		return nil
	}
	m.leaveRoomLocked(s, roomID, u.status, time.Now(), time.Time{})
	m.flushLocked()
	return nil
}

// SetTyping implements Store.
func (m *MemoryStore) SetTyping(ctx context.Context, roomID string, user Profile, typing bool) error {
	if !ValidRoomID(roomID) {
		return ErrInvalidRoomID
	}
	if err := validateProfile(user); err != nil {
		return err
	}
	if err := m.lockOpen(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	now := time.Now()
	if typing {
		if u := m.users[user.ID]; u == nil || u.rooms[roomID] == nil {
			return ErrNotMember
		}
		r := m.roomLocked(roomID)
		t := r.typing[user.ID]
		if t != nil {
			// A refresh: only the deadline (and the shown name) move.
			t.name = user.DisplayName()
			m.scheduleLocked(&t.expiry, now.Add(m.opts.TypingTTL))
			return nil
		}
		m.seq++
		t = &memTypist{room: r, id: user.ID, name: user.DisplayName(), seq: m.seq}
		t.expiry = deadline{index: -1, kind: deadlineTyping, typist: t}
		r.typing[user.ID] = t
		m.scheduleLocked(&t.expiry, now.Add(m.opts.TypingTTL))
		m.emit(Event{Kind: EventTyping, Room: roomID, Typing: r.typists(), At: now})
	} else {
		r := m.rooms[roomID]
		if r == nil {
			return nil
		}
		t := r.typing[user.ID]
		if t == nil {
			return nil
		}
		m.removeTypistLocked(t, now, time.Time{})
		m.pruneRoomLocked(r)
	}
	m.flushLocked()
	return nil
}

// Presence implements Store.
func (m *MemoryStore) Presence(ctx context.Context, userIDs []string) (map[string]*Presence, error) {
	if err := validateUserIDs(userIDs); err != nil {
		return nil, err
	}
	if err := m.lockOpen(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := make(map[string]*Presence, len(userIDs))
	for _, id := range userIDs {
		u := m.users[id]
		if u == nil {
			out[id] = nil
			continue
		}
		out[id] = &Presence{
			Profile:  u.profile,
			Status:   u.status,
			LastSeen: u.lastSeen,
			Metadata: bytes.Clone(u.metadata),
		}
	}
	return out, nil
}

// Members implements Store.
func (m *MemoryStore) Members(ctx context.Context, roomID string) ([]Member, error) {
	if !ValidRoomID(roomID) {
		return nil, ErrInvalidRoomID
	}
	if err := m.lockOpen(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	r := m.rooms[roomID]
	if r == nil || len(r.members) == 0 {
		return []Member{}, nil
	}
	mems := make([]*memMember, 0, len(r.members))
	for _, mem := range r.members {
		mems = append(mems, mem)
	}
	slices.SortFunc(mems, func(a, b *memMember) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]Member, len(mems))
	for i, mem := range mems {
		out[i] = Member{Profile: mem.user.profile, Status: mem.user.status, LastSeen: mem.user.lastSeen}
	}
	return out, nil
}

// Typing implements Store.
func (m *MemoryStore) Typing(ctx context.Context, roomID string) ([]Typist, error) {
	if !ValidRoomID(roomID) {
		return nil, ErrInvalidRoomID
	}
	if err := m.lockOpen(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	r := m.rooms[roomID]
	if r == nil {
		return []Typist{}, nil
	}
	return r.typists(), nil
}

// Subscribe implements Store.
func (m *MemoryStore) Subscribe(ctx context.Context) (*Subscription, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	return m.feed.subscribe(ctx)
}

// Ready implements Store: an open memory store is always ready.
func (m *MemoryStore) Ready(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	return ctx.Err()
}

// Close stops the expiry goroutine and closes every subscription with
// ErrClosed. It is safe to call more than once.
func (m *MemoryStore) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	m.mu.Unlock()
	<-m.stopped
	m.feed.close()
	return nil
}

// heartbeatLocked creates or refreshes the session hb describes and
// publishes the user's status change, if any.
func (m *MemoryStore) heartbeatLocked(hb Heartbeat, now time.Time) *memSession {
	u := m.users[hb.User.ID]
	if u == nil {
		u = &memUser{
			status:   StatusOffline,
			sessions: make(map[string]*memSession),
			rooms:    make(map[string]*memMember),
		}
		u.retention = deadline{index: -1, kind: deadlineRetention, user: u}
		m.users[hb.User.ID] = u
	}
	m.queue.cancel(&u.retention)
	u.profile = hb.User
	if hb.Metadata != nil {
		u.metadata = bytes.Clone(hb.Metadata)
	}
	// Millisecond precision, as the contract's lastSeen (and Redis) has.
	u.lastSeen = time.UnixMilli(now.UnixMilli())

	s := u.sessions[hb.SessionID]
	if s == nil {
		s = &memSession{id: hb.SessionID, user: u, status: StatusOnline, rooms: make(map[string]*memHold)}
		s.expiry = deadline{index: -1, kind: deadlineSession, session: s}
		u.sessions[hb.SessionID] = s
	}
	if hb.Status != "" {
		s.status = hb.Status
	}
	ttl := hb.TTL
	if ttl <= 0 {
		ttl = m.opts.TTL
	}
	m.scheduleLocked(&s.expiry, now.Add(ttl))
	if to := u.aggregate(); to != u.status {
		m.setStatusLocked(u, to, u.roomList(), now, time.Time{})
	}
	return s
}

// endSessionLocked removes a session: it leaves each of its rooms the user
// has no other session in (typing first, then the leave), then the user's
// status is recomputed. dl is the session's deadline for an expiry, zero for
// an explicit end; every event it causes carries it.
func (m *MemoryStore) endSessionLocked(s *memSession, now, dl time.Time) {
	u := s.user
	delete(u.sessions, s.id)
	m.queue.cancel(&s.expiry)
	to := u.aggregate()
	var before []string
	if to == StatusOffline {
		before = u.roomList()
	}
	rooms := make([]string, 0, len(s.rooms))
	for room := range s.rooms {
		rooms = append(rooms, room)
	}
	slices.Sort(rooms)
	for _, room := range rooms {
		m.leaveRoomLocked(s, room, to, now, dl)
	}
	if to == StatusOffline {
		m.setStatusLocked(u, to, before, now, dl)
		m.scheduleLocked(&u.retention, now.Add(m.opts.LastSeenRetention))
	} else if to != u.status {
		m.setStatusLocked(u, to, u.roomList(), now, dl)
	}
}

// leaveRoomLocked takes session s out of a room. When no other session of
// the user remains in it, the user's typing mark there is cleared and the
// user leaves (to is the status the leave event announces).
func (m *MemoryStore) leaveRoomLocked(s *memSession, roomID string, to Status, now, dl time.Time) {
	if h := s.rooms[roomID]; h != nil {
		m.queue.cancel(&h.expiry)
	}
	delete(s.rooms, roomID)
	u := s.user
	mem := u.rooms[roomID]
	if mem == nil {
		return
	}
	mem.sessions--
	if mem.sessions > 0 {
		return
	}
	delete(u.rooms, roomID)
	r := m.rooms[roomID]
	if r == nil {
		return
	}
	delete(r.members, u.profile.ID)
	if t := r.typing[u.profile.ID]; t != nil {
		m.removeTypistLocked(t, now, dl)
	}
	m.emit(Event{Kind: EventLeave, Room: roomID, User: u.profile, To: to, At: now, Deadline: dl, Members: len(r.members)})
	m.pruneRoomLocked(r)
}

// removeTypistLocked drops a typing mark and announces the room's new set.
func (m *MemoryStore) removeTypistLocked(t *memTypist, now, dl time.Time) {
	r := t.room
	delete(r.typing, t.id)
	m.queue.cancel(&t.expiry)
	m.emit(Event{Kind: EventTyping, Room: r.id, Typing: r.typists(), At: now, Deadline: dl})
}

// setStatusLocked records and announces a change of the user's aggregate.
func (m *MemoryStore) setStatusLocked(u *memUser, to Status, rooms []string, now, dl time.Time) {
	if u.status == to {
		return
	}
	from := u.status
	u.status = to
	m.emit(Event{Kind: EventStatus, User: u.profile, From: from, To: to, Rooms: rooms, At: now, Deadline: dl})
}

// roomLocked returns the room, creating it.
func (m *MemoryStore) roomLocked(id string) *memRoom {
	r := m.rooms[id]
	if r == nil {
		r = &memRoom{id: id, members: make(map[string]*memMember), typing: make(map[string]*memTypist)}
		m.rooms[id] = r
	}
	return r
}

// pruneRoomLocked forgets a room nobody is in or typing in.
func (m *MemoryStore) pruneRoomLocked(r *memRoom) {
	if len(r.members) == 0 && len(r.typing) == 0 && m.rooms[r.id] == r {
		delete(m.rooms, r.id)
	}
}

// scheduleLocked queues or moves a deadline and wakes the expiry goroutine
// if it became the earliest one and is earlier than its timer.
func (m *MemoryStore) scheduleLocked(d *deadline, at time.Time) {
	m.queue.schedule(d, at)
	if d.index == 0 && (m.armed.IsZero() || at.Before(m.armed)) {
		select {
		case m.wake <- struct{}{}:
		default:
		}
	}
}

func (m *MemoryStore) emit(e Event) { m.pending = append(m.pending, e) }

// flushLocked publishes the pending events. feed.publish never blocks, and
// calling it under m.mu keeps the feed in the order of the transitions.
func (m *MemoryStore) flushLocked() {
	if len(m.pending) == 0 {
		return
	}
	m.feed.publish(m.pending...)
	clear(m.pending)
	m.pending = m.pending[:0]
}

// expire is the expiry goroutine: it handles every due deadline, then sleeps
// until the earliest remaining one (or until an earlier one is queued).
func (m *MemoryStore) expire() {
	defer close(m.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		m.mu.Lock()
		more := m.expireDueLocked(expiryBatch)
		next := m.queue.peek()
		idle := next == nil
		var wait time.Duration
		if more || idle {
			m.armed = time.Time{}
		} else {
			m.armed = next.at
			wait = time.Until(next.at)
		}
		m.mu.Unlock()

		if more {
			// Let waiting requests in between batches of a mass expiry.
			select {
			case <-m.done:
				return
			default:
			}
			continue
		}
		if idle {
			timer.Stop()
		} else {
			timer.Reset(wait)
		}
		select {
		case <-m.done:
			return
		case <-m.wake:
		case <-timer.C:
		}
	}
}

// expireDueLocked handles up to limit due deadlines and reports whether more
// are due.
func (m *MemoryStore) expireDueLocked(limit int) bool {
	for range limit {
		now := time.Now()
		d := m.queue.popDue(now)
		if d == nil {
			return false
		}
		switch d.kind {
		case deadlineSession:
			m.endSessionLocked(d.session, now, d.at)
		case deadlineTyping:
			t := d.typist
			m.removeTypistLocked(t, now, d.at)
			m.pruneRoomLocked(t.room)
		case deadlineMember:
			// A stream-held membership nobody refreshed: the session leaves
			// the room; the session itself lives on.
			h := d.hold
			s := h.session
			m.leaveRoomLocked(s, h.room, s.user.status, now, d.at)
		case deadlineEnded:
			delete(m.ended, d.ended.key)
		case deadlineRetention:
			u := d.user
			if len(u.sessions) == 0 && m.users[u.profile.ID] == u {
				delete(m.users, u.profile.ID)
			}
		}
		m.flushLocked()
	}
	next := m.queue.peek()
	return next != nil && !next.at.After(time.Now())
}

// aggregate is the strongest status over the user's live sessions.
func (u *memUser) aggregate() Status {
	st := StatusOffline
	for _, s := range u.sessions {
		st = Stronger(st, s.status)
	}
	return st
}

// roomList is the rooms the user is a member of, sorted.
func (u *memUser) roomList() []string {
	if len(u.rooms) == 0 {
		return nil
	}
	rooms := make([]string, 0, len(u.rooms))
	for room := range u.rooms {
		rooms = append(rooms, room)
	}
	slices.Sort(rooms)
	return rooms
}

// typists is the room's typing set in the order each started.
func (r *memRoom) typists() []Typist {
	ts := make([]*memTypist, 0, len(r.typing))
	for _, t := range r.typing {
		ts = append(ts, t)
	}
	slices.SortFunc(ts, func(a, b *memTypist) int { return cmp.Compare(a.seq, b.seq) })
	out := make([]Typist, len(ts))
	for i, t := range ts {
		out[i] = Typist{ID: t.id, Name: t.name}
	}
	return out
}
