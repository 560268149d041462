package handlers

import (
	"fmt"
	"hash/fnv"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/views"
)

// DevTokenTTL is how long a /login token lives.
const DevTokenTTL = 24 * time.Hour

// demoRooms are offered by the demo page's room chooser.
var demoRooms = []string{"lobby", "design", "random"}

// loginPage serves GET /login (dev mode): the sign-in form.
func (s *Server) loginPage(c echo.Context) error {
	return s.html(c, http.StatusOK, views.LoginPage(views.LoginProps{Next: safeNext(c.QueryParam("next"))}))
}

// login serves POST /login (dev mode): mints a token for the chosen name and
// sets it as the presence_token cookie (HttpOnly, SameSite=Lax).
func (s *Server) login(c echo.Context) error {
	r := c.Request()
	if !s.sameOrigin(r) { // login CSRF: do not let another site sign a victim in
		return apiError(http.StatusForbidden, ErrCrossSite.Error())
	}
	r.Body = http.MaxBytesReader(c.Response(), r.Body, MaxBody)
	if err := r.ParseForm(); err != nil {
		return apiError(http.StatusBadRequest, "malformed form")
	}
	next := safeNext(r.PostFormValue("next"))
	name := strings.TrimSpace(r.PostFormValue("name"))
	avatar := strings.TrimSpace(r.PostFormValue("avatar"))
	fail := func(msg string) error {
		return s.html(c, http.StatusBadRequest, views.LoginPage(views.LoginProps{Next: next, Error: msg}))
	}
	if name == "" || utf8.RuneCountInString(name) > 64 || !utf8.ValidString(name) {
		return fail("Pick a name of 1 to 64 characters.")
	}
	if avatar != "" {
		u, err := url.Parse(avatar)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || len(avatar) > 2048 {
			return fail("The avatar must be an http(s) URL.")
		}
	}
	p := store.Profile{ID: userIDFromName(name), Name: name, Avatar: avatar}
	tok, err := s.auth.Mint(p, DevTokenTTL, nil)
	if err != nil {
		return apiError(http.StatusInternalServerError, "could not sign a token")
	}
	c.SetCookie(&http.Cookie{
		Name: CookieName, Value: tok, Path: "/", MaxAge: int(DevTokenTTL / time.Second),
		HttpOnly: true, SameSite: http.SameSiteLaxMode, Secure: strings.HasPrefix(selfOrigin(r), "https:"),
	})
	return c.Redirect(http.StatusSeeOther, next)
}

// logout serves POST /logout: forgets the cookie.
func (s *Server) logout(c echo.Context) error {
	if !s.sameOrigin(c.Request()) {
		return apiError(http.StatusForbidden, ErrCrossSite.Error())
	}
	c.SetCookie(&http.Cookie{Name: CookieName, Value: "", Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteLaxMode})
	return c.Redirect(http.StatusSeeOther, "/login")
}

// demo serves GET / in dev mode: the room page, or a redirect to /login.
func (s *Server) demo(c echo.Context) error {
	r := c.Request()
	room := c.QueryParam("room")
	if room == "" {
		room = "lobby"
	}
	if !store.ValidRoomID(room) {
		return apiError(http.StatusBadRequest, store.ErrInvalidRoomID.Error())
	}
	id, err := s.auth.identify(r)
	if err != nil {
		return c.Redirect(http.StatusSeeOther, "/login?next="+url.QueryEscape("/?room="+url.QueryEscape(room)))
	}
	if !id.MayAccess(room) {
		return apiError(http.StatusForbidden, ErrRoomDenied.Error())
	}
	sid := newSessionID()
	c.Set(identityKey, id)
	ms, ts, err := s.roomState(c, room, true)
	if err != nil {
		return err
	}
	rooms := slices.Clone(demoRooms)
	if !slices.Contains(rooms, room) {
		rooms = append(rooms, room)
	}
	if id.Rooms != nil {
		rooms = slices.DeleteFunc(rooms, func(r string) bool { return !id.MayAccess(r) })
	}
	// The page gets the token only when it did not come from the cookie,
	// which is HttpOnly: the cookie goes with the page's requests anyway
	// (the same rule as the live widget's stream URL, fragments.go).
	token := ""
	if id.Source != FromCookie {
		token = id.Token
	}
	return s.html(c, http.StatusOK, views.DemoPage(views.DemoProps{
		User: id.User, RoomID: room, Token: token, SessionID: sid, Heartbeat: s.cfg.Heartbeat,
		Rooms: rooms, Members: ms, Typists: ts,
		StreamURL: demoStreamURL(room, sid, token),
	}))
}

// demoStreamURL is the demo page's room stream. A page opened with
// ?token= (no cookie) must carry the token on its stream too: EventSource
// cannot send an Authorization header, so without it the stream is 401
// forever while the page's POSTs (which send the header) succeed.
func demoStreamURL(room, sid, token string) string {
	q := url.Values{"sid": {sid}, "list": {"1"}}
	if token != "" {
		q.Set("token", token)
	}
	return "/sse/room/" + url.PathEscape(room) + "?" + q.Encode()
}

// safeNext keeps a post-login redirect on this site: a path of this origin,
// else "/". Browsers drop tabs and line breaks from a URL and read a
// backslash as a slash, so "/\t/evil.example/" and "/\evil.example" are
// "//evil.example" to them: another host. So a next is refused when it has
// any control character, space, backslash or non-ASCII byte, does not start
// with exactly one "/", or resolves to anything but this origin.
func safeNext(next string) string {
	if next == "" || len(next) > 2048 || next[0] != '/' || (len(next) > 1 && next[1] == '/') {
		return "/"
	}
	for i := 0; i < len(next); i++ {
		if b := next[i]; b <= ' ' || b >= 0x7f || b == '\\' {
			return "/"
		}
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	base := &url.URL{Scheme: "https", Host: "gateway.invalid", Path: "/"}
	if r := base.ResolveReference(u); r.Scheme != base.Scheme || r.Host != base.Host {
		return "/"
	}
	return next
}

// userIDFromName derives a stable user id from a display name: lower-case
// letters, digits and _ . : @ -, other runs turned into one "-". A name with
// nothing usable (only non-Latin letters, say) gets "u-" and a hash of it, so
// the same name always signs in as the same user.
func userIDFromName(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_', r == '.', r == ':', r == '@':
			b.WriteRune(r)
			dash = false
		default:
			if !dash && b.Len() > 0 {
				b.WriteByte('-')
				dash = true
			}
		}
		if b.Len() >= 64 {
			break
		}
	}
	id := strings.Trim(b.String(), "-")
	if !store.ValidUserID(id) {
		h := fnv.New64a()
		h.Write([]byte(name))
		id = fmt.Sprintf("u-%x", h.Sum64())
	}
	return id
}
