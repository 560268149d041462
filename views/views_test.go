package views

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/a-h/templ"

	"github.com/presenced/presenced/store"
)

const hostile = `<img src=x onerror=alert(1)>`

func render(t *testing.T, c templ.Component) string {
	t.Helper()
	var b strings.Builder
	if err := c.Render(context.Background(), &b); err != nil {
		t.Fatalf("render: %v", err)
	}
	return b.String()
}

func contains(t *testing.T, html string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(html, w) {
			t.Errorf("missing %q in\n%s", w, html)
		}
	}
}

func lacks(t *testing.T, html string, bad ...string) {
	t.Helper()
	for _, b := range bad {
		if strings.Contains(html, b) {
			t.Errorf("unexpected %q in\n%s", b, html)
		}
	}
}

func count(html, sub string) int { return strings.Count(html, sub) }

func member(id, name string, s store.Status) store.Member {
	return store.Member{Profile: store.Profile{ID: id, Name: name}, Status: s, LastSeen: time.Unix(1700000000, 0)}
}

func members(n int) []store.Member {
	names := []string{"Alice", "Bob", "Carol", "Dan", "Erin", "Frank", "Grace", "Heidi", "Ivan"}
	var ms []store.Member
	for i := 0; i < n; i++ {
		ms = append(ms, member(strings.ToLower(names[i]), names[i], store.StatusOnline))
	}
	return ms
}

func TestDot(t *testing.T) {
	h := render(t, Dot(DotProps{UserID: "alice", Name: "Alice", Status: store.StatusOnline}))
	contains(t, h,
		`data-presence-user="alice"`, `data-status="online"`,
		`sse-swap="presence-alice"`, `hx-swap="outerHTML"`,
		`aria-label="Alice is online"`, `pr-dot--md`)
	lacks(t, h, `pr-dot__label`, `id=`)

	for s, label := range map[store.Status]string{
		store.StatusOnline: "Online", store.StatusAway: "Away", store.StatusBusy: "Busy", store.StatusOffline: "Offline",
	} {
		h := render(t, Dot(DotProps{UserID: "u1", Status: s, Size: "lg", Label: true}))
		contains(t, h, `data-status="`+string(s)+`"`, `>`+label+`</span>`, `pr-dot--lg`, `pr-dot--label`, `aria-label="u1 is `+string(s)+`"`)
	}

	// Unknown or empty status is offline; unknown size is md.
	h = render(t, Dot(DotProps{UserID: "bob", Size: "xl"}))
	contains(t, h, `data-status="offline"`, `pr-dot--md`, `aria-label="bob is offline"`)
	h = render(t, Dot(DotProps{UserID: "bob", Status: "sleeping", Size: "sm"}))
	contains(t, h, `data-status="offline"`, `pr-dot--sm`)
}

func TestAvatar(t *testing.T) {
	p := store.Profile{ID: "alice", Name: "Alice Liddell", Avatar: "https://img.example/a.png?s=64&x=1"}
	h := render(t, Avatar(AvatarProps{User: p, Status: store.StatusAway, Size: "lg"}))
	contains(t, h,
		`data-presence-user="alice"`, `pr-avatar--lg`,
		`src="https://img.example/a.png?s=64&amp;x=1"`, `alt=""`, `data-presence-avatar`,
		`>AL</span>`, // initials under the image, the fallback
		`data-status="away"`, `sse-swap="presence-alice"`)
	if !regexp.MustCompile(`class="pr-avatar pr-avatar--lg pr-c[0-9]"`).MatchString(h) {
		t.Errorf("no colour class: %s", h)
	}
	lacks(t, h, "onerror")

	// No URL, or an unusable one: initials only, never a broken image.
	for _, u := range []string{"", "javascript:alert(1)", "data:image/png;base64,AAAA", "  ", "http://x/a b.png"} {
		h := render(t, Avatar(AvatarProps{User: store.Profile{ID: "bob", Name: "bob", Avatar: u}}))
		lacks(t, h, "<img", "javascript:")
		contains(t, h, `>B</span>`, `pr-avatar--md`, `data-status="offline"`)
	}
	// A path on the gateway is fine.
	contains(t, render(t, Avatar(AvatarProps{User: store.Profile{ID: "c", Avatar: "/avatars/c.png"}})), `src="/avatars/c.png"`)

	// The colour is stable per id.
	a := colorClass("alice")
	for i := 0; i < 3; i++ {
		if colorClass("alice") != a {
			t.Fatal("colour class not stable")
		}
	}
}

