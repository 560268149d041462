package store

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisStore keeps presence in Redis so that several gateway nodes share it.
//
// Every transition happens inside one Lua script, which also appends the
// resulting events to a stream (the log) and publishes them on a channel:
// however many nodes race to expire the same session, exactly one makes the
// transition and exactly one event goes out. Each node
//   - subscribes to the event channel and to keyspace-expiry notifications of
//     the sessions' TTL keys (a fast path to expiry);
//   - sweeps the deadline index every SweepInterval, because Redis expires
//     keys lazily and its notifications can be minutes late (pitfalls.md);
//   - after every (re)subscription, reads the log from the last event it saw,
//     so events published while its pub/sub connection was down still reach
//     its subscribers. If the log was trimmed past that point it sends
//     EventResync instead;
//   - checks, on every resubscription and every stateCheckInterval, that
//     Redis still holds the state it knew (the server's run_id and the
//     Pepoch token): a restart that lost the data set, a failover or a
//     FLUSHALL makes it send EventResync on every subscription, whether or
//     not any event flows afterwards.
type RedisStore struct {
	client  *redis.Client
	opts    Options
	log     *slog.Logger
	feed    *feed
	scripts redisScripts

	channel    string // Pevents
	expiredCh  string // __keyevent@<db>__:expired
	ttlMarker  string // P{u: — prefix of session TTL keys
	subscribed atomic.Bool
	firstSub   chan struct{} // closed when the feed is first subscribed
	isClosed   atomic.Bool
	// functions: the scripts run as FCALL of the presence FUNCTION library
	// (redis_functions.go), else as EVALSHA. Set once, in NewRedis.
	functions bool
	// refreshPerItem makes RefreshStreams send one heartbeat script call per
	// item instead of refresh_many.lua calls (benchmarks compare the two).
	refreshPerItem bool
	// noFastPath makes Heartbeat and Join skip refresh_fast.lua (benchmarks
	// compare the two). EVALSHA only: with the FUNCTION library there is no
	// separate fast try to skip.
	noFastPath bool

	pubMu  sync.Mutex // guards pubsub, replaced by dispatch on a resubscribe
	pubsub *redis.PubSub
	// resub asks dispatch to drop its pub/sub connection and subscribe on a
	// fresh one (stateLost): after a failover the old connection may still
	// be on the old primary.
	resub chan struct{}
	reaps chan [2]string // (user, session) from keyspace events

	// batch coalesces concurrent Heartbeat and Join calls into pipelined
	// round trips (redis_coalesce.go).
	batch *coalescer
	// Heartbeat and Join merged per round trip: as refresh_many calls with
	// the FUNCTION library, else their fast tries as refresh_fast calls.
	heartbeats, fastTries *coalesceGroup
	// scriptGen counts script reloads, so that callers that all met
	// NOSCRIPT after a flush reload once, not once each.
	scriptGen atomic.Uint64
	reloadMu  sync.Mutex

	pendingMu sync.Mutex
	pending   map[string]*Subscription // barrier token → subscription waiting for it

	stateMu sync.Mutex // serializes checkState; guards runID and epoch
	runID   string     // the server's run_id when last checked
	epoch   string     // the Pepoch token when last checked
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	once    sync.Once
	errs    *redisErrors // error counts by command (redis_metrics.go)
}

var _ Store = (*RedisStore)(nil)

var (
	//go:embed lua/lib.lua
	luaLib string
	//go:embed lua/fast.lua
	luaFast string
	//go:embed lua/refresh_fast.lua
	luaRefreshFast string
	//go:embed lua/heartbeat.lua
	luaHeartbeat string
	//go:embed lua/end_session.lua
	luaEndSession string
	//go:embed lua/leave.lua
	luaLeave string
	//go:embed lua/typing.lua
	luaTyping string
	//go:embed lua/sweep.lua
	luaSweep string
	//go:embed lua/typing_read.lua
	luaTypingRead string
	//go:embed lua/barrier.lua
	luaBarrier string
	//go:embed lua/detach.lua
	luaDetach string
	//go:embed lua/refresh_many.lua
	luaRefreshMany string
)

type redisScripts struct {
	heartbeat, endSession, leave, typing, sweep, typingRead, barrier, detach, refreshMany *redis.Script
	// refreshFast is fast.lua alone, over one or more items: the hot
	// refresh without the library.
	refreshFast *redis.Script
	// library is all of them as one FUNCTION library, fn their function
	// names in it (redis_functions.go).
	library string
	fn      map[*redis.Script]string
}

// withLib puts the shared library (and the fast refresh it tries first) in
// front of a script body, for EVALSHA.
func withLib(body string) *redis.Script {
	return redis.NewScript(luaFast + "\n" + luaLib + "\nbegin(ARGV)\n" + body)
}

// logMaxLen bounds the event log: enough to catch up after a pub/sub outage
// of several seconds under heavy churn; a longer outage gets EventResync.
const logMaxLen = 100000

// sweepLimit is how many due entries one sweep script call reaps, so that
// one call never blocks Redis for long.
const sweepLimit = 500

