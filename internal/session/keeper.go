// Package session keeps the sessions of a node's open streams alive. A
// stream that joined a room holds its session in that room: the keeper
// refreshes every held (session, room) of the node in one batched store
// call per refresh interval, instead of a ticker and a Join per stream, and
// when the last stream of a (session, room) on this node closes without a
// shutdown it detaches it: the membership ends after the leave grace unless
// a stream of it comes back first.
//
// Streams are counted here too, so that one token cannot hold an unbounded
// number of them (MaxStreamsPerSession, MaxStreamsPerUser).
package session

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/presenced/presenced/store"
)

// Stream limits per node. A page needs one stream (one per browser with
// the shared-stream client); a handful of tabs of one session (duplicated
// tabs before they split) and a user's many tabs fit well within them.
const (
	MaxStreamsPerSession = 8
	MaxStreamsPerUser    = 64
)

// ErrTooManyStreams refuses a stream past the limits (HTTP 429).
var ErrTooManyStreams = errors.New("too many open streams for this user or session")

// Stream is what one open stream holds.
type Stream struct {
	User      store.Profile
	SessionID string // "" for a stream that keeps no session (watch-only)
	Room      string // the room it joined; "" for none
}

type key struct{ user, sid, room string }

// hold is one (session, room) held by n open streams here; user is the
// profile the newest of them carried (a refresh writes it).
type hold struct {
	n    int
	user store.Profile
}

// Lease is one open stream's registration.
type Lease struct {
	s Stream
}

// Options are the keeper's timings.
type Options struct {
	Refresh time.Duration // how often held sessions are refreshed
	Hold    time.Duration // a held membership's deadline from each refresh
	Grace   time.Duration // --leave-grace
}

// Keeper is one node's session keeper.
type Keeper struct {
	st  store.Store
	log *slog.Logger
	opt Options

	// Refreshes counts refreshed items (the heartbeats metric, source
	// stream); Detaches counts detached memberships.
	OnRefresh func(n int)
	OnDetach  func()

	mu      sync.Mutex
	held    map[key]*hold  // (user, sid, room) → the open streams holding it
	perSid  map[key]int    // (user, sid, "") → open streams of the session
	perUser map[string]int // user → open streams
	closing bool

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// New makes a keeper. Start runs its refresh loop.
func New(st store.Store, log *slog.Logger, opt Options) *Keeper {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Keeper{
		st: st, log: log, opt: opt,
		held: map[key]*hold{}, perSid: map[key]int{}, perUser: map[string]int{},
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
		OnRefresh: func(int) {}, OnDetach: func() {},
	}
}

// Start runs the refresh loop until Close.
func (k *Keeper) Start() { go k.run() }

// Close stops the loop. Held sessions are left as they are (shutdown: they
// live on elsewhere, or expire by their TTL).
func (k *Keeper) Close() {
	k.mu.Lock()
	k.closing = true
	k.mu.Unlock()
	k.cancel()
	<-k.done
}

// Open registers a stream. A stream with a room joins it first (so the
// state it is sent next includes its own user); the join is a client action
// and revives a session this node had seen ended.
func (k *Keeper) Open(ctx context.Context, s Stream) (*Lease, error) {
	sk := key{s.User.ID, s.SessionID, ""}
	k.mu.Lock()
	if k.perUser[s.User.ID] >= MaxStreamsPerUser || (s.SessionID != "" && k.perSid[sk] >= MaxStreamsPerSession) {
		k.mu.Unlock()
		return nil, ErrTooManyStreams
	}
	k.perUser[s.User.ID]++
	if s.SessionID != "" {
		k.perSid[sk]++
	}
	k.mu.Unlock()
	l := &Lease{s: s}
	if s.Room != "" {
		// Counted before the join: a close of another stream of the same
		// (session, room) that races this open then sees it and does not
		// detach (a reload's old stream noticed after the new one joined).
		hk := key{s.User.ID, s.SessionID, s.Room}
		k.mu.Lock()
		if h := k.held[hk]; h != nil {
			h.n++
			h.user = s.User
		} else {
			k.held[hk] = &hold{n: 1, user: s.User}
		}
		k.mu.Unlock()
		err := k.st.Join(ctx, s.Room, store.Heartbeat{User: s.User, SessionID: s.SessionID, Hold: k.opt.Hold})
		if err != nil {
			k.unhold(hk)
			k.release(l)
			return nil, err
		}
		k.OnRefresh(1)
	}
	return l, nil
}

// unhold drops one stream's hold on hk and reports whether others remain.
func (k *Keeper) unhold(hk key) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := k.held[hk]
	if h == nil {
		return false
	}
	if h.n--; h.n > 0 {
		return true
	}
	delete(k.held, hk)
	return false
}