func TestMembers(t *testing.T) {
	h := render(t, Members(MembersProps{RoomID: "lobby"}))
	contains(t, h, `data-presence-room="lobby"`, `data-count="0"`, "Nobody here yet")
	lacks(t, h, "data-overflow", "pr-avatar")

	h = render(t, Members(MembersProps{RoomID: "lobby", Members: members(1)}))
	contains(t, h, `data-count="1"`, "1 person here", `data-presence-user="alice"`)
	lacks(t, h, "data-overflow", "people here")

	h = render(t, Members(MembersProps{RoomID: "lobby", Members: members(5)}))
	contains(t, h, `data-count="5"`, "5 people here")
	lacks(t, h, "data-overflow")

	// Default max is 5: 7 members → 5 avatars and +2.
	h = render(t, Members(MembersProps{RoomID: "lobby", Members: members(7)}))
	contains(t, h, `data-count="7"`, "7 people here", `data-overflow="2"`, ">+2</span>", `title="Frank, Grace"`)
	if n := count(h, `class="pr-avatar `); n != 5 {
		t.Errorf("avatars = %d, want 5", n)
	}
	lacks(t, h, `data-presence-user="frank"`, `data-presence-user="grace"`)

	h = render(t, Members(MembersProps{RoomID: "lobby", Members: members(7), Max: 3}))
	contains(t, h, `data-overflow="4"`, ">+4</span>")
	if n := count(h, `class="pr-avatar `); n != 3 {
		t.Errorf("avatars = %d, want 3", n)
	}
	// Every shown avatar carries its user's dot.
	if n := count(h, `sse-swap="presence-`); n != 3 {
		t.Errorf("dots = %d, want 3", n)
	}
}

func TestMemberList(t *testing.T) {
	ms := members(2)
	ms[1].Status = store.StatusBusy
	h := render(t, MemberList(MemberListProps{RoomID: "lobby", Members: ms}))
	contains(t, h, `data-member-list="lobby"`, `data-member-count="2"`, ">Alice</span>", ">Busy</span>", ">Online</span>", "@bob")
	lacks(t, h, "data-presence-room") // that hook belongs to the stack alone
	contains(t, render(t, MemberList(MemberListProps{RoomID: "lobby"})), "Nobody here yet.")
}

func TestTypingLine(t *testing.T) {
	ty := func(names ...string) []store.Typist {
		var out []store.Typist
		for _, n := range names {
			out = append(out, store.Typist{ID: strings.ToLower(n), Name: n})
		}
		return out
	}
	for _, c := range []struct {
		typists []store.Typist
		text    string
	}{
		{ty("Alice"), "Alice is typing…"},
		{ty("Alice", "Bob"), "Alice and Bob are typing…"},
		{ty("Alice", "Bob", "Carol"), "Alice and 2 others are typing…"},
		{ty("Alice", "Bob", "Carol", "Dan", "Erin"), "Alice and 4 others are typing…"},
		{[]store.Typist{{ID: "zed"}}, "zed is typing…"},
	} {
		h := render(t, TypingLine(TypingProps{RoomID: "r", Typists: c.typists}))
		contains(t, h, `data-typing-count="`+itoa(len(c.typists))+`"`, `aria-live="polite"`, c.text, "pr-typing__dots")
	}
	h := render(t, TypingLine(TypingProps{RoomID: "r"}))
	contains(t, h, `data-typing-count="0"`, `aria-live="polite"`)
	lacks(t, h, "typing…", "pr-typing__dots")
	if !regexp.MustCompile(`^<div [^>]*></div>$`).MatchString(h) {
		t.Errorf("empty typing line has content: %s", h)
	}
}

