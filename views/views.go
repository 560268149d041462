// Package views holds the gateway's HTML: the embeddable fragments (status
// dot, avatar, avatar stack, typing line, live widget) and the dev pages
// (sign-in, demo). Components are templ components (*.templ, generated into
// *_templ.go by `go tool templ generate`); this file holds their props and the
// small pure helpers they share.
//
// # Live updates
//
// Every fragment carries the public contract's data-* hooks
// (data-presence-user, data-status, data-presence-room, data-count,
// data-overflow, data-typing-count) and is meant to be swapped in by htmx's SSE
// extension:
//
//   - The room stream's `members` event carries Members, the `typing` event
//     TypingLine. Live (and the demo page) wrap them in
//     <div sse-swap="members"> / <div sse-swap="typing">, swapped innerHTML.
//   - The `presence-{userId}` event carries a Dot. Every Dot carries
//     sse-swap="presence-{userId}" hx-swap="outerHTML" itself, so a dot
//     anywhere below an element with sse-connect (a room stream or
//     /sse/users?ids=…) follows that user live; outside an sse-connect the
//     attributes are inert. A user may be shown many times on a page (stack,
//     list, header): each copy listens for itself, which is why there is no
//     id="presence-{userId}" (ids must be unique). With static/presence.js on
//     the page the swap is done in place instead: presence.js cancels the
//     outerHTML swap (htmx:sseBeforeMessage) and copies the new status onto
//     the existing dot, its avatar and its label, so a dot keeps its own size
//     and label. Without presence.js the plain htmx swap still shows the right
//     status (dots inside avatars are sized by the avatar in CSS).
//   - The demo page also listens for `member-list` (MemberList), an extension
//     of the contract: the gateway sends it on the room stream next to every
//     `members` event.
package views

import (
	"hash/fnv"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/a-h/templ"

	"github.com/presenced/presenced/store"
)

// DefaultMax is how many avatars a stack shows before its +N badge.
const DefaultMax = 5

// DotProps configures Dot.
type DotProps struct {
	UserID string
	// Name is shown in the dot's accessible label; empty means UserID.
	Name   string
	Status store.Status
	// Size is "sm" (8 px), "md" (12 px, the default) or "lg" (16 px).
	Size string
	// Label shows the status as text next to the dot (Online, Away, Busy,
	// Offline).
	Label bool
}

// AvatarProps configures Avatar.
type AvatarProps struct {
	User   store.Profile
	Status store.Status
	// Size is "sm" (32 px), "md" (40 px, the default) or "lg" (48 px).
	Size string
}

// MembersProps configures Members, a room's avatar stack.
type MembersProps struct {
	RoomID  string
	Members []store.Member
	// Max is how many avatars are shown before the +N badge; ≤ 0 means
	// DefaultMax.
	Max int
}

// MemberListProps configures MemberList, the demo page's full member list.
type MemberListProps struct {
	RoomID  string
	Members []store.Member
}

// TypingProps configures TypingLine.
type TypingProps struct {
	RoomID  string
	Typists []store.Typist
}

// LiveProps configures Live, the self-contained live widget.
type LiveProps struct {
	RoomID string
	// Max as in MembersProps.
	Max int
	// StreamURL is the room's SSE stream, e.g.
	// "http://gw.example/sse/room/lobby?token=…" for a cross-origin embed.
	StreamURL string
	Members   []store.Member
	Typists   []store.Typist
	// AssetBase is the origin the /static/ assets are loaded from when the
	// widget is embedded in a page of another origin, e.g.
	// "https://gw.example"; "" means the page's own origin.
	AssetBase string
	// OmitScripts leaves out the htmx, SSE extension and presence scripts,
	// for host pages that load htmx themselves (loading htmx twice starts a
	// second htmx). The stylesheet link is always included.
	OmitScripts bool
	// Htmx is the htmx the markup and scripts are for: 2 (htmx.org 2.0.11 +
	// htmx-ext-sse 2.2.4; also what 0 means) or 4 (htmx.org 4.0.1 with its
	// own hx-sse extension and static/presence-htmx4.js).
	Htmx int
}

// LoginProps configures LoginPage.
type LoginProps struct {
	// Next is where to go after signing in (a local path).
	Next string
	// Error, when set, is shown above the form.
	Error string
}

// DemoProps configures DemoPage.
type DemoProps struct {
	User   store.Profile
	RoomID string
	// Token, when set, is given to presence.js, which then sends it as
	// Authorization: Bearer (the page's cookie works without it).
	Token string
	// SessionID is this tab's session id, as used in StreamURL's sid. A tab
	// that already has one (sessionStorage) keeps it: presence.js rewrites
	// the sid= of sse-connect URLs before htmx connects.
	SessionID string
	// Heartbeat is the interval presence.js heartbeats at (default 30 s).
	Heartbeat time.Duration
	// Rooms are offered in the room chooser.
	Rooms   []string
	Members []store.Member
	Typists []store.Typist
	// StreamURL is the room's SSE stream, e.g. "/sse/room/lobby?sid=…".
	StreamURL string
}

// size returns s if it is a known size, else "md".
func size(s string) string {
	switch s {
	case "sm", "md", "lg":
		return s
	}
	return "md"
}