func (k *Keeper) release(l *Lease) {
	k.mu.Lock()
	defer k.mu.Unlock()
	decr(k.perUser, l.s.User.ID)
	if l.s.SessionID != "" {
		decr(k.perSid, key{l.s.User.ID, l.s.SessionID, ""})
	}
}

func decr[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
	} else {
		m[k]--
	}
}

// Close ends a stream's lease. Unless the node is shutting down (the
// browser reconnects, to another node, within the session's TTL) or the
// session was ended on purpose, the last stream of a (session, room) here
// detaches it: it leaves the room after the grace unless a stream of it
// comes back (on any node) first. The session itself is left to its TTL.
func (k *Keeper) CloseLease(l *Lease, shutdown bool) {
	k.release(l)
	if l.s.Room == "" {
		return
	}
	still := k.unhold(key{l.s.User.ID, l.s.SessionID, l.s.Room})
	k.mu.Lock()
	closing := k.closing
	k.mu.Unlock()
	if still || shutdown || closing {
		return
	}
	k.detach(l.s)
}

// SessionActive is told of an explicit heartbeat of a session on this
// node: a session that was ended and is now back re-joins the rooms its
// streams here hold at once, not at the next refresh.
func (k *Keeper) SessionActive(userID, sid string) {
	if items := k.heldStreams(func(hk key) bool { return hk.user == userID && hk.sid == sid }); len(items) > 0 {
		k.refresh(items)
	}
}

// RefreshAll refreshes every held session now (after the backend lost its
// state: before the streams' state is re-read).
func (k *Keeper) RefreshAll() {
	if items := k.heldStreams(nil); len(items) > 0 {
		k.refresh(items)
	}
}

// heldStreams lists the held (session, room)s that match (nil: all).
func (k *Keeper) heldStreams(match func(key) bool) []Stream {
	k.mu.Lock()
	defer k.mu.Unlock()
	items := make([]Stream, 0, len(k.held))
	for hk, h := range k.held {
		if match == nil || match(hk) {
			items = append(items, Stream{User: h.user, SessionID: hk.sid, Room: hk.room})
		}
	}
	return items
}

func (k *Keeper) run() {
	defer close(k.done)
	t := time.NewTicker(k.opt.Refresh)
	defer t.Stop()
	for {
		select {
		case <-k.ctx.Done():
			return
		case <-t.C:
			k.RefreshAll()
		}
	}
}

// refresh keeps every item's session alive and in its room in one store
// call (one pipelined round trip on Redis). It re-creates a session and
// membership that a Redis restart lost, heals a Detach that raced the
// stream's opening on another node, and never revives a session ended on
// purpose (the store refuses those items: ErrSessionEnded), so a node that
// was frozen while its streams' sessions were ended elsewhere cannot bring
// them back.
func (k *Keeper) refresh(items []Stream) {
	ctx, cancel := context.WithTimeout(k.ctx, 10*time.Second)
	defer cancel()
	batch := make([]store.StreamRefresh, len(items))
	for i, it := range items {
		batch[i] = store.StreamRefresh{User: it.User, SessionID: it.SessionID, Room: it.Room, Hold: k.opt.Hold}
	}
	errs, err := k.st.RefreshStreams(ctx, batch)
	if err != nil {
		if k.ctx.Err() == nil {
			k.log.Warn("stream session refresh failed", "streams", len(items), "err", err)
		}
		return
	}
	n := 0
	for i, e := range errs {
		switch {
		case e == nil:
			n++
		case errors.Is(e, store.ErrSessionEnded):
			// Ended on purpose: only the client can bring it back.
		default:
			k.log.Warn("stream session refresh failed", "user", items[i].User.ID, "room", items[i].Room, "err", e)
		}
	}
	k.OnRefresh(n)
}

// detach hands a closed stream's (session, room) to the store's expiry: it
// leaves the room after the grace unless a stream of it comes back first,
// on any node. The deadline lives in the store, so it holds even if this
// node dies right after.
func (k *Keeper) detach(s Stream) {
	ctx, cancel := context.WithTimeout(k.ctx, 5*time.Second)
	defer cancel()
	if err := k.st.Detach(ctx, s.Room, s.User.ID, s.SessionID, k.opt.Grace); err != nil {
		if k.ctx.Err() == nil && !errors.Is(err, store.ErrClosed) {
			k.log.Warn("could not detach a closed stream's session from its room", "user", s.User.ID, "room", s.Room, "err", err)
		}
		return
	}
	k.OnDetach()
	// A stream of the same (session, room) that opened here while the
	// Detach was on its way may have joined before it reached the store:
	// refresh it now, which cancels the detach.
	k.mu.Lock()
	h := k.held[key{s.User.ID, s.SessionID, s.Room}]
	var again []Stream
	if h != nil {
		again = []Stream{{User: h.user, SessionID: s.SessionID, Room: s.Room}}
	}
	k.mu.Unlock()
	if again != nil {
		k.refresh(again)
	}
}
