// Package store is the presence engine: who is online, who is in which room,
// who is typing, and a change feed describing every transition.
//
// Presence is kept per session (one browser tab or device) and aggregated per
// user, so that closing one tab never marks a user with another tab open as
// offline. Everything the gateway shows is read from, and every live update is
// driven by, a Store. Two backends implement it: MemoryStore (one process, the
// default) and RedisStore (several gateway nodes sharing one Redis). Both pass
// the same conformance suite (conformance_test.go).
package store

import (
	"context"
	"encoding/json"
	"time"
)

// Store is the presence engine's contract. All methods are safe for
// concurrent use. Methods that change state publish the resulting transitions
// on the change feed (Subscribe) exactly once, however many gateway nodes
// share the backend.
type Store interface {
	// Heartbeat creates or refreshes one session of a user (a new one fails
	// with ErrTooManySessions past MaxSessionsPerUser): the session lives
	// until TTL (Heartbeat.TTL, or the store's default) after this call. An
	// empty Heartbeat.Status keeps the session's current status (online for a
	// new session). The user's profile (name, avatar) is updated from hb.User,
	// and their metadata from hb.Metadata when it is not nil. lastSeen becomes
	// now.
	Heartbeat(ctx context.Context, hb Heartbeat) error

	// EndSession ends one session at once (an explicit offline). The session
	// leaves its rooms; if it was the user's last, the user goes offline.
	// Ending a session that does not exist is not an error.
	EndSession(ctx context.Context, userID, sessionID string) error

	// Join puts the session hb describes into a room, creating or refreshing
	// the session exactly as Heartbeat does (ErrTooManyRooms past
	// MaxRoomsPerSession). A user is a member of a room while
	// at least one of their live sessions has joined it.
	Join(ctx context.Context, roomID string, hb Heartbeat) error

	// Leave takes one session out of a room at once. The user leaves the room
	// when none of their sessions remains in it. Leaving a room the session is
	// not in is not an error.
	Leave(ctx context.Context, roomID, userID, sessionID string) error

	// SetTyping marks or unmarks a user as typing in a room. A mark that is
	// not refreshed disappears TypingTTL after it was last set. Only a member
	// of the room (a live session of theirs joined it) may start typing
	// there: for anyone else SetTyping(true) fails with ErrNotMember and
	// changes nothing. SetTyping(false) always succeeds.
	SetTyping(ctx context.Context, roomID string, user Profile, typing bool) error

	// RefreshStreams keeps the sessions (and stream-held memberships) of a
	// node's open streams alive in one call. Each item behaves like
	// Join(Room, Heartbeat{User, SessionID, Hold}) with an empty Status (or
	// like Heartbeat when Room is ""): it re-creates a session lost with a
	// Redis restart and emits nothing when nothing changed, except that it
	// never revives a session ended explicitly by EndSession within
	// Options.EndedRetention: such an item fails with ErrSessionEnded and
	// changes nothing. The result has one error per item (nil = refreshed);
	// the second return is for a failure of the whole call (then the first
	// is nil and any item may or may not have been applied).
	RefreshStreams(ctx context.Context, items []StreamRefresh) ([]error, error)

	// Detach is a stream closing without an explicit offline: the (session,
	// room) membership's deadline becomes now+grace, so it ends then unless a
	// Join or RefreshStreams of the same (session, room) comes first, on any
	// node. Only a stream-held membership (joined with Hold > 0) is
	// affected, and its deadline only ever moves earlier: a permanent (API)
	// membership, or one already due sooner, is left alone. grace <= 0 ends
	// the held membership at once. The session itself is untouched.
	// Detaching what does not exist is not an error.
	Detach(ctx context.Context, roomID, userID, sessionID string, grace time.Duration) error

	// Presence reads up to MaxBatch users. Every requested id is a key of the
	// result; its value is nil for a user never seen (or not seen within
	// LastSeenRetention).
	Presence(ctx context.Context, userIDs []string) (map[string]*Presence, error)

	// Members lists a room's live members in the order they joined.
	Members(ctx context.Context, roomID string) ([]Member, error)

	// Typing lists the users typing in a room, in the order they started.
	Typing(ctx context.Context, roomID string) ([]Typist, error)

	// Subscribe opens a change feed that starts now. Events arrive in the order
	// the transitions happened. A subscriber that falls behind by more than
	// Options.FeedBuffer events is closed with ErrSlowSubscriber rather than
	// allowed to hold up the others; it should re-read state and subscribe
	// again. The feed is closed when ctx ends or the store is closed.
	Subscribe(ctx context.Context) (*Subscription, error)

	// Ready reports whether the backend is reachable and its change feed is
	// connected.
	Ready(ctx context.Context) error

	// Close stops background work (expiry, feed). It does not end sessions:
	// they live on in a shared backend and are expired by their TTL there.
	Close() error
}

