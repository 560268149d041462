package handlers

import (
	"bytes"
	"context"
	"strconv"

	"github.com/a-h/templ"

	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/views"
)

// renderHTML renders a component into bytes the caller owns. The buffer is
// a fresh local one, never templ's pooled one (templ.GetBuffer), and nothing
// else holds it once this returns, so its bytes can be handed to an
// asynchronous publish as they are: no later render can overwrite them
// (pitfalls.md: pooled buffers corrupted 198 of 200 payloads that way).
func renderHTML(ctx context.Context, c templ.Component) ([]byte, error) {
	var b bytes.Buffer
	if err := c.Render(ctx, &b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// roomRender renders one state of a room lazily, once per variant, however
// many connections share the variant: the stack once per distinct ?max=, the
// member list and the typing line once; with held departures (leave
// debounce), once more per hold age that some connection must still see.
type roomRender struct {
	ctx     context.Context
	room    string
	members []store.Member
	typists []store.Typist
	seq     uint64
	// held are departures the render still shows, oldest hold first (see
	// debounce.go); a connection sees those that began after its snapshot.
	held []heldMember

	haveMembers, haveTyping bool

	lists  map[int][]store.Member // by first held index shown
	stacks map[stackKey][]byte
	mlists map[int][]byte
	typing []byte
	pub    func(event string)
}

type stackKey struct{ max, from int }

// heldFrom is the index of the first hold connection c must be shown: the
// holds that began after its last snapshot (it showed those members).
func (r *roomRender) heldFrom(c *conn) int {
	if len(r.held) == 0 {
		return 0
	}
	snap := c.snapshotSeq()
	for i, hm := range r.held {
		if hm.since > snap {
			return i
		}
	}
	return len(r.held)
}

// membersFrom is the member list with the holds from index from on.
func (r *roomRender) membersFrom(from int) []store.Member {
	if from >= len(r.held) {
		return r.members
	}
	if ms, ok := r.lists[from]; ok {
		return ms
	}
	ms := withHeld(r.members, r.held[from:])
	if r.lists == nil {
		r.lists = map[int][]store.Member{}
	}
	r.lists[from] = ms
	return ms
}

func (r *roomRender) stack(max, from int) []byte {
	from = min(from, len(r.held))
	k := stackKey{max, from}
	if b, ok := r.stacks[k]; ok {
		return b
	}
	b, err := renderHTML(r.ctx, views.Members(views.MembersProps{RoomID: r.room, Members: r.membersFrom(from), Max: max}))
	if err != nil {
		return nil
	}
	if r.stacks == nil {
		r.stacks = map[stackKey][]byte{}
	}
	r.stacks[k] = b
	r.pub("members")
	return b
}

func (r *roomRender) memberList(from int) []byte {
	from = min(from, len(r.held))
	if b, ok := r.mlists[from]; ok {
		return b
	}
	b, err := renderHTML(r.ctx, views.MemberList(views.MemberListProps{RoomID: r.room, Members: r.membersFrom(from)}))
	if err != nil {
		return nil
	}
	if r.mlists == nil {
		r.mlists = map[int][]byte{}
	}
	r.mlists[from] = b
	r.pub("member-list")
	return b
}

func (r *roomRender) typingLine() []byte {
	if r.typing == nil {
		b, err := renderHTML(r.ctx, views.TypingLine(views.TypingProps{RoomID: r.room, Typists: r.typists}))
		if err != nil {
			return nil
		}
		r.typing = b
		r.pub("typing")
	}
	return r.typing
}

// htmlFor lists the events an HTML room connection gets for this state.
func (r *roomRender) htmlFor(c *conn) []outMsg {
	var out []outMsg
	if r.haveMembers {
		from := r.heldFrom(c)
		if b := r.stack(c.max, from); b != nil {
			out = append(out, outMsg{event: "members", data: b, seq: r.seq})
		}
		if c.list {
			if b := r.memberList(from); b != nil {
				out = append(out, outMsg{event: "member-list", data: b, seq: r.seq})
			}
		}
	}
	if r.haveTyping {
		if b := r.typingLine(); b != nil {
			out = append(out, outMsg{event: "typing", data: b, seq: r.seq})
		}
	}
	return out
}

// jsonSyncFor is a JSON room connection's `sync` event (it names the
// connection's session, so it is marshalled per connection).
func (r *roomRender) jsonSyncFor(c *conn) outMsg {
	ms := toMembers(r.members)
	return outMsg{event: "sync", seq: r.seq, data: mustJSON(roomSyncJSON{
		Room: r.room, SessionID: c.sid, Members: ms, Count: len(ms), TypingUsers: toTypists(r.typists),
	})}
}

// dotKey is one variant of a status dot.
type dotKey struct {
	size  string
	label bool
}

// dotRender renders a user's dot once per variant.
type dotRender struct {
	ctx    context.Context
	user   store.Profile
	status store.Status
	dots   map[dotKey][]byte
	pub    func(event string)
}

func (d *dotRender) dot(size string, label bool) []byte {
	k := dotKey{size, label}
	if b, ok := d.dots[k]; ok {
		return b
	}
	b, err := renderHTML(d.ctx, views.Dot(views.DotProps{
		UserID: d.user.ID, Name: d.user.DisplayName(), Status: d.status, Size: size, Label: label,
	}))
	if err != nil {
		return nil
	}
	if d.dots == nil {
		d.dots = map[dotKey][]byte{}
	}
	d.dots[k] = b
	d.pub("presence")
	return b
}

func dotEvent(userID string) string { return "presence-" + userID }

func itoa(n int) string { return strconv.Itoa(n) }
