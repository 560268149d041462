package store

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// sweep reaps, every SweepInterval, whatever is due in every partition:
// one due.lua call per partition lists it (one pipelined round trip for
// all), then each entry is reaped by its own call, which checks again that
// it is due (sweepers on every node race for the same entries; exactly one
// makes each transition).
func (s *ClusterStore) sweep(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for range 100 { // at most 100 full batches per tick, then yield
			full, err := s.sweepOnce(ctx)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("presence: cluster sweep failed", "error", err)
				}
				break
			}
			if !full {
				break
			}
		}
	}
}

// sweepOnce reaps one batch of due entries of every partition and reports
// whether some index had a full batch (more may be due).
func (s *ClusterStore) sweepOnce(ctx context.Context) (bool, error) {
	lists := make([]*call, len(s.parts))
	for i := range s.parts {
		p := &s.parts[i]
		lists[i] = &call{sc: s.scripts.due, keys: []string{p.key("deadlines"), p.key("mdl"), p.key("tdl")},
			args: []any{sweepLimit}}
	}
	s.exec(ctx, lists, nil)
	full := false
	type member struct{ room, uid, sid string }
	var sessions [][2]string
	var memberships []member
	var typing []*call
	var firstErr error
	for _, l := range lists {
		res, err := l.cmd.Slice()
		if err != nil || len(res) < 3 {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for k, list := range res[:3] {
			entries, _ := list.([]any)
			if len(entries) >= sweepLimit {
				full = true
			}
			for _, e := range entries {
				str, _ := e.(string)
				f := strings.Split(str, " ")
				switch {
				case k == 0 && len(f) == 2:
					sessions = append(sessions, [2]string{f[0], f[1]})
				case k == 1 && len(f) == 3:
					memberships = append(memberships, member{f[0], f[1], f[2]})
				case k == 2 && len(f) == 2:
					typing = append(typing, s.typingCall(f[0], f[1], "", "reap"))
				}
			}
		}
	}
	s.exec(ctx, typing, nil)
	ended, err := s.endSessions(ctx, sessions, "reap")
	if err != nil && firstErr == nil {
		firstErr = err
	}
	if len(memberships) > 0 {
		// A session reaped just now has left its rooms (endSessions): its
		// memberships listed due with it need no reap of their own. Only
		// those: a session that was not reaped (not due after all, or its
		// shard did not answer) leaves its memberships to their own reap,
		// and a membership a failed leave left behind is still indexed and
		// due, so the next sweep reaps it.
		gone := make(map[[2]string]bool, len(sessions))
		for i, sess := range sessions {
			if ended[i] {
				gone[sess] = true
			}
		}
		kept := memberships[:0]
		for _, m := range memberships {
			if !gone[[2]string{m.uid, m.sid}] {
				kept = append(kept, m)
			}
		}
		memberships = kept
	}
	if len(memberships) > 0 {
		// A membership's leave event says the user's status: read it first
		// (a user whose session ended at the same deadline is offline).
		pipe := s.client.Pipeline()
		reads := make([]*redis.SliceCmd, len(memberships))
		for i, m := range memberships {
			reads[i] = pipe.HMGet(ctx, partOf(s.parts, m.uid).user(m.uid, "user"), "st", "name", "avatar")
		}
		_, _ = pipe.Exec(ctx)
		leaves := make([]*call, len(memberships))
		for i, m := range memberships {
			v := reads[i].Val()
			st, name, avatar := string(StatusOffline), "", ""
			if len(v) == 3 {
				if x := str(v[0]); x != "" {
					st = x
				}
				name, avatar = str(v[1]), str(v[2])
			}
			leaves[i] = s.roomLeaveCall(m.room, m.uid, m.sid, "reap", st, name, avatar, 0)
		}
		s.exec(ctx, leaves, nil)
		// A held membership that ended leaves the session's record too (an
		// API-joined one is kept there: its session is gone, or its next
		// heartbeat makes the membership again).
		var forget []*call
		for i, m := range memberships {
			res, err := leaves[i].cmd.Slice()
			if err != nil || len(res) < 2 {
				continue
			}
			if kind, _ := res[1].(string); kind == "~" {
				p := partOf(s.parts, m.uid)
				forget = append(forget, &call{sc: s.scripts.userLeave,
					keys: []string{p.user(m.uid, "user"), p.user(m.uid, "sess")}, args: []any{m.sid, m.room, "held"}})
			}
		}
		s.exec(ctx, forget, nil)
	}
	return full, firstErr
}
