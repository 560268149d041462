package client

import (
	"encoding/json"
	"slices"
	"strings"

	sse "github.com/r3labs/sse/v2"
)

// Wire shapes of the JSON stream events (docs/schema/ has their schemas).
type (
	syncJSON struct {
		Topic string `json:"topic"`
		// room:{id}
		Room        string   `json:"room"`
		SessionID   string   `json:"sessionId"`
		Member      bool     `json:"member"`
		Members     []Member `json:"members"`
		TypingUsers []Typist `json:"typingUsers"`
		// users
		Presence map[string]*Presence `json:"presence"`
	}
	memberEventJSON struct {
		Room   string `json:"room"`
		User   User   `json:"user"`
		Status Status `json:"status"`
		At     int64  `json:"at"`
	}
	statusEventJSON struct {
		User  User     `json:"user"`
		From  Status   `json:"from"`
		To    Status   `json:"to"`
		Rooms []string `json:"rooms"`
		At    int64    `json:"at"`
	}
	typingEventJSON struct {
		Room        string   `json:"room"`
		TypingUsers []Typist `json:"typingUsers"`
	}
)

// apply decodes one event and applies it to the view. Diffs for a topic
// whose sync has not arrived on this connection are delivered but not
// applied: that sync will replace the topic's state anyway, and the
// gateway sends a topic's sync before its diffs.
func (c *Client) apply(m *sse.Event) (Event, bool) {
	name := string(m.Event)
	if name == "" {
		return Event{}, false // not one of the gateway's events
	}
	ev := Event{Name: name, Data: append(json.RawMessage(nil), m.Data...)}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch name {
	case "sync":
		var s syncJSON
		if json.Unmarshal(m.Data, &s) != nil {
			return c.other(ev), true
		}
		ev.Type, ev.Topic = EventSync, s.Topic
		// A sync without "topic" is read by its shape (a gateway older
		// than the topic field).
		if s.Topic == "" {
			if s.Presence != nil {
				ev.Topic = "users"
			} else if s.Room != "" {
				ev.Topic = "room:" + s.Room
			}
		}
		switch {
		case ev.Topic == "users":
			c.users = make(map[string]*Presence, len(s.Presence))
			for _, id := range c.cfg.Users {
				c.users[id] = nil
			}
			for id, p := range s.Presence {
				c.users[id] = p
			}
			c.usersSync = true
		case strings.HasPrefix(ev.Topic, "room:"):
			id := strings.TrimPrefix(ev.Topic, "room:")
			ev.Room = id
			r := c.rooms[id]
			if r == nil {
				r = &Room{ID: id}
				c.rooms[id] = r
			}
			*r = Room{ID: id, SessionID: s.SessionID, Member: s.Member, Members: s.Members, Count: len(s.Members), Typing: s.TypingUsers, Synced: true}
			if r.Members == nil {
				r.Members = []Member{}
			}
			if r.Typing == nil {
				r.Typing = []Typist{}
			}
			if s.SessionID != "" && id == c.cfg.Room {
				c.sessionID = s.SessionID
			}
		}
	case "join", "leave":
		var j memberEventJSON
		if json.Unmarshal(m.Data, &j) != nil {
			return c.other(ev), true
		}
		ev.Type, ev.Topic, ev.Room, ev.User, ev.To, ev.At = EventJoin, "room:"+j.Room, j.Room, j.User, j.Status, msTime(j.At)
		if name == "leave" {
			ev.Type = EventLeave
		}
		r := c.rooms[j.Room]
		if r == nil || !r.Synced {
			break
		}
		i := slices.IndexFunc(r.Members, func(m Member) bool { return m.ID == j.User.ID })
		if name == "join" {
			mem := Member{ID: j.User.ID, Name: j.User.Name, Avatar: j.User.Avatar, Status: j.Status, LastSeen: j.At}
			if i >= 0 {
				r.Members[i] = mem
			} else {
				r.Members = append(r.Members, mem)
			}
		} else if i >= 0 {
			r.Members = slices.Delete(r.Members, i, i+1)
		}
		r.Count = len(r.Members)
	case "status":
		var s statusEventJSON
		if json.Unmarshal(m.Data, &s) != nil {
			return c.other(ev), true
		}
		ev.Type, ev.User, ev.From, ev.To, ev.Rooms, ev.At = EventStatus, s.User, s.From, s.To, s.Rooms, msTime(s.At)
		for _, r := range c.rooms {
			if !r.Synced {
				continue
			}
			for i := range r.Members {
				if r.Members[i].ID == s.User.ID {
					r.Members[i].Status, r.Members[i].LastSeen = s.To, s.At
				}
			}
		}
		if p, watched := c.users[s.User.ID]; watched && c.usersSync {
			np := &Presence{UserID: s.User.ID, Name: s.User.Name, Avatar: s.User.Avatar, Status: s.To, LastSeen: s.At}
			if p != nil {
				np.Metadata = p.Metadata
			}
			c.users[s.User.ID] = np
		}
	case "typing":
		var t typingEventJSON
		if json.Unmarshal(m.Data, &t) != nil {
			return c.other(ev), true
		}
		ev.Type, ev.Topic, ev.Room, ev.Typing = EventTyping, "room:"+t.Room, t.Room, t.TypingUsers
		if r := c.rooms[t.Room]; r != nil && r.Synced {
			r.Typing = append([]Typist{}, t.TypingUsers...)
		}
	default:
		return c.other(ev), true
	}
	return ev, true
}

func (c *Client) other(ev Event) Event {
	ev.Type = EventOther
	return ev
}
