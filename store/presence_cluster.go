package store

import (
	"cmp"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// ClusterStore keeps presence in a sharded Redis Cluster (Redis 7: sharded
// pub/sub). Users and rooms are spread over ClusterPartitions partitions,
// each one hash slot (cluster_partitions.go), and every script call touches
// one partition only, with every key it touches in KEYS
// (store/lua/cluster/lib.lua has the layout):
//   - a user's sessions, in the user's partition, are the truth of their
//     liveness and status;
//   - a room's memberships, in the room's partition, each have their own
//     deadline: a stream-held one the stream's hold, an API join the
//     session's ttl, refreshed by the session's heartbeats. A session's end
//     is carried to its rooms by follow-up calls from the node that made it;
//     a node that dies in between leaves nothing behind for longer than the
//     memberships' own deadlines, which that partition's sweeper enforces;
//   - each partition has its own deadline indexes, event log and shard
//     channel. Events about one user, and about one room, are in order;
//     between a user's status and a room's joins and leaves there is none
//     (they are in different partitions).
//
// Each node subscribes to every partition's channel (SSUBSCRIBE, on the
// shard that owns it, followed when the slot moves or fails over) and to
// keyspace-expiry notifications on every primary; sweeps every partition's
// indexes every SweepInterval; and after each (re)subscription reads the
// partition's log from the last event it saw.
type ClusterStore struct {
	client  *redis.ClusterClient
	opts    Options
	log     *slog.Logger
	feed    *feed
	parts   []partition
	scripts clusterScripts

	expiredCh  string
	subscribed atomic.Int32 // partitions whose channel was subscribed at least once
	firstSub   chan struct{}
	firstOnce  sync.Once
	partSubbed []atomic.Bool // per partition: subscribed right now
	everSubbed []atomic.Bool // per partition: subscribed at least once (counted in subscribed)
	isClosed   atomic.Bool
	reaps      chan [2]string
	lastReload atomic.Int64 // unix ns of the last slot map reload exec asked for
	ops        opQueue      // concurrent Heartbeat and Join calls, sent together
	probeToken string       // this node's probes through the partition channels (cluster_feed.go)

	pendingMu sync.Mutex
	pending   map[string]*Subscription // barrier token → subscription waiting for its barriers

	stateMu   sync.Mutex
	stateKick chan struct{}     // a partition resubscribed: check the state now
	runIDs    map[string]string // primary address → run_id when last checked
	epochs    []string          // per partition: its epoch token when last checked

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	errs   *redisErrors

	// The scripts as a FUNCTION library (cluster_functions.go): its source,
	// each script's function name, and whether it is in use.
	bodies    []luaBody
	fnOf      map[*redis.Script]string
	library   string
	functions atomic.Bool
	loading   sync.Mutex // one background reload at a time
}

var _ Store = (*ClusterStore)(nil)

var (
	//go:embed lua/cluster/lib.lua
	luaCLib string
	//go:embed lua/cluster/user_refresh.lua
	luaCUserRefresh string
	//go:embed lua/cluster/user_heartbeat.lua
	luaCUserHeartbeat string
	//go:embed lua/cluster/user_end.lua
	luaCUserEnd string
	//go:embed lua/cluster/user_leave.lua
	luaCUserLeave string
	//go:embed lua/cluster/room_refresh.lua
	luaCRoomRefresh string
	//go:embed lua/cluster/room_join.lua
	luaCRoomJoin string
	//go:embed lua/cluster/room_leave.lua
	luaCRoomLeave string
	//go:embed lua/cluster/room_detach.lua
	luaCRoomDetach string
	//go:embed lua/cluster/typing.lua
	luaCTyping string
	//go:embed lua/cluster/due.lua
	luaCDue string
	//go:embed lua/cluster/barrier.lua
	luaCBarrier string
)

type clusterScripts struct {
	userRefresh, userHeartbeat, userEnd, userLeave            *redis.Script
	roomRefresh, roomJoin, roomLeave, roomDetach, typing, due *redis.Script
	barrier, typingRead                                       *redis.Script
}

// ClusterScheme is the --redis-url scheme of a Redis Cluster (rediss+cluster
// for TLS): the seeds are the URL's host and each addr parameter, the rest
// is go-redis's cluster URL (user, password, timeouts):
//
//	redis+cluster://[[user]:password@]host:port[?addr=host2:port2&addr=…]
const ClusterScheme = "redis+cluster"

// IsClusterURL reports whether a --redis-url names a Redis Cluster.
func IsClusterURL(u string) bool {
	return strings.HasPrefix(u, ClusterScheme+"://") || strings.HasPrefix(u, "rediss+cluster://")
}

func parseClusterURL(u string) (*redis.ClusterOptions, error) {
	switch {
	case strings.HasPrefix(u, ClusterScheme+"://"):
		u = "redis://" + strings.TrimPrefix(u, ClusterScheme+"://")
	case strings.HasPrefix(u, "rediss+cluster://"):
		u = "rediss://" + strings.TrimPrefix(u, "rediss+cluster://")
	default:
		return nil, fmt.Errorf("cluster url: want %s:// or rediss+cluster://", ClusterScheme)
	}
	return redis.ParseClusterURL(u)
}

// clusterEvalOnly makes NewCluster skip the FUNCTION library (tests run
// the EVALSHA path on a server that has FUNCTION).
var clusterEvalOnly atomic.Bool

// OpenRedis opens the Redis backend a --redis-url names: a ClusterStore for
// redis+cluster:// (rediss+cluster://), else a RedisStore (redis://,
// rediss://, redis+sentinel://).
func OpenRedis(ctx context.Context, redisURL string, opts Options, log *slog.Logger) (Store, error) {
	if IsClusterURL(redisURL) {
		return NewCluster(ctx, redisURL, opts, log)
	}
	return NewRedis(ctx, redisURL, opts, log)
}

// NewCluster connects to the Redis Cluster redisURL names (ClusterScheme),
// enables keyspace-expiry notifications on every node that allows it, and
// starts the node's background work: one subscriber per partition, the
// keyspace-event subscribers (one per primary, following the topology), the
// sweeper and the state check. It returns once every partition's channel
// is subscribed (or ctx, at most 10 s, runs out).
func NewCluster(ctx context.Context, redisURL string, opts Options, log *slog.Logger) (*ClusterStore, error) {
	copts, err := parseClusterURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if strings.ContainsAny(opts.KeyPrefix, "{}") {
		// A brace in the prefix would become the keys' hash tag and put
		// every partition into one slot.
		return nil, fmt.Errorf("redis cluster: key prefix %q: no { or } allowed", opts.KeyPrefix)
	}
	if log == nil {
		log = slog.Default()
	}
	opts = opts.withDefaults()
	if copts.ClusterStateReloadInterval == 0 {
		// go-redis reloads its slot map every 60 s by default and not after
		// a connection error: a failover would go unnoticed that long.
		// exec also reloads it at once on the errors a moved or failed
		// primary causes.
		copts.ClusterStateReloadInterval = time.Second
	}
	s := &ClusterStore{
		client:     redis.NewClusterClient(copts),
		opts:       opts,
		log:        log,
		feed:       newFeed(opts.FeedBuffer),
		parts:      newPartitions(opts.KeyPrefix, ClusterPartitions),
		expiredCh:  "__keyevent@0__:expired",
		firstSub:   make(chan struct{}),
		partSubbed: make([]atomic.Bool, ClusterPartitions),
		everSubbed: make([]atomic.Bool, ClusterPartitions),
		reaps:      make(chan [2]string, 4096),
		pending:    make(map[string]*Subscription),
		runIDs:     make(map[string]string),
		epochs:     make([]string, ClusterPartitions),
		probeToken: randomToken(),
		stateKick:  make(chan struct{}, 1),
	}
	s.fnOf = map[*redis.Script]string{}
	s.scripts = clusterScripts{
		userRefresh:   s.newClusterScript("user_refresh", luaCUserRefresh, false),
		userHeartbeat: s.newClusterScript("user_heartbeat", luaCUserHeartbeat, true),
		userEnd:       s.newClusterScript("user_end", luaCUserEnd, true),
		userLeave:     s.newClusterScript("user_leave", luaCUserLeave, false),
		roomRefresh:   s.newClusterScript("room_refresh", luaCRoomRefresh, false),
		roomJoin:      s.newClusterScript("room_join", luaCRoomJoin, true),
		roomLeave:     s.newClusterScript("room_leave", luaCRoomLeave, true),
		roomDetach:    s.newClusterScript("room_detach", luaCRoomDetach, false),
		typing:        s.newClusterScript("typing", luaCTyping, true),
		due:           s.newClusterScript("due", luaCDue, false),
		barrier:       s.newClusterScript("barrier", luaCBarrier, true),
		typingRead:    s.newClusterScript("typing_read", luaTypingRead, false),
	}
	s.buildLibrary()
	s.errs = newRedisErrors()
	s.client.AddHook(s.errs)
	fail := func(what string, err error) (*ClusterStore, error) {
		s.client.Close()
		return nil, fmt.Errorf("redis cluster %s: %w", what, err)
	}
	if err := s.client.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.Ping(ctx).Err()
	}); err != nil {
		return fail("ping", err)
	}
	s.enableExpiryEvents(ctx)
	if clusterEvalOnly.Load() {
		s.log.Debug("presence: cluster scripts as EVALSHA (test)")
	} else if err := s.loadFunctions(ctx); err != nil {
		s.log.Warn("presence: the cluster refused FUNCTION LOAD; running the scripts with EVALSHA", "error", err)
	} else {
		s.functions.Store(true)
	}
	if _, err := s.checkState(ctx); err != nil {
		return fail("state check", err)
	}
	// Each partition's log position this node starts from.
	last := make([]string, len(s.parts))
	for i := range s.parts {
		last[i] = "0-0"
		msgs, err := s.client.XRevRangeN(ctx, s.parts[i].key("log"), "+", "-", 1).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fail("event log", err)
		}
		if len(msgs) > 0 {
			last[i] = msgs[0].ID
		}
	}

	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(len(s.parts) + 4)
	for i := range s.parts {
		go s.follow(bg, &s.parts[i], last[i])
	}
	go s.watchExpiries(bg)
	go s.reapExpired(bg)
	go s.sweep(bg)
	go s.watchState(bg)
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	select {
	case <-s.firstSub:
	case <-wctx.Done():
		s.log.Warn("presence: Redis Cluster change feed not subscribed on every partition yet; /readyz says so until it is")
	}
	return s, nil
}

