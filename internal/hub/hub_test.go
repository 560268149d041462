package hub

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/presenced/presenced/store"
)

// textRenderer renders state as short text, so tests can read it back.
type textRenderer struct{}

func ids(ms []store.Member) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return strings.Join(out, ",")
}

func (textRenderer) Stack(room string, ms []store.Member, max int) ([]byte, error) {
	return []byte("stack:" + ids(ms)), nil
}
func (textRenderer) MemberList(room string, ms []store.Member) ([]byte, error) {
	return []byte("list:" + ids(ms)), nil
}
func (textRenderer) Typing(room string, ts []store.Typist) ([]byte, error) {
	return []byte(fmt.Sprintf("typing:%d", len(ts))), nil
}
func (textRenderer) Dot(u store.Profile, st store.Status, size string, label bool) ([]byte, error) {
	return []byte("dot:" + u.ID + ":" + string(st)), nil
}
func (textRenderer) RoomSync(room string, sub RoomSub, ms []store.Member, ts []store.Typist) []byte {
	return []byte(fmt.Sprintf("sync:%s:member=%v:%s", room, sub.Member, ids(ms)))
}
func (textRenderer) UsersSync(ids []string, ps map[string]*store.Presence) []byte {
	var b strings.Builder
	b.WriteString("users")
	for _, id := range ids {
		_, st := ShownAs(id, ps[id])
		b.WriteString(":" + id + "=" + string(st))
	}
	return []byte(b.String())
}
func (textRenderer) Change(ev store.Event) (string, []byte) {
	if ev.Kind == store.EventStatus {
		return "status", []byte("status:" + ev.User.ID + ":" + string(ev.To))
	}
	return string(ev.Kind), []byte(string(ev.Kind) + ":" + ev.Room + ":" + ev.User.ID)
}

type fixture struct {
	t  *testing.T
	st *store.MemoryStore
	h  *Hub
}

// newFixture starts a memory store and a hub inside the synctest bubble.
func newFixture(t *testing.T, opt Options) *fixture {
	st := store.NewMemory(store.Options{TTL: time.Minute, TypingTTL: 5 * time.Second})
	h := New(st, textRenderer{}, nil, nil, opt)
	if err := h.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.Close(ErrClosed)
		_ = st.Close()
	})
	return &fixture{t: t, st: st, h: h}
}

func (f *fixture) join(room, user string) {
	f.t.Helper()
	if err := f.st.Join(context.Background(), room, store.Heartbeat{User: store.Profile{ID: user}, SessionID: "session-" + user}); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) end(user string) {
	f.t.Helper()
	if err := f.st.EndSession(context.Background(), user, "session-"+user); err != nil {
		f.t.Fatal(err)
	}
}

// take drains what is queued now.
func take(t *testing.T, s *Subscriber) []Message {
	t.Helper()
	select {
	case <-s.Notify():
	default:
		return nil
	}
	b, err := s.Take()
	if err != nil {
		t.Fatal(err)
	}
	return b.Messages
}

func texts(ms []Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Event + "=" + string(m.Data)
	}
	return out
}

func TestStateFirstThenDiffs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{})
		f.join("r", "alice")
		s := f.h.Subscribe(Spec{Format: JSON, Rooms: []RoomSub{{ID: "r", Primary: true}}})
		synctest.Wait()
		if got := texts(take(t, s)); !slices.Equal(got, []string{"sync=sync:r:member=false:alice"}) {
			t.Fatalf("first: %q", got)
		}
		f.join("r", "bob")
		synctest.Wait()
		if got := texts(take(t, s)); !slices.Equal(got, []string{"join=join:r:bob"}) {
			t.Fatalf("then: %q", got)
		}
	})
}

// A diff dispatched before the snapshot read is in the snapshot: it is not
// sent after it (the old path sent a join after a sync already listing it).
func TestDiffBeforeSnapshotNotRepeated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{})
		s := f.h.Subscribe(Spec{Format: JSON, Rooms: []RoomSub{{ID: "r", Primary: true}}})
		f.join("r", "bob")
		synctest.Wait() // the join is dispatched and queued behind the marker
		got := texts(take(t, s))
		if !slices.Equal(got, []string{"sync=sync:r:member=false:bob"}) {
			t.Fatalf("got %q, want only the sync listing bob", got)
		}
	})
}

