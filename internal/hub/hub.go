// Package hub turns the store's change feed into per-subscriber event
// queues. It knows nothing of HTTP, SSE framing or templates: subscribers
// are bounded queues that a stream's own goroutine drains, and a Renderer
// supplied by the HTTP layer makes the payloads.
//
// The data path: store event → Hub.dispatch (the feed goroutine) → one
// render per change and variant → Subscriber.push (never blocks) → the
// stream's writer (Subscriber.Take) → the socket.
//
// Room HTML (members, member-list, typing) is rendered by one worker per
// room with HTML subscribers: a change only marks the room dirty; the worker
// re-reads the room at most once per coalescing window and queues the result
// to every HTML subscriber. Re-reading instead of patching makes every
// render absolute, so a burst of changes costs one render, and a lost or
// reordered event cannot leave a stack wrong. Dots and JSON diffs are made
// straight from the event, once per variant.
//
// State first: a subscriber starts with a snapshot marker per topic, which
// its writer resolves into the topic's current state (Take); room reads are
// shared between the snapshots that need them while nothing changed. Every
// read and every dispatched event takes a number from seq; a queued item
// older than its topic's last snapshot is dropped, so a stale render or a
// diff the snapshot already contains never reaches the client after it.
//
// Overflow: latest-state items (renders, dots, typing sets) replace their
// queued predecessor, so a burst costs a subscriber one slot per topic part;
// a queue that still overflows is replaced by one snapshot per topic. No
// subscriber is ever disconnected for a burst; only its writer drops it,
// when the socket does not drain within the write deadline.
package hub

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presenced/presenced/store"
)

// Options are the hub's timings.
type Options struct {
	Coalesce  time.Duration // shortest interval between two renders of a room
	Debounce  time.Duration // --leave-debounce (0: off)
	Keepalive time.Duration // longest silence on a stream
	// BeforeResync runs on the feed goroutine before every stream is
	// re-sent its state: the session keeper re-creates what the backend
	// lost first, so the state re-read includes the node's own streams.
	BeforeResync func()
}

// ErrClosed closes every subscriber when the hub shuts down.
var ErrClosed = errors.New("hub closed")

// Hub is one node's fan-out engine.
type Hub struct {
	st      store.Store
	r       Renderer
	log     *slog.Logger
	metrics *Metrics
	opt     Options

	seq        atomic.Uint64
	subscribed atomic.Bool
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	subs     map[*Subscriber]struct{}
	rooms    map[string]*roomState
	watchers map[string]map[*Subscriber]struct{} // user id → subscribers of their dot

	// Offline dots held back by the leave debounce: feed goroutine only.
	dots     map[string]*pendingDot
	dotTimer *time.Timer
	dotQueue []dotDue
}

// New makes a hub on st. Start subscribes it to the feed.
func New(st store.Store, r Renderer, log *slog.Logger, m *Metrics, opt Options) *Hub {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = NewMetrics()
	}
	if opt.Coalesce <= 0 {
		opt.Coalesce = 50 * time.Millisecond
	}
	if opt.Keepalive <= 0 {
		opt.Keepalive = 15 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Hub{
		st: st, r: r, log: log, metrics: m, opt: opt,
		ctx: ctx, cancel: cancel,
		subs:     map[*Subscriber]struct{}{},
		rooms:    map[string]*roomState{},
		watchers: map[string]map[*Subscriber]struct{}{},
		dots:     map[string]*pendingDot{},
		dotTimer: t,
	}
}

// Subscribed reports whether the hub's feed subscription is open.
func (h *Hub) Subscribed() bool { return h.subscribed.Load() }

// Start subscribes to the feed (before it returns, so that a node reports
// ready only once nothing can be missed) and runs the feed loop and the
// node-wide keep-alive timer until Close.
func (h *Hub) Start() error {
	sub, err := h.st.Subscribe(h.ctx)
	if err != nil {
		return err
	}
	h.subscribed.Store(true)
	h.wg.Add(2)
	go h.run(sub)
	go h.keepalives()
	return nil
}

// Close ends every subscriber with cause, stops the feed loop and every
// room worker, and waits for them.
func (h *Hub) Close(cause error) {
	h.CloseSubscribers(cause)
	h.cancel()
	h.wg.Wait()
}

// CloseSubscribers ends every subscriber with cause and refuses new ones
// (shutdown: the browsers reconnect, to another node).
func (h *Hub) CloseSubscribers(cause error) {
	h.mu.Lock()
	h.closed = true
	subs := make([]*Subscriber, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.close(cause)
	}
}

