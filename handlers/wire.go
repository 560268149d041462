package handlers

import (
	"bytes"
	"encoding/json"
	"time"

	"github.com/presenced/presenced/internal/hub"
	"github.com/presenced/presenced/store"
)

// The JSON shapes of the API and of the ?format=json streams. They are
// separate from the store's types so that the wire format is fixed by the
// contract, not by whatever the store happens to keep.

// userJSON is a user as the streams show it.
type userJSON struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Avatar string `json:"avatar"`
}

// presenceJSON is one entry of GET /api/presence.
type presenceJSON struct {
	UserID   string          `json:"userId"`
	Name     string          `json:"name"`
	Avatar   string          `json:"avatar"`
	Status   store.Status    `json:"status"`
	LastSeen int64           `json:"lastSeen"`
	Metadata json.RawMessage `json:"metadata"`
}

// memberJSON is one entry of GET /api/presence/room/{roomId}.
type memberJSON struct {
	ID       string       `json:"id"`
	Name     string       `json:"name"`
	Avatar   string       `json:"avatar"`
	Status   store.Status `json:"status"`
	LastSeen int64        `json:"lastSeen"`
}

// typistJSON is one entry of typingUsers.
type typistJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

func toUser(p store.Profile) userJSON {
	return userJSON{ID: p.ID, Name: p.DisplayName(), Avatar: p.Avatar}
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func toPresence(id string, p *store.Presence) *presenceJSON {
	if p == nil {
		return nil
	}
	prof, st := hub.ShownAs(id, p)
	var md json.RawMessage
	if len(bytes.TrimSpace(p.Metadata)) > 0 {
		md = p.Metadata
	}
	return &presenceJSON{UserID: prof.ID, Name: prof.DisplayName(), Avatar: prof.Avatar, Status: st, LastSeen: ms(p.LastSeen), Metadata: md}
}

func toMembers(members []store.Member) []memberJSON {
	out := make([]memberJSON, 0, len(members))
	for _, m := range members {
		out = append(out, memberJSON{ID: m.ID, Name: m.DisplayName(), Avatar: m.Avatar, Status: m.Status, LastSeen: ms(m.LastSeen)})
	}
	return out
}

func toTypists(ts []store.Typist) []typistJSON {
	out := make([]typistJSON, 0, len(ts))
	for _, t := range ts {
		out = append(out, typistJSON{ID: t.ID, Name: orID(t.Name, t.ID)})
	}
	return out
}

func orID(name, id string) string {
	if name != "" {
		return name
	}
	return id
}

// Stream payloads (?format=json).

// roomSyncJSON is the room stream's `sync` event: the whole state.
type roomSyncJSON struct {
	Topic       string       `json:"topic"`
	Room        string       `json:"room"`
	SessionID   string       `json:"sessionId,omitempty"`
	Member      bool         `json:"member"` // false on a watch-only stream
	Members     []memberJSON `json:"members"`
	Count       int          `json:"count"`
	TypingUsers []typistJSON `json:"typingUsers"`
}

// usersSyncJSON is the users stream's `sync` event: every watched user, as
// GET /api/presence answers (null for a user never seen).
type usersSyncJSON struct {
	Topic    string                   `json:"topic"`
	Presence map[string]*presenceJSON `json:"presence"`
}

// memberEventJSON is a `join` or `leave` event.
type memberEventJSON struct {
	Room   string       `json:"room"`
	User   userJSON     `json:"user"`
	Status store.Status `json:"status,omitempty"`
	At     int64        `json:"at"`
}

// statusEventJSON is a `status` event.
type statusEventJSON struct {
	User  userJSON     `json:"user"`
	From  store.Status `json:"from"`
	To    store.Status `json:"to"`
	Rooms []string     `json:"rooms,omitempty"`
	At    int64        `json:"at"`
}

// typingEventJSON is a `typing` event: the room's whole typing set.
type typingEventJSON struct {
	Room        string       `json:"room"`
	TypingUsers []typistJSON `json:"typingUsers"`
}

// mustJSON marshals types that cannot fail to marshal.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