// A stream's own join is never sent after a sync that lists its user, even
// when the join event reaches the hub after the snapshot was read.
func TestOwnJoinAfterSyncSuppressed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{})
		s := f.h.Subscribe(Spec{Format: JSON, User: store.Profile{ID: "me"}, Rooms: []RoomSub{{ID: "r", Primary: true, Member: true}}})
		f.join("r", "me")
		// Read the snapshot before the feed goroutine can dispatch the join:
		// the join item then has a later seq than the snapshot.
		b, err := s.Take()
		if err != nil {
			t.Fatal(err)
		}
		if got := texts(b.Messages); !slices.Equal(got, []string{"sync=sync:r:member=true:me"}) {
			t.Fatalf("sync: %q", got)
		}
		synctest.Wait()
		if got := texts(take(t, s)); len(got) != 0 {
			t.Fatalf("own join repeated after the sync: %q", got)
		}
		// A later leave and re-join of the user are real changes.
		f.end("me")
		f.join("r", "me")
		synctest.Wait()
		got := strings.Join(texts(take(t, s)), " ")
		if !strings.Contains(got, "leave=leave:r:me") || !strings.Contains(got, "join=join:r:me") {
			t.Fatalf("leave and re-join missing: %q", got)
		}
	})
}

// Latest state wins: a burst of changes to one room costs an HTML
// subscriber one queued render, and it ends on the room's state.
func TestHTMLRendersReplaceQueued(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{Coalesce: 50 * time.Millisecond})
		s := f.h.Subscribe(Spec{Format: HTML, Rooms: []RoomSub{{ID: "r", Primary: true}}, View: View{Max: 5, DotSize: "sm"}})
		synctest.Wait()
		take(t, s) // the snapshot
		for i := range 40 {
			f.join("r", fmt.Sprintf("u%02d", i))
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d items queued, want 1 (the latest stack)", n)
		}
		got := take(t, s)
		ms, _ := f.st.Members(context.Background(), "r")
		if want := "stack:" + ids(ms); string(got[0].Data) != want {
			t.Fatalf("final %q, want %q", got[0].Data, want)
		}
	})
}

// A JSON queue that overflows is replaced by a fresh sync: the subscriber
// stays and ends on the room's state.
func TestOverflowResyncsInsteadOfDropping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{})
		s := f.h.Subscribe(Spec{Format: JSON, Rooms: []RoomSub{{ID: "r", Primary: true}}})
		synctest.Wait()
		take(t, s)
		for i := range maxQueued + 50 {
			f.join("r", fmt.Sprintf("u%04d", i))
		}
		synctest.Wait()
		select {
		case <-s.Closed():
			t.Fatal("subscriber closed by a burst")
		default:
		}
		got := take(t, s)
		if len(got) == 0 || got[0].Event != "sync" {
			t.Fatalf("after overflow: %d messages, first %q; want a sync first", len(got), texts(got[:min(1, len(got))]))
		}
		ms, _ := f.st.Members(context.Background(), "r")
		view := applyJSON(got)
		if view != ids(ms) {
			t.Fatalf("view %q, room %q", view, ids(ms))
		}
	})
}

// applyJSON folds a text-renderer JSON stream into a member list.
func applyJSON(msgs []Message) string {
	var members []string
	for _, m := range msgs {
		d := string(m.Data)
		switch m.Event {
		case "sync":
			parts := strings.SplitN(d, ":", 4)
			members = nil
			if parts[3] != "" {
				members = strings.Split(parts[3], ",")
			}
		case "join":
			u := d[strings.LastIndexByte(d, ':')+1:]
			if !slices.Contains(members, u) {
				members = append(members, u)
			}
		case "leave":
			u := d[strings.LastIndexByte(d, ':')+1:]
			members = slices.DeleteFunc(members, func(x string) bool { return x == u })
		}
	}
	return strings.Join(members, ",")
}

