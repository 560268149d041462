package handlers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/presenced/presenced/store"
)

// See is the optional "see" claim of a token: whose presence the holder may
// read. With it, the holder may read the status, profile and metadata of
//
//   - themselves (always),
//   - every user listed in Users,
//   - every live member of a room listed in Rooms (while they are members),
//
// and nobody else: an unseen user is shown exactly like a user never seen
// (null in GET /api/presence, an offline dot with no profile, absent from
// member lists and typing lines). Without the claim (or with "see": null)
// the holder may read anyone, as before the claim existed. An empty claim
// ("see": {}) shows the holder only themselves.
//
// It limits reading only; joining and watching rooms is what the "rooms"
// claim limits.
type See struct {
	Users []string `json:"users,omitempty"`
	Rooms []string `json:"rooms,omitempty"`
}

// Limits of the see claim, so that resolving it stays cheap: each listed
// room costs one member read per request that needs it.
const (
	MaxSeeUsers = 500
	MaxSeeRooms = 32
)

// check validates a see claim (nil is fine).
func (s *See) check() error {
	if s == nil {
		return nil
	}
	if len(s.Users) > MaxSeeUsers {
		return claimError("see.users lists %d users, at most %d allowed", len(s.Users), MaxSeeUsers)
	}
	if len(s.Rooms) > MaxSeeRooms {
		return claimError("see.rooms lists %d rooms, at most %d allowed", len(s.Rooms), MaxSeeRooms)
	}
	for _, u := range s.Users {
		if !store.ValidUserID(u) {
			return claimError("see.users: %q is not a valid user id", u)
		}
	}
	for _, r := range s.Rooms {
		if !store.ValidRoomID(r) {
			return claimError("see.rooms: %q is not a valid room id", r)
		}
	}
	return nil
}

// viewer is what one identity may read at one moment. Build it with
// Server.viewerFor (or newViewer when the members of the see rooms are at
// hand) and ask canSee; every route that shows someone's presence goes
// through canSee.
type viewer struct {
	all     bool
	self    string
	users   map[string]struct{}
	members map[string]struct{}
	// rooms are the see claim's rooms: members of these are visible.
	rooms []string
}

// canSee reports whether the viewer may read userID's status, profile and
// metadata.
func (v viewer) canSee(userID string) bool {
	if v.all || userID == v.self {
		return true
	}
	if _, ok := v.users[userID]; ok {
		return true
	}
	_, ok := v.members[userID]
	return ok
}

// seesAll reports whether the viewer may read anyone (no see claim): the
// fast path, with nothing to filter.
func (v viewer) seesAll() bool { return v.all }

// roomDependent reports whether canSee depends on room membership (the
// claim lists rooms): a long-lived reader must then rebuild the viewer when
// membership of those rooms changes.
func (v viewer) roomDependent() bool { return !v.all && len(v.rooms) > 0 }

// newViewer builds id's viewer from the live members of its see rooms
// (membersOf may be nil when the claim lists no rooms).
func newViewer(id Identity, membersOf func(room string) []store.Member) viewer {
	if id.See == nil {
		return viewer{all: true}
	}
	v := viewer{self: id.User.ID, users: make(map[string]struct{}, len(id.See.Users)), rooms: id.See.Rooms}
	for _, u := range id.See.Users {
		v.users[u] = struct{}{}
	}
	if len(id.See.Rooms) > 0 && membersOf != nil {
		v.members = make(map[string]struct{})
		for _, r := range id.See.Rooms {
			for _, m := range membersOf(r) {
				v.members[m.ID] = struct{}{}
			}
		}
	}
	return v
}

// viewerFor builds id's viewer now, reading the members of its see rooms
// from the store (nothing is read without a see claim or without rooms).
func (s *Server) viewerFor(ctx context.Context, id Identity) (viewer, error) {
	if id.See == nil || len(id.See.Rooms) == 0 {
		return newViewer(id, nil), nil
	}
	got := make(map[string][]store.Member, len(id.See.Rooms))
	for _, r := range id.See.Rooms {
		if _, done := got[r]; done {
			continue
		}
		ms, err := s.store.Members(ctx, r)
		if err != nil {
			return viewer{}, fmt.Errorf("members of %q: %w", r, err)
		}
		got[r] = ms
	}
	return newViewer(id, func(r string) []store.Member { return got[r] }), nil
}

// sees is the viewer's rule as a filter for store.KeepSeen (nil: anyone).
func (v viewer) sees() func(string) bool {
	if v.all {
		return nil
	}
	return v.canSee
}

// visibleMembers keeps the members the viewer may see.
func (v viewer) visibleMembers(ms []store.Member) []store.Member { return store.KeepSeen(ms, v.sees()) }

// visibleTypists keeps the typists the viewer may see.
func (v viewer) visibleTypists(ts []store.Typist) []store.Typist { return store.KeepSeen(ts, v.sees()) }

// membersKey identifies the set of see-room members the viewer was built
// from: a long-lived reader rebuilds its viewer when the key changes.
func (v viewer) membersKey() string {
	ids := make([]string, 0, len(v.members))
	for id := range v.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return strings.Join(ids, ",")
}
