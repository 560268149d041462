package hub

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/presenced/presenced/store"
)

// Format is what a subscriber's events carry.
type Format int

const (
	HTML Format = iota // fragments for htmx's sse-swap
	JSON               // JSON bodies for other subscribers
)

// RoomSub is one room a subscriber follows.
type RoomSub struct {
	ID string
	// Primary: the room's HTML events are named members, typing and
	// member-list (the contract's names); other rooms of the same stream
	// get "-{roomId}" appended.
	Primary bool
	// Member: the stream holds Session in this room (it joined); false for
	// a watch-only stream.
	Member  bool
	Session string
}

// Spec says what a subscriber follows and how it is shown.
type Spec struct {
	Format Format
	Rooms  []RoomSub
	Users  []string // presence-{userId} dots (HTML) / status events (JSON)
	View   View
	// User is the stream's own user (a join the sync already lists is not
	// sent again); may be empty.
	User store.Profile
	// Visible, when set, says whose presence the stream may show (the
	// token's see claim): anyone else is shown as a user never seen, and
	// their changes are not sent. nil: anyone. SetVisible replaces it.
	Visible func(userID string) bool
}

// View is how an HTML subscriber renders: every distinct View of a change
// is rendered once.
type View struct {
	Max      int    // avatars in a stack before +N
	List     bool   // also the demo's member-list event
	DotSize  string // sm, md, lg
	DotLabel bool
}

// Message is one SSE event for one subscriber.
type Message struct {
	Event string
	Data  []byte
}

// item is one queued message. key != "" makes it latest-state-wins: a newer
// item with the same key replaces it in place (an HTML render of a room's
// stack, a user's dot, a room's typing set). seq is the hub read sequence the
// item was made at: a snapshot of the topic taken later supersedes it.
type item struct {
	key   string
	topic string
	msg   Message
	seq   uint64
	sync  bool // a marker: send the topic's whole state here
	// self is +1 for a JSON join of the subscriber's own user, -1 for its
	// leave: a join the last snapshot already listed is not sent again.
	self int8
	// render: an HTML render of a room read (seq is the read's), stale once
	// a newer read of its topic was sent. Every other item is an event (seq
	// is its dispatch's).
	render bool
}

// Queue bounds. A subscriber whose queue passes them is not disconnected:
// its queue is replaced by one snapshot per topic (the state-first path),
// which is what it needs to be correct. Only a socket that does not drain
// within the write deadline is dropped (by its writer).
const (
	maxQueued      = 512
	maxQueuedBytes = 1 << 20
)

// Subscriber is one open stream. The hub queues to it without ever
// blocking; the stream's own goroutine takes the queue (Take) and writes it.
type Subscriber struct {
	spec    Spec
	hub     *Hub
	visible atomic.Pointer[func(string) bool]

	notify    chan struct{} // one pending wake-up for the writer
	lastWrite atomic.Int64  // unix nanos, set by the writer (Wrote)
	closed    chan struct{}
	closeOnce sync.Once
	cause     atomic.Value // error

	mu        sync.Mutex
	queue     []*item
	byKey     map[string]*item
	bytes     int
	keepalive bool
	snapSeq   map[string]uint64 // topic → seq of the last snapshot read sent
	// eventSeq: the events dispatched before the last batch of snapshots
	// began are in every snapshot of it (see Take).
	eventSeq  uint64
	listed    map[string]bool // topic → own user listed as a member (JSON), writer only
	collapsed int             // times the queue overflowed into snapshots
}

// Spec returns the subscriber's spec.
func (s *Subscriber) Spec() Spec { return s.spec }

// sees reports whether the subscriber may show userID's presence.
func (s *Subscriber) sees(userID string) bool {
	f := s.visible.Load()
	return f == nil || (*f)(userID)
}

// filtered reports whether the subscriber sees only some users (its
// renders are then its own, not shared).
func (s *Subscriber) filtered() bool { return s.visible.Load() != nil }

// SetVisible replaces the visibility rule (a see claim that depends on
// room membership changed) and re-sends the subscriber its state under it.
func (s *Subscriber) SetVisible(f func(userID string) bool) {
	if f == nil {
		s.visible.Store(nil)
	} else {
		s.visible.Store(&f)
	}
	s.resync()
}

// rule is the visibility rule for store.KeepSeen (nil: anyone).
func (s *Subscriber) rule() func(string) bool {
	if f := s.visible.Load(); f != nil {
		return *f
	}
	return nil
}

func (s *Subscriber) visibleMembers(ms []store.Member) []store.Member {
	return store.KeepSeen(ms, s.rule())
}

func (s *Subscriber) visibleTypists(ts []store.Typist) []store.Typist {
	return store.KeepSeen(ts, s.rule())
}

// Notify is signalled whenever there is something to take.
func (s *Subscriber) Notify() <-chan struct{} { return s.notify }

// Closed is closed when the hub ends the subscriber (shutdown).
func (s *Subscriber) Closed() <-chan struct{} { return s.closed }

// Cause is why the hub closed the subscriber (nil while open).
func (s *Subscriber) Cause() error {
	if v := s.cause.Load(); v != nil {
		return v.(error)
	}
	return nil
}

func (s *Subscriber) close(cause error) {
	s.closeOnce.Do(func() {
		s.cause.Store(cause)
		close(s.closed)
	})
}

// Wrote tells the subscriber its writer just wrote (keep-alives are due
// only on idle streams).
func (s *Subscriber) Wrote(at time.Time) { s.lastWrite.Store(at.UnixNano()) }

func (s *Subscriber) wake() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

func roomTopic(room string) string { return "room:" + room }

const usersTopic = "users"