// Status is a session's or a user's presence status.
type Status string

// The statuses, from strongest to weakest when a user's sessions are
// aggregated: busy > online > away; a user without a live session is offline.
const (
	StatusBusy    Status = "busy"
	StatusOnline  Status = "online"
	StatusAway    Status = "away"
	StatusOffline Status = "offline"
)

// rank orders statuses for aggregation: the user's status is the
// highest-ranked status among their live sessions.
func (s Status) rank() int {
	switch s {
	case StatusBusy:
		return 3
	case StatusOnline:
		return 2
	case StatusAway:
		return 1
	}
	return 0
}

// Stronger returns whichever of a and b wins when sessions are aggregated.
func Stronger(a, b Status) Status {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

// Profile is how a user is shown: it comes from their signed token.
type Profile struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Avatar string `json:"avatar,omitempty"`
}

// UserID is the profile's user id (Member has it through the embedded
// Profile; see KeepSeen).
func (p Profile) UserID() string { return p.ID }

// DisplayName is the name to show: the profile's name, or its id.
func (p Profile) DisplayName() string {
	if p.Name != "" {
		return p.Name
	}
	return p.ID
}

// Heartbeat is one sign of life from one session.
type Heartbeat struct {
	User      Profile
	SessionID string
	// Status is online, away or busy; empty keeps the session's status.
	Status Status
	// Metadata is an arbitrary JSON object (at most MaxMetadata bytes); nil
	// keeps the user's current metadata.
	Metadata json.RawMessage
	// TTL overrides Options.TTL for this refresh only. The gateway uses a
	// short one when a stream closes without an explicit goodbye, so that a
	// reload that comes straight back does not flap leave/join.
	TTL time.Duration
	// Hold is how long a stream-held room membership lasts without a
	// refresh; it only matters to Join (and RefreshStreams). 0: the
	// membership lives as long as the session (API joins). > 0: the
	// (session, room) membership has its own deadline now+Hold, enforced by
	// the store's expiry on any node, so a membership held by a stream on a
	// node that died ends by itself even while the session keeps
	// heartbeating elsewhere. A Join with Hold 0 makes a held membership
	// permanent (deadline cleared); a Join with Hold > 0 of a permanent
	// membership leaves it permanent (an explicit API join is only undone by
	// Leave or the session's end, never by a stream closing).
	Hold time.Duration
}

// StreamRefresh is one open stream's share of a batched refresh
// (RefreshStreams).
type StreamRefresh struct {
	User      Profile
	SessionID string
	// Room is the room the stream holds the session in; "" refreshes the
	// session only (a watch-only or users stream that keeps a session alive).
	Room string
	// Hold is the membership's new deadline from now (see Heartbeat.Hold).
	Hold time.Duration
}

// Presence is a user's aggregated presence.
type Presence struct {
	Profile
	Status   Status          `json:"status"`
	LastSeen time.Time       `json:"lastSeen"`
	Metadata json.RawMessage `json:"metadata,omitempty"`
}

// Member is a live member of a room.
type Member struct {
	Profile
	Status   Status    `json:"status"`
	LastSeen time.Time `json:"lastSeen"`
}

// Typist is a user typing in a room.
type Typist struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// UserID is the typist's user id (see KeepSeen).
func (t Typist) UserID() string { return t.ID }

// KeepSeen returns the entries of xs whose user sees accepts, in order; xs
// itself when sees is nil (everyone visible). One filter for every reader
// that applies a visibility rule (the see claim) to members or typists.
func KeepSeen[T interface{ UserID() string }](xs []T, sees func(userID string) bool) []T {
	if sees == nil {
		return xs
	}
	out := make([]T, 0, len(xs))
	for _, x := range xs {
		if sees(x.UserID()) {
			out = append(out, x)
		}
	}
	return out
}

// EventKind says what an Event describes.
type EventKind string

