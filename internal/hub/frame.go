package hub

import (
	"sync"

	"github.com/presenced/presenced/store"
)

// frame is one read of a room, rendered lazily once per variant however
// many subscribers share the variant: the stack once per distinct max, the
// member list and the typing line once; with held departures (leave
// debounce), once more per hold age that some subscriber must still see.
// Frames are shared (a cached read serves many snapshots), so rendering is
// guarded by mu.
type frame struct {
	room    string
	seq     uint64
	members []store.Member
	typists []store.Typist
	// held are departures the frame still shows, oldest hold first (see
	// debounce.go); a subscriber sees those that began after its snapshot.
	held []heldMember

	haveMembers, haveTyping bool

	mu     sync.Mutex
	lists  map[int][]store.Member // by first held index shown
	stacks map[stackKey][]byte
	mlists map[int][]byte
	typing []byte
}

type stackKey struct{ max, from int }

// heldFrom is the index of the first hold subscriber s must be shown: the
// holds that began after its last snapshot of the room (it showed those
// members). A snapshot shows none (from = len(held)).
func (f *frame) heldFrom(snap uint64) int {
	for i, hm := range f.held {
		if hm.since > snap {
			return i
		}
	}
	return len(f.held)
}

func (f *frame) membersFrom(from int) []store.Member {
	if from >= len(f.held) {
		return f.members
	}
	if ms, ok := f.lists[from]; ok {
		return ms
	}
	ms := withHeld(f.members, f.held[from:])
	if f.lists == nil {
		f.lists = map[int][]store.Member{}
	}
	f.lists[from] = ms
	return ms
}

// html lists the messages an HTML subscriber of room r gets for this frame.
func (f *frame) html(h *Hub, r RoomSub, v View, from int) []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Message
	if f.haveMembers {
		from = min(from, len(f.held))
		k := stackKey{v.Max, from}
		b, ok := f.stacks[k]
		if !ok {
			b = h.render("members", func() ([]byte, error) { return h.r.Stack(f.room, f.membersFrom(from), v.Max) })
			if f.stacks == nil {
				f.stacks = map[stackKey][]byte{}
			}
			f.stacks[k] = b
		}
		if b != nil {
			out = append(out, Message{Event: roomEvent("members", r), Data: b})
		}
		if v.List {
			b, ok := f.mlists[from]
			if !ok {
				b = h.render("member-list", func() ([]byte, error) { return h.r.MemberList(f.room, f.membersFrom(from)) })
				if f.mlists == nil {
					f.mlists = map[int][]byte{}
				}
				f.mlists[from] = b
			}
			if b != nil {
				out = append(out, Message{Event: roomEvent("member-list", r), Data: b})
			}
		}
	}
	if f.haveTyping {
		if f.typing == nil {
			f.typing = h.render("typing", func() ([]byte, error) { return h.r.Typing(f.room, f.typists) })
		}
		if f.typing != nil {
			out = append(out, Message{Event: roomEvent("typing", r), Data: f.typing})
		}
	}
	return out
}

// dotFrame renders one user's dot once per variant.
type dotFrame struct {
	user   store.Profile
	status store.Status
	dots   map[dotKey][]byte
}

type dotKey struct {
	size  string
	label bool
}

func (d *dotFrame) dot(h *Hub, v View) []byte {
	k := dotKey{v.DotSize, v.DotLabel}
	if b, ok := d.dots[k]; ok {
		return b
	}
	b := h.render("presence", func() ([]byte, error) { return h.r.Dot(d.user, d.status, v.DotSize, v.DotLabel) })
	if d.dots == nil {
		d.dots = map[dotKey][]byte{}
	}
	d.dots[k] = b
	return b
}
