package handlers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/r3labs/sse/v2"

	"github.com/presenced/presenced/store"
)

// newSSEServer returns an r3labs server configured as pitfalls.md requires:
// no replay log (it never shrinks and overwrites our ids), SplitData so that
// multi-line HTML survives, no auto-created streams (unknown ?stream= would
// be a 500; we create one stream per connection ourselves).
func newSSEServer() *sse.Server {
	s := sse.New()
	s.AutoReplay = false
	s.AutoStream = false
	s.SplitData = true
	s.EncodeBase64 = false
	s.BufferSize = streamBuffer
	s.Headers = map[string]string{
		"X-Accel-Buffering": "no", // nginx: do not buffer the stream
	}
	return s
}

// newSessionID returns a random session id (22 characters of base64url,
// inside the contract's 8–64 of A–Z a–z 0–9 _ -).
func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// streamOptions are the query options every stream accepts.
type streamOptions struct {
	json     bool
	dotSize  string
	dotLabel bool
}

func parseStreamOptions(q url.Values, defaultSize string) (streamOptions, error) {
	o := streamOptions{dotSize: defaultSize}
	switch q.Get("format") {
	case "", "html":
	case "json":
		o.json = true
	default:
		return o, apiError(http.StatusBadRequest, "format must be html or json")
	}
	if s := q.Get("size"); s != "" {
		if !validSize(s) {
			return o, apiError(http.StatusBadRequest, "size must be sm, md or lg")
		}
		o.dotSize = s
	}
	l, err := parseBoolParam(q.Get("label"))
	if err != nil {
		return o, err
	}
	o.dotLabel = l
	return o, nil
}

// roomStream serves GET /sse/room/{roomId}: the stream joins the room as the
// token's user in session sid for as long as it is open.
func (s *Server) roomStream(c echo.Context) error {
	id := identity(c)
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	sid := q.Get("sid")
	if sid == "" {
		sid = newSessionID()
	} else if !store.ValidSessionID(sid) {
		return apiError(http.StatusBadRequest, store.ErrInvalidSessionID.Error())
	}
	opts, err := parseStreamOptions(q, "sm")
	if err != nil {
		return err
	}
	maxN, err := parseMax(q.Get("max"))
	if err != nil {
		return err
	}
	list, err := parseBoolParam(q.Get("list"))
	if err != nil {
		return err
	}

	cn := s.hub.newConn(c.Request().Context(), roomConn)
	cn.json, cn.dotSize, cn.dotLabel = opts.json, opts.dotSize, opts.dotLabel
	cn.expires = id.acceptedUntil()
	cn.room, cn.user, cn.sid, cn.max, cn.list = room, id.User, sid, maxN, list
	if !s.hub.add(cn) {
		cn.cancel(errShutdown)
		return apiError(http.StatusServiceUnavailable, "shutting down")
	}
	// Join after registering, so that the join's own events reach us (held
	// until the snapshot), and before the snapshot, so that it includes us.
	jctx, cancel := context.WithTimeout(cn.ctx, 5*time.Second)
	err = s.store.Join(jctx, room, store.Heartbeat{User: id.User, SessionID: sid})
	cancel()
	if err != nil {
		s.hub.remove(cn)
		cn.cancel(errStreamClosed)
		return s.storeError(err)
	}
	s.m.heartbeats.WithLabelValues("stream").Inc()

	s.serveStream(c, cn, func() { s.hub.snapshotRoom(cn.ctx, room, []*conn{cn}, true) })

	s.hub.remove(cn)
	s.afterRoomStream(cn)
	return nil
}

// afterRoomStream decides what a closed room stream does to its session.
//   - Shutdown: nothing. The browser reconnects (to another node) with the
//     same sid within the session's TTL.
//   - An explicit offline came: nothing, the session is already over.
//   - Another stream of the same session and room is still open here: it
//     refreshes the session at once (and keeps it in the room).
//   - Otherwise the session leaves the room after the leave grace, unless a
//     stream of it for that room opens here before (leave.go): a reload
//     comes back in time and nothing flaps; a room switch (the same sid
//     streaming another room) or a removed embed leaves no ghost behind.
//     Other streams of the session, if any, refresh it at once.
//
// The session itself is left alone: the stream's last refresh was its last
// sign of life, so without heartbeats or another stream it expires --ttl
// after that, as any session does. Shortening its TTL here would flap a tab
// that still heartbeats (an SPA that removed the embed, a stream that takes
// a while to reconnect) offline, and writing to it could recreate a session
// another node has just ended.
func (s *Server) afterRoomStream(c *conn) {
	cause := context.Cause(c.ctx)
	if errors.Is(cause, errShutdown) || c.ended.Load() {
		return
	}
	for _, o := range s.hub.sessionConns(c.user.ID, c.sid) {
		o.pokeRefresh()
		if o.room == c.room {
			return
		}
	}
	s.hub.scheduleLeave(sessionRoom{user: c.user.ID, sid: c.sid, room: c.room}, s.cfg.LeaveGrace)
}

