package store

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
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
	type member struct {
		room, uid, sid string
		deadline       int64
	}
	var sessions [][2]string
	var memberships []member
	var typing []*call
	var firstErr error
	for _, l := range lists {
		res, err := l.cmd.Slice()
		if err != nil || len(res) < 3 {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		for k, list := range res[:3] {
			entries, _ := list.([]any)
			if k == 1 && len(entries) >= 2*sweepLimit || k != 1 && len(entries) >= sweepLimit {
				full = true
			}
			for j, e := range entries {
				str, _ := e.(string)
				f := strings.Split(str, " ")
				switch {
				case k == 0 && len(f) == 2:
					sessions = append(sessions, [2]string{f[0], f[1]})
				case k == 1 && j%2 == 0 && len(f) == 3 && j+1 < len(entries):
					dl, _ := strconv.ParseInt(fmt.Sprint(entries[j+1]), 10, 64)
					memberships = append(memberships, member{f[0], f[1], f[2], dl})
				case k == 2 && len(f) == 2:
					typing = append(typing, s.typingCall(f[0], f[1], "", "reap"))
				}
			}
		}
	}
	s.exec(ctx, typing, nil)
	if len(memberships) > 0 {
		// A membership due no earlier than its session is the session's
		// to end: the session is reaped first (it leaves its rooms as
		// offline), not the membership alone, which would show the user
		// leaving while still online. Shards sweep at slightly different
		// moments, so the session may not be in this batch yet.
		pipe := s.client.Pipeline()
		scores := make([]*redis.FloatCmd, len(memberships))
		for i, m := range memberships {
			scores[i] = pipe.ZScore(ctx, partOf(s.parts, m.uid).key("deadlines"), m.uid+" "+m.sid)
		}
		_, _ = pipe.Exec(ctx)
		seen := map[[2]string]bool{}
		for _, us := range sessions {
			seen[us] = true
		}
		for i, m := range memberships {
			if d, err := scores[i].Result(); err == nil && int64(d) <= m.deadline && !seen[[2]string{m.uid, m.sid}] {
				seen[[2]string{m.uid, m.sid}] = true
				sessions = append(sessions, [2]string{m.uid, m.sid})
			}
		}
	}
	if len(sessions) > 0 {
		ended, err := s.endSessions(ctx, sessions, "reap")
		firstErr = cmp.Or(firstErr, err)
		// A session ended just now has left its rooms: its memberships need
		// no reap of their own. One whose leave failed is still indexed
		// and due: this or the next sweep reaps it.
		kept := memberships[:0]
		for _, m := range memberships {
			if !ended[[2]string{m.uid, m.sid}] {
				kept = append(kept, m)
			}
		}
		memberships = kept
	}
	if len(memberships) > 0 {
		// A membership's leave event says the user's status: read it now
		// (after the sessions above ended).
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
			leaves[i] = s.roomLeaveCall(m.room, m.uid, m.sid, "reap", st, name, avatar, 0, "")
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
