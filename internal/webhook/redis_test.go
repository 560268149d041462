package webhook

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

// node opens one gateway node's store on srv (all nodes share prefix).
func node(t *testing.T, srv *redistest.Server, prefix string) *store.RedisStore {
	t.Helper()
	s, err := store.NewRedis(context.Background(), srv.URL, store.Options{KeyPrefix: prefix}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// Two nodes, transitions made on both: every event reaches the receiver
// exactly once, in log order.
func TestRedisTwoNodesEachEventOnce(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	n1, n2 := node(t, srv, prefix), node(t, srv, prefix)
	s := newSink(t)
	d1 := startDispatcher(t, n1, fastOpts(s.srv.URL))
	d2 := startDispatcher(t, n2, fastOpts(s.srv.URL))
	ctx := context.Background()
	want := script(t, ctx, n1, "u1", "u2", "r1")
	want = append(want, script(t, ctx, n2, "u3", "u4", "r2")...)
	waitFor(t, "all events", func() bool { return len(s.got()) >= len(want) })
	stop(d1)
	stop(d2)
	got := s.got()
	uniqueIDs(t, got)
	if !equal(types(got), want) {
		t.Errorf("got\n%q\nwant\n%q", types(got), want)
	}
	for _, e := range got {
		if !strings.Contains(e.ID, "-") {
			t.Errorf("event id %q is not the log entry id", e.ID)
		}
	}
}

// A node that dies mid-delivery (the receiver was failing, nothing was
// acknowledged): the other node takes its deliveries over after the
// visibility timeout and delivers them, once.
func TestRedisNodeKilledMidDelivery(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	n1, n2 := node(t, srv, prefix), node(t, srv, prefix)
	s := newSink(t)
	s.down.Store(true)
	d1 := startDispatcher(t, n1, fastOpts(s.srv.URL))
	ctx := context.Background()
	want := script(t, ctx, n1, "u1", "u2", "r1")
	waitFor(t, "node 1 attempting", func() bool { return s.posts.Load() >= 2 })
	d2 := startDispatcher(t, n2, fastOpts(s.srv.URL))
	// Kill node 1: its queue is abandoned without an ack.
	dead, cancel := context.WithCancel(ctx)
	cancel()
	d1.Stop(dead)
	s.down.Store(false)
	waitFor(t, "node 2 delivering", func() bool { return len(s.got()) >= len(want) })
	stop(d2)
	got := s.got()
	uniqueIDs(t, got)
	if !equal(types(got), want) {
		t.Errorf("got\n%q\nwant\n%q", types(got), want)
	}
	if n := d2.m.delivered.WithLabelValues(s.srv.Listener.Addr().String()); n == nil {
		t.Fatal("no metric")
	}
}

// Acknowledged deliveries are never handed out again: a dispatcher started
// after another one finished finds nothing to do.
func TestRedisAckedNotRedelivered(t *testing.T) {
	srv := redistest.Start(t)
	prefix := redistest.Prefix(t)
	n1 := node(t, srv, prefix)
	s := newSink(t)
	d1 := startDispatcher(t, n1, fastOpts(s.srv.URL))
	want := script(t, context.Background(), n1, "u1", "u2", "r1")
	waitFor(t, "all events", func() bool { return len(s.got()) >= len(want) })
	stop(d1)
	n2 := node(t, srv, prefix)
	d2 := startDispatcher(t, n2, fastOpts(s.srv.URL))
	// Past the visibility timeout an unacknowledged entry would be claimed.
	time.Sleep(3 * time.Second)
	if err := n2.Heartbeat(context.Background(), hb("marker", "m")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "marker", func() bool { return len(s.got()) >= len(want)+1 })
	stop(d2)
	if got := s.got(); len(got) != len(want)+1 {
		t.Errorf("got %d events, want %d: %q", len(got), len(want)+1, types(got))
	}
}