// status returns s if it is a known status, else offline.
func status(s store.Status) store.Status {
	switch s {
	case store.StatusOnline, store.StatusAway, store.StatusBusy, store.StatusOffline:
		return s
	}
	return store.StatusOffline
}

// StatusLabel is the text shown for a status: Online, Away, Busy, Offline.
func StatusLabel(s store.Status) string {
	switch status(s) {
	case store.StatusOnline:
		return "Online"
	case store.StatusAway:
		return "Away"
	case store.StatusBusy:
		return "Busy"
	}
	return "Offline"
}

func orID(name, id string) string {
	if strings.TrimSpace(name) != "" {
		return name
	}
	return id
}

// dotLabel is a dot's accessible label: "Alice is online".
func dotLabel(p DotProps) string {
	return orID(p.Name, p.UserID) + " is " + string(status(p.Status))
}

// Initials are up to two letters of a name: "Ada Lovelace" → "AL",
// "bob" → "B"; a name without letters or digits gives "?".
func Initials(name string) string {
	var out []rune
	for _, w := range strings.FieldsFunc(name, func(r rune) bool {
		return unicode.IsSpace(r) || r == '-' || r == '_' || r == '.' || r == '@'
	}) {
		for _, r := range w {
			if unicode.IsLetter(r) || unicode.IsDigit(r) {
				out = append(out, unicode.ToUpper(r))
				break
			}
		}
		if len(out) == 2 {
			break
		}
	}
	if len(out) == 0 {
		return "?"
	}
	return string(out)
}

// avatarColors is the number of colour classes (pr-c0 … pr-c9) in
// presence.css.
const avatarColors = 10

// colorClass picks a stable colour class for a user id.
func colorClass(id string) string {
	h := fnv.New32a()
	h.Write([]byte(id))
	x := h.Sum32()
	// FNV's low bits follow the last byte; mix so that ids that differ only
	// early still spread over the palette.
	x ^= x >> 16
	x *= 0x45d9f3b
	x ^= x >> 16
	return "pr-c" + strconv.Itoa(int(x%avatarColors))
}

// avatarURL returns u if it is a usable image URL (http, https or a path),
// else "" so that initials are shown instead.
func avatarURL(u string) string {
	u = strings.TrimSpace(u)
	if u == "" || len(u) > 2048 || !utf8.ValidString(u) {
		return ""
	}
	for _, r := range u {
		if r < 0x20 || r == 0x7f || unicode.IsSpace(r) {
			return ""
		}
	}
	l := strings.ToLower(u)
	switch {
	case strings.HasPrefix(l, "https://"), strings.HasPrefix(l, "http://"):
		return u
	case strings.HasPrefix(u, "/") && !strings.HasPrefix(u, "/\\"):
		return u
	}
	return ""
}

// PeopleHere is the stack's count line: "Nobody here yet", "1 person here",
// "N people here".
func PeopleHere(n int) string {
	switch {
	case n <= 0:
		return "Nobody here yet"
	case n == 1:
		return "1 person here"
	}
	return strconv.Itoa(n) + " people here"
}

// TypingText is the typing line's text: "" when nobody types, then
// "Alice is typing…", "Alice and Bob are typing…",
// "Alice and 2 others are typing…".
func TypingText(ts []store.Typist) string {
	name := func(t store.Typist) string { return orID(t.Name, t.ID) }
	switch len(ts) {
	case 0:
		return ""
	case 1:
		return name(ts[0]) + " is typing…"
	case 2:
		return name(ts[0]) + " and " + name(ts[1]) + " are typing…"
	}
	return name(ts[0]) + " and " + strconv.Itoa(len(ts)-1) + " others are typing…"
}

// stack splits members into the shown ones and the overflow.
func stack(ms []store.Member, max int) (shown, rest []store.Member) {
	if max <= 0 {
		max = DefaultMax
	}
	if len(ms) <= max {
		return ms, nil
	}
	return ms[:max], ms[max:]
}

func names(ms []store.Member) string {
	var b strings.Builder
	for i, m := range ms {
		if i > 0 {
			b.WriteString(", ")
		}
		if i == 12 {
			b.WriteString("…")
			break
		}
		b.WriteString(m.DisplayName())
	}
	return b.String()
}

// asset joins an asset base ("" or an origin) and a path under /static/.
func asset(base, path string) string {
	return strings.TrimRight(strings.TrimSpace(base), "/") + path
}

func heartbeatMS(d time.Duration) string {
	if d <= 0 {
		d = 30 * time.Second
	}
	return strconv.FormatInt(d.Milliseconds(), 10)
}

// statusOf finds a user's status among room members (online when absent:
// the page is only rendered for a signed-in, live user).
func statusOf(ms []store.Member, id string) store.Status {
	for _, m := range ms {
		if m.ID == id {
			return status(m.Status)
		}
	}
	return store.StatusOnline
}

func itoa(n int) string { return strconv.Itoa(n) }

// roomURL is the demo page's link to a room.
func roomURL(room string) templ.SafeURL {
	return templ.URL("/?room=" + url.QueryEscape(room))
}

// loginURL is the "switch user" link back to the sign-in form.
func loginURL(room string) templ.SafeURL {
	return templ.URL("/login?next=" + url.QueryEscape("/?room="+url.QueryEscape(room)))
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
