package handlers

import (
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/eventstream"
	"github.com/presenced/presenced/internal/eventstream/ssecheck"
	"github.com/presenced/presenced/internal/hub"
	"github.com/presenced/presenced/store"
)

// FuzzStreamFraming feeds hostile profiles through every renderer a stream
// uses (the HTML fragments and the JSON payloads) and the SSE encoder, and
// parses the bytes with two spec-conforming parsers: exactly the events
// that were sent must come out, by name.
func FuzzStreamFraming(f *testing.F) {
	f.Add("u1", "M\revent: presence-victim\rdata: <b>forged</b>\r\rretry: 1", "https://x/\r\na.png", "room\r1")
	f.Add("a@b", "\x00\u2028\u2029\r\n\n\r", "", "")
	f.Add("x", strings.Repeat("\r", 300), "javascript:alert(1)", "r")
	f.Fuzz(func(t *testing.T, id, name, avatar, room string) {
		if !store.ValidUserID(id) {
			id = "u"
		}
		if !store.ValidRoomID(room) {
			room = "r"
		}
		p := store.Profile{ID: id, Name: name, Avatar: avatar}
		members := []store.Member{{Profile: p, Status: store.StatusBusy}, {Profile: store.Profile{ID: "other", Name: name}, Status: store.StatusOnline}}
		typists := []store.Typist{{ID: id, Name: name}}
		r := renderer{}
		type ev struct {
			name string
			data []byte
		}
		var sent []ev
		add := func(n string, b []byte, err error) {
			if err != nil {
				t.Fatal(err)
			}
			sent = append(sent, ev{n, b})
		}
		b, err := r.Stack(room, members, 1)
		add("members", b, err)
		b, err = r.MemberList(room, members)
		add("member-list-"+room, b, err)
		b, err = r.Typing(room, typists)
		add("typing", b, err)
		b, err = r.Dot(p, store.StatusAway, "sm", true)
		add(hub.DotEvent(id), b, err)
		add("sync", r.RoomSync(room, hub.RoomSub{ID: room, Member: true, Session: "sessionid1"}, members, typists), nil)
		n, b := r.Change(store.Event{Kind: store.EventJoin, Room: room, User: p, To: store.StatusOnline, At: time.Now()})
		add(n, b, nil)
		n, b = r.Change(store.Event{Kind: store.EventStatus, User: p, From: store.StatusOnline, To: store.StatusOffline, Rooms: []string{room}})
		add(n, b, nil)

		var buf []byte
		names := make([]string, 0, len(sent))
		for i, e := range sent {
			if buf, err = eventstream.AppendEvent(buf, uint64(i+1), e.name, e.data); err != nil {
				t.Fatalf("event %q: %v", e.name, err)
			}
			names = append(names, e.name)
			buf = eventstream.AppendComment(buf, name)
		}
		got := ssecheck.Events(t, buf, names)
		for i, g := range got {
			if strings.ContainsRune(string(sent[i].data), '\r') && strings.Contains(g.Data, "\r") {
				t.Fatalf("a CR survived into %q", g.Type)
			}
		}
	})
}

// The issue 8 repro end to end: a member whose name carries bare CRs joins a
// room; another member's HTML stream parses to exactly the events the
// gateway meant to send: no forged presence-victim, no retry field. (Tokens
// with control characters in the name are refused now; the profile goes in
// through the store, as any other source of names could.)
func TestCRInNameCannotForgeEvents(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		n := startNode(t, b.newStore(t))
		c := newClient(t)
		watcher := openSSE(t, c, n.base+"/sse/room/lobby?sid=watcher-tab-1&list=1", n.token("victim", "Victim"))
		watcher.waitFor("state", membersWith(1, "victim"))
		evil := store.Profile{ID: "mallory", Name: "M\revent: presence-victim\rdata: <span data-status=\"offline\"></span>\r\rretry: 1\r"}
		if err := n.st.Join(t.Context(), "lobby", store.Heartbeat{User: evil, SessionID: "mallory-tab-1"}); err != nil {
			t.Fatal(err)
		}
		ev := watcher.waitFor("mallory in the stack", membersWith(2, "victim", "mallory"))
		if strings.Contains(ev.Data, "\r") {
			t.Fatalf("raw CR in members data")
		}
		for _, e := range watcher.drain(500 * time.Millisecond) {
			if e.Event == "presence-victim" || e.Retry != 0 {
				t.Fatalf("forged event reached the watcher: %+v", e)
			}
		}
	})
}