const (
	// EventStatus: a user's aggregated status changed (From → To). When To is
	// offline, Rooms lists the rooms the user was in, so every room's
	// subscribers can be told; the Leave events for those rooms come first.
	EventStatus EventKind = "status"
	// EventJoin: a user became a member of Room.
	EventJoin EventKind = "join"
	// EventLeave: a user stopped being a member of Room.
	EventLeave EventKind = "leave"
	// EventTyping: the set of users typing in Room changed; Typing is the
	// whole new set.
	EventTyping EventKind = "typing"
	// EventResync: the feed may have missed transitions (for example the
	// backend's event log was trimmed while this node was disconnected, or
	// Redis restarted and lost its state). Consumers must re-read whatever
	// state they show (and, after a state loss, refresh what they hold:
	// RefreshStreams re-creates lost sessions and memberships).
	EventResync EventKind = "resync"
)

// Event is one transition on the change feed. It carries enough for a
// renderer to redraw without reading the store again: the user's profile and
// status for status, join and leave; the whole typing set for typing.
type Event struct {
	Kind EventKind `json:"kind"`
	// Room is set for join, leave and typing.
	Room string `json:"room,omitempty"`
	// User is set for status, join and leave.
	User Profile `json:"user"`
	// From and To are set for status; To is also the user's current status
	// on join (and offline or their current status on leave).
	From Status `json:"from,omitempty"`
	To   Status `json:"to,omitempty"`
	// Rooms, on a status event, lists the rooms the user is (or, going
	// offline, was) a member of.
	Rooms []string `json:"rooms,omitempty"`
	// Typing is the room's whole typing set after a typing event.
	Typing []Typist `json:"typing,omitempty"`
	// At is when the transition happened; for an expiry, when it was
	// processed (Deadline says when it was due).
	At time.Time `json:"at"`
	// Members, on join and leave, is the room's member count right after
	// the transition (1 on a join: the room became occupied; 0 on a leave:
	// it was vacated). Webhooks read it; streams do not.
	Members int `json:"members,omitempty"`
	// Deadline, for transitions caused by expiry, is when the session,
	// stream-held membership or typing mark was due to expire. At − Deadline is the expiry lateness.
	Deadline time.Time `json:"deadline,omitzero"`
}

// Options configures a store. Zero fields take the defaults of
// DefaultOptions; see withDefaults.
type Options struct {
	// TTL is how long a session lives after its last refresh.
	TTL time.Duration
	// TypingTTL is how long a typing mark lives after it was last set.
	TypingTTL time.Duration
	// LastSeenRetention is how long an offline user's lastSeen stays readable.
	LastSeenRetention time.Duration
	// SweepInterval is how often due deadlines are checked (Redis backend;
	// the memory backend wakes exactly at each deadline).
	SweepInterval time.Duration
	// FeedBuffer is how many events a subscriber may lag before it is closed.
	FeedBuffer int
	// KeyPrefix namespaces every Redis key and channel (Redis backend).
	KeyPrefix string
	// EndedRetention is how long an explicit EndSession is remembered (a
	// tombstone per session): meanwhile RefreshStreams refuses to revive
	// that session (ErrSessionEnded); an explicit Heartbeat or Join of it
	// clears the tombstone. It should exceed the longest a stream refresh
	// can be delayed (a frozen node, a slow network): default 10 minutes.
	EndedRetention time.Duration
}

// Limits of the contract.
const (
	MaxBatch    = 100  // users per Presence read
	MaxMetadata = 2048 // bytes of metadata per user

	// One token holder must not be able to make every refresh of their own
	// (which reads all their sessions) or the shared Redis slow: these bound
	// the work of one user.
	MaxSessionsPerUser = 32
	MaxRoomsPerSession = 64
)

// DefaultOptions are the contract's timing defaults.
func DefaultOptions() Options {
	return Options{
		TTL:               60 * time.Second,
		TypingTTL:         5 * time.Second,
		LastSeenRetention: 30 * 24 * time.Hour,
		SweepInterval:     100 * time.Millisecond,
		FeedBuffer:        8192,
		KeyPrefix:         "presence:",
		EndedRetention:    10 * time.Minute,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.TTL <= 0 {
		o.TTL = d.TTL
	}
	if o.TypingTTL <= 0 {
		o.TypingTTL = d.TypingTTL
	}
	if o.LastSeenRetention <= 0 {
		o.LastSeenRetention = d.LastSeenRetention
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = d.SweepInterval
	}
	if o.FeedBuffer <= 0 {
		o.FeedBuffer = d.FeedBuffer
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = d.KeyPrefix
	}
	if o.EndedRetention <= 0 {
		o.EndedRetention = d.EndedRetention
	}
	return o
}
