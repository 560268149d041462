package handlers

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/internal/eventstream"
	"github.com/presenced/presenced/internal/hub"
	"github.com/presenced/presenced/internal/session"
	"github.com/presenced/presenced/store"
)

// Why a stream ended.
var (
	errShutdown     = errors.New("server shutting down")
	errStalled      = errors.New("stream write missed its deadline: reader stalled")
	errNoState      = errors.New("could not read the state to send first")
	errStreamClosed = errors.New("stream closed")
	errTokenExpired = errors.New("the stream's token expired")
)

// MaxStreamRooms bounds the rooms one stream follows.
const MaxStreamRooms = 16

// viewReview is how often a stream whose see claim lists rooms re-reads
// who is in them.
var viewReview = 5 * time.Second

// newSessionID returns a random session id (22 characters of base64url,
// inside the contract's 8–64 of A–Z a–z 0–9 _ -).
func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// streamRequest is a parsed stream request: what the hub is to send and
// what the stream holds in the store.
type streamRequest struct {
	spec    hub.Spec
	lease   session.Stream
	expires time.Time
	kind    string // metrics label: room (joins a room), watch, users
}

// stream serves GET /sse: one connection for a page, any set of topics.
//
//	room=R     the page's room: the stream joins it (as the token's user,
//	           in session sid) unless watch=1; HTML events members, typing,
//	           member-list
//	rooms=A,B  more rooms, watched only; HTML events members-A, typing-A…
//	users=a,b  dots of up to 100 users (presence-{userId})
//	watch=1    observe room without joining it
//
// plus format, sid, max, list, size and label as on the v1 streams.
func (s *Server) stream(c echo.Context) error {
	return s.serveRequest(c, c.QueryParam("room"), c.QueryParam("users"))
}

// roomStream serves GET /sse/room/{roomId} (the v1 room stream; it takes
// the /sse parameters too).
func (s *Server) roomStream(c echo.Context) error {
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	return s.serveRequest(c, room, c.QueryParam("users"))
}

// usersStream serves GET /sse/users?ids=a,b (the v1 dots stream).
func (s *Server) usersStream(c echo.Context) error {
	ids := c.QueryParam("ids")
	if ids == "" {
		return apiError(http.StatusBadRequest, store.ErrNoUsers.Error())
	}
	return s.serveRequest(c, "", ids)
}

func (s *Server) parseStream(c echo.Context, room, users string) (*streamRequest, error) {
	id := identity(c)
	q := c.QueryParams()
	watch, err := parseBoolParam(q.Get("watch"))
	if err != nil {
		return nil, err
	}
	r := &streamRequest{expires: id.acceptedUntil()}
	sp := &r.spec
	sp.User = id.User
	switch q.Get("format") {
	case "", "html":
	case "json":
		sp.Format = hub.JSON
	default:
		return nil, apiError(http.StatusBadRequest, "format must be html or json")
	}
	if room != "" {
		if !store.ValidRoomID(room) {
			return nil, apiError(http.StatusBadRequest, store.ErrInvalidRoomID.Error())
		}
		sp.Rooms = append(sp.Rooms, hub.RoomSub{ID: room, Primary: true, Member: !watch})
	}
	if v := q.Get("rooms"); v != "" {
		for _, p := range strings.Split(v, ",") {
			p = strings.TrimSpace(p)
			if !store.ValidRoomID(p) {
				return nil, apiError(http.StatusBadRequest, store.ErrInvalidRoomID.Error())
			}
			if !hasRoom(sp.Rooms, p) {
				sp.Rooms = append(sp.Rooms, hub.RoomSub{ID: p})
			}
		}
	}
	if len(sp.Rooms) > MaxStreamRooms {
		return nil, apiError(http.StatusBadRequest, "at most 16 rooms per stream")
	}
	for _, rs := range sp.Rooms {
		if !id.MayAccess(rs.ID) {
			return nil, apiError(http.StatusForbidden, "this token may not access room "+rs.ID)
		}
	}
	if users != "" {
		if sp.Users, err = parseIDList(users); err != nil {
			return nil, apiError(http.StatusBadRequest, err.Error())
		}
	}
	if len(sp.Rooms) == 0 && len(sp.Users) == 0 {
		return nil, apiError(http.StatusBadRequest, "a stream needs room, rooms or users")
	}

	// Presentation.
	sp.View.DotSize = "md"
	if len(sp.Rooms) > 0 {
		sp.View.DotSize = "sm"
	}
	if v := q.Get("size"); v != "" {
		if !validSize(v) {
			return nil, apiError(http.StatusBadRequest, "size must be sm, md or lg")
		}
		sp.View.DotSize = v
	}
	if sp.View.DotLabel, err = parseBoolParam(q.Get("label")); err != nil {
		return nil, err
	}
	if sp.View.Max, err = parseMax(q.Get("max")); err != nil {
		return nil, err
	}
	if sp.View.List, err = parseBoolParam(q.Get("list")); err != nil {
		return nil, err
	}

	// What the stream holds: its session in the room it joined.
	r.kind = "users"
	if len(sp.Rooms) > 0 {
		r.kind = "watch"
	}
	r.lease = session.Stream{User: id.User}
	if len(sp.Rooms) > 0 && sp.Rooms[0].Member {
		sid := q.Get("sid")
		if sid == "" {
			sid = newSessionID()
		} else if !store.ValidSessionID(sid) {
			return nil, apiError(http.StatusBadRequest, store.ErrInvalidSessionID.Error())
		}
		sp.Rooms[0].Session = sid
		r.lease.SessionID, r.lease.Room = sid, sp.Rooms[0].ID
		r.kind = "room"
	}
	return r, nil
}