// NewRedis connects to redisURL (redis://…, rediss://…, or
// redis+sentinel://… for a primary found through Sentinel: see
// SentinelScheme), enables keyspace-expiry
// notifications when the server allows it, and starts the node's background
// work: the change-feed subscriber and the deadline sweeper.
func NewRedis(ctx context.Context, redisURL string, opts Options, log *slog.Logger) (*RedisStore, error) {
	client, db, err := newRedisClient(redisURL)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	opts = opts.withDefaults()
	s := &RedisStore{
		client:    client,
		opts:      opts,
		log:       log,
		feed:      newFeed(opts.FeedBuffer),
		channel:   opts.KeyPrefix + "events",
		expiredCh: fmt.Sprintf("__keyevent@%d__:expired", db),
		ttlMarker: opts.KeyPrefix + "{u:",
		reaps:     make(chan [2]string, 4096),
		pending:   make(map[string]*Subscription),
		firstSub:  make(chan struct{}),
		resub:     make(chan struct{}, 1),
	}
	s.scripts = redisScripts{
		heartbeat:   withLib(luaHeartbeat),
		endSession:  withLib(luaEndSession),
		leave:       withLib(luaLeave),
		typing:      withLib(luaTyping),
		sweep:       withLib(luaSweep),
		typingRead:  redis.NewScript(luaTypingRead),
		barrier:     withLib(luaBarrier),
		detach:      withLib(luaDetach),
		refreshMany: withLib(luaRefreshMany),
		refreshFast: redis.NewScript(luaFast + "\n" + luaRefreshFast),
	}
	sc := &s.scripts
	s.scripts.library, s.scripts.fn = luaFunctions(map[*redis.Script]luaBody{
		sc.heartbeat: {"heartbeat", luaHeartbeat, true}, sc.endSession: {"end_session", luaEndSession, true},
		sc.leave: {"leave", luaLeave, true}, sc.typing: {"typing", luaTyping, true},
		sc.sweep:      {"sweep", luaSweep, true},
		sc.typingRead: {"typing_read", luaTypingRead, false}, sc.barrier: {"barrier", luaBarrier, true},
		sc.detach: {"detach", luaDetach, true}, sc.refreshMany: {"refresh_many", luaRefreshMany, true},
		sc.refreshFast: {"refresh_fast", luaRefreshFast, false},
	})
	s.batch = newCoalescer(func() redis.Pipeliner { return s.client.Pipeline() }, coalesceInflight, coalesceMaxBatch)
	s.heartbeats = s.scriptGroup(s.scripts.refreshMany, heartbeatChunk)
	s.fastTries = s.scriptGroup(s.scripts.refreshFast, refreshChunk)
	s.addErrorHook()
	if err := s.client.Ping(ctx).Err(); err != nil {
		s.client.Close()
		return nil, fmt.Errorf("redis ping: %w", err)
	}
	if err := s.loadFunctions(ctx); err != nil {
		s.log.Info("presence: Redis has no FUNCTION (before 7.0) or refuses it; the scripts run as EVALSHA", "error", err)
	} else {
		s.functions = true
	}
	if err := s.loadScripts(ctx); err != nil {
		s.client.Close()
		return nil, fmt.Errorf("redis load scripts: %w", err)
	}
	s.enableExpiryEvents(ctx)
	if _, err := s.checkState(ctx); err != nil {
		s.client.Close()
		return nil, fmt.Errorf("redis state check: %w", err)
	}

	// The log position this node starts from: events before it are history.
	last := "0-0"
	if msgs, err := s.client.XRevRangeN(ctx, s.key("log"), "+", "-", 1).Result(); err == nil && len(msgs) > 0 {
		last = msgs[0].ID
	} else if err != nil && !errors.Is(err, redis.Nil) {
		s.client.Close()
		return nil, fmt.Errorf("redis event log: %w", err)
	}

	bg, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.pubsub = s.client.Subscribe(bg, s.channel, s.expiredCh)
	s.wg.Add(4)
	go s.dispatch(bg, s.pubsub, last)
	go s.reapExpired(bg)
	go s.sweep(bg)
	go s.watchState(bg)
	// Return once the change feed is subscribed (or ctx, at most 10 s,
	// runs out): a node must not report ready, nor serve streams, while its
	// feed could still miss events.
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	select {
	case <-s.firstSub:
	case <-wctx.Done():
		s.log.Warn("presence: Redis change feed not subscribed yet; /readyz says so until it is")
	}
	return s, nil
}

func (s *RedisStore) key(k string) string { return s.opts.KeyPrefix + k }

func (s *RedisStore) userKey(uid, what string) string {
	return s.opts.KeyPrefix + "{u:" + uid + "}:" + what
}

func (s *RedisStore) roomKey(room, what string) string {
	return s.opts.KeyPrefix + "{r:" + room + "}:" + what
}

// enableExpiryEvents adds "Ex" to notify-keyspace-events. Managed Redis often
// refuses CONFIG SET; expiry then still works through the sweeper, only
// without the notification fast path, and the operator is told what to set.
func (s *RedisStore) enableExpiryEvents(ctx context.Context) {
	cur, err := s.client.ConfigGet(ctx, "notify-keyspace-events").Result()
	flags := ""
	if err == nil {
		flags = cur["notify-keyspace-events"]
	}
	hasE := strings.ContainsRune(flags, 'E')
	hasX := strings.ContainsRune(flags, 'x') || strings.ContainsRune(flags, 'A')
	if err == nil && hasE && hasX {
		return
	}
	want := flags
	if !hasE {
		want += "E"
	}
	if !hasX {
		want += "x"
	}
	if err == nil {
		err = s.client.ConfigSet(ctx, "notify-keyspace-events", want).Err()
	}
	if err != nil {
		s.log.Warn("redis keyspace expiry notifications are off and could not be enabled; "+
			"sessions still expire through the deadline sweeper (up to one sweep interval late). "+
			"To enable the fast path set notify-keyspace-events to include \"Ex\" "+
			"(redis.conf: notify-keyspace-events Ex; or CONFIG SET notify-keyspace-events Ex; "+
			"on managed Redis, in its parameter group)",
			"error", err, "current", flags, "sweep_interval", s.opts.SweepInterval)
	}
}