// Collector is the store's Prometheus metrics (Redis errors by command).
func (s *ClusterStore) Collector() prometheus.Collector { return s.errs.errs }

func (s *ClusterStore) closed() bool { return s.isClosed.Load() }

// common is every emitting script's ARGV[1..3] for partition p.
func (s *ClusterStore) common(p *partition, args ...any) []any {
	all := make([]any, 0, 3+len(args))
	all = append(all, p.channel, s.opts.LastSeenRetention.Milliseconds(), logMaxLen)
	return append(all, args...)
}

// call is one script call of a pipelined round trip.
type call struct {
	sc   *redis.Script
	keys []string
	args []any
	cmd  *redis.Cmd
	n    int // items, for the scripts that take several (refreshes)
}

// exec runs calls in one pipelined round trip (go-redis splits it per
// shard). A call refused with NOSCRIPT (a node that restarted, or a
// replica just promoted, lacks the script) is sent again with its body.
func (s *ClusterStore) exec(ctx context.Context, calls []*call, more func(redis.Pipeliner)) {
	if len(calls) == 0 && more == nil {
		return
	}
	pipe := s.client.Pipeline()
	if more != nil {
		more(pipe)
	}
	for _, c := range calls {
		c.cmd = s.evalOn(ctx, pipe, c)
	}
	_, _ = pipe.Exec(ctx) // errors are per command
	var again []*call
	for _, c := range calls {
		err := c.cmd.Err()
		switch {
		case err == nil, errors.Is(err, redis.Nil):
		case isScriptMissing(err):
			again = append(again, c)
			s.reloadFunctions()
		case !isReply(err):
			s.reloadSlots() // a connection error: the primary may have failed over
		case redis.HasErrorPrefix(err, "CLUSTERDOWN"), redis.HasErrorPrefix(err, "MOVED"):
			s.reloadSlots()
		}
	}
	if len(again) == 0 {
		return
	}
	pipe = s.client.Pipeline()
	for _, c := range again {
		c.cmd = c.sc.Eval(ctx, pipe, c.keys, c.args...)
	}
	_, _ = pipe.Exec(ctx)
}

