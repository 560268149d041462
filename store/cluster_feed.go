package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The ClusterStore's change feed: one subscriber per partition, the
// barriers that start a subscription in every partition, keyspace-expiry
// notifications from every primary, and the state check.

// Subscribe implements Store. A barrier goes into every partition's log
// and channel; the subscription gets a partition's events from its barrier
// on, so that a snapshot read after Subscribe is never followed by an older
// event of any partition.
func (s *ClusterStore) Subscribe(ctx context.Context) (*Subscription, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	sub, err := s.feed.subscribeActive(ctx, false)
	if err != nil {
		return nil, err
	}
	token := randomToken()
	s.pendingMu.Lock()
	s.pending[token] = sub
	s.pendingMu.Unlock()
	calls := make([]*call, len(s.parts))
	for i := range s.parts {
		p := &s.parts[i]
		calls[i] = &call{sc: s.scripts.barrier, keys: []string{p.key("log")}, args: s.common(p, token)}
	}
	s.exec(ctx, calls, nil)
	for _, c := range calls {
		if err := c.cmd.Err(); err != nil {
			s.pendingMu.Lock()
			delete(s.pending, token)
			s.pendingMu.Unlock()
			sub.Close()
			return nil, fmt.Errorf("redis cluster subscribe barrier: %w", err)
		}
	}
	return sub, nil
}

// passBarrier starts partition p's events for the subscription waiting
// for token, if it is ours.
func (s *ClusterStore) passBarrier(token string, p int) {
	s.pendingMu.Lock()
	sub := s.pending[token]
	s.pendingMu.Unlock()
	if sub == nil {
		return
	}
	s.feed.activatePart(sub, p, len(s.parts))
	s.feed.mu.Lock()
	done := sub.active
	s.feed.mu.Unlock()
	if done {
		s.pendingMu.Lock()
		delete(s.pending, token)
		s.pendingMu.Unlock()
	}
}