// Issue 15's burst at the hub: 5,000 subscribers (HTML and JSON) on one
// room, 250 joins within a second; every subscriber is drained by its own
// goroutine as a writer would. None is closed, and every final view equals
// the room's state.
func TestBurstOfJoinsDropsNobody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{Coalesce: 50 * time.Millisecond})
		const n, joins = 5000, 250
		subs := make([]*Subscriber, n)
		views := make([][]Message, n)
		var wg sync.WaitGroup
		ctx, cancel := context.WithCancel(context.Background())
		for i := range subs {
			spec := Spec{Format: JSON, Rooms: []RoomSub{{ID: "class", Primary: true}}}
			if i%2 == 0 {
				spec = Spec{Format: HTML, Rooms: []RoomSub{{ID: "class", Primary: true}}, View: View{Max: 5, DotSize: "sm"}}
			}
			subs[i] = f.h.Subscribe(spec)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-ctx.Done():
						return
					case <-subs[i].Closed():
						return
					case <-subs[i].Notify():
					}
					b, err := subs[i].Take()
					if err != nil {
						t.Error(err)
						return
					}
					views[i] = append(views[i], b.Messages...)
				}
			}()
		}
		synctest.Wait()
		for i := range joins {
			f.join("class", fmt.Sprintf("student-%03d", i))
			time.Sleep(time.Second / joins)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		cancel()
		wg.Wait()
		ms, _ := f.st.Members(context.Background(), "class")
		want := ids(ms)
		if len(ms) != joins {
			t.Fatalf("%d members, want %d", len(ms), joins)
		}
		for i, s := range subs {
			select {
			case <-s.Closed():
				t.Fatalf("subscriber %d closed", i)
			default:
			}
			var got string
			if s.spec.Format == JSON {
				got = applyJSON(views[i])
			} else {
				last := ""
				for _, m := range views[i] {
					if m.Event == "members" {
						last = strings.TrimPrefix(string(m.Data), "stack:")
					}
				}
				got = last
			}
			if got != want {
				t.Fatalf("subscriber %d (%v) ends on %q, want %q", i, s.spec.Format, got, want)
			}
		}
	})
}

// Leave debounce: an offline dot is held for the window and not sent at
// all when the user is back within it.
func TestOfflineDotDebounced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{Debounce: 2 * time.Second})
		f.join("r", "bob")
		s := f.h.Subscribe(Spec{Format: HTML, Users: []string{"bob"}, View: View{DotSize: "md"}})
		synctest.Wait()
		if got := texts(take(t, s)); !slices.Equal(got, []string{"presence-bob=dot:bob:online"}) {
			t.Fatalf("first: %q", got)
		}
		f.end("bob")
		time.Sleep(time.Second)
		synctest.Wait()
		if got := take(t, s); len(got) != 0 {
			t.Fatalf("offline dot sent within the window: %q", texts(got))
		}
		f.join("r", "bob") // back within the window
		synctest.Wait()
		if got := texts(take(t, s)); !slices.Equal(got, []string{"presence-bob=dot:bob:online"}) {
			t.Fatalf("back: %q", got)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if got := take(t, s); len(got) != 0 {
			t.Fatalf("a stale offline dot came after the window: %q", texts(got))
		}
		// Gone for good: the offline dot comes once the window is over.
		f.end("bob")
		time.Sleep(2500 * time.Millisecond)
		synctest.Wait()
		if got := texts(take(t, s)); !slices.Equal(got, []string{"presence-bob=dot:bob:offline"}) {
			t.Fatalf("after the window: %q", got)
		}
	})
}

// Snapshots of a quiet room share one store read.
func TestSnapshotsShareReads(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{})
		f.join("r", "alice")
		for range 100 {
			s := f.h.Subscribe(Spec{Format: JSON, Rooms: []RoomSub{{ID: "r", Primary: true}}})
			synctest.Wait()
			if got := texts(take(t, s)); !slices.Equal(got, []string{"sync=sync:r:member=false:alice"}) {
				t.Fatalf("snapshot: %q", got)
			}
		}
		if n := counter(t, f.h.metrics.SnapshotReads.WithLabelValues("store")); n != 1 {
			t.Fatalf("%v store reads for 100 snapshots of a quiet room, want 1", n)
		}
		f.join("r", "bob") // a change: the next snapshot reads again
		synctest.Wait()
		s := f.h.Subscribe(Spec{Format: JSON, Rooms: []RoomSub{{ID: "r", Primary: true}}})
		synctest.Wait()
		if got := texts(take(t, s)); !slices.Equal(got, []string{"sync=sync:r:member=false:alice,bob"}) {
			t.Fatalf("after a change: %q", got)
		}
	})
}