func TestLive(t *testing.T) {
	h := render(t, Live(LiveProps{
		RoomID: "lobby", Max: 2, StreamURL: "https://gw.example/sse/room/lobby?token=a.b.c&sid=x",
		Members: members(3), Typists: []store.Typist{{ID: "bob", Name: "Bob"}}, AssetBase: "https://gw.example/",
	}))
	contains(t, h,
		`hx-ext="sse"`, `sse-connect="https://gw.example/sse/room/lobby?token=a.b.c&amp;sid=x"`,
		`sse-swap="members"`, `sse-swap="typing"`,
		`data-presence-room="lobby"`, `data-count="3"`, `data-overflow="1"`,
		`data-typing-count="1"`, "Bob is typing…",
		`<link rel="stylesheet" href="https://gw.example/static/presence.css">`,
		`<script src="https://gw.example/static/vendor/htmx.min.js"></script>`,
		`<script src="https://gw.example/static/vendor/htmx-ext-sse.js"></script>`,
		`src="https://gw.example/static/presence.js" data-mode="watch"`)
	// htmx before its extension.
	if strings.Index(h, "htmx.min.js") > strings.Index(h, "htmx-ext-sse.js") {
		t.Error("htmx must load before htmx-ext-sse")
	}
	lacks(t, h, "ext/sse.js", "htmx.org@4")

	h = render(t, Live(LiveProps{RoomID: "lobby", StreamURL: "/sse/room/lobby", OmitScripts: true}))
	contains(t, h, `href="/static/presence.css"`, `sse-connect="/sse/room/lobby"`, `data-count="0"`, `data-typing-count="0"`)
	lacks(t, h, "<script")
}

func TestLoginPage(t *testing.T) {
	h := render(t, LoginPage(LoginProps{Next: `/?room=a"><script>x</script>`, Error: hostile}))
	contains(t, h,
		"<!doctype html>", `method="post"`, `action="/login"`,
		`name="name"`, `name="avatar"`, `type="url"`, `name="next"`,
		`value="/?room=a&#34;&gt;&lt;script&gt;x&lt;/script&gt;"`,
		`role="alert"`, "&lt;img src=x onerror=alert(1)&gt;")
	lacks(t, h, hostile, "<script>x")
	h = render(t, LoginPage(LoginProps{}))
	lacks(t, h, `role="alert"`)
}

func TestDemoPage(t *testing.T) {
	ms := members(3)
	h := render(t, DemoPage(DemoProps{
		User: ms[0].Profile, RoomID: "lobby", Token: "tok.en", SessionID: "sess_12345678",
		Heartbeat: 20 * time.Second, Rooms: []string{"lobby", "design"}, Members: ms,
		Typists: []store.Typist{{ID: "bob", Name: "Bob"}}, StreamURL: "/sse/room/lobby?sid=sess_12345678",
	}))
	contains(t, h,
		"<!doctype html>", "<title>#lobby · presenced</title>",
		`href="/static/presence.css"`,
		`<script src="/static/vendor/htmx.min.js" defer></script>`,
		`<script src="/static/vendor/htmx-ext-sse.js" defer></script>`,
		`<script src="/static/presence.js" defer></script>`,
		// presence.js configuration
		`data-presence-config`, `data-heartbeat="20000"`, `data-session-id="sess_12345678"`,
		`data-room="lobby"`, `data-user="alice"`, `data-token="tok.en"`,
		// one SSE connection, four kinds of events
		`hx-ext="sse"`, `sse-connect="/sse/room/lobby?sid=sess_12345678"`,
		`sse-swap="members"`, `sse-swap="typing"`, `sse-swap="member-list"`, `sse-swap="presence-alice"`,
		// status picker, rooms, message box
		`data-presence-set-status="online"`, `data-presence-set-status="away"`, `data-presence-set-status="busy"`,
		`href="/?room=design"`, `aria-current="page"`, `action="/"`, `name="room"`,
		`data-presence-typing="lobby"`, `data-presence-chat`,
		`data-count="3"`, "3 people here", "Bob is typing…", `data-member-count="3"`)
	if n := count(h, "sse-connect="); n != 1 {
		t.Errorf("sse-connect × %d, want 1 (one connection per page)", n)
	}
	if strings.Index(h, "htmx.min.js") > strings.Index(h, "htmx-ext-sse.js") || strings.Index(h, "htmx-ext-sse.js") > strings.Index(h, "presence.js") {
		t.Error("scripts out of order")
	}
	// Without a token there is no data-token; heartbeat defaults to 30 s.
	h = render(t, DemoPage(DemoProps{User: store.Profile{ID: "u1"}, RoomID: "r", StreamURL: "/sse/room/r"}))
	contains(t, h, `data-heartbeat="30000"`)
	lacks(t, h, "data-token")
}

