package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func openMemory(t *testing.T, opts Options) Store {
	m := NewMemory(opts)
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestMemoryConformance(t *testing.T) {
	runConformance(t, openMemory)
}

// memState reads the store's internals under its lock.
func memState(m *MemoryStore) (users, rooms, queued int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.users), len(m.rooms), len(m.queue)
}

// An offline user is forgotten after LastSeenRetention; one who came back
// in time is not.
func TestMemoryRetentionForgetsUsers(t *testing.T) {
	// Short tombstones too, so that only bob's session is left queued.
	m := NewMemory(Options{TTL: longTTL, LastSeenRetention: 300 * time.Millisecond, EndedRetention: 100 * time.Millisecond})
	t.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()

	must(t, m.Heartbeat(ctx, hbeat(alice, sid1, "")))
	must(t, m.Heartbeat(ctx, hbeat(bob, sid1, "")))
	must(t, m.EndSession(ctx, "alice", sid1))
	must(t, m.EndSession(ctx, "bob", sid1))
	wantPresence(t, m, "alice", StatusOffline)
	must(t, m.Heartbeat(ctx, hbeat(bob, sid2, ""))) // bob is back: retention cancelled

	eventually(t, expiryTimeout, "alice forgotten", func() bool { return presenceOf(t, m, "alice") == nil })
	time.Sleep(500 * time.Millisecond) // well past bob's cancelled retention
	wantPresence(t, m, "bob", StatusOnline)
	if users, rooms, queued := memState(m); users != 1 || rooms != 0 || queued != 1 {
		t.Fatalf("users %d, rooms %d, queued deadlines %d; want 1, 0, 1 (bob's session)", users, rooms, queued)
	}
}

// Nothing is left behind once everybody has gone: no rooms, no typing
// marks, and only the retention deadlines of the offline users.
func TestMemoryNoLeak(t *testing.T) {
	m := NewMemory(Options{TTL: 500 * time.Millisecond, TypingTTL: 300 * time.Millisecond, LastSeenRetention: time.Hour,
		EndedRetention: 300 * time.Millisecond})
	t.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()
	const n = 40
	for i := range n {
		p := Profile{ID: fmt.Sprintf("user-%02d", i)}
		room := fmt.Sprintf("room-%d", i%7)
		must(t, m.Join(ctx, room, hbeat(p, sid1, "")))
		must(t, m.SetTyping(ctx, room, p, true))
		// Typing without membership is refused and leaves nothing behind.
		if err := m.SetTyping(ctx, "elsewhere", p, true); !errors.Is(err, ErrNotMember) {
			t.Fatalf("typing outside the room: %v, want ErrNotMember", err)
		}
		// Held memberships that end by their deadline leave nothing either.
		held := hbeat(p, sid2, "")
		held.Hold = 200 * time.Millisecond
		must(t, m.Join(ctx, "held-"+room, held))
		switch i % 3 {
		case 0:
			must(t, m.Leave(ctx, room, p.ID, sid1))
		case 1:
			must(t, m.EndSession(ctx, p.ID, sid1))
		}
	}
	eventually(t, expiryTimeout, "everything expired", func() bool {
		_, rooms, queued := memState(m)
		return rooms == 0 && queued == n
	})
	if users, _, _ := memState(m); users != n {
		t.Fatalf("%d user records, want %d (kept for retention)", users, n)
	}
}

// A refresh of a live session makes no garbage: the deadline is moved in
// place in the heap.
func TestMemoryHeartbeatAllocs(t *testing.T) {
	m := NewMemory(Options{TTL: longTTL})
	t.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()
	for i := range 100 {
		must(t, m.Heartbeat(ctx, hbeat(Profile{ID: fmt.Sprintf("user-%02d", i)}, sid1, "")))
	}
	hb := hbeat(alice, sid1, StatusOnline)
	must(t, m.Heartbeat(ctx, hb))
	if allocs := testing.AllocsPerRun(1000, func() { _ = m.Heartbeat(ctx, hb) }); allocs != 0 {
		t.Fatalf("a refresh allocates %v times, want 0", allocs)
	}
}

// A deadline earlier than the one the expiry goroutine sleeps for wakes it:
// the short session expires long before the long one would have.
func TestMemoryEarlierDeadlineWakesExpiry(t *testing.T) {
	m := NewMemory(Options{TTL: time.Hour})
	t.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()
	must(t, m.Heartbeat(ctx, hbeat(bob, sid1, ""))) // the goroutine now sleeps for an hour
	time.Sleep(20 * time.Millisecond)
	sub := mustSubscribe(t, m)
	short := hbeat(alice, sid1, "")
	short.TTL = 50 * time.Millisecond
	must(t, m.Heartbeat(ctx, short))
	expectStatus(t, sub, eventTimeout, "alice", StatusOffline, StatusOnline)
	e := expectStatus(t, sub, eventTimeout, "alice", StatusOnline, StatusOffline)
	if e.Deadline.IsZero() {
		t.Fatal("no deadline on the expiry")
	}
}

func TestMemoryCloseStopsExpiry(t *testing.T) {
	m := NewMemory(Options{TTL: 50 * time.Millisecond})
	must(t, m.Heartbeat(context.Background(), hbeat(alice, sid1, "")))
	must(t, m.Close())
	select {
	case <-m.stopped:
	case <-time.After(eventTimeout):
		t.Fatal("expiry goroutine still running after Close")
	}
	must(t, m.Close())
}

// The heap against a sorted reference, under random schedule, reschedule
// and cancel.
func TestDeadlineHeap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Now()
	items := make([]*deadline, 200)
	for i := range items {
		items[i] = &deadline{index: -1}
	}
	var h deadlineHeap
	for range 20000 {
		d := items[r.IntN(len(items))]
		switch r.IntN(3) {
		case 0, 1:
			h.schedule(d, base.Add(time.Duration(r.IntN(1000))*time.Millisecond))
		case 2:
			h.cancel(d)
		}
		for i, x := range h {
			if x.index != i {
				t.Fatalf("index %d holds an item that thinks it is at %d", i, x.index)
			}
		}
	}
	var want []time.Time
	for _, d := range items {
		if d.queued() {
			want = append(want, d.at)
		}
	}
	slices.SortFunc(want, func(a, b time.Time) int { return a.Compare(b) })
	var got []time.Time
	for d := h.popDue(base.Add(time.Hour)); d != nil; d = h.popDue(base.Add(time.Hour)) {
		if d.queued() {
			t.Fatal("popped item still marked queued")
		}
		got = append(got, d.at)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("pop order differs from sorted order")
	}
	if h.peek() != nil || h.popDue(base.Add(time.Hour)) != nil {
		t.Fatal("heap not empty")
	}
}