func hasRoom(rs []hub.RoomSub, id string) bool {
	for _, r := range rs {
		if r.ID == id {
			return true
		}
	}
	return false
}

// serveRequest runs one stream: the lease (joining its room), the hub
// subscription, then the write loop until the stream ends.
func (s *Server) serveRequest(c echo.Context, room, users string) error {
	req, err := s.parseStream(c, room, users)
	if err != nil {
		return err
	}
	if req.lease.Room != "" {
		// Joining a room through a stream counts like a POST join.
		if err := s.lim.roomAction(c, req.lease.User.ID, req.lease.SessionID); err != nil {
			return err
		}
	}
	ctx := c.Request().Context()
	// Whose presence this stream may show (the token's see claim): the
	// same rule as every other route, applied by the hub per subscriber.
	vctx, vcancel := context.WithTimeout(ctx, 5*time.Second)
	v, err := s.viewerFor(vctx, identity(c))
	vcancel()
	if err != nil {
		return s.storeError(err)
	}
	if !v.seesAll() {
		req.spec.Visible = v.canSee
	}
	jctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	// The subscriber is registered before the join, so that nothing the
	// join changes can be missed; its snapshot is read after the join, so
	// that it includes the stream's own user.
	sub := s.hub.Subscribe(req.spec)
	if sub == nil {
		cancel()
		return apiError(http.StatusServiceUnavailable, "shutting down")
	}
	lease, err := s.keeper.Open(jctx, req.lease)
	cancel()
	if err != nil {
		s.hub.Unsubscribe(sub)
		if errors.Is(err, session.ErrTooManyStreams) {
			return apiError(http.StatusTooManyRequests, err.Error())
		}
		return s.storeError(err)
	}

	// A see claim that lists rooms depends on who is in them: re-check it
	// now and then, and re-send the state when it changed.
	var review func()
	if v.roomDependent() {
		key := v.membersKey()
		id := identity(c)
		review = func() {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			nv, err := s.viewerFor(rctx, id)
			cancel()
			if err == nil && nv.membersKey() != key {
				key = nv.membersKey()
				sub.SetVisible(nv.canSee)
			}
		}
	}
	s.m.openStreams.WithLabelValues(req.kind).Inc()
	cause := s.writeLoop(c, sub, req.expires, review)
	s.m.openStreams.WithLabelValues(req.kind).Dec()
	s.hub.Unsubscribe(sub)
	s.keeper.CloseLease(lease, errors.Is(cause, errShutdown))
	if reason := dropReason(cause); reason != "" {
		s.m.dropped.WithLabelValues(reason).Inc()
	}
	s.log.Debug("stream closed", "kind", req.kind, "user", req.spec.User.ID, "cause", cause)
	return nil
}