// follow keeps partition p's channel subscribed on whichever shard owns
// it and turns its messages into feed events. It is the only goroutine
// that touches last, the id of p's newest log entry delivered. The shard
// ends a subscription itself (sunsubscribe) when the slot moves away;
// go-redis reconnects a dropped connection on its own, to the node it
// knew, so both end this subscription and start one afresh from the
// cluster's current slot map.
func (s *ClusterStore) follow(ctx context.Context, p *partition, last string) {
	defer s.wg.Done()
	for ctx.Err() == nil {
		last = s.followOnce(ctx, p, last)
		s.partSubbed[p.index].Store(false)
		if ctx.Err() != nil {
			return
		}
		_ = bounded(ctx, stateCheckTimeout, func(ctx context.Context) error { s.client.ReloadState(ctx); return nil })
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// followOnce runs one subscription of p's channel until it ends (the
// shard dropped it, or it stayed broken for a while) and returns last.
//
// The subscription is made on the node the slot map names as the slot's
// primary, through that node's own client, not through the cluster
// client's routing: go-redis would re-dial a dropped subscription by
// itself, to whatever node its slot map named at that moment. After a
// failover that can be the old primary restarting (it believes for a
// moment that it still owns its slots and takes the subscription), which
// then stays on as a replica that the partition's messages reach only
// part of the time: the cluster soak found two nodes' subscriptions there,
// missing some of the partition's events (the gaps that a message's "pv"
// now reveals, lib.lua's emit). Pinned, the node is known, and every
// health tick checks that it is still the slot's primary, both in the slot
// map and by its own ROLE.
func (s *ClusterStore) followOnce(ctx context.Context, p *partition, last string) string {
	var node *redis.Client
	if err := bounded(ctx, time.Second, func(ctx context.Context) error {
		var err error
		node, err = s.client.MasterForKey(ctx, p.channel)
		return err
	}); err != nil {
		s.log.Debug("presence: no primary known for a partition; retrying", "partition", p.index, "error", err)
		return last
	}
	addr := node.Options().Addr
	s.log.Debug("presence: subscribing a partition", "partition", p.index, "primary", addr, "last", last)
	ps := node.SSubscribe(ctx, p.channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(10000))
	health := time.NewTicker(time.Second)
	defer health.Stop()
	started := time.Now()
	probed := started // when this node's last probe came back through the channel
	for {
		var msg any
		select {
		case <-ctx.Done():
			return last
		case <-health.C:
			// A subscription sent to a node that no longer owns the slot
			// (a stale slot map) is refused and never confirmed, and a
			// connection that go-redis keeps redialling to a primary that
			// failed over stays broken: either way, start over from the
			// cluster's current slot map.
			if !s.partSubbed[p.index].Load() && time.Since(started) > 2*time.Second {
				s.log.Debug("presence: partition subscription not confirmed; resubscribing", "partition", p.index)
				return last
			}
			if err := bounded(ctx, time.Second, func(ctx context.Context) error { return ps.Ping(ctx) }); err != nil && ctx.Err() == nil {
				s.log.Debug("presence: partition subscription unhealthy; resubscribing", "partition", p.index, "error", err)
				return last
			}
			if why := s.stillPrimary(ctx, p, node); why != "" {
				s.log.Warn("presence: a partition's subscription is not on its primary; resubscribing", "partition", p.index,
					"node", addr, "why", why)
				return last
			}
			// The end-to-end check: go-redis redials a dropped connection
			// by itself, from the slot map it has then, and a subscription
			// it sends to a node that does not serve the slot is refused
			// without a word to us, while the connection stays up. So
			// every second a probe goes through the partition's channel;
			// if this node's probes stop coming back, subscribe afresh
			// (what was published meanwhile comes from the log).
			if s.partSubbed[p.index].Load() && time.Since(probed) > probeLoss {
				s.log.Warn("presence: partition subscription hears nothing; resubscribing", "partition", p.index)
				return last
			}
			_ = bounded(ctx, 500*time.Millisecond, func(ctx context.Context) error {
				return s.client.SPublish(ctx, p.channel, "probe "+s.probeToken).Err()
			})
			// The log is the truth, the channel its fast path: every second
			// the partition's log is read from last, through the current
			// slot map, so an event (or a subscription's barrier) that the
			// channel did not bring — a subscription on a node that thinks
			// it still owns the slot after a failover hears that node's
			// probes but not the new primary's events — arrives within
			// about a second anyway. Usually it reads nothing.
			if s.partSubbed[p.index].Load() {
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				from := last
				var err error
				last, err = s.readLog(rctx, p, last) // a failure: the next tick reads again
				cancel()
				if last != from || err != nil {
					s.log.Debug("presence: a partition's log brought what its channel did not", "partition", p.index,
						"from", from, "to", last, "error", err)
				}
			}
			continue
		case msg = <-ch:
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Channel != p.channel {
				continue
			}
			switch m.Kind {
			case "ssubscribe":
				probed = time.Now()
				// The state check runs on its own goroutine: during a
				// failover its calls to a primary that is gone can take
				// seconds, and this loop must go on delivering meanwhile.
				s.kickState()
				from := last
				last = s.catchUp(ctx, p, last)
				s.log.Debug("presence: partition subscribed", "partition", p.index, "caught_up_from", from, "to", last)
				s.partSubbed[p.index].Store(true)
				if !s.everSubbed[p.index].Swap(true) && s.subscribed.Add(1) == int32(len(s.parts)) {
					s.firstOnce.Do(func() { close(s.firstSub) })
				}
			case "sunsubscribe":
				s.log.Debug("presence: partition unsubscribed by its shard", "partition", p.index)
				return last // the slot moved: subscribe again where it lives now
			}
		case *redis.Message:
			if m.Channel != p.channel {
				continue
			}
			id, payload, ok := strings.Cut(m.Payload, " ")
			if id == "probe" {
				if payload == s.probeToken {
					probed = time.Now()
				}
				continue
			}
			if !ok || compareStreamIDs(id, last) <= 0 {
				continue // malformed, or already delivered by a catch-up
			}
			if prev, ok := channelPrev(payload); ok && prev != last {
				// Entries between last and this one did not come through
				// the channel: read them from the log, this one with them,
				// in order. On a failure the next tick's read brings them.
				from := last
				rctx, cancel := context.WithTimeout(ctx, time.Second)
				last, _ = s.readLog(rctx, p, last)
				cancel()
				s.log.Debug("presence: a gap in a partition's channel; read from its log", "partition", p.index,
					"from", from, "to", last, "message", id, "after", prev)
				continue
			}
			last = id
			s.deliver(p.index, payload)
		}
	}
}

// channelPrev is the id of the log entry before a channel message's own
// (the "pv" field emit puts first in the channel's payload), if it has one.
func channelPrev(payload string) (string, bool) {
	rest, ok := strings.CutPrefix(payload, `{"pv":"`)
	if !ok {
		return "", false
	}
	prev, _, ok := strings.Cut(rest, `"`)
	return prev, ok
}

// stillPrimary checks that node, where p's channel is subscribed, is the
// slot's primary: the one the (reloaded every second) slot map names, and
// a master by its own account. It returns why not, or "" (also when the
// check could not be made: the ping and the probes judge a node that does
// not answer).
func (s *ClusterStore) stillPrimary(ctx context.Context, p *partition, node *redis.Client) string {
	var why string
	_ = bounded(ctx, time.Second, func(ctx context.Context) error {
		if cur, err := s.client.MasterForKey(ctx, p.channel); err == nil && cur.Options().Addr != node.Options().Addr {
			why = "the slot map names " + cur.Options().Addr
			return nil
		}
		role, err := node.Do(ctx, "ROLE").Slice()
		if err == nil && len(role) > 0 && role[0] != "master" {
			why = fmt.Sprintf("it is a %v now", role[0])
		}
		return nil
	})
	return why
}

// readLog delivers p's log entries after last and returns the new last
// id (with the error that stopped it, if any).
func (s *ClusterStore) readLog(ctx context.Context, p *partition, last string) (string, error) {
	for {
		msgs, err := s.client.XRangeN(ctx, p.key("log"), "("+last, "+", 1000).Result()
		if err != nil {
			return last, err
		}
		for _, m := range msgs {
			last = m.ID
			if e, ok := m.Values["e"].(string); ok {
				s.deliver(p.index, e)
			}
		}
		if len(msgs) < 1000 {
			return last, nil
		}
	}
}

// catchUpTimeout bounds a partition's catch-up, and stateCheckTimeout one
// state check: a call to a primary that just died may otherwise wait for
// go-redis's dial timeouts and retries.
const (
	catchUpTimeout    = 5 * time.Second
	stateCheckTimeout = 2 * time.Second
)

// probeLoss is how long a partition subscription may hear none of its
// node's own probes (one a second) before it is made again.
const probeLoss = 3500 * time.Millisecond

// bounded runs f with a context that ends after d: the partition loops
// must not wait on a primary that is gone for longer than that.
func bounded(ctx context.Context, d time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return f(ctx)
}

// catchUp delivers p's log entries after last and returns the new last id.
// It gives up after catchUpTimeout (a shard that stopped answering) with a
// resync, as on any failure to read the log.
func (s *ClusterStore) catchUp(ctx context.Context, p *partition, last string) string {
	ctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	resync := func(why string, err error) string {
		s.log.Warn("presence: "+why+"; announcing a resync", "partition", p.index, "error", err)
		s.feed.publish(Event{Kind: EventResync, At: time.Now()})
		return last
	}
	oldest, err := s.client.XRangeN(ctx, p.key("log"), "-", "+", 1).Result()
	if err != nil {
		return resync("reading a partition's event log after resubscribe failed", err)
	}
	if len(oldest) > 0 && last != "0-0" && compareStreamIDs(oldest[0].ID, last) > 0 {
		s.feed.publish(Event{Kind: EventResync, At: time.Now()})
	}
	last, err = s.readLog(ctx, p, last)
	if err != nil {
		return resync("partition event log catch-up failed", err)
	}
	return last
}

func (s *ClusterStore) deliver(part int, payload string) {
	var w wireEvent
	if err := json.Unmarshal([]byte(payload), &w); err != nil {
		s.log.Error("presence: undecodable event", "error", err, "payload", payload)
		return
	}
	if w.K == "barrier" {
		s.passBarrier(w.B, part)
		return
	}
	e, err := w.event()
	if err != nil {
		s.log.Error("presence: undecodable event", "error", err, "payload", payload)
		return
	}
	s.feed.publishFrom(part, e)
}

// enableExpiryEvents adds "Ex" to notify-keyspace-events on every node,
// replicas too (a promoted replica must have it). Refusals are logged once:
// the sweeper makes expiry work without notifications.
func (s *ClusterStore) enableExpiryEvents(ctx context.Context) {
	var once sync.Once
	_ = s.client.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
		cur, err := c.ConfigGet(ctx, "notify-keyspace-events").Result()
		flags := cur["notify-keyspace-events"]
		if err == nil && strings.ContainsRune(flags, 'E') &&
			(strings.ContainsRune(flags, 'x') || strings.ContainsRune(flags, 'A')) {
			return nil
		}
		if err == nil {
			want := flags
			if !strings.ContainsRune(flags, 'E') {
				want += "E"
			}
			if !strings.ContainsRune(flags, 'x') && !strings.ContainsRune(flags, 'A') {
				want += "x"
			}
			err = c.ConfigSet(ctx, "notify-keyspace-events", want).Err()
		}
		if err != nil {
			once.Do(func() {
				s.log.Warn("redis keyspace expiry notifications are off on a cluster node and could not be enabled; "+
					"sessions still expire through the deadline sweeper. Set notify-keyspace-events to include \"Ex\" on every node",
					"node", c.Options().Addr, "error", err)
			})
		}
		return nil
	})
}