// usersStream serves GET /sse/users?ids=a,b: presence-{userId} dots of up to
// 100 users, the current ones first.
func (s *Server) usersStream(c echo.Context) error {
	q := c.QueryParams()
	ids, err := parseIDList(q.Get("ids"))
	if err != nil {
		return apiError(http.StatusBadRequest, err.Error())
	}
	opts, err := parseStreamOptions(q, "md")
	if err != nil {
		return err
	}
	cn := s.hub.newConn(c.Request().Context(), usersConn)
	cn.json, cn.dotSize, cn.dotLabel = opts.json, opts.dotSize, opts.dotLabel
	cn.expires = identity(c).acceptedUntil()
	cn.ids = ids
	if !s.hub.add(cn) {
		cn.cancel(errShutdown)
		return apiError(http.StatusServiceUnavailable, "shutting down")
	}
	s.serveStream(c, cn, func() { s.hub.snapshotUsers(cn.ctx, cn, true) })
	s.hub.remove(cn)
	return nil
}

// serveStream runs one connection: its own r3labs stream, served through
// the deadline writer; a driver goroutine sends the snapshot once r3labs has
// subscribed the connection, then keep-alives and (room streams) session
// refreshes. It returns when the stream is over and nothing of it is left
// running.
func (s *Server) serveStream(c echo.Context, conn *conn, snapshot func()) {
	s.sse.CreateStream(conn.streamID)
	w := newStreamWriter(c.Response(), s.cfg.WriteDeadline, func(error) { conn.drop(errStalled) })

	// r3labs reads the stream name from ?stream= and rejects a non-numeric
	// Last-Event-ID with a 400 (which makes a browser EventSource give up for
	// good). We never replay, since the state always comes first, so the
	// header is simply dropped.
	req := c.Request().WithContext(conn.ctx)
	u := *req.URL
	u.RawQuery = url.Values{"stream": {conn.streamID}}.Encode()
	req.URL = &u
	req.Header = req.Header.Clone()
	req.Header.Del("Last-Event-ID")

	kind := conn.kind.String()
	s.m.openStreams.WithLabelValues(kind).Inc()
	defer s.m.openStreams.WithLabelValues(kind).Dec()

	done := make(chan struct{})
	go func() {
		defer close(done)
		s.drive(conn, w, snapshot)
	}()
	s.sse.ServeHTTP(w, req)
	// ServeHTTP returns once r3labs has unsubscribed the connection (its
	// channel is closed only then), so removing the stream now cannot strand
	// r3labs' per-client goroutine.
	conn.drop(errStreamClosed)
	<-done
	s.sse.RemoveStream(conn.streamID)
	w.clearDeadline()
	s.log.Debug("stream closed", "kind", kind, "room", conn.room, "user", conn.user.ID,
		"cause", context.Cause(conn.ctx))
}

// drive is a connection's own goroutine: snapshot first, then keep-alive
// comments (the timer restarts on every write) and session refreshes, until
// the stream's token expires: a stream must not outlive its credential. The
// client reconnects with a fresh token, or gets 401.
func (s *Server) drive(c *conn, w *streamWriter, snapshot func()) {
	var expired <-chan time.Time
	if !c.expires.IsZero() {
		t := time.NewTimer(time.Until(c.expires))
		defer t.Stop()
		expired = t.C
	}
	select {
	case <-w.started:
	case <-c.ctx.Done():
		return
	case <-expired:
		c.drop(errTokenExpired)
		return
	}
	snapshot()

	ka := s.cfg.Keepalive
	keepalive := time.NewTimer(ka)
	defer keepalive.Stop()
	var refresh <-chan time.Time
	if c.kind == roomConn {
		t := time.NewTicker(s.cfg.RefreshInterval())
		defer t.Stop()
		refresh = t.C
	}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-keepalive.C:
			if idle := w.sinceLastWrite(); idle < ka-ka/20 {
				keepalive.Reset(ka - idle)
				continue
			}
			c.comment()
			keepalive.Reset(ka)
		case <-refresh:
			s.refreshSession(c)
		case <-c.poke:
			s.refreshSession(c)
		case <-expired:
			c.drop(errTokenExpired)
			return
		}
	}
}

// refreshSession keeps an open room stream's session alive and in its room
// with the status last reported for it (Status "" keeps it). It is a Join,
// not a Heartbeat, on purpose: Join is idempotent (nothing is emitted for a
// session already in the room), and it re-asserts the membership, so that a
// Leave that raced the stream's opening (the closed stream of the same
// session and room on another node, leave.go) heals within a refresh.
func (s *Server) refreshSession(c *conn) {
	if c.ended.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	err := s.store.Join(ctx, c.room, store.Heartbeat{User: c.user, SessionID: c.sid})
	if err != nil {
		if c.ctx.Err() == nil {
			s.log.Warn("stream session refresh failed", "user", c.user.ID, "room", c.room, "err", err)
		}
		return
	}
	s.m.heartbeats.WithLabelValues("stream").Inc()
}