func dropReason(cause error) string {
	switch {
	case errors.Is(cause, errStalled):
		return "stalled"
	case errors.Is(cause, errShutdown), errors.Is(cause, hub.ErrClosed):
		return "shutdown"
	case errors.Is(cause, errNoState):
		return "no_state"
	case errors.Is(cause, errTokenExpired):
		return "token_expired"
	}
	return ""
}

// writeBuffers are shared by all streams: an idle stream holds no buffer.
var writeBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// writeLoop is the stream's own goroutine (the request's): it drains the
// subscriber's queue and writes it, each batch with one write and one flush
// under the write deadline. A reader that does not take a write within the
// deadline is dropped; nobody else ever waits for it, since the hub only
// queues. The loop ends when the client goes, the hub closes (shutdown) or
// the stream's token expires: a stream must not outlive its credential (the
// client reconnects with a fresh token, or gets 401).
func (s *Server) writeLoop(c echo.Context, sub *hub.Subscriber, expires time.Time, review func()) error {
	res := c.Response()
	h := res.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// nginx and compatible proxies: do not buffer the stream.
	h.Set("X-Accel-Buffering", "no")
	res.WriteHeader(http.StatusOK)
	w := res.Writer
	rc := http.NewResponseController(w)
	deadline := s.cfg.WriteDeadline
	var armed time.Time
	write := func(p []byte) error {
		// Push the deadline forward at most once per deadline/8: a write
		// starting now still has at least 7/8 of it.
		if now := time.Now(); now.Sub(armed) > deadline/8 {
			armed = now
			_ = rc.SetWriteDeadline(now.Add(deadline))
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		return rc.Flush()
	}
	// No write of its own for the headers: they go out with the state,
	// which is queued already (one write and one flush per connect).
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()

	var expired <-chan time.Time
	if !expires.IsZero() {
		t := time.NewTimer(time.Until(expires))
		defer t.Stop()
		expired = t.C
	}
	var reviews <-chan time.Time
	if review != nil {
		t := time.NewTicker(viewReview)
		defer t.Stop()
		reviews = t.C
	}
	ctx := c.Request().Context()
	var id uint64
	for {
		select {
		case <-reviews:
			review()
			continue
		case <-ctx.Done():
			return errStreamClosed
		case <-sub.Closed():
			return sub.Cause()
		case <-expired:
			return errTokenExpired
		case <-sub.Notify():
		}
		b, err := sub.Take()
		if err != nil {
			if ctx.Err() != nil {
				return errStreamClosed
			}
			s.log.Warn("stream snapshot failed", "err", err)
			return errNoState
		}
		bp := writeBuffers.Get().(*[]byte)
		buf := (*bp)[:0]
		for _, m := range b.Messages {
			id++
			var err error
			if buf, err = eventstream.AppendEvent(buf, id, m.Event, m.Data); err != nil {
				s.log.Error("unsendable event dropped", "event", m.Event, "err", err)
				continue
			}
			s.m.deliveredInc(metricEvent(m.Event))
		}
		if b.Keepalive {
			buf = eventstream.AppendComment(buf, "keepalive")
		}
		var werr error
		if len(buf) > 0 {
			werr = write(buf)
		}
		if cap(buf) <= 64<<10 { // do not keep a burst's buffer around
			*bp = buf[:0]
			writeBuffers.Put(bp)
		}
		if werr != nil {
			// A missed deadline is a stalled reader even if net/http has
			// already cancelled the request for the broken connection.
			if errors.Is(werr, os.ErrDeadlineExceeded) || ctx.Err() == nil {
				return errStalled
			}
			return errStreamClosed
		}
		sub.Wrote(time.Now())
	}
}

func metricEvent(event string) string {
	if strings.HasPrefix(event, "presence-") {
		return "presence"
	}
	for _, p := range []string{"members-", "typing-", "member-list-"} {
		if strings.HasPrefix(event, p) {
			return strings.TrimSuffix(p, "-")
		}
	}
	return event
}

// streamURL builds a stream URL with query values (fragments and pages).
func streamURL(base, path string, q url.Values) string {
	return base + path + "?" + q.Encode()
}