// watchExpiries keeps one keyspace-expiry subscription on every primary
// (notifications are node-local), following the topology: every
// stateCheckInterval the primaries are listed again, new ones subscribed,
// gone ones dropped.
func (s *ClusterStore) watchExpiries(ctx context.Context) {
	defer s.wg.Done()
	subs := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer func() {
		for _, cancel := range subs {
			cancel()
		}
		wg.Wait()
	}()
	t := time.NewTicker(s.stateCheckInterval())
	defer t.Stop()
	for {
		var mu sync.Mutex
		seen := map[string]*redis.Client{}
		_ = s.client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			mu.Lock()
			seen[c.Options().Addr] = c
			mu.Unlock()
			return nil
		})
		for addr, c := range seen {
			if _, ok := subs[addr]; ok {
				continue
			}
			sctx, cancel := context.WithCancel(ctx)
			subs[addr] = cancel
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.expiriesFrom(sctx, c)
			}()
		}
		for addr, cancel := range subs {
			if _, ok := seen[addr]; !ok && len(seen) > 0 {
				cancel()
				delete(subs, addr)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// expiriesFrom forwards one primary's expired session TTL keys to the
// reaper.
func (s *ClusterStore) expiriesFrom(ctx context.Context, c *redis.Client) {
	ps := c.Subscribe(ctx, s.expiredCh)
	defer ps.Close()
	ch := ps.Channel(redis.WithChannelSize(10000))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			if uid, sid, ok := s.parseTTLKey(m.Payload); ok {
				select {
				case s.reaps <- [2]string{uid, sid}:
				default: // the sweeper gets it within one interval
				}
			}
		}
	}
}