// isReply reports whether err is a reply of the server (a refusal) rather
// than a failure to reach it.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// reloadSlots reloads the cluster's slot map in the background, at most
// every 200 ms.
func (s *ClusterStore) reloadSlots() {
	now := time.Now().UnixNano()
	last := s.lastReload.Load()
	if now-last < int64(200*time.Millisecond) || !s.lastReload.CompareAndSwap(last, now) {
		return
	}
	go s.client.ReloadState(context.Background())
}

func (s *ClusterStore) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	c := &call{sc: sc, keys: keys, args: args}
	s.exec(ctx, []*call{c}, nil)
	return c.cmd
}

// userKeys is the emitting user scripts' KEYS: log, user, sess, ttl, end,
// deadlines.
func (s *ClusterStore) userKeys(p *partition, uid, sid string) []string {
	return []string{p.key("log"), p.user(uid, "user"), p.user(uid, "sess"), p.user(uid, "ttl/"+sid),
		p.user(uid, "end/"+sid), p.key("deadlines")}
}

// roomLeaveCall is room_leave.lua for one membership; gen "" matches any
// instance of the session.
func (s *ClusterStore) roomLeaveCall(room, uid, sid, mode, status, name, avatar string, deadline int64, gen string) *call {
	p := partOf(s.parts, room)
	return &call{sc: s.scripts.roomLeave,
		keys: []string{p.key("log"), p.room(room, "members"), p.room(room, "ms"), p.room(room, "n"),
			p.key("mdl"), p.room(room, "typing"), p.room(room, "tnames"), p.key("tdl")},
		args: s.common(p, room, uid, sid, mode, status, name, avatar, deadline, gen)}
}

