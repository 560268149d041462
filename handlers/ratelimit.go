package handlers

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presenced/presenced/internal/ratelimit"
	"github.com/presenced/presenced/store"
)

// The per-session rate limits (README "Limits"). Each is a token bucket:
// Burst requests at once, then Rate a second. presence.js stays far below
// them: it heartbeats every 30 s (and on a status change), sends a typing
// mark at most every 2 s per room, and joins rooms through its stream.
var (
	// HeartbeatRule limits POST /api/presence per (user, session), whatever
	// the status.
	HeartbeatRule = ratelimit.Rule{Burst: 20, Rate: 5}
	// StatusRule limits status changes per (user, session): a POST whose
	// status differs from the one this session last reported here.
	StatusRule = ratelimit.Rule{Burst: 10, Rate: 1}
	// RoomRule limits POST /api/presence/room/{roomId} (join or leave) per
	// (user, session).
	RoomRule = ratelimit.Rule{Burst: 20, Rate: 2}
	// TypingRule limits POST /api/presence/room/{roomId}/typing per user (a
	// typing mark names no session).
	TypingRule = ratelimit.Rule{Burst: 20, Rate: 5}
)

// rateLimitKeys bounds each limiter's buckets (about 100 B each); idle
// buckets are forgotten long before that in normal use.
const rateLimitKeys = 100_000

// limits are the gateway's limiters; nil limiters (--rate-limit=false)
// allow everything.
type limits struct {
	heartbeat, status, room, typing *ratelimit.Limiter
	refused                         *prometheus.CounterVec
}

func newLimits(on bool, now func() time.Time, reg *prometheus.Registry) *limits {
	l := &limits{refused: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presenced_rate_limited_total",
		Help: "Requests refused with 429 by a per-session rate limit, by kind (heartbeat, status, room, typing).",
	}, []string{"kind"})}
	if reg != nil {
		reg.MustRegister(l.refused)
	}
	if on {
		l.heartbeat = ratelimit.New(HeartbeatRule, rateLimitKeys, now)
		l.status = ratelimit.New(StatusRule, rateLimitKeys, now)
		l.room = ratelimit.New(RoomRule, rateLimitKeys, now)
		l.typing = ratelimit.New(TypingRule, rateLimitKeys, now)
	}
	return l
}

func sessionKey(user, sid string) string { return user + "\x00" + sid }

// take takes a token from key's bucket in lim, or answers 429 with
// Retry-After (whole seconds, at least 1) and a JSON error saying which
// limit it was.
func (l *limits) take(c echo.Context, lim *ratelimit.Limiter, kind, what, key string) error {
	if lim == nil {
		return nil
	}
	ok, retry := lim.Allow(key)
	if ok {
		return nil
	}
	l.refused.WithLabelValues(kind).Inc()
	secs := ratelimit.RetryAfterSeconds(retry)
	c.Response().Header().Set("Retry-After", strconv.Itoa(secs))
	r := lim.Rule()
	return apiError(http.StatusTooManyRequests, fmt.Sprintf("too many %s: at most %d at once, then %s a second; retry in %d s",
		what, r.Burst, strconv.FormatFloat(r.Rate, 'f', -1, 64), secs))
}

// presence checks a POST /api/presence of status for one session: the
// heartbeat limit always, the status-change limit when status differs from
// what the session last reported.
func (l *limits) presence(c echo.Context, user, sid string, st store.Status) error {
	key := sessionKey(user, sid)
	if l.status != nil && l.status.Note(key) != string(st) && st != store.StatusOffline {
		if err := l.take(c, l.status, "status", "status changes for this session", key); err != nil {
			return err
		}
	}
	return l.take(c, l.heartbeat, "heartbeat", "heartbeats for this session", key)
}

// presenceApplied records the status a session now has.
func (l *limits) presenceApplied(user, sid string, st store.Status) {
	if l.status != nil {
		l.status.SetNote(sessionKey(user, sid), string(st))
	}
}

// roomAction checks a join or leave of one session.
func (l *limits) roomAction(c echo.Context, user, sid string) error {
	return l.take(c, l.room, "room", "room joins and leaves for this session", sessionKey(user, sid))
}

// typingMark checks a typing mark of one user.
func (l *limits) typingMark(c echo.Context, user string) error {
	return l.take(c, l.typing, "typing", "typing marks for this user", user)
}