// run executes a script with the common ARGV (prefix, retention, log length)
// in front of its own.
func (s *RedisStore) run(ctx context.Context, sc *redis.Script, keys []string, args ...any) *redis.Cmd {
	if !s.functions {
		return sc.Run(ctx, s.client, keys, s.args(args)...) // EVALSHA, EVAL on NOSCRIPT
	}
	gen := s.scriptGen.Load()
	cmd := s.evalOn(ctx, s.client, sc, keys, s.args(args)...)
	if isScriptMissing(cmd.Err()) {
		if err := s.reloadScripts(ctx, gen); err != nil {
			return cmd
		}
		cmd = s.evalOn(ctx, s.client, sc, keys, s.args(args)...)
	}
	return cmd
}

func (s *RedisStore) args(args []any) []any {
	all := make([]any, 0, 3+len(args))
	all = append(all, s.opts.KeyPrefix, s.opts.LastSeenRetention.Milliseconds(), logMaxLen)
	return append(all, args...)
}

func (s *RedisStore) loadScripts(ctx context.Context) error {
	if s.functions {
		return s.loadFunctions(ctx)
	}
	for _, sc := range []*redis.Script{s.scripts.heartbeat, s.scripts.endSession, s.scripts.leave,
		s.scripts.typing, s.scripts.sweep, s.scripts.typingRead, s.scripts.barrier,
		s.scripts.detach, s.scripts.refreshMany, s.scripts.refreshFast} {
		if err := sc.Load(ctx, s.client).Err(); err != nil {
			return err
		}
	}
	return nil
}

func (s *RedisStore) closed() bool { return s.isClosed.Load() }

// Heartbeat implements Store.
func (s *RedisStore) Heartbeat(ctx context.Context, hb Heartbeat) error {
	if err := validateHeartbeat(hb); err != nil {
		return err
	}
	return s.heartbeat(ctx, hb, "", modeClient)
}

// Join implements Store.
func (s *RedisStore) Join(ctx context.Context, roomID string, hb Heartbeat) error {
	if !ValidRoomID(roomID) {
		return ErrInvalidRoomID
	}
	if err := validateHeartbeat(hb); err != nil {
		return err
	}
	return s.heartbeat(ctx, hb, roomID, modeClient)
}

// The heartbeat script's modes: an explicit client call clears the
// session's EndSession tombstone, a stream's refresh is refused by it.
const (
	modeClient = "client"
	modeStream = "stream"
)

func (s *RedisStore) heartbeat(ctx context.Context, hb Heartbeat, room, mode string) error {
	if s.closed() {
		return ErrClosed
	}
	keys, args := s.heartbeatCall(hb, room, mode)
	if s.functions {
		// One call, merged with the others of its round trip: heartbeat_one
		// tries the fast refresh first, and without the library's top level
		// to pay per call a separate fast try would only add a round trip
		// when it misses.
		res, err := s.callMerged(ctx, s.heartbeats, keys, args)
		if err != nil {
			return err
		}
		if refusal, _ := res.(string); refusal != "" {
			return scriptError(errors.New(refusal))
		}
		return nil
	}
	if hb.Metadata == nil && !s.noFastPath {
		// Most heartbeats change nothing but deadlines: try the small
		// script first (without the library, whose top level EVALSHA runs
		// on every call, and one call for all the fast tries that share a
		// round trip); it writes nothing when the full heartbeat is needed.
		res, err := s.callMerged(ctx, s.fastTries, keys, args)
		if err != nil {
			return scriptError(err)
		}
		if n, _ := res.(int64); n == 1 {
			return nil
		}
	}
	_, err := s.evalBatched(ctx, s.scripts.heartbeat, keys, s.args(args))
	return scriptError(err)
}

// mergedItem is one call in a merged script call (scriptGroup).
type mergedItem struct {
	keys []string
	args []any // heartbeatCall's, without the common ARGV
	res  any   // set by the group's read: the item's element of the reply
}

// scriptGroup merges the items of one round trip into calls of sc, of up to
// chunk items each: sc takes 7 KEYS and 13 ARGV per item after the common
// ARGV (refresh_fast.lua, refresh_many.lua) and returns one element per item.
func (s *RedisStore) scriptGroup(sc *redis.Script, chunk int) *coalesceGroup {
	return &coalesceGroup{queue: func(p redis.Pipeliner, items []any) func() []error {
		var cmds []*redis.Cmd
		for from := 0; from < len(items); from += chunk {
			part := items[from:min(len(items), from+chunk)]
			keys := make([]string, 0, 7*len(part))
			args := s.args(make([]any, 0, 13*len(part)))
			for _, x := range part {
				it := x.(*mergedItem)
				keys = append(keys, it.keys...)
				args = append(args, it.args...)
			}
			cmds = append(cmds, s.evalOn(context.Background(), p, sc, keys, args...))
		}
		return func() []error {
			errs := make([]error, len(items))
			for c, cmd := range cmds {
				res, err := cmd.Slice()
				for j := range min(chunk, len(items)-c*chunk) {
					i := c*chunk + j
					switch {
					case err != nil:
						errs[i] = err
					case j >= len(res):
						errs[i] = fmt.Errorf("redis %s: %d results for %d items", s.scripts.fn[sc], len(res), len(items))
					default:
						items[i].(*mergedItem).res = res[j]
					}
				}
			}
			return errs
		}
	}}
}

// callMerged runs one item in group g's next merged call and returns its
// element of the reply. A missing script (NOSCRIPT, or the library gone)
// reloads the scripts and sends the item again, once (see evalBatched).
func (s *RedisStore) callMerged(ctx context.Context, g *coalesceGroup, keys []string, args []any) (any, error) {
	var it *mergedItem
	err := s.withScripts(ctx, func() error {
		it = &mergedItem{keys: keys, args: args}
		return s.batch.DoMerged(ctx, g, it)
	})
	if err != nil {
		return nil, err // it may still be written by a round trip this caller gave up on
	}
	return it.res, nil
}