func (s *ClusterStore) roomJoinCall(room string, hb Heartbeat, kind string, dur int64, status, gen string) *call {
	p := partOf(s.parts, room)
	return &call{sc: s.scripts.roomJoin,
		keys: []string{p.key("log"), p.room(room, "members"), p.room(room, "ms"), p.room(room, "n"), p.key("mdl")},
		args: s.common(p, room, hb.User.ID, hb.SessionID, kind, dur, hb.User.Name, hb.User.Avatar, status, gen)}
}

// refreshes groups one round trip's fast refreshes into one
// user_refresh.lua and one room_refresh.lua call per partition (of at most
// refreshChunk items each): a node's batch of N refreshes costs Redis at
// most a call per partition and script, not 2N.
type refreshes struct {
	s            *ClusterStore
	users, rooms map[int]*call
	calls        []*call
}

// item is one refresh's place in its call's reply.
type item struct {
	c *call
	i int
}

func (s *ClusterStore) newRefreshes() *refreshes {
	return &refreshes{s: s, users: map[int]*call{}, rooms: map[int]*call{}}
}

// add puts an item of keys and args into partition p's call of sc (in
// byPart), opening a new call when there is none or it is full.
func (r *refreshes) add(byPart map[int]*call, sc *redis.Script, p *partition, lead []any, keys []string, args ...any) item {
	c := byPart[p.index]
	if c == nil || c.n == refreshChunk {
		c = &call{sc: sc, args: lead}
		byPart[p.index] = c
		r.calls = append(r.calls, c)
	}
	c.keys = append(c.keys, keys...)
	c.args = append(c.args, args...)
	c.n++
	return item{c, c.n - 1}
}

// user queues op's fast session refresh.
func (r *refreshes) user(op *hbOp) item {
	p := partOf(r.s.parts, op.hb.User.ID)
	uid, sid := op.hb.User.ID, op.hb.SessionID
	return r.add(r.users, r.s.scripts.userRefresh, p, []any{r.s.opts.LastSeenRetention.Milliseconds()},
		[]string{p.user(uid, "user"), p.user(uid, "sess"), p.user(uid, "ttl/"+sid), p.user(uid, "end/"+sid), p.key("deadlines")},
		uid, sid, op.hb.User.Name, op.hb.User.Avatar, string(op.hb.Status), op.ttl, op.room, op.hold)
}

// room queues the fast refresh of one session's membership of room.
func (r *refreshes) room(room, uid, sid string, hold, ttl int64) item {
	p := partOf(r.s.parts, room)
	return r.add(r.rooms, r.s.scripts.roomRefresh, p, nil,
		[]string{p.room(room, "ms"), p.key("mdl")}, uid+" "+sid, room, hold, ttl)
}

// text is a user item's reply: "" when the full heartbeat is needed.
func (it item) text() (string, error) {
	res, err := it.c.cmd.StringSlice()
	if err != nil {
		return "", err
	}
	if it.i >= len(res) {
		return "", fmt.Errorf("redis cluster refresh: %d replies for %d items", len(res), it.c.n)
	}
	return res[it.i], nil
}