// parseTTLKey extracts (user, session) from "P{tag}u/USER/ttl/SESSION".
func (s *ClusterStore) parseTTLKey(key string) (string, string, bool) {
	rest, ok := strings.CutPrefix(key, s.opts.KeyPrefix+"{")
	if !ok {
		return "", "", false
	}
	_, rest, ok = strings.Cut(rest, "}u/")
	if !ok {
		return "", "", false
	}
	uid, sid, ok := strings.Cut(rest, "/ttl/")
	if !ok || !ValidUserID(uid) || !ValidSessionID(sid) {
		return "", "", false
	}
	return uid, sid, true
}

// reapExpired reaps the sessions whose TTL key a primary just expired,
// in batches of whatever has queued up.
func (s *ClusterStore) reapExpired(ctx context.Context) {
	defer s.wg.Done()
	reapLoop(ctx, s.reaps, func(batch [][2]string) {
		if _, err := s.endSessions(ctx, batch, "reap"); err != nil && ctx.Err() == nil {
			s.log.Debug("presence: reaping expired sessions failed; the sweeper will retry", "error", err)
		}
	})
}

// stateCheckInterval is how often the node asks the cluster whether it
// still holds the state the node knew (as RedisStore's).
func (s *ClusterStore) stateCheckInterval() time.Duration {
	return stateCheckEvery(s.opts.SweepInterval)
}

