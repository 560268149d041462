package hub

import "github.com/presenced/presenced/store"

// Renderer turns presence state into event payloads. The HTTP layer
// supplies it (templ fragments, the JSON wire shapes), so that the hub knows
// nothing of either. Every method is called once per change and variant,
// however many subscribers share it; the bytes returned are owned by the hub
// from then on and must not be reused by the renderer.
type Renderer interface {
	// HTML fragments.
	Stack(room string, members []store.Member, max int) ([]byte, error)
	MemberList(room string, members []store.Member) ([]byte, error)
	Typing(room string, typists []store.Typist) ([]byte, error)
	Dot(user store.Profile, status store.Status, size string, label bool) ([]byte, error)

	// JSON payloads. RoomSync and UsersSync are a topic's whole state (the
	// `sync` event); Change is a feed event as a diff (join, leave, status,
	// typing), named by the event it is sent as.
	RoomSync(room string, sub RoomSub, members []store.Member, typists []store.Typist) []byte
	UsersSync(ids []string, presence map[string]*store.Presence) []byte
	Change(ev store.Event) (event string, data []byte)
}

// ShownAs is how a user read from the store is shown: their profile under
// the id that was asked for, and offline when they are unknown (p == nil) or
// have no status.
func ShownAs(id string, p *store.Presence) (store.Profile, store.Status) {
	prof, st := store.Profile{ID: id}, store.StatusOffline
	if p != nil {
		prof = p.Profile
		prof.ID = id
		if p.Status != "" {
			st = p.Status
		}
	}
	return prof, st
}

// DotEvent is the event name of a user's dot.
func DotEvent(userID string) string { return "presence-" + userID }

// roomEvent is the HTML event name of one part of a room for a subscriber:
// the contract's bare name for the stream's primary room, suffixed with the
// room id for the other rooms of a multi-room stream.
func roomEvent(part string, r RoomSub) string {
	if r.Primary {
		return part
	}
	return part + "-" + r.ID
}