// Subscribe registers a subscriber. Its queue starts with a snapshot
// marker per topic, so its writer sends the state first. It returns nil
// once the hub is closing.
func (h *Hub) Subscribe(spec Spec) *Subscriber {
	s := &Subscriber{spec: spec, hub: h, notify: make(chan struct{}, 1), closed: make(chan struct{})}
	if spec.Visible != nil {
		s.visible.Store(&spec.Visible)
	}
	s.lastWrite.Store(time.Now().UnixNano())
	s.snapshotAllLocked() // not shared yet: no lock needed
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.subs[s] = struct{}{}
	for i := range spec.Rooms {
		rs := h.rooms[spec.Rooms[i].ID]
		if rs == nil {
			rs = newRoomState(spec.Rooms[i].ID)
			h.rooms[rs.id] = rs
		}
		rs.subs[s] = &s.spec.Rooms[i]
		if spec.Format == JSON {
			rs.json++
		}
	}
	for _, id := range spec.Users {
		set := h.watchers[id]
		if set == nil {
			set = map[*Subscriber]struct{}{}
			h.watchers[id] = set
		}
		set[s] = struct{}{}
	}
	s.wake()
	return s
}

// Unsubscribe removes a subscriber (its stream closed).
func (h *Hub) Unsubscribe(s *Subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	for _, r := range s.spec.Rooms {
		if rs := h.rooms[r.ID]; rs != nil {
			delete(rs.subs, s)
			if s.spec.Format == JSON {
				rs.json--
			}
			if len(rs.subs) == 0 && !rs.running {
				delete(h.rooms, r.ID)
			}
		}
	}
	for _, id := range s.spec.Users {
		if set := h.watchers[id]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(h.watchers, id)
			}
		}
	}
}

