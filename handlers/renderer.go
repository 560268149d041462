package handlers

import (
	"bytes"
	"context"
	"strconv"

	"github.com/a-h/templ"

	"github.com/presenced/presenced/internal/hub"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/views"
)

// renderHTML renders a component into bytes the caller owns, made
// lineSafe: the same bytes serve a fragment and a stream event. The buffer
// is a fresh local one, never templ's pooled one (templ.GetBuffer), and
// nothing else holds it once this returns, so its bytes can be queued to
// many streams as they are: no later render can overwrite them
// (pitfalls.md: pooled buffers corrupted 198 of 200 payloads that way).
func renderHTML(ctx context.Context, c templ.Component) ([]byte, error) {
	var b bytes.Buffer
	if err := c.Render(ctx, &b); err != nil {
		return nil, err
	}
	return lineSafe(b.Bytes()), nil
}

// renderer is the hub's Renderer: the templ fragments and the JSON wire
// shapes (wire.go).
type renderer struct{}

var _ hub.Renderer = renderer{}

func (renderer) Stack(room string, members []store.Member, max int) ([]byte, error) {
	return renderHTML(context.Background(), views.Members(views.MembersProps{RoomID: room, Members: members, Max: max}))
}

func (renderer) MemberList(room string, members []store.Member) ([]byte, error) {
	return renderHTML(context.Background(), views.MemberList(views.MemberListProps{RoomID: room, Members: members}))
}

func (renderer) Typing(room string, typists []store.Typist) ([]byte, error) {
	return renderHTML(context.Background(), views.TypingLine(views.TypingProps{RoomID: room, Typists: typists}))
}

func (renderer) Dot(user store.Profile, status store.Status, size string, label bool) ([]byte, error) {
	return renderHTML(context.Background(), views.Dot(views.DotProps{
		UserID: user.ID, Name: user.DisplayName(), Status: status, Size: size, Label: label,
	}))
}

func (renderer) RoomSync(room string, sub hub.RoomSub, members []store.Member, typists []store.Typist) []byte {
	ms := toMembers(members)
	return mustJSON(roomSyncJSON{
		Topic: "room:" + room, Room: room, SessionID: sub.Session, Member: sub.Member,
		Members: ms, Count: len(ms), TypingUsers: toTypists(typists),
	})
}

func (renderer) UsersSync(ids []string, ps map[string]*store.Presence) []byte {
	sync := usersSyncJSON{Topic: "users", Presence: make(map[string]*presenceJSON, len(ids))}
	for _, id := range ids {
		sync.Presence[id] = toPresence(id, ps[id])
	}
	return mustJSON(sync)
}

func (renderer) Change(ev store.Event) (string, []byte) {
	switch ev.Kind {
	case store.EventJoin, store.EventLeave:
		body := memberEventJSON{Room: ev.Room, User: toUser(ev.User), At: ms(ev.At)}
		if ev.Kind == store.EventJoin {
			body.Status = ev.To
		}
		return string(ev.Kind), mustJSON(body)
	case store.EventTyping:
		return "typing", mustJSON(typingEventJSON{Room: ev.Room, TypingUsers: toTypists(ev.Typing)})
	default:
		return "status", mustJSON(statusEventJSON{
			User: toUser(ev.User), From: ev.From, To: ev.To, Rooms: ev.Rooms, At: ms(ev.At),
		})
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