// Keep-alives come from the node-wide timer, only to idle subscribers.
func TestKeepaliveOnlyWhenIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, Options{Keepalive: 10 * time.Second})
		s := f.h.Subscribe(Spec{Format: JSON, Users: []string{"x"}})
		synctest.Wait()
		take(t, s)
		s.Wrote(time.Now())
		time.Sleep(4 * time.Second)
		synctest.Wait()
		select {
		case <-s.Notify():
			t.Fatal("keep-alive asked for before the stream was idle")
		default:
		}
		time.Sleep(7 * time.Second)
		synctest.Wait()
		select {
		case <-s.Notify():
		default:
			t.Fatal("no keep-alive on an idle stream")
		}
		b, _ := s.Take()
		if !b.Keepalive || len(b.Messages) != 0 {
			t.Fatalf("batch %+v, want a keep-alive", b)
		}
	})
}

func counter(t *testing.T, c interface{ Write(*dto.Metric) error }) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// pausingStore is a store whose next Members call, once armed, stops until
// the test lets it go: a snapshot batch caught between its reads.
type pausingStore struct {
	store.Store
	mu      sync.Mutex
	paused  chan struct{} // closed when the armed call has stopped
	release chan struct{}
}

func (p *pausingStore) arm() (paused, release chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused, p.release = make(chan struct{}), make(chan struct{})
	return p.paused, p.release
}

func (p *pausingStore) Members(ctx context.Context, room string) ([]store.Member, error) {
	p.mu.Lock()
	paused, release := p.paused, p.release
	p.paused, p.release = nil, nil
	p.mu.Unlock()
	if paused != nil {
		close(paused)
		<-release
	}
	return p.Store.Members(ctx, room)
}

// A user's status reaches a subscriber through several topics (the users
// snapshot and every room's). A resync's batch of snapshots reads them one
// after the other; when a user goes offline (a session reaped, listing its
// room) and online again (a new session, in no room yet) between the room's
// read and the users' read, the snapshot of the users already has online.
// The offline must then not reach the client after it unless the online
// does too: the cluster soak showed users stuck offline for 10 s and more
// after a failover, every one in this shape.
func TestStatusThroughSeveralTopicsAfterSnapshots(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := store.NewMemory(store.Options{TTL: time.Minute, TypingTTL: 5 * time.Second})
		st := &pausingStore{Store: mem}
		h := New(st, textRenderer{}, nil, nil, Options{})
		if err := h.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			h.Close(ErrClosed)
			_ = mem.Close()
		})
		ctx := context.Background()
		u := store.Profile{ID: "u"}
		if err := mem.Join(ctx, "r", store.Heartbeat{User: u, SessionID: "session-1"}); err != nil {
			t.Fatal(err)
		}
		s := h.Subscribe(Spec{Format: JSON, Rooms: []RoomSub{{ID: "r"}}, Users: []string{"u"}})
		synctest.Wait()
		view := map[string]string{}
		apply := func(msgs []Message) {
			for _, m := range msgs {
				d := string(m.Data)
				switch {
				case strings.HasPrefix(d, "users:"):
					for _, kv := range strings.Split(strings.TrimPrefix(d, "users:"), ":") {
						k, v, _ := strings.Cut(kv, "=")
						view[k] = v
					}
				case strings.HasPrefix(d, "status:"):
					f := strings.Split(d, ":")
					view[f[1]] = f[2]
				}
			}
		}
		apply(take(t, s))
		if view["u"] != "online" {
			t.Fatalf("first view: u %q, want online", view["u"])
		}

		paused, release := st.arm()
		h.resyncAll()
		batch := make(chan []Message)
		go func() {
			<-s.Notify()
			b, err := s.Take()
			if err != nil {
				t.Error(err)
			}
			batch <- b.Messages
		}()
		<-paused // the room's read has its number; the users' has not
		if err := mem.EndSession(ctx, "u", "session-1"); err != nil {
			t.Fatal(err)
		}
		if err := mem.Heartbeat(ctx, store.Heartbeat{User: u, SessionID: "session-2"}); err != nil {
			t.Fatal(err)
		}
		synctest.Wait() // both dispatched while the batch waits on its read
		close(release)
		apply(<-batch)
		synctest.Wait()
		apply(take(t, s))
		ps, err := mem.Presence(ctx, []string{"u"})
		if err != nil || ps["u"] == nil || ps["u"].Status != store.StatusOnline {
			t.Fatalf("store: %+v %v, want u online", ps["u"], err)
		}
		if view["u"] != "online" {
			t.Fatalf("client's view: u %q after the resync, want online (the store's)", view["u"])
		}
	})
}