// done reports whether a room item was refreshed.
func (it item) done() bool {
	res, err := it.c.cmd.Int64Slice()
	return err == nil && it.i < len(res) && res[it.i] == 1
}

// Heartbeat implements Store.
func (s *ClusterStore) Heartbeat(ctx context.Context, hb Heartbeat) error {
	if err := validateHeartbeat(hb); err != nil {
		return err
	}
	return s.do(ctx, &hbOp{hb: hb, mode: modeClient})
}

// Join implements Store.
func (s *ClusterStore) Join(ctx context.Context, roomID string, hb Heartbeat) error {
	if !ValidRoomID(roomID) {
		return ErrInvalidRoomID
	}
	if err := validateHeartbeat(hb); err != nil {
		return err
	}
	return s.do(ctx, &hbOp{hb: hb, room: roomID, mode: modeClient})
}

// RefreshStreams implements Store: every item's calls go out together, in
// a few pipelined round trips for the whole batch (one when nothing but
// deadlines changes).
func (s *ClusterStore) RefreshStreams(ctx context.Context, items []StreamRefresh) ([]error, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	errs := make([]error, len(items))
	ops := make([]*hbOp, 0, len(items))
	idx := make([]int, 0, len(items))
	for i, it := range items {
		if errs[i] = validateRefresh(it); errs[i] == nil {
			ops = append(ops, &hbOp{hb: Heartbeat{User: it.User, SessionID: it.SessionID, Hold: it.Hold},
				room: it.Room, mode: modeStream, batch: true})
			idx = append(idx, i)
		}
	}
	if err := s.heartbeats(ctx, ops); err != nil {
		return nil, err
	}
	for j, op := range ops {
		errs[idx[j]] = op.err
	}
	if len(ops) > 0 && len(ops) == len(items) {
		// A failure of the connection fails every item alike: say so once.
		first := ops[0].err
		same := first != nil && !isItemError(first)
		for _, op := range ops[1:] {
			if !same || op.err == nil || op.err.Error() != first.Error() {
				same = false
				break
			}
		}
		if same {
			return nil, first
		}
	}
	return errs, nil
}

// hbOp is one Heartbeat, Join or RefreshStreams item on its way through
// heartbeats' round trips.
type hbOp struct {
	hb    Heartbeat
	room  string
	mode  string
	batch bool // a RefreshStreams item: its error is its own
	err   error

	ttl, hold  int64
	userFast   *item
	roomFast   *item
	userFull   *call
	status     *redis.StringCmd // the user's status, read when the fast user call did not return it
	touches    []touch          // refreshes of the session's API-joined rooms
	join       *call            // the membership made or refreshed in round trip 3
	kind       string           // the room's kind in the session ("+" or "~"), once known
	gen        string           // the session instance's gen, once known
	to         string           // the user's status, once known
	perm       []string         // the session's API-joined rooms (their deadlines follow the session)
	roomFastOK bool
}