// withScripts runs call; if the server lacked the scripts (NOSCRIPT, or the
// library gone: Redis restarted or its script cache was flushed) it reloads
// them, unless another caller did meanwhile, and runs call once more.
func (s *RedisStore) withScripts(ctx context.Context, call func() error) error {
	gen := s.scriptGen.Load()
	err := call()
	if err == nil || !isScriptMissing(err) {
		return err
	}
	if err := s.reloadScripts(ctx, gen); err != nil {
		return fmt.Errorf("redis load scripts: %w", err)
	}
	return call()
}

// coalesceInflight is how many coalesced round trips may be in flight at
// once: two, so that Redis runs one batch while the node encodes the next
// and decodes the last; coalesceMaxBatch bounds one round trip's calls.
const (
	coalesceInflight = 2
	coalesceMaxBatch = 128
)

// heartbeatChunk is how many Heartbeat or Join calls one merged
// refresh_many call carries: fewer than a stream refresh chunk, because
// each may take the full heartbeat (a new session, a join: ~50-100 µs).
const heartbeatChunk = 32

// evalBatched runs one script call (args already with the common ARGV) in
// the node's next coalesced round trip. A NOSCRIPT (Redis restarted or its
// script cache was flushed) reloads the scripts and sends the call again,
// once: EVALSHA in a pipeline cannot fall back to EVAL the way Script.Run
// does.
func (s *RedisStore) evalBatched(ctx context.Context, sc *redis.Script, keys []string, args []any) (any, error) {
	var res any
	err := s.withScripts(ctx, func() error {
		var cmd *redis.Cmd
		return s.batch.Do(ctx,
			func(p redis.Pipeliner) { cmd = s.evalOn(context.Background(), p, sc, keys, args...) },
			func() (err error) { res, err = cmd.Result(); return err })
	})
	if err != nil {
		return nil, err // res may still be written by a round trip this caller gave up on
	}
	return res, nil
}

// reloadScripts loads the scripts unless they were reloaded since the
// caller read generation gen.
func (s *RedisStore) reloadScripts(ctx context.Context, gen uint64) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.scriptGen.Load() != gen {
		return nil
	}
	if err := s.loadScripts(ctx); err != nil {
		return err
	}
	s.scriptGen.Add(1)
	return nil
}

// heartbeatCall is the heartbeat script's KEYS and script-specific ARGV.
func (s *RedisStore) heartbeatCall(hb Heartbeat, room, mode string) ([]string, []any) {
	ttl := hb.TTL
	if ttl <= 0 {
		ttl = s.opts.TTL
	}
	hasMeta, meta := "0", ""
	if hb.Metadata != nil {
		hasMeta, meta = "1", string(hb.Metadata)
	}
	hold := int64(0)
	if hb.Hold > 0 {
		hold = max(hb.Hold.Milliseconds(), 1)
	}
	uid := hb.User.ID
	keys := []string{
		s.userKey(uid, "user"), s.userKey(uid, "sess"), s.userKey(uid, "ttl:"+hb.SessionID),
		s.key("deadlines"), s.roomKey(room, "members"), s.userKey(uid, "end:"+hb.SessionID),
		s.key("member-deadlines"),
	}
	return keys, []any{uid, hb.SessionID, hb.User.Name, hb.User.Avatar, string(hb.Status), hasMeta, meta,
		max(ttl.Milliseconds(), 1), room, MaxSessionsPerUser, MaxRoomsPerSession, hold, mode}
}

// scriptError maps the scripts' refusals to the store's sentinel errors.
func scriptError(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "PRESENCE_LIMIT sessions"):
		return ErrTooManySessions
	case strings.Contains(msg, "PRESENCE_LIMIT rooms"):
		return ErrTooManyRooms
	case strings.Contains(msg, "PRESENCE_ENDED"):
		return ErrSessionEnded
	case strings.Contains(msg, "PRESENCE_NOT_MEMBER"):
		return ErrNotMember
	}
	return err
}