// Count is the number of open subscribers.
func (h *Hub) Count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// run reads the feed. When the subscription ends (the store closed it as
// too slow, or lost its backend), it subscribes again and re-sends every
// subscriber its state, since transitions may have been missed in between.
func (h *Hub) run(sub *store.Subscription) {
	defer h.wg.Done()
	defer h.dotTimer.Stop()
	backoff := 50 * time.Millisecond
	for {
	feed:
		for {
			select {
			case ev, ok := <-sub.C():
				if !ok {
					break feed
				}
				if ev.Kind == store.EventResync {
					h.metrics.FeedEvents.WithLabelValues(string(ev.Kind)).Inc()
					h.log.Warn("store feed asked for a resync: re-sending every stream its state")
					h.resyncAll()
					continue
				}
				h.dispatch(ev)
			case <-h.dotTimer.C:
				h.flushDots(time.Now())
			}
		}
		h.subscribed.Store(false)
		if h.ctx.Err() != nil {
			return
		}
		if err := sub.Err(); errors.Is(err, store.ErrSlowSubscriber) {
			h.log.Warn("store feed dropped this node as too slow: resubscribing and re-sending state", "err", err)
		} else {
			h.log.Error("store feed ended: resubscribing", "err", err)
		}
		for {
			var err error
			if sub, err = h.st.Subscribe(h.ctx); err == nil {
				break
			}
			if h.ctx.Err() != nil {
				return
			}
			h.log.Error("store feed subscribe failed", "err", err, "retry_in", backoff)
			select {
			case <-h.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
		}
		backoff = 50 * time.Millisecond
		h.subscribed.Store(true)
		h.resyncAll()
	}
}

// keepalives asks every idle subscriber for a comment: one node-wide timer
// instead of one per stream. A stream is silent at most Keepalive.
func (h *Hub) keepalives() {
	defer h.wg.Done()
	half := h.opt.Keepalive / 2
	t := time.NewTicker(half)
	defer t.Stop()
	for {
		select {
		case <-h.ctx.Done():
			return
		case now := <-t.C:
			h.mu.Lock()
			subs := make([]*Subscriber, 0, len(h.subs))
			for s := range h.subs {
				subs = append(subs, s)
			}
			h.mu.Unlock()
			for _, s := range subs {
				s.requestKeepalive(now, half)
			}
		}
	}
}

// resyncAll re-sends every subscriber its state.
func (h *Hub) resyncAll() {
	h.metrics.Resyncs.Inc()
	if h.opt.BeforeResync != nil {
		h.opt.BeforeResync()
	}
	h.clearDots()
	h.mu.Lock()
	subs := make([]*Subscriber, 0, len(h.subs))
	for s := range h.subs {
		subs = append(subs, s)
	}
	for _, rs := range h.rooms {
		rs.invalidate(h.seq.Add(1))
	}
	h.mu.Unlock()
	for _, s := range subs {
		s.resync()
	}
}

// dispatch handles one feed event.
func (h *Hub) dispatch(ev store.Event) {
	h.metrics.FeedEvents.WithLabelValues(string(ev.Kind)).Inc()
	seq := h.seq.Add(1)
	switch ev.Kind {
	case store.EventJoin, store.EventLeave, store.EventTyping:
		start := time.Now()
		members := ev.Kind != store.EventTyping
		js := h.roomChanged(ev.Room, seq, members, !members)
		if len(js) > 0 {
			name, data := h.r.Change(ev)
			h.metrics.Published.WithLabelValues(name).Inc()
			it := item{topic: roomTopic(ev.Room), msg: Message{Event: name, Data: data}, seq: seq}
			if ev.Kind == store.EventTyping {
				it.key = "typing:" + ev.Room // the whole set: latest wins
			}
			for _, s := range js {
				c := it
				if s.filtered() {
					if ev.Kind == store.EventTyping {
						fev := ev
						fev.Typing = s.visibleTypists(ev.Typing)
						_, c.msg.Data = h.r.Change(fev)
					} else if !s.sees(ev.User.ID) {
						continue
					}
				}
				if ev.Kind != store.EventTyping && ev.User.ID != "" && ev.User.ID == s.spec.User.ID {
					c.self = 1
					if ev.Kind == store.EventLeave {
						c.self = -1
					}
				}
				s.push(&c)
			}
			h.metrics.Fanout.WithLabelValues("room").Observe(time.Since(start).Seconds())
		}
	case store.EventStatus:
		h.statusChanged(ev, seq)
	}
}

// roomChanged marks a room dirty for its HTML worker and returns its JSON
// subscribers, which get the diff itself.
func (h *Hub) roomChanged(room string, seq uint64, members, typing bool) []*Subscriber {
	h.mu.Lock()
	defer h.mu.Unlock()
	rs := h.rooms[room]
	if rs == nil {
		return nil
	}
	rs.invalidate(seq)
	if rs.hasHTML() {
		h.markLocked(rs, members, typing)
	}
	if rs.json == 0 {
		return nil
	}
	js := make([]*Subscriber, 0, rs.json)
	for s := range rs.subs {
		if s.spec.Format == JSON {
			js = append(js, s)
		}
	}
	return js
}

type target struct {
	s     *Subscriber
	topic string
}

// statusChanged fans a user's new status out: a dot to HTML subscribers of
// every room the user is (or was) in and to the watchers of the user, a
// `status` event to the JSON ones (once per subscriber), and a stack
// re-render of those rooms.
func (h *Hub) statusChanged(ev store.Event, seq uint64) {
	start := time.Now()
	if ev.To == store.StatusOffline && !ev.Deadline.IsZero() {
		h.metrics.OfflineLateness.Observe(ev.At.Sub(ev.Deadline).Seconds())
	}
	var html []target
	js := map[*Subscriber]string{}
	h.mu.Lock()
	for _, room := range ev.Rooms {
		rs := h.rooms[room]
		if rs == nil {
			continue
		}
		rs.invalidate(seq)
		t := roomTopic(room)
		for s := range rs.subs {
			if !s.sees(ev.User.ID) {
				continue
			}
			if s.spec.Format == JSON {
				js[s] = t
			} else {
				html = append(html, target{s, t})
			}
		}
		if rs.hasHTML() {
			h.markLocked(rs, true, false)
		}
	}
	for s := range h.watchers[ev.User.ID] {
		if !s.sees(ev.User.ID) {
			continue
		}
		if s.spec.Format == JSON {
			if _, ok := js[s]; !ok {
				js[s] = usersTopic
			}
		} else {
			html = append(html, target{s, usersTopic})
		}
	}
	h.mu.Unlock()

	// Leave debounce: an offline dot waits (debounce.go); any other status
	// goes out now, also to the subscribers a held offline dot was owed to.
	subs := make([]*Subscriber, len(html))
	for i, t := range html {
		subs[i] = t.s
	}
	if ev.To == store.StatusOffline && h.opt.Debounce > 0 {
		if len(subs) > 0 {
			h.deferOfflineDot(ev.User, subs, time.Now())
		}
		subs = nil
	} else {
		subs = h.takePendingDot(ev.User.ID, subs)
	}
	if len(subs) > 0 {
		// A dot is queued under the topic it came through (stale once a
		// snapshot of it is taken: snapshots always cover every topic of a
		// subscriber); dots owed from a held offline have no topic.
		topicOf := make(map[*Subscriber]string, len(html))
		for _, t := range html {
			topicOf[t.s] = t.topic
		}
		h.pushDots(&dotFrame{user: ev.User, status: ev.To}, subs, topicOf, seq)
	}
	if len(js) > 0 {
		name, data := h.r.Change(ev)
		h.metrics.Published.WithLabelValues(name).Inc()
		for s, topic := range js {
			s.push(&item{topic: topic, msg: Message{Event: name, Data: data}, seq: seq})
		}
	}
	if len(subs)+len(js) > 0 {
		h.metrics.Fanout.WithLabelValues("user").Observe(time.Since(start).Seconds())
	}
}

// pushDots queues a user's dot, rendered once per variant, to subs.
func (h *Hub) pushDots(d *dotFrame, subs []*Subscriber, topicOf map[*Subscriber]string, seq uint64) {
	name := DotEvent(d.user.ID)
	seen := make(map[*Subscriber]bool, len(subs))
	for _, s := range subs {
		if seen[s] {
			continue
		}
		seen[s] = true
		if b := d.dot(h, s.spec.View); b != nil {
			s.push(&item{key: name, topic: topicOf[s], msg: Message{Event: name, Data: b}, seq: seq})
		}
	}
}

// render runs one render and counts it; a failed render is logged and
// yields nil (nothing is sent for that part).
func (h *Hub) render(event string, f func() ([]byte, error)) []byte {
	b, err := f()
	if err != nil {
		h.log.Error("render failed", "event", event, "err", err)
		return nil
	}
	h.metrics.Published.WithLabelValues(event).Inc()
	return b
}

// snapshot is the current state of one of s's topics, as messages for s,
// the read sequence it came from, and (rooms) whether s's own user is
// listed as a member in it.
func (h *Hub) snapshot(s *Subscriber, topic string) ([]Message, uint64, bool, error) {
	h.metrics.Published.WithLabelValues("sync").Inc()
	if topic == usersTopic {
		msgs, seq, err := h.snapshotUsers(s)
		return msgs, seq, false, err
	}
	for _, r := range s.spec.Rooms {
		if roomTopic(r.ID) == topic {
			return h.snapshotRoom(s, r)
		}
	}
	return nil, 0, false, nil
}

func (h *Hub) snapshotUsers(s *Subscriber) ([]Message, uint64, error) {
	seq := h.seq.Add(1)
	ctx, cancel := context.WithTimeout(h.ctx, 5*time.Second)
	defer cancel()
	ps, err := h.st.Presence(ctx, s.spec.Users)
	if err != nil {
		return nil, 0, err
	}
	for id := range ps {
		if !s.sees(id) {
			ps[id] = nil // shown as a user never seen
		}
	}
	if s.spec.Format == JSON {
		return []Message{{Event: "sync", Data: h.r.UsersSync(s.spec.Users, ps)}}, seq, nil
	}
	out := make([]Message, 0, len(s.spec.Users))
	for _, id := range s.spec.Users {
		user, status := ShownAs(id, ps[id])
		d := &dotFrame{user: user, status: status}
		if b := d.dot(h, s.spec.View); b != nil {
			out = append(out, Message{Event: DotEvent(id), Data: b})
		}
	}
	return out, seq, nil
}

func (h *Hub) snapshotRoom(s *Subscriber, r RoomSub) ([]Message, uint64, bool, error) {
	f, err := h.readRoom(r.ID)
	if err != nil {
		return nil, 0, false, err
	}
	if s.filtered() {
		// Its own view of the room: not shared with anyone.
		f = &frame{room: f.room, seq: f.seq, members: s.visibleMembers(f.members), typists: s.visibleTypists(f.typists), haveMembers: true, haveTyping: true}
	}
	self := false
	for _, m := range f.members {
		if m.ID == s.spec.User.ID {
			self = true
			break
		}
	}
	if s.spec.Format == JSON {
		return []Message{{Event: "sync", Data: h.r.RoomSync(r.ID, r, f.members, f.typists)}}, f.seq, self, nil
	}
	return f.html(h, r, s.spec.View, len(f.held)), f.seq, self, nil
}