// topics lists the subscriber's topics.
func (s *Subscriber) topics() []string {
	out := make([]string, 0, len(s.spec.Rooms)+1)
	for _, r := range s.spec.Rooms {
		out = append(out, roomTopic(r.ID))
	}
	if len(s.spec.Users) > 0 {
		out = append(out, usersTopic)
	}
	return out
}

// push queues one item. Keyed items replace their queued predecessor (and
// keep its place); everything else is appended. A stale item (staleLocked)
// is dropped: the client already has newer state.
func (s *Subscriber) push(it *item) {
	s.mu.Lock()
	if s.staleLocked(it) {
		s.mu.Unlock()
		return
	}
	if it.key != "" {
		if old := s.byKey[it.key]; old != nil {
			if it.seq >= old.seq {
				s.bytes += len(it.msg.Data) - len(old.msg.Data)
				old.msg, old.seq, old.topic, old.render = it.msg, it.seq, it.topic, it.render
			}
			s.mu.Unlock()
			s.wake()
			return
		}
		if s.byKey == nil {
			s.byKey = map[string]*item{}
		}
		s.byKey[it.key] = it
	}
	s.queue = append(s.queue, it)
	s.bytes += len(it.msg.Data)
	if len(s.queue) > maxQueued || s.bytes > maxQueuedBytes {
		s.collapseLocked()
	}
	s.mu.Unlock()
	s.wake()
}

// staleLocked reports whether the client already has what it says (s.mu
// held). A render is stale once a read of its topic at least as new was
// sent. An event is stale once a batch of snapshots that began after its
// dispatch was sent: one threshold for every topic, because one event
// feeds several of them (a status event updates the user's entry in the
// users snapshot and in every room's), and per-topic thresholds could drop
// a later event through one topic while an earlier one still reached the
// client through another, undoing the snapshot (a user shown offline who
// is online). Dots owed from a held offline have no topic: never stale.
func (s *Subscriber) staleLocked(it *item) bool {
	if it.seq == 0 || it.topic == "" {
		return false
	}
	if it.render {
		return it.seq < s.snapSeq[it.topic]
	}
	return it.seq < s.eventSeq
}

// collapseLocked replaces the whole queue by one snapshot marker per topic
// (an overflow).
func (s *Subscriber) collapseLocked() {
	s.collapsed++
	s.snapshotAllLocked()
	if s.hub != nil && s.hub.metrics.Collapsed != nil {
		s.hub.metrics.Collapsed.Inc()
	}
}

// resync queues a snapshot of every topic, superseding what is queued for
// them (the feed may have missed changes).
func (s *Subscriber) resync() {
	s.mu.Lock()
	s.snapshotAllLocked()
	s.mu.Unlock()
	s.wake()
}

// snapshotAllLocked empties the queue and queues one snapshot marker per
// topic: each marker's state supersedes everything that was queued.
func (s *Subscriber) snapshotAllLocked() {
	s.queue = s.queue[:0]
	clear(s.byKey)
	s.bytes = 0
	for _, t := range s.topics() {
		s.queue = append(s.queue, &item{topic: t, sync: true})
	}
}

// requestKeepalive asks the writer for a comment if the stream has been
// idle at least idle.
func (s *Subscriber) requestKeepalive(now time.Time, idle time.Duration) {
	if now.Sub(time.Unix(0, s.lastWrite.Load())) < idle {
		return
	}
	s.mu.Lock()
	s.keepalive = true
	s.mu.Unlock()
	s.wake()
}

// Batch is what a writer takes from its queue at once.
type Batch struct {
	Messages  []Message
	Keepalive bool // nothing else to say: write a comment
}

// Take empties the queue: snapshot markers are resolved into the topic's
// current state (read through the hub, shared between subscribers), and
// items a snapshot superseded are dropped. It returns an error only when a
// snapshot could not be read (the stream should close; the client
// reconnects and tries again).
func (s *Subscriber) Take() (Batch, error) {
	s.mu.Lock()
	q := s.queue
	s.queue = nil
	clear(s.byKey)
	s.bytes = 0
	ka := s.keepalive
	s.keepalive = false
	s.mu.Unlock()

	var b Batch
	if s.listed == nil {
		s.listed = map[string]bool{}
	}
	batch := false
	for i := 0; i < len(q); i++ {
		it := q[i]
		if !it.sync {
			s.mu.Lock()
			stale := s.staleLocked(it)
			s.mu.Unlock()
			if stale {
				continue
			}
			switch {
			case it.self > 0 && s.listed[it.topic]:
				continue // the sync the client has lists it already
			case it.self > 0:
				s.listed[it.topic] = true
			case it.self < 0:
				s.listed[it.topic] = false
			}
			b.Messages = append(b.Messages, it.msg)
			continue
		}
		if !batch {
			// Before the first read: every event dispatched before this
			// number is in every snapshot of the batch; the later ones are
			// sent after it, in order (replaying one the snapshot already
			// has is harmless: events say where a state went, not by how
			// much).
			batch = true
			seq := s.hub.seq.Add(1)
			s.mu.Lock()
			s.eventSeq = max(s.eventSeq, seq)
			s.mu.Unlock()
		}
		msgs, seq, self, err := s.hub.snapshot(s, it.topic)
		if err != nil {
			return b, err
		}
		s.listed[it.topic] = self
		s.mu.Lock()
		if s.snapSeq == nil {
			s.snapSeq = map[string]uint64{}
		}
		s.snapSeq[it.topic] = max(s.snapSeq[it.topic], seq)
		s.mu.Unlock()
		// Items of this topic taken with this batch but made before the
		// snapshot are in it already.
		b.Messages = append(b.Messages, msgs...)
	}
	b.Keepalive = ka && len(b.Messages) == 0
	return b, nil
}

func (s *Subscriber) snapshotSeq(topic string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapSeq[topic]
}
