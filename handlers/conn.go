package handlers

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/r3labs/sse/v2"

	"github.com/presenced/presenced/store"
)

// Why a stream ended (context.Cause of its context).
var (
	errShutdown     = errors.New("server shutting down")
	errSlowReader   = errors.New("stream queue full: reader too slow")
	errStalled      = errors.New("stream write missed its deadline: reader stalled")
	errNoState      = errors.New("could not read the state to send first")
	errStreamClosed = errors.New("stream closed")
	errTokenExpired = errors.New("the stream's token expired")
)

// maxPending bounds the events held for a connection while its snapshot is
// being read; a connection that overflows it is dropped like a slow reader.
const maxPending = 256

// streamBuffer is the size of each connection's own r3labs stream buffer,
// which (with the subscriber's 64 slots) is the connection's queue: when
// TryPublish finds it full the reader is too slow and is dropped, instead of
// anyone waiting for it.
const streamBuffer = 128

type connKind int

const (
	roomConn connKind = iota + 1
	usersConn
)

func (k connKind) String() string {
	if k == roomConn {
		return "room"
	}
	return "users"
}

// outMsg is one SSE event for one connection.
type outMsg struct {
	event string
	data  []byte
	// seq is the read sequence of the state a render came from; 0 for a
	// diff, which is never dropped as stale.
	seq uint64
}

// conn is one open SSE stream. It has its own r3labs stream (named
// streamID), so that a reader that stops reading can only fill its own
// queue: the hub never blocks on it (TryPublish), and drops it instead.
//
// Ordering: a connection starts gated. Whatever the hub sends it before its
// first snapshot is queued in pending; the snapshot (read after the
// connection was registered, so nothing after it is missed) goes out first,
// then the pending events, minus renders read before the snapshot. The same
// happens on every resync.
type conn struct {
	h        *hub
	sse      *sse.Server
	streamID string
	kind     connKind
	json     bool

	// Room streams.
	room string
	user store.Profile
	sid  string
	max  int
	list bool // also send the demo's member-list event
	// Users streams.
	ids []string
	// Dot variant for presence-{userId} events.
	dotSize  string
	dotLabel bool
	// expires is when the stream's token stops being accepted: the stream
	// is closed then (zero: never).
	expires time.Time

	ctx    context.Context
	cancel context.CancelCauseFunc
	poke   chan struct{} // refresh the session now

	ended atomic.Bool // an explicit offline came: stop keeping the session alive

	mu      sync.Mutex
	started bool // the r3labs subscriber exists: publishing reaches it
	dead    bool
	gate    int
	snapSeq uint64
	pending []outMsg
	nextID  uint64
}

func (h *hub) newConn(parent context.Context, kind connKind) *conn {
	ctx, cancel := context.WithCancelCause(parent)
	return &conn{
		h:        h,
		sse:      h.sse,
		streamID: "c" + strconv.FormatUint(h.connSeq.Add(1), 10),
		kind:     kind,
		ctx:      ctx,
		cancel:   cancel,
		poke:     make(chan struct{}, 1),
		gate:     1,
		dotSize:  "sm",
	}
}

// deliver queues one event, or holds it while a snapshot is being read.
func (c *conn) deliver(m outMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	if c.gate > 0 {
		if len(c.pending) >= maxPending {
			c.dropLocked(errSlowReader)
			return
		}
		c.pending = append(c.pending, m)
		return
	}
	c.publishLocked(m)
}

// publishLocked hands one event to the connection's r3labs stream: a fresh
// *sse.Event every time (never shared between streams), a numeric id, and
// never empty data (r3labs closes the connection on an event with neither
// data nor comment).
func (c *conn) publishLocked(m outMsg) {
	if m.seq != 0 && m.seq < c.snapSeq {
		return // rendered from a read older than the snapshot the client has
	}
	data := m.data
	if len(data) == 0 {
		data = []byte(" ")
	}
	c.nextID++
	ev := &sse.Event{ID: []byte(strconv.FormatUint(c.nextID, 10)), Event: []byte(m.event), Data: data}
	if !c.sse.TryPublish(c.streamID, ev) {
		c.dropLocked(errSlowReader)
		return
	}
	c.h.m.deliveredInc(metricEvent(m.event))
}

// comment sends a keep-alive comment; it carries no state, so it is not
// gated.
func (c *conn) comment() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || !c.started {
		return
	}
	if !c.sse.TryPublish(c.streamID, &sse.Event{Comment: []byte("keepalive")}) {
		c.dropLocked(errSlowReader)
	}
}

// beginSnapshot gates the connection for a snapshot read numbered seq. The
// initial snapshot uses the gate every connection is born with.
func (c *conn) beginSnapshot(seq uint64, initial bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return false
	}
	if initial {
		c.started = true
	} else {
		if !c.started {
			return false // its initial snapshot is still to come
		}
		c.gate++
	}
	c.snapSeq = max(c.snapSeq, seq)
	return true
}

