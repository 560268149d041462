package handlers

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/presenced/presenced/store"
)

// apiError is an HTTP error answered as {"error": msg}.
func apiError(code int, msg string) error { return echo.NewHTTPError(code, msg) }

var success = map[string]bool{"success": true}

// storeError maps a store failure: invalid input is the client's (400), a
// per-user limit 429, typing outside one's rooms 409, a closed or
// unreachable store is ours (503), never a 500 for bad input.
func (s *Server) storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrInvalid):
		return apiError(http.StatusBadRequest, err.Error())
	case errors.Is(err, store.ErrLimit):
		return apiError(http.StatusTooManyRequests, err.Error())
	case errors.Is(err, store.ErrNotMember):
		// Allowed by the token, but not in the room's current state: join first.
		return apiError(http.StatusConflict, err.Error())
	case errors.Is(err, context.Canceled):
		return apiError(499, "client went away")
	}
	s.log.Error("store call failed", "err", err)
	return apiError(http.StatusServiceUnavailable, "presence store unavailable")
}

func storeCtx(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), 5*time.Second)
}

// postPresence serves POST /api/presence: a heartbeat of one session, or
// its end (offline).
func (s *Server) postPresence(c echo.Context) error {
	data, err := readBody(c)
	if err != nil {
		return err
	}
	req, err := parsePresenceRequest(data)
	if err != nil {
		return apiError(http.StatusBadRequest, err.Error())
	}
	id := identity(c)
	if err := s.lim.presence(c, id.User.ID, req.SessionID, req.Status); err != nil {
		return err
	}
	ctx, cancel := storeCtx(c)
	defer cancel()
	if req.Status == store.StatusOffline {
		// The store keeps a tombstone of the session: no stream refresh,
		// on any node, brings it back; only the client itself can.
		if err := s.store.EndSession(ctx, id.User.ID, req.SessionID); err != nil {
			return s.storeError(err)
		}
		s.lim.presenceApplied(id.User.ID, req.SessionID, req.Status)
		return c.JSON(http.StatusOK, success)
	}
	err = s.store.Heartbeat(ctx, store.Heartbeat{User: id.User, SessionID: req.SessionID, Status: req.Status, Metadata: req.Metadata})
	if err != nil {
		return s.storeError(err)
	}
	s.m.heartbeats.WithLabelValues("api").Inc()
	s.keeper.SessionActive(id.User.ID, req.SessionID)
	s.lim.presenceApplied(id.User.ID, req.SessionID, req.Status)
	return c.JSON(http.StatusOK, success)
}

// getPresence serves GET /api/presence?userIds=a,b.
func (s *Server) getPresence(c echo.Context) error {
	ids, err := parseIDList(c.QueryParam("userIds"))
	if err != nil {
		return apiError(http.StatusBadRequest, err.Error())
	}
	ctx, cancel := storeCtx(c)
	defer cancel()
	v, err := s.viewerFor(ctx, identity(c))
	if err != nil {
		return s.storeError(err)
	}
	ps, err := s.store.Presence(ctx, ids)
	if err != nil {
		return s.storeError(err)
	}
	out := make(map[string]*presenceJSON, len(ids))
	for _, id := range ids {
		// A user the token may not see is shown as one never seen.
		if v.canSee(id) {
			out[id] = toPresence(id, ps[id])
		} else {
			out[id] = nil
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"presence": out})
}

// postRoom serves POST /api/presence/room/{roomId}: join or leave.
func (s *Server) postRoom(c echo.Context) error {
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	data, err := readBody(c)
	if err != nil {
		return err
	}
	a, err := parseRoomAction(data)
	if err != nil {
		return apiError(http.StatusBadRequest, err.Error())
	}
	id := identity(c)
	if err := s.lim.roomAction(c, id.User.ID, a.SessionID); err != nil {
		return err
	}
	ctx, cancel := storeCtx(c)
	defer cancel()
	if a.Join {
		err = s.store.Join(ctx, room, store.Heartbeat{User: id.User, SessionID: a.SessionID})
		if err == nil {
			s.m.heartbeats.WithLabelValues("api").Inc()
		}
	} else {
		err = s.store.Leave(ctx, room, id.User.ID, a.SessionID)
	}
	if err != nil {
		return s.storeError(err)
	}
	return c.JSON(http.StatusOK, success)
}

// getRoom serves GET /api/presence/room/{roomId}: the live members.
func (s *Server) getRoom(c echo.Context) error {
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	ctx, cancel := storeCtx(c)
	defer cancel()
	ms, err := s.store.Members(ctx, room)
	if err != nil {
		return s.storeError(err)
	}
	v, err := s.viewerFor(ctx, identity(c))
	if err != nil {
		return s.storeError(err)
	}
	ms = v.visibleMembers(ms)
	return c.JSON(http.StatusOK, map[string]any{"members": toMembers(ms), "count": len(ms)})
}

// postTyping serves POST /api/presence/room/{roomId}/typing.
func (s *Server) postTyping(c echo.Context) error {
	room, err := roomParam(c)
	if err != nil {
		return err
	}
	data, err := readBody(c)
	if err != nil {
		return err
	}
	typing, err := parseTyping(data)
	if err != nil {
		return apiError(http.StatusBadRequest, err.Error())
	}
	if err := s.lim.typingMark(c, identity(c).User.ID); err != nil {
		return err
	}
	ctx, cancel := storeCtx(c)
	defer cancel()
	if err := s.store.SetTyping(ctx, room, identity(c).User, typing); err != nil {
		return s.storeError(err)
	}
	return c.JSON(http.StatusOK, success)
}

// getTyping serves GET /api/presence/room/{roomId}/typing.
func (s *Server) getTyping(c echo.Context) error {
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
	return c.JSON(http.StatusOK, map[string]any{"typingUsers": toTypists(v.visibleTypists(ts))})
}
