package handlers

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"

	"github.com/a-h/templ"
	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/internal/hub"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/views"
)

// html answers a rendered component. Fragments show live data: never
// cached.
func (s *Server) html(c echo.Context, code int, comp templ.Component) error {
	b, err := renderHTML(c.Request().Context(), comp)
	if err != nil {
		s.log.Error("render failed", "path", c.Path(), "err", err)
		return apiError(http.StatusInternalServerError, "render failed")
	}
	h := c.Response().Header()
	h.Set("Cache-Control", "no-store")
	return c.HTMLBlob(code, b)
}

// lineSafe replaces every raw CR in rendered HTML by its character
// reference, and every NUL by U+FFFD's. templ escapes <>"'& but writes CR
// and NUL as they are; both can only come from user text (names), where
// the reference means the same to an HTML parser, while a raw CR is a line
// break to every SSE parser (a fragment's markup is also an SSE event's
// data). Rendered markup itself never contains either, so this changes
// nothing else. It returns b itself when there is nothing to replace.
func lineSafe(b []byte) []byte {
	if bytes.IndexByte(b, '\r') < 0 && bytes.IndexByte(b, 0) < 0 {
		return b
	}
	out := make([]byte, 0, len(b)+16)
	for _, c := range b {
		switch c {
		case '\r':
			out = append(out, "&#13;"...)
		case 0:
			out = append(out, "&#xFFFD;"...)
		default:
			out = append(out, c)
		}
	}
	return out
}

// userParam reads and validates the {userId} path parameter.
func userParam(c echo.Context) (string, error) {
	id := pathParam(c, "userId")
	if !store.ValidUserID(id) {
		return "", apiError(http.StatusBadRequest, store.ErrInvalidUserID.Error())
	}
	return id, nil
}

// pathParam returns a path parameter, unescaped (Echo hands over the raw
// segment when the path was sent percent-encoded).
func pathParam(c echo.Context, name string) string {
	v := c.Param(name)
	if strings.Contains(v, "%") {
		if u, err := url.PathUnescape(v); err == nil {
			return u
		}
	}
	return v
}

// userState reads one user's profile and status (offline, profile = id,
// for a user never seen). A user the token may not see is shown the same
// way: offline and unknown, so that an embed never breaks and nothing tells
// a hidden user from an absent one.
func (s *Server) userState(c echo.Context, id string) (store.Profile, store.Status, error) {
	ctx, cancel := storeCtx(c)
	defer cancel()
	v, err := s.viewerFor(ctx, identity(c))
	if err != nil {
		return store.Profile{}, "", s.storeError(err)
	}
	if !v.canSee(id) {
		p, st := hub.ShownAs(id, nil)
		return p, st, nil
	}
	ps, err := s.store.Presence(ctx, []string{id})
	if err != nil {
		return store.Profile{}, "", s.storeError(err)
	}
	p, st := hub.ShownAs(id, ps[id])
	return p, st, nil
}

// roomState reads a room's members and (withTyping) typists as the
// request's token may see them.
func (s *Server) roomState(c echo.Context, room string, withTyping bool) ([]store.Member, []store.Typist, error) {
	ctx, cancel := storeCtx(c)
	defer cancel()
	ms, err := s.store.Members(ctx, room)
	if err != nil {
		return nil, nil, s.storeError(err)
	}
	var ts []store.Typist
	if withTyping {
		if ts, err = s.store.Typing(ctx, room); err != nil {
			return nil, nil, s.storeError(err)
		}
	}
	v, err := s.viewerFor(ctx, identity(c))
	if err != nil {
		return nil, nil, s.storeError(err)
	}
	return v.visibleMembers(ms), v.visibleTypists(ts), nil
}

// dotFragment serves GET /fragments/user/{userId}/dot?size=&label=1.
func (s *Server) dotFragment(c echo.Context) error {
	id, err := userParam(c)
	if err != nil {
		return err
	}
	size, err := parseSize(c.QueryParam("size"))
	if err != nil {
		return err
	}
	label, err := parseBoolParam(c.QueryParam("label"))
	if err != nil {
		return err
	}
	p, st, err := s.userState(c, id)
	if err != nil {
		return err
	}
	return s.html(c, http.StatusOK, views.Dot(views.DotProps{UserID: id, Name: p.DisplayName(), Status: st, Size: size, Label: label}))
}

// avatarFragment serves GET /fragments/user/{userId}/avatar?size=.
func (s *Server) avatarFragment(c echo.Context) error {
	id, err := userParam(c)
	if err != nil {
		return err
	}
	size, err := parseSize(c.QueryParam("size"))
	if err != nil {
		return err
	}
	p, st, err := s.userState(c, id)
	if err != nil {
		return err
	}
	return s.html(c, http.StatusOK, views.Avatar(views.AvatarProps{User: p, Status: st, Size: size}))
}