// Every piece of user-supplied text is escaped, in text and in attributes.
func TestEscaping(t *testing.T) {
	evilID := `x"><script>alert(1)</script>`
	evil := store.Member{Profile: store.Profile{ID: evilID, Name: hostile, Avatar: `javascript:alert(1)`}, Status: store.StatusOnline}
	evilURL := store.Member{Profile: store.Profile{ID: "u", Name: hostile, Avatar: `https://x/"><script>alert(1)</script>`}, Status: store.StatusOnline}
	typists := []store.Typist{{ID: evilID, Name: hostile}, {ID: "b", Name: hostile}}
	room := `r"><script>alert(1)</script>`
	ms := []store.Member{evil, evilURL, evil, evil, evil, evil, evil}
	pages := map[string]templ.Component{
		"dot":        Dot(DotProps{UserID: evilID, Name: hostile, Status: "online", Label: true}),
		"avatar":     Avatar(AvatarProps{User: evil.Profile, Status: "busy"}),
		"avatar-url": Avatar(AvatarProps{User: evilURL.Profile}),
		"members":    Members(MembersProps{RoomID: room, Members: ms}),
		"list":       MemberList(MemberListProps{RoomID: room, Members: ms}),
		"typing":     TypingLine(TypingProps{RoomID: room, Typists: typists}),
		"live":       Live(LiveProps{RoomID: room, StreamURL: `/sse/"><script>alert(1)</script>`, Members: ms, Typists: typists, AssetBase: `"><script>alert(1)</script>`}),
		"login":      LoginPage(LoginProps{Next: hostile, Error: hostile}),
		"demo": DemoPage(DemoProps{User: evil.Profile, RoomID: room, Token: hostile, SessionID: hostile,
			Rooms: []string{room}, Members: ms, Typists: typists, StreamURL: `/sse/"><script>alert(1)</script>`}),
	}
	for name, c := range pages {
		h := render(t, c)
		if strings.Contains(h, hostile) || strings.Contains(h, "<script>alert") || strings.Contains(h, "javascript:") {
			t.Errorf("%s: unescaped user data:\n%s", name, h)
		}
		if strings.Contains(h, "onerror=") && !strings.Contains(h, "&lt;img src=x onerror=alert(1)&gt;") {
			t.Errorf("%s: onerror outside escaped text:\n%s", name, h)
		}
	}
	contains(t, render(t, pages["dot"]), `aria-label="&lt;img src=x onerror=alert(1)&gt; is online"`)
	contains(t, render(t, pages["typing"]), "&lt;img src=x onerror=alert(1)&gt; and &lt;img src=x onerror=alert(1)&gt; are typing…")
	contains(t, render(t, pages["list"]), ">&lt;img src=x onerror=alert(1)&gt;</span>")
}

func TestHelpers(t *testing.T) {
	for in, want := range map[string]string{
		"Ada Lovelace": "AL", "bob": "B", "  ": "?", "": "?", "émile zola": "ÉZ",
		"jean-paul sartre": "JP", "alice@example.com": "AE", "!!!": "?", "Ada B. C.": "AB", "李小龙": "李",
	} {
		if got := Initials(in); got != want {
			t.Errorf("Initials(%q) = %q, want %q", in, got, want)
		}
	}
	for n, want := range map[int]string{0: "Nobody here yet", 1: "1 person here", 2: "2 people here", 7: "7 people here"} {
		if got := PeopleHere(n); got != want {
			t.Errorf("PeopleHere(%d) = %q, want %q", n, got, want)
		}
	}
	if TypingText(nil) != "" {
		t.Error("TypingText(nil) not empty")
	}
	for s, want := range map[store.Status]string{"online": "Online", "away": "Away", "busy": "Busy", "offline": "Offline", "": "Offline", "x": "Offline"} {
		if got := StatusLabel(s); got != want {
			t.Errorf("StatusLabel(%q) = %q", s, got)
		}
	}
	seen := map[string]bool{}
	for _, id := range []string{"ada", "grace", "alan", "linus", "margaret", "ken", "alice", "bob", "carol", "dan", "erin", "frank", "u1", "u2", "u3"} {
		seen[colorClass(id)] = true
	}
	if len(seen) < 6 {
		t.Errorf("colour classes poorly spread: %v", seen)
	}
	if asset("https://gw.example/", "/static/x.js") != "https://gw.example/static/x.js" || asset("", "/static/x.js") != "/static/x.js" {
		t.Error("asset")
	}
}