// snapshotSeq is the read sequence of the connection's last snapshot.
func (c *conn) snapshotSeq() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snapSeq
}

// endSnapshot sends a snapshot's events, then whatever arrived meanwhile.
func (c *conn) endSnapshot(msgs []outMsg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return
	}
	for _, m := range msgs {
		if c.dead {
			return
		}
		c.publishLocked(m)
	}
	c.gate--
	if c.gate > 0 {
		return
	}
	for _, m := range c.pending {
		if c.dead {
			return
		}
		c.publishLocked(m)
	}
	c.pending = nil
}

// drop closes the stream with a cause.
func (c *conn) drop(cause error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dropLocked(cause)
}

func (c *conn) dropLocked(cause error) {
	if c.dead {
		return
	}
	c.dead = true
	c.pending = nil
	c.cancel(cause)
	switch {
	case errors.Is(cause, errSlowReader):
		c.h.m.dropped.WithLabelValues("slow").Inc()
	case errors.Is(cause, errStalled):
		c.h.m.dropped.WithLabelValues("stalled").Inc()
	case errors.Is(cause, errShutdown):
		c.h.m.dropped.WithLabelValues("shutdown").Inc()
	case errors.Is(cause, errNoState):
		c.h.m.dropped.WithLabelValues("no_state").Inc()
	case errors.Is(cause, errTokenExpired):
		c.h.m.dropped.WithLabelValues("token_expired").Inc()
	}
}

// setEnded marks or unmarks the session as ended by an explicit offline and
// reports whether that changed anything.
func (c *conn) setEnded(v bool) bool {
	if c.kind != roomConn {
		return false
	}
	return c.ended.Swap(v) != v
}

func (c *conn) pokeRefresh() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

func metricEvent(event string) string {
	if len(event) > 9 && event[:9] == "presence-" {
		return "presence"
	}
	return event
}

// streamWriter wraps a stream's ResponseWriter for r3labs: every write and
// flush gets a deadline (http.ResponseController), and the first one that
// fails cancels the connection, which makes r3labs unsubscribe it. A reader
// that stops reading is thus dropped after about one deadline instead of
// holding anything up. There is no server-wide WriteTimeout (it would cut
// every stream after that time).
type streamWriter struct {
	w        http.ResponseWriter
	rc       *http.ResponseController
	deadline time.Duration
	fail     func(error)
	started  chan struct{}
	once     sync.Once
	failed   atomic.Bool
	last     atomic.Int64 // unix nanos of the last successful flush
	armed    atomic.Int64 // unix nanos when the write deadline was last pushed forward
}

func newStreamWriter(w http.ResponseWriter, deadline time.Duration, fail func(error)) *streamWriter {
	sw := &streamWriter{w: w, rc: http.NewResponseController(w), deadline: deadline, fail: fail, started: make(chan struct{})}
	sw.last.Store(time.Now().UnixNano())
	return sw
}

func (s *streamWriter) Header() http.Header { return s.w.Header() }

// WriteHeader is called by r3labs right after it registered the subscriber:
// from then on a publish reaches this connection, so it is the signal to
// send the state.
func (s *streamWriter) WriteHeader(code int) {
	s.w.WriteHeader(code)
	if code == http.StatusOK {
		s.once.Do(func() { close(s.started) })
	}
}

func (s *streamWriter) Write(p []byte) (int, error) {
	if s.failed.Load() {
		return 0, errStalled
	}
	s.arm()
	n, err := s.w.Write(p)
	if err != nil {
		s.failWith(err)
	}
	return n, err
}

func (s *streamWriter) Flush() {
	if s.failed.Load() {
		return
	}
	s.arm()
	if err := s.rc.Flush(); err != nil {
		s.failWith(err)
		return
	}
	s.last.Store(time.Now().UnixNano())
}

// arm pushes the write deadline forward, at most once per deadline/8: every
// event is several Writes into the response buffer plus a Flush, and each
// SetWriteDeadline is a timer update. A write starting now still has at
// least 7/8 of the deadline.
func (s *streamWriter) arm() {
	now := time.Now().UnixNano()
	if now-s.armed.Load() < int64(s.deadline/8) {
		return
	}
	s.armed.Store(now)
	_ = s.rc.SetWriteDeadline(time.Unix(0, now).Add(s.deadline))
}

func (s *streamWriter) failWith(err error) {
	if s.failed.CompareAndSwap(false, true) {
		s.fail(err)
	}
}

// sinceLastWrite is how long the stream has been silent.
func (s *streamWriter) sinceLastWrite() time.Duration {
	return time.Since(time.Unix(0, s.last.Load()))
}

// clearDeadline lifts the deadline from a connection that may be reused for
// another request.
func (s *streamWriter) clearDeadline() {
	if !s.failed.Load() {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
}