// watchState checks the state every stateCheckInterval and whenever a
// partition resubscribed (kickState).
func (s *ClusterStore) watchState(ctx context.Context) {
	defer s.wg.Done()
	watchStateLoop(ctx, s.stateCheckInterval(), s.stateKick, s.checkState, s.log)
}

// kickState asks watchState for a state check now (never blocks: one
// pending request covers any number).
func (s *ClusterStore) kickState() {
	select {
	case s.stateKick <- struct{}{}:
	default:
	}
}

// checkState compares every partition's epoch token, and the run_id of
// the primary of every partition's slot, with what this node saw last. A
// missing or changed token (that shard lost or flushed its data) or a
// changed run_id (a restart or a failover: the last writes may be lost) is
// a state loss: the node re-enables notifications and sends EventResync on
// every subscription. The first call only records what it finds.
func (s *ClusterStore) checkState(ctx context.Context) (bool, error) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, stateCheckTimeout)
	defer cancel()
	pipe := s.client.Pipeline()
	gets := make([]*redis.StringCmd, len(s.parts))
	for i := range s.parts {
		gets[i] = pipe.Get(ctx, s.parts[i].key("epoch"))
	}
	_, _ = pipe.Exec(ctx)
	var missing []int
	epochs := make([]string, len(s.parts))
	for i, g := range gets {
		v, err := g.Result()
		switch {
		case errors.Is(err, redis.Nil):
			missing = append(missing, i)
		case err != nil:
			return false, err
		default:
			epochs[i] = v
		}
	}
	if len(missing) > 0 {
		pipe := s.client.Pipeline()
		for _, i := range missing {
			pipe.SetNX(ctx, s.parts[i].key("epoch"), randomToken(), 0)
			gets[i] = pipe.Get(ctx, s.parts[i].key("epoch"))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return false, err
		}
		for _, i := range missing {
			epochs[i] = gets[i].Val()
		}
	}
	var mu sync.Mutex
	runIDs := map[string]string{}
	_ = s.client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		info, err := c.Info(ctx, "server").Result()
		if err == nil {
			mu.Lock()
			runIDs[c.Options().Addr] = infoField(info, "run_id")
			mu.Unlock()
		}
		return nil
	})
	first := len(s.runIDs) == 0 && s.epochs[0] == ""
	lost := false
	for i := range epochs {
		if !first && epochs[i] != s.epochs[i] {
			lost = true
		}
	}
	for addr, id := range runIDs {
		if old, ok := s.runIDs[addr]; ok && old != id {
			lost = true // the same address restarted
		}
	}
	// A primary that is new at an address the node did not know is a
	// failover or a reshard: writes acknowledged by the old primary may be
	// missing, so it counts as a loss too.
	if !first {
		for addr := range runIDs {
			if _, ok := s.runIDs[addr]; !ok {
				lost = true
			}
		}
	}
	s.epochs = epochs
	for addr, id := range runIDs {
		s.runIDs[addr] = id // a primary unreachable this time keeps what it had
	}
	if lost {
		s.log.Warn("presence: Redis Cluster lost or may have lost state (restart, failover or flush); announcing a resync")
		s.enableExpiryEvents(ctx)
		s.pendingMu.Lock()
		waiting := make([]*Subscription, 0, len(s.pending))
		for token, sub := range s.pending {
			waiting = append(waiting, sub)
			delete(s.pending, token)
		}
		s.pendingMu.Unlock()
		for _, sub := range waiting {
			s.feed.activate(sub)
		}
		s.feed.publish(Event{Kind: EventResync, At: time.Now()})
	}
	return lost, nil
}