// heartbeats runs ops in pipelined round trips, each shared by all ops:
//  1. each op's fast user refresh (user_refresh.lua) and, with a room, its
//     fast membership refresh (room_refresh.lua), grouped per partition
//     (refreshes). Most calls end here;
//  2. the full user heartbeat where the fast one could not apply; the
//     refresh of the session's API-joined rooms; the user's status where a
//     membership may have to be made;
//  3. the memberships to make (room_join.lua), the API-joined rooms of the
//     ops of step 2's full heartbeats, and the undoing of a membership
//     refreshed in step 1 for a session that turned out to be ended;
//  4. (rare) API-joined rooms whose membership was gone, made again.
func (s *ClusterStore) heartbeats(ctx context.Context, ops []*hbOp) error {
	if s.closed() {
		return ErrClosed
	}
	if len(ops) == 0 {
		return nil
	}
	// 1.
	fast := s.newRefreshes()
	for _, op := range ops {
		ttl := op.hb.TTL
		if ttl <= 0 {
			ttl = s.opts.TTL
		}
		op.ttl = max(ttl.Milliseconds(), 1)
		if op.hb.Hold > 0 {
			op.hold = max(op.hb.Hold.Milliseconds(), 1)
		}
		if op.hb.Metadata != nil {
			continue // metadata is written by the full heartbeat only
		}
		u := fast.user(op)
		op.userFast = &u
		if op.room != "" {
			r := fast.room(op.room, op.hb.User.ID, op.hb.SessionID, op.hold, op.ttl)
			op.roomFast = &r
		}
	}
	s.exec(ctx, fast.calls, nil)

	// 2.
	var calls []*call
	touches := s.newRefreshes()
	var reads []*hbOp
	for _, op := range ops {
		if op.roomFast != nil {
			op.roomFastOK = op.roomFast.done()
		}
		if op.userFast != nil {
			res, err := op.userFast.text()
			if err != nil {
				op.err = err
				continue
			}
			if res != "" {
				gen, perm, _ := strings.Cut(res, "|")
				op.gen, op.perm = gen, splitRooms(perm)
				if op.room != "" && !op.roomFastOK {
					op.kind = "~"
					if op.hold <= 0 || slices.Contains(op.perm, op.room) {
						op.kind = "+"
					}
				}
				op.touch(touches)
				if op.kind != "" || len(op.touches) > 0 {
					reads = append(reads, op)
				}
				continue
			}
		}
		p := partOf(s.parts, op.hb.User.ID)
		hasMeta, meta := "0", ""
		if op.hb.Metadata != nil {
			hasMeta, meta = "1", string(op.hb.Metadata)
		}
		op.userFull = &call{sc: s.scripts.userHeartbeat, keys: s.userKeys(p, op.hb.User.ID, op.hb.SessionID),
			args: s.common(p, op.hb.User.ID, op.hb.SessionID, op.hb.User.Name, op.hb.User.Avatar,
				string(op.hb.Status), hasMeta, meta, op.ttl, op.room, MaxSessionsPerUser, MaxRoomsPerSession,
				op.hold, op.mode)}
		calls = append(calls, op.userFull)
	}
	s.exec(ctx, append(calls, touches.calls...), func(pipe redis.Pipeliner) {
		for _, op := range reads {
			op.status = pipe.HGet(ctx, partOf(s.parts, op.hb.User.ID).user(op.hb.User.ID, "user"), "st")
		}
	})

	// 3.
	calls = calls[:0]
	touches = s.newRefreshes()
	for _, op := range ops {
		switch {
		case op.userFull != nil:
			res, err := op.userFull.cmd.Text()
			if err != nil {
				op.err = scriptError(err)
				if errors.Is(op.err, ErrSessionEnded) && op.roomFastOK {
					calls = append(calls, s.roomLeaveCall(op.room, op.hb.User.ID, op.hb.SessionID, "leave",
						string(StatusOffline), op.hb.User.Name, op.hb.User.Avatar, 0, ""))
				}
				continue
			}
			f := strings.SplitN(res, "|", 4)
			if len(f) != 4 {
				op.err = fmt.Errorf("redis cluster heartbeat: reply %q", res)
				continue
			}
			op.to, op.kind, op.gen, op.perm = f[0], f[1], f[2], splitRooms(f[3])
			op.touch(touches)
		case op.err != nil:
			continue
		case op.status != nil:
			op.to = op.status.Val()
			if op.to == "" {
				op.to = string(StatusOffline)
			}
			s.rejoin(op, &calls)
			op.touches = nil
		}
		if op.kind != "" {
			dur := op.ttl
			if op.kind == "~" {
				dur = op.hold
			}
			op.join = s.roomJoinCall(op.room, op.hb, op.kind, dur, op.to, op.gen)
			calls = append(calls, op.join)
		}
	}
	s.exec(ctx, append(calls, touches.calls...), nil)
	for _, op := range ops {
		if op.join != nil && op.err == nil {
			// The session is refreshed but the membership may not be made:
			// the call failed (the caller retries, as after any failure).
			op.err = op.join.cmd.Err()
		}
	}

	// 4.
	calls = calls[:0]
	for _, op := range ops {
		if op.userFull != nil && op.err == nil {
			s.rejoin(op, &calls)
		}
	}
	s.exec(ctx, calls, nil)

	if len(ops) == 1 && !ops[0].batch {
		return ops[0].err
	}
	return nil
}

// touch is the refresh of one of a session's API-joined rooms.
type touch struct {
	room string
	item item
}

// touch queues the refresh of op's API-joined rooms (but its own room,
// which its own calls refresh): their deadlines follow the session's.
func (op *hbOp) touch(r *refreshes) {
	for _, room := range op.perm {
		if room != op.room {
			op.touches = append(op.touches, touch{room, r.room(room, op.hb.User.ID, op.hb.SessionID, 0, op.ttl)})
		}
	}
}