// RefreshStreams implements Store: one pipelined round trip, one heartbeat
// script call per item (each item touches one user's keys, so the calls can
// later be spread over cluster slots unchanged).
func (s *RedisStore) RefreshStreams(ctx context.Context, items []StreamRefresh) ([]error, error) {
	if s.closed() {
		return nil, ErrClosed
	}
	errs := make([]error, len(items))
	todo := make([]int, 0, len(items))
	for i, it := range items {
		if errs[i] = validateRefresh(it); errs[i] == nil {
			todo = append(todo, i)
		}
	}
	if s.refreshPerItem {
		if err := s.refreshPipelined(ctx, items, todo, errs); err != nil {
			return nil, err
		}
	} else if err := s.refreshBatched(ctx, items, todo, errs); err != nil {
		return nil, err
	}
	// A failure of the connection fails every item alike: say so once.
	if len(items) > 0 {
		first := errs[0]
		same := first != nil && !isItemError(first)
		for _, err := range errs[1:] {
			if !same || err == nil || err.Error() != first.Error() {
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

// refreshChunk is how many items one refresh_many.lua call handles: a chunk
// blocks Redis for about refreshChunk × 10 µs.
const refreshChunk = 100

// refreshBatched runs the items listed in todo as refresh_many.lua calls of
// up to refreshChunk items each, all in one pipelined round trip, and sets
// their errs. (On a sharded cluster a call may only cover items whose keys
// share a slot: refreshPipelined is the shape for that.)
func (s *RedisStore) refreshBatched(ctx context.Context, items []StreamRefresh, todo []int, errs []error) error {
	for attempt := 0; len(todo) > 0; attempt++ {
		pipe := s.client.Pipeline()
		var chunks [][]int
		var cmds []*redis.Cmd
		for from := 0; from < len(todo); from += refreshChunk {
			chunk := todo[from:min(len(todo), from+refreshChunk)]
			keys := make([]string, 0, 7*len(chunk))
			args := make([]any, 0, 3+13*len(chunk))
			args = append(args, s.args(nil)...)
			for _, i := range chunk {
				it := items[i]
				k, a := s.heartbeatCall(Heartbeat{User: it.User, SessionID: it.SessionID, Hold: it.Hold}, it.Room, modeStream)
				keys = append(keys, k...)
				args = append(args, a...)
			}
			chunks = append(chunks, chunk)
			cmds = append(cmds, s.evalOn(ctx, pipe, s.scripts.refreshMany, keys, args...))
		}
		_, _ = pipe.Exec(ctx) // errors are per command
		var again []int
		for c, cmd := range cmds {
			res, err := cmd.StringSlice()
			if err != nil && isScriptMissing(err) && attempt == 0 {
				again = append(again, chunks[c]...)
				continue
			}
			for j, i := range chunks[c] {
				switch {
				case err != nil:
					errs[i] = err
				case j >= len(res):
					errs[i] = fmt.Errorf("redis refresh: %d results for %d items", len(res), len(chunks[c]))
				case res[j] != "":
					errs[i] = scriptError(errors.New(res[j]))
				}
			}
		}
		if len(again) > 0 {
			if err := s.loadScripts(ctx); err != nil {
				return fmt.Errorf("redis load scripts: %w", err)
			}
		}
		todo = again
	}
	return nil
}

// refreshPipelined runs the items listed in todo as one heartbeat.lua call
// each, all in one pipelined round trip, and sets their errs.
func (s *RedisStore) refreshPipelined(ctx context.Context, items []StreamRefresh, todo []int, errs []error) error {
	for attempt := 0; len(todo) > 0; attempt++ {
		pipe := s.client.Pipeline()
		cmds := make([]*redis.Cmd, len(todo))
		for j, i := range todo {
			it := items[i]
			keys, args := s.heartbeatCall(Heartbeat{User: it.User, SessionID: it.SessionID, Hold: it.Hold}, it.Room, modeStream)
			cmds[j] = s.evalOn(ctx, pipe, s.scripts.heartbeat, keys, s.args(args)...)
		}
		_, _ = pipe.Exec(ctx) // errors are per command
		var again []int
		for j, i := range todo {
			err := cmds[j].Err()
			if err != nil && isScriptMissing(err) && attempt == 0 {
				again = append(again, i) // not run: Redis restarted and lost its script cache
				continue
			}
			errs[i] = scriptError(err)
		}
		if len(again) > 0 {
			if err := s.loadScripts(ctx); err != nil {
				return fmt.Errorf("redis load scripts: %w", err)
			}
		}
		todo = again
	}
	return nil
}

// isItemError reports whether err is about one item rather than the call.
func isItemError(err error) bool {
	return errors.Is(err, ErrInvalid) || errors.Is(err, ErrLimit) || errors.Is(err, ErrSessionEnded)
}

// Detach implements Store.
func (s *RedisStore) Detach(ctx context.Context, roomID, userID, sessionID string, grace time.Duration) error {
	if err := validateRoomSession(roomID, userID, sessionID); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	g := int64(0)
	if grace > 0 {
		g = max(grace.Milliseconds(), 1)
	}
	return s.run(ctx, s.scripts.detach,
		[]string{s.userKey(userID, "sess"), s.key("member-deadlines"), s.roomKey(roomID, "members")},
		userID, sessionID, roomID, g).Err()
}

// EndSession implements Store.
func (s *RedisStore) EndSession(ctx context.Context, userID, sessionID string) error {
	if err := validateSession(userID, sessionID); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	return s.run(ctx, s.scripts.endSession, s.endSessionKeys(userID, sessionID),
		userID, sessionID, "end", max(s.opts.EndedRetention.Milliseconds(), 1)).Err()
}

func (s *RedisStore) endSessionKeys(userID, sessionID string) []string {
	return []string{s.userKey(userID, "sess"), s.key("deadlines"), s.userKey(userID, "end:"+sessionID),
		s.key("member-deadlines")}
}

// Leave implements Store.
func (s *RedisStore) Leave(ctx context.Context, roomID, userID, sessionID string) error {
	if err := validateRoomSession(roomID, userID, sessionID); err != nil {
		return err
	}
	if s.closed() {
		return ErrClosed
	}
	return s.run(ctx, s.scripts.leave,
		[]string{s.userKey(userID, "sess"), s.roomKey(roomID, "members"), s.key("member-deadlines")},
		userID, sessionID, roomID).Err()
}

// SetTyping implements Store.
func (s *RedisStore) SetTyping(ctx context.Context, roomID string, user Profile, typing bool) error {
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
	keys := []string{s.roomKey(roomID, "typing"), s.roomKey(roomID, "tnames"), s.key("typing-deadlines"),
		s.roomKey(roomID, "members")}
	return scriptError(s.run(ctx, s.scripts.typing, keys,
		roomID, user.ID, user.DisplayName(), on, max(s.opts.TypingTTL.Milliseconds(), 1)).Err())
}

// Presence implements Store.
func (s *RedisStore) Presence(ctx context.Context, userIDs []string) (map[string]*Presence, error) {
	if err := validateUserIDs(userIDs); err != nil {
		return nil, err
	}
	if s.closed() {
		return nil, ErrClosed
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(userIDs))
	for i, id := range userIDs {
		cmds[i] = pipe.HMGet(ctx, s.userKey(id, "user"), "name", "avatar", "st", "seen", "meta")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make(map[string]*Presence, len(userIDs))
	for i, id := range userIDs {
		out[id] = presenceFromHash(id, cmds[i].Val())
	}
	return out, nil
}

// presenceFromHash reads a user hash's name, avatar, st, seen and meta.
func presenceFromHash(id string, v []any) *Presence {
	if len(v) < 5 || v[3] == nil {
		return nil
	}
	p := &Presence{
		Profile:  Profile{ID: id, Name: str(v[0]), Avatar: str(v[1])},
		Status:   Status(str(v[2])),
		LastSeen: msTime(str(v[3])),
	}
	if p.Status == "" {
		p.Status = StatusOffline
	}
	if m := str(v[4]); m != "" {
		p.Metadata = json.RawMessage(m)
	}
	return p
}

// Members implements Store.
func (s *RedisStore) Members(ctx context.Context, roomID string) ([]Member, error) {
	if !ValidRoomID(roomID) {
		return nil, ErrInvalidRoomID
	}
	if s.closed() {
		return nil, ErrClosed
	}
	// The member list, then every member's profile and status in one
	// pipelined round trip. Not a script: inside Lua each HMGET's reply is
	// converted to a table and back, which cost more than the commands
	// themselves (BENCHMARKS.md, "Redis cost pass 2"). The two reads are not
	// one snapshot: a member who leaves in between is listed (their user
	// record outlives them), and their leave event follows, as it would
	// for a leave just after the read.
	ids, err := s.client.ZRange(ctx, s.roomKey(roomID, "members"), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	members := make([]Member, 0, len(ids))
	if len(ids) == 0 {
		return members, nil
	}
	pipe := s.client.Pipeline()
	cmds := make([]*redis.SliceCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HMGet(ctx, s.userKey(id, "user"), "name", "avatar", "st", "seen")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for i, id := range ids {
		v := cmds[i].Val()
		m := Member{Profile: Profile{ID: id}, Status: StatusOffline}
		if len(v) == 4 {
			m.Name, m.Avatar = str(v[0]), str(v[1])
			if st := str(v[2]); st != "" {
				m.Status = Status(st)
			}
			m.LastSeen = msTime(str(v[3]))
		}
		members = append(members, m)
	}
	return members, nil
}

// Typing implements Store.
func (s *RedisStore) Typing(ctx context.Context, roomID string) ([]Typist, error) {
	if !ValidRoomID(roomID) {
		return nil, ErrInvalidRoomID
	}
	if s.closed() {
		return nil, ErrClosed
	}
	flat, err := s.run(ctx, s.scripts.typingRead,
		[]string{s.roomKey(roomID, "typing"), s.roomKey(roomID, "tnames")}, roomID).StringSlice()
	if err != nil {
		return nil, err
	}
	typists := make([]Typist, 0, len(flat)/2)
	for i := 0; i+1 < len(flat); i += 2 {
		typists = append(typists, Typist{ID: flat[i], Name: flat[i+1]})
	}
	return typists, nil
}

// Subscribe implements Store. Events reach this node through pub/sub, so at
// the moment of the call some events from before it may still be in flight;
// the subscription is activated by a barrier written behind them, so that a
// feed really starts now and a snapshot read after Subscribe is never
// followed by an older event.
func (s *RedisStore) Subscribe(ctx context.Context) (*Subscription, error) {
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
	if err := s.run(ctx, s.scripts.barrier, []string{s.key("log")}, token).Err(); err != nil {
		s.pendingMu.Lock()
		delete(s.pending, token)
		s.pendingMu.Unlock()
		sub.Close()
		return nil, fmt.Errorf("redis subscribe barrier: %w", err)
	}
	return sub, nil
}

// passBarrier activates the subscription waiting for token, if it is ours.
func (s *RedisStore) passBarrier(token string) {
	s.pendingMu.Lock()
	sub := s.pending[token]
	delete(s.pending, token)
	s.pendingMu.Unlock()
	if sub != nil {
		s.feed.activate(sub)
	}
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Ready implements Store: Redis answers and the change feed is subscribed.
func (s *RedisStore) Ready(ctx context.Context) error {
	if s.closed() {
		return ErrClosed
	}
	if err := s.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	if !s.subscribed.Load() {
		return errors.New("redis: change feed not subscribed")
	}
	// The flag says the feed was subscribed once; a ping on the pub/sub
	// connection says it still is (go-redis reconnects it on its own).
	s.pubMu.Lock()
	pubsub := s.pubsub
	s.pubMu.Unlock()
	if err := pubsub.Ping(ctx); err != nil {
		return fmt.Errorf("redis: change feed connection: %w", err)
	}
	return nil
}

// Close implements Store.
func (s *RedisStore) Close() error {
	s.once.Do(func() {
		s.isClosed.Store(true)
		s.cancel()
		s.wg.Wait()
		s.feed.close()
		_ = s.client.Close()
	})
	return nil
}

// dispatch turns pub/sub messages into feed events. It is the only goroutine
// that touches last, the id of the newest log entry delivered.
func (s *RedisStore) dispatch(ctx context.Context, pubsub *redis.PubSub, last string) {
	defer s.wg.Done()
	defer func() { _ = pubsub.Close() }()
	ch := pubsub.ChannelWithSubscriptions(redis.WithChannelSize(10000))
	for {
		var msg any
		select {
		case <-ctx.Done():
			return
		case <-s.resub:
			// A state loss seen through a command connection (a restart
			// or a failover). On a failover go-redis's failover client moves
			// its command connections to the new primary but leaves the
			// pub/sub one where it is: on an old primary that is still up
			// (it stalled, or sits on the far side of a partition) this
			// node would hear nothing of the new primary's events until
			// something cut that connection. Subscribe again on a fresh
			// one; its confirmation catches up from the log.
			old := pubsub
			pubsub = s.client.Subscribe(ctx, s.channel, s.expiredCh)
			s.pubMu.Lock()
			s.pubsub = pubsub
			s.pubMu.Unlock()
			_ = old.Close()
			ch = pubsub.ChannelWithSubscriptions(redis.WithChannelSize(10000))
			s.log.Info("presence: resubscribing the change feed after a Redis state loss")
			continue
		case msg = <-ch:
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.channel {
				// A first subscription or a resubscription after a dropped
				// connection: whatever was published in between is in the
				// log, unless Redis lost its state meanwhile (then the log
				// may hold nothing to tell us so: ask the server itself).
				if _, err := s.checkState(ctx); err != nil && ctx.Err() == nil {
					s.log.Warn("presence: checking Redis state after resubscribe failed; will retry", "error", err)
				}
				// This connection was just made: a loss found now needs no
				// fresh one.
				select {
				case <-s.resub:
				default:
				}
				last = s.catchUp(ctx, last)
				if !s.subscribed.Swap(true) {
					close(s.firstSub)
				}
			}
		case *redis.Message:
			switch m.Channel {
			case s.channel:
				id, payload, ok := strings.Cut(m.Payload, " ")
				if !ok || compareStreamIDs(id, last) <= 0 {
					continue // malformed, or already delivered by a catch-up
				}
				last = id
				s.deliver(payload)
			case s.expiredCh:
				if uid, sid, ok := s.parseTTLKey(m.Payload); ok {
					select {
					case s.reaps <- [2]string{uid, sid}:
					default: // the sweeper gets it within one interval
					}
				}
			}
		}
	}
}

// catchUp delivers the log entries after last and returns the new last id.
func (s *RedisStore) catchUp(ctx context.Context, last string) string {
	oldest, err := s.client.XRangeN(ctx, s.key("log"), "-", "+", 1).Result()
	if err != nil {
		s.log.Error("presence: reading the event log after resubscribe failed; announcing a resync", "error", err)
		s.feed.publish(Event{Kind: EventResync, At: time.Now()})
		return last
	}
	if len(oldest) > 0 && last != "0-0" && compareStreamIDs(oldest[0].ID, last) > 0 {
		// Entries after last may have been trimmed away: we cannot say what
		// changed, only that something may have.
		s.log.Warn("presence: event log trimmed past this node's position; announcing a resync", "last", last)
		s.feed.publish(Event{Kind: EventResync, At: time.Now()})
	}
	for {
		msgs, err := s.client.XRangeN(ctx, s.key("log"), "("+last, "+", 1000).Result()
		if err != nil {
			s.log.Error("presence: event log catch-up failed; announcing a resync", "error", err)
			s.feed.publish(Event{Kind: EventResync, At: time.Now()})
			return last
		}
		for _, m := range msgs {
			last = m.ID
			if p, ok := m.Values["e"].(string); ok {
				s.deliver(p)
			}
		}
		if len(msgs) < 1000 {
			return last
		}
	}
}

// wireEvent is an event as the Lua scripts encode it.
type wireEvent struct {
	K      string          `json:"k"`
	Room   string          `json:"room"`
	U      string          `json:"u"`
	N      string          `json:"n"`
	A      string          `json:"a"`
	From   string          `json:"from"`
	To     string          `json:"to"`
	Rooms  string          `json:"rooms"`
	Typing json.RawMessage `json:"typing"`
	B      string          `json:"b"` // barrier token
	At     int64           `json:"at"`
	Dl     int64           `json:"dl"`
	MC     int             `json:"mc"` // room member count after a join/leave
}

func (s *RedisStore) deliver(payload string) {
	var w wireEvent
	if err := json.Unmarshal([]byte(payload), &w); err != nil {
		s.log.Error("presence: undecodable event", "error", err, "payload", payload)
		return
	}
	if w.K == "barrier" {
		s.passBarrier(w.B)
		return
	}
	e, err := w.event()
	if err != nil {
		s.log.Error("presence: undecodable event", "error", err, "payload", payload)
		return
	}
	s.feed.publish(e)
}

func (w *wireEvent) event() (Event, error) {
	e := Event{
		Kind: EventKind(w.K),
		Room: w.Room,
		User: Profile{ID: w.U, Name: w.N, Avatar: w.A},
		From: Status(w.From),
		To:   Status(w.To),
		At:   time.UnixMilli(w.At),

		Members: w.MC,
	}
	if w.Dl > 0 {
		e.Deadline = time.UnixMilli(w.Dl)
	}
	if w.Rooms != "" {
		e.Rooms = strings.Split(w.Rooms, " ")
	}
	// cjson encodes an empty list as {}: only a JSON array holds typists.
	if len(w.Typing) > 0 && w.Typing[0] == '[' {
		if err := json.Unmarshal(w.Typing, &e.Typing); err != nil {
			return Event{}, err
		}
	}
	return e, nil
}

// parseTTLKey extracts (user, session) from "P{u:USER}:ttl:SESSION".
func (s *RedisStore) parseTTLKey(key string) (string, string, bool) {
	rest, ok := strings.CutPrefix(key, s.ttlMarker)
	if !ok {
		return "", "", false
	}
	uid, sid, ok := strings.Cut(rest, "}:ttl:")
	if !ok || !ValidUserID(uid) || !ValidSessionID(sid) {
		return "", "", false
	}
	return uid, sid, true
}

// reapExpired runs the reap script for sessions whose TTL key Redis just
// expired, pipelining whatever has queued up.
func (s *RedisStore) reapExpired(ctx context.Context) {
	defer s.wg.Done()
	reapLoop(ctx, s.reaps, func(batch [][2]string) {
		pipe := s.client.Pipeline()
		for _, r := range batch {
			s.evalOn(ctx, pipe, s.scripts.endSession, s.endSessionKeys(r[0], r[1]), s.args([]any{r[0], r[1], "reap", 0})...)
		}
		if _, err := pipe.Exec(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, redis.Nil) {
			// NOSCRIPT after a Redis restart flushed the script cache: load
			// them again; the sweeper reaps this batch meanwhile.
			_ = s.loadScripts(ctx)
			s.log.Warn("presence: reaping expired sessions failed; the sweeper will retry", "error", err)
		}
	})
}

// reapLoop calls reap, until ctx ends, with each batch of (user, session)
// pairs from ch: the first that arrives and whatever queued up behind it
// (at most 256), so a burst of expiries costs a few round trips.
func reapLoop(ctx context.Context, ch <-chan [2]string, reap func([][2]string)) {
	batch := make([][2]string, 0, 256)
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-ch:
			batch = append(batch[:0], r)
		}
	drain:
		for len(batch) < cap(batch) {
			select {
			case r := <-ch:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		reap(batch)
	}
}

// sweep reaps due sessions and typing marks every SweepInterval. It does not
// depend on pub/sub, so expiries keep happening while the feed reconnects.
func (s *RedisStore) sweep(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SweepInterval)
	defer t.Stop()
	keys := []string{s.key("deadlines"), s.key("typing-deadlines"), s.key("member-deadlines")}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for range 100 { // at most 100×sweepLimit reaps per tick, then yield
			n, err := s.run(ctx, s.scripts.sweep, keys, sweepLimit).Int64Slice()
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("presence: sweep failed", "error", err)
				}
				break
			}
			if len(n) < 3 || (n[0] < sweepLimit && n[1] < sweepLimit && n[2] < sweepLimit) {
				break
			}
		}
	}
}

// compareStreamIDs orders Redis stream ids ("ms-seq").
func compareStreamIDs(a, b string) int {
	am, as := splitStreamID(a)
	bm, bs := splitStreamID(b)
	switch {
	case am != bm:
		return cmpU(am, bm)
	default:
		return cmpU(as, bs)
	}
}

func splitStreamID(id string) (uint64, uint64) {
	ms, seq, _ := strings.Cut(id, "-")
	m, _ := strconv.ParseUint(ms, 10, 64)
	q, _ := strconv.ParseUint(seq, 10, 64)
	return m, q
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func msTime(s string) time.Time {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// stateCheckInterval is how often a node asks Redis whether it still holds
// the state the node knew: ten sweep intervals, between 100 ms and 1 s
// (an INFO server and a GET: cheap).
func (s *RedisStore) stateCheckInterval() time.Duration { return stateCheckEvery(s.opts.SweepInterval) }

func stateCheckEvery(sweep time.Duration) time.Duration {
	return min(max(10*sweep, 100*time.Millisecond), time.Second)
}

// watchState runs checkState periodically, so that a state loss that does
// not drop the pub/sub connection (FLUSHALL, a failover behind a proxy) or
// that happens while nothing is written is still noticed.
func (s *RedisStore) watchState(ctx context.Context) {
	defer s.wg.Done()
	watchStateLoop(ctx, s.stateCheckInterval(), nil, s.checkState, s.log)
}

// watchStateLoop calls check every interval, and whenever kick (nil: never)
// delivers, until ctx ends.
func watchStateLoop(ctx context.Context, every time.Duration, kick <-chan struct{}, check func(context.Context) (bool, error), log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		if _, err := check(ctx); err != nil && ctx.Err() == nil {
			log.Debug("presence: Redis state check failed", "error", err)
		}
	}
}

// checkState compares the server's run_id and the Pepoch token with what
// this node saw last. A changed run_id (a restart or a failover: writes may
// have been lost) or a missing or changed token (the data set was lost or
// flushed) is a state loss: the node re-enables what a fresh server lacks
// and sends EventResync on every subscription. The first call only records
// what it finds. It reports whether a loss was detected.
func (s *RedisStore) checkState(ctx context.Context) (bool, error) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	runID := ""
	info, err := s.client.Info(ctx, "server").Result()
	var refused redis.Error
	switch {
	case err == nil:
		runID = infoField(info, "run_id")
	case errors.As(err, &refused):
		// A managed Redis that refuses INFO: the epoch token alone still
		// tells a lost data set.
	default:
		return false, err
	}
	epochKey := s.key("epoch")
	epoch, err := s.client.Get(ctx, epochKey).Result()
	if errors.Is(err, redis.Nil) {
		// A new (or emptied) data set: mark it. SETNX then GET, so that
		// nodes racing here all adopt the same token.
		if err := s.client.SetNX(ctx, epochKey, randomToken(), 0).Err(); err != nil {
			return false, err
		}
		epoch, err = s.client.Get(ctx, epochKey).Result()
	}
	if err != nil {
		return false, err
	}
	first := s.runID == "" && s.epoch == ""
	lost := !first && (runID != s.runID || epoch != s.epoch)
	s.runID, s.epoch = runID, epoch
	if lost {
		s.log.Warn("presence: Redis lost or may have lost its state (restart, failover or flush); announcing a resync",
			"run_id", runID)
		s.stateLost(ctx)
	}
	return lost, nil
}

// stateLost restores what a fresh server lacks and tells every subscriber
// to re-read state. Subscriptions still waiting for their barrier (which
// may have been lost with the state) start now: the resync covers them.
func (s *RedisStore) stateLost(ctx context.Context) {
	select {
	case s.resub <- struct{}{}:
	default: // one is already asked for
	}
	s.enableExpiryEvents(ctx)
	if err := s.loadScripts(ctx); err != nil {
		s.log.Warn("presence: reloading scripts after a state loss failed", "error", err)
	}
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

// infoField returns one "name:value" field of an INFO reply.
func infoField(info, name string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
