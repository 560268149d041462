package client

import (
	"encoding/json"
	"time"
)

// Status is a user's presence status.
type Status string

// The statuses a gateway reports.
const (
	StatusOnline  Status = "online"
	StatusAway    Status = "away"
	StatusBusy    Status = "busy"
	StatusOffline Status = "offline"
)

// User is a user as the stream events name them.
type User struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Avatar string `json:"avatar"`
}

// Member is a live member of a room.
type Member struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Avatar string `json:"avatar"`
	Status Status `json:"status"`
	// LastSeen is in milliseconds since the Unix epoch (0: unknown), as on
	// the wire; LastSeenTime converts it.
	LastSeen int64 `json:"lastSeen"`
}

// LastSeenTime is LastSeen as a time (the zero time when unknown).
func (m Member) LastSeenTime() time.Time { return msTime(m.LastSeen) }

// Typist is a user typing in a room.
type Typist struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Presence is one watched user, as GET /api/presence reports them.
type Presence struct {
	UserID   string          `json:"userId"`
	Name     string          `json:"name"`
	Avatar   string          `json:"avatar"`
	Status   Status          `json:"status"`
	LastSeen int64           `json:"lastSeen"` // ms since the Unix epoch
	Metadata json.RawMessage `json:"metadata"`
}

// LastSeenTime is LastSeen as a time (the zero time when unknown).
func (p Presence) LastSeenTime() time.Time { return msTime(p.LastSeen) }

// Room is the view of one room the stream follows.
type Room struct {
	ID string
	// SessionID is the session the stream holds in the room (empty when
	// Member is false). When the gateway assigned it, the client sends it
	// back on every reconnect, so a reconnect stays the same session.
	SessionID string
	// Member is true when the stream joined the room (its primary room,
	// without Watch); false for a watched room.
	Member  bool
	Members []Member // in the gateway's order
	Count   int      // len(Members): live members
	Typing  []Typist
	// Synced is true once the room's sync arrived on the current
	// connection; false while reconnecting (the rest is then the last
	// state seen, possibly stale).
	Synced bool
}

// Find returns the member with the given user id.
func (r Room) Find(id string) (Member, bool) {
	for _, m := range r.Members {
		if m.ID == id {
			return m, true
		}
	}
	return Member{}, false
}

func (r Room) clone() Room {
	r.Members = append([]Member(nil), r.Members...)
	r.Typing = append([]Typist(nil), r.Typing...)
	return r
}

func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// EventType says what an Event is.
type EventType string

// Event types. Sync, join, leave, status and typing are the gateway's JSON
// events (the names on the wire); EventConnected and EventDisconnected are the
// client's own.
const (
	// EventConnected: a stream answered 200; its sync events follow.
	EventConnected EventType = "connected"
	// EventDisconnected: the stream ended or a connection attempt failed. Err
	// says why and Retry when the client tries again (0 when Run is
	// returning).
	EventDisconnected EventType = "disconnected"
	// EventSync: a topic's whole state, which replaced the view's.
	EventSync EventType = "sync"
	// EventJoin and EventLeave: a user joined or left Room.
	EventJoin  EventType = "join"
	EventLeave EventType = "leave"
	// EventStatus: User's aggregate status went From → To; Rooms lists the
	// rooms the user is (or, going offline, was) in.
	EventStatus EventType = "status"
	// EventTyping: Room's whole typing set is now Typing.
	EventTyping EventType = "typing"
	// EventOther: an event this package does not know (Name and Data are set).
	EventOther EventType = "other"
)

// Event is one thing that happened on the stream. The view (Client.Room,
// Client.Users) already includes it when it is delivered.
type Event struct {
	Type EventType
	// Name and Data are the SSE event name and its JSON data as received
	// (empty for EventConnected and EventDisconnected).
	Name string
	Data json.RawMessage
	// Topic is "room:{id}" or "users" for a sync, "room:{id}" for join,
	// leave and typing, empty otherwise.
	Topic    string
	Room     string
	User     User
	From, To Status
	Rooms    []string
	Typing   []Typist
	At       time.Time // when the change happened (join, leave, status)

	Err   error         // EventDisconnected
	Retry time.Duration // EventDisconnected
}