// rejoin queues the membership of each API-joined room whose refresh found
// it gone (a follow-up lost with a node, a shard that lost its data): the
// session's record says it is in the room, so it is.
func (s *ClusterStore) rejoin(op *hbOp, calls *[]*call) {
	for _, t := range op.touches {
		if t.item.c.cmd.Err() == nil && !t.item.done() {
			*calls = append(*calls, s.roomJoinCall(t.room, op.hb, "+", op.ttl, op.to, op.gen))
		}
	}
}

func splitRooms(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, " ")
}

// endSessions ends (mode "end") or reaps (mode "reap", only when due)
// sessions in their users' partitions, then leaves their rooms in theirs:
// two pipelined round trips however many sessions. It reports which
// sessions it ended and whose rooms it left.
func (s *ClusterStore) endSessions(ctx context.Context, sessions [][2]string, mode string) (map[[2]string]bool, error) {
	ends := make([]*call, len(sessions))
	for i, us := range sessions {
		p := partOf(s.parts, us[0])
		ends[i] = &call{sc: s.scripts.userEnd, keys: s.userKeys(p, us[0], us[1]),
			args: s.common(p, us[0], us[1], mode, max(s.opts.EndedRetention.Milliseconds(), 1))}
	}
	s.exec(ctx, ends, nil)
	var leaves []*call
	var leftBy [][2]string // the session each leave is for
	ended := map[[2]string]bool{}
	var firstErr error
	for i, c := range ends {
		res, err := c.cmd.Slice()
		if errors.Is(err, redis.Nil) {
			continue // nothing to end (or not due)
		}
		if err == nil && len(res) < 5 {
			err = fmt.Errorf("redis cluster end session: reply %v", res)
		}
		if err != nil {
			firstErr = cmp.Or(firstErr, err)
			continue
		}
		to, _ := res[0].(string)
		dl, _ := res[1].(int64)
		name, _ := res[2].(string)
		avatar, _ := res[3].(string)
		gen, _ := res[4].(string)
		ended[sessions[i]] = true
		for _, r := range res[5:] {
			if room, ok := r.(string); ok {
				leaves = append(leaves, s.roomLeaveCall(room, sessions[i][0], sessions[i][1], "leave", to, name, avatar, dl, gen))
				leftBy = append(leftBy, sessions[i])
			}
		}
	}
	s.exec(ctx, leaves, nil)
	for i, c := range leaves {
		if err := c.cmd.Err(); err != nil {
			// The memberships left behind end at their own deadlines.
			delete(ended, leftBy[i])
			firstErr = cmp.Or(firstErr, fmt.Errorf("redis cluster: leaving the rooms of an ended session: %w", err))
		}
	}
	return ended, firstErr
}

// EndSession implements Store.
func (s *ClusterStore) EndSession(ctx context.Context, userID, sessionID string) error {
	if err := validateSession(userID, sessionID); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	_, err := s.endSessions(ctx, [][2]string{{userID, sessionID}}, "end")
	return err
}

// leave takes a session out of a room: the room out of the session's
// record (mode "leave", or "held" for a stream-held room only), then the
// membership out of the room.
func (s *ClusterStore) leave(ctx context.Context, roomID, userID, sessionID, mode string) error {
	p := partOf(s.parts, userID)
	u, err := s.run(ctx, s.scripts.userLeave, []string{p.user(userID, "user"), p.user(userID, "sess")},
		sessionID, roomID, mode).StringSlice()
	if err != nil {
		return err
	}
	if len(u) < 3 {
		return fmt.Errorf("redis cluster leave: reply %v", u)
	}
	return s.roomLeaveCall(roomID, userID, sessionID, mode, u[0], u[1], u[2], 0, "").cmdErr(ctx, s)
}

// cmdErr runs c alone and returns its error.
func (c *call) cmdErr(ctx context.Context, s *ClusterStore) error {
	s.exec(ctx, []*call{c}, nil)
	return c.cmd.Err()
}

// Leave implements Store.
func (s *ClusterStore) Leave(ctx context.Context, roomID, userID, sessionID string) error {
	if err := validateRoomSession(roomID, userID, sessionID); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	return s.leave(ctx, roomID, userID, sessionID, "leave")
}