// membersFragment serves GET /fragments/room/{roomId}/members?max=.
func (s *Server) membersFragment(c echo.Context) error {
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	maxN, err := parseMax(c.QueryParam("max"))
	if err != nil {
		return err
	}
	ms, _, err := s.roomState(c, room, false)
	if err != nil {
		return err
	}
	return s.html(c, http.StatusOK, views.Members(views.MembersProps{RoomID: room, Members: ms, Max: maxN}))
}

// typingFragment serves GET /fragments/room/{roomId}/typing.
func (s *Server) typingFragment(c echo.Context) error {
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	ctx, cancel := storeCtx(c)
	defer cancel()
	ts, err := s.store.Typing(ctx, room)
	if err != nil {
		return s.storeError(err)
	}
	v, err := s.viewerFor(ctx, identity(c))
	if err != nil {
		return s.storeError(err)
	}
	ts = v.visibleTypists(ts)
	return s.html(c, http.StatusOK, views.TypingLine(views.TypingProps{RoomID: room, Typists: ts}))
}

// liveFragment serves GET /fragments/room/{roomId}/live?max=&scripts=&htmx=:
// the stack and typing line wired to the room's stream, for htmx 2 (the
// default, htmx=2) or htmx 4 (htmx=4). It works embedded in a page of
// another origin: the stream and asset URLs are then absolute, and the
// stream URL carries the token the widget was fetched with (EventSource
// cannot send headers, and a cross-origin stream gets no cookie). A cookie
// token is never copied into the page.
func (s *Server) liveFragment(c echo.Context) error {
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	maxN, err := parseMax(q.Get("max"))
	if err != nil {
		return err
	}
	sid := q.Get("sid")
	if sid == "" {
		// Chosen here, so that the widget's reconnects keep one session.
		sid = newSessionID()
	} else if !store.ValidSessionID(sid) {
		return apiError(http.StatusBadRequest, store.ErrInvalidSessionID.Error())
	}
	scripts := true
	if v := q.Get("scripts"); v != "" {
		if scripts, err = parseBoolParam(v); err != nil {
			return err
		}
	}
	htmxV, err := parseHtmxVersion(q.Get("htmx"))
	if err != nil {
		return err
	}
	id := identity(c)
	r := c.Request()
	base := s.cfg.BasePath // mounted under a prefix (the gateway package)
	if !s.sameOriginPage(r) {
		base = selfOrigin(r) + s.cfg.BasePath
	}
	// One connection per page: the widget's stream can carry the page's
	// user dots too (users=), observe without joining (watch=1), and a page
	// that holds its own sse-connect (connect=0) gets the widget without one.
	sq := url.Values{"sid": {sid}}
	watch, err := parseBoolParam(q.Get("watch"))
	if err != nil {
		return err
	}
	if watch {
		sq = url.Values{"watch": {"1"}}
	}
	if v := q.Get("users"); v != "" {
		users, err := parseIDList(v)
		if err != nil {
			return apiError(http.StatusBadRequest, err.Error())
		}
		sq.Set("users", strings.Join(users, ","))
	}
	connect := true
	if v := q.Get("connect"); v != "" {
		if connect, err = parseBoolParam(v); err != nil {
			return err
		}
	}
	if id.Source != FromCookie {
		sq.Set("token", id.Token)
	}
	if maxN != views.DefaultMax {
		sq.Set("max", itoa(maxN))
	}
	streamURL := base + "/sse/room/" + url.PathEscape(room) + "?" + sq.Encode()
	if !connect {
		streamURL = ""
	}

	ms, ts, err := s.roomState(c, room, true)
	if err != nil {
		return err
	}
	return s.html(c, http.StatusOK, views.Live(views.LiveProps{
		RoomID: room, Max: maxN, StreamURL: streamURL, Members: ms, Typists: ts,
		AssetBase: base, OmitScripts: !scripts, Htmx: htmxV,
	}))
}

// parseHtmxVersion reads the live widget's ?htmx=: "" or "2" → 2, "4" → 4.
func parseHtmxVersion(v string) (int, error) {
	switch v {
	case "", "2":
		return 2, nil
	case "4":
		return 4, nil
	}
	return 0, apiError(http.StatusBadRequest, "htmx must be 2 or 4")
}

// sameOriginPage reports whether a fragment was fetched by a page of this
// gateway's own origin, so that relative URLs in it resolve here. Anything
// else (another origin's page, a server fetching the fragment to inline it)
// gets absolute URLs.
func (s *Server) sameOriginPage(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		n, err := config.NormalizeOrigin(o)
		return err == nil && n == selfOrigin(r)
	}
	return r.Header.Get("Sec-Fetch-Site") == "same-origin"
}