// Detach implements Store.
func (s *ClusterStore) Detach(ctx context.Context, roomID, userID, sessionID string, grace time.Duration) error {
	if err := validateRoomSession(roomID, userID, sessionID); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	if grace <= 0 {
		return s.leave(ctx, roomID, userID, sessionID, "held")
	}
	p := partOf(s.parts, roomID)
	return s.run(ctx, s.scripts.roomDetach, []string{p.room(roomID, "ms"), p.key("mdl")},
		userID+" "+sessionID, roomID, max(grace.Milliseconds(), 1)).Err()
}

// SetTyping implements Store.
func (s *ClusterStore) SetTyping(ctx context.Context, roomID string, user Profile, typing bool) error {
	if !ValidRoomID(roomID) {
		return ErrInvalidRoomID
	}
	if err := validateProfile(user); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	on := "0"
	if typing {
		on = "1"
	}
	return scriptError(s.typingCall(roomID, user.ID, user.DisplayName(), on).cmdErr(ctx, s))
}

func (s *ClusterStore) typingCall(room, uid, name, mode string) *call {
	p := partOf(s.parts, room)
	return &call{sc: s.scripts.typing,
		keys: []string{p.key("log"), p.room(room, "typing"), p.room(room, "tnames"), p.key("tdl"),
			p.room(room, "members")},
		args: s.common(p, room, uid, name, mode, max(s.opts.TypingTTL.Milliseconds(), 1))}
}

// Presence implements Store.
func (s *ClusterStore) Presence(ctx context.Context, userIDs []string) (map[string]*Presence, error) {
	if err := validateUserIDs(userIDs); err != nil {
		return nil, err
	}
	if s.closed() {
		return nil, ErrClosed
	}
	return s.readUsers(ctx, userIDs)
}

// readUsers reads users' hashes in one pipelined round trip (go-redis
// sends each shard its share).
func (s *ClusterStore) readUsers(ctx context.Context, ids []string) (map[string]*Presence, error) {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, partOf(s.parts, id).user(id, "user"), "name", "avatar", "st", "seen", "meta")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make(map[string]*Presence, len(ids))
	for i, id := range ids {
		out[id] = presenceFromHash(id, cmds[i].Val())
	}
	return out, nil
}

// Members implements Store: the room's member list from its partition,
// then the members' profiles and statuses from theirs (two round trips).
func (s *ClusterStore) Members(ctx context.Context, roomID string) ([]Member, error) {
	if !ValidRoomID(roomID) {
		return nil, ErrInvalidRoomID
	}
	if s.closed() {
		return nil, ErrClosed
	}
	ids, err := s.client.ZRange(ctx, partOf(s.parts, roomID).room(roomID, "members"), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	members := make([]Member, 0, len(ids))
	if len(ids) == 0 {
		return members, nil
	}
	users, err := s.readUsers(ctx, ids)
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		m := Member{Profile: Profile{ID: id}, Status: StatusOffline}
		if p := users[id]; p != nil {
			m.Profile, m.Status, m.LastSeen = p.Profile, p.Status, p.LastSeen
		}
		members = append(members, m)
	}
	return members, nil
}

// Typing implements Store.
func (s *ClusterStore) Typing(ctx context.Context, roomID string) ([]Typist, error) {
	if !ValidRoomID(roomID) {
		return nil, ErrInvalidRoomID
	}
	if s.closed() {
		return nil, ErrClosed
	}
	p := partOf(s.parts, roomID)
	flat, err := s.run(ctx, s.scripts.typingRead, []string{p.room(roomID, "typing"), p.room(roomID, "tnames")},
		s.common(p, roomID)...).StringSlice()
	if err != nil {
		return nil, err
	}
	typists := make([]Typist, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		typists = append(typists, Typist{ID: flat[i], Name: flat[i+1]})
	}
	return typists, nil
}

// Ready implements Store: every primary answers and every partition's
// channel is subscribed.
func (s *ClusterStore) Ready(ctx context.Context) error {
	if s.closed() {
		return ErrClosed
	}
	if err := s.client.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
		return c.Ping(ctx).Err()
	}); err != nil {
		return fmt.Errorf("redis cluster: %w", err)
	}
	for i := range s.partSubbed {
		if !s.partSubbed[i].Load() {
			return fmt.Errorf("redis cluster: change feed of partition %d not subscribed", i)
		}
	}
	return nil
}

// Close implements Store.
func (s *ClusterStore) Close() error {
	s.once.Do(func() {
		s.isClosed.Store(true)
		s.cancel()
		s.wg.Wait()
		s.feed.close()
		_ = s.client.Close()
	})
	return nil
}
