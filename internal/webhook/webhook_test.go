package webhook

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/presenced/presenced/store"
)

func TestMemoryDeliversEveryTransitionOnce(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(store.Options{})
	defer st.Close()
	a, b := newSink(t), newSink(t)
	d := startDispatcher(t, st, fastOpts(a.srv.URL, b.srv.URL+"/hook"))
	want := script(t, ctx, st, "u1", "u2", "r1")
	for _, s := range []*sink{a, b} {
		waitFor(t, "all events", func() bool { return len(s.got()) >= len(want) })
	}
	stop(d)
	for _, s := range []*sink{a, b} {
		got := s.got()
		if !equal(types(got), want) {
			t.Errorf("got\n%q\nwant\n%q", types(got), want)
		}
		uniqueIDs(t, got)
		if s.bad != 0 {
			t.Errorf("%d requests failed verification", s.bad)
		}
	}
	if n := testutil.ToFloat64(d.m.delivered.WithLabelValues(a.srv.Listener.Addr().String())); n != float64(len(want)) {
		t.Errorf("delivered metric = %v, want %d", n, len(want))
	}
}

func TestFlapSuppression(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(store.Options{})
	defer st.Close()
	s := newSink(t)
	o := fastOpts(s.srv.URL)
	o.Debounce = 2 * time.Second
	d := startDispatcher(t, st, o)

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.Join(ctx, "r", hb("u", "s1")))
	must(st.Join(ctx, "r", hb("w", "s9"))) // keeps the room occupied
	waitFor(t, "initial events", func() bool { return len(s.got()) == 5 })
	// A reload: the session ends and a new one comes straight back.
	must(st.EndSession(ctx, "u", "session-s1")) // leave r, offline
	must(st.Join(ctx, "r", hb("u", "s2")))
	// A marker behind the flap; holds are released on Stop, so anything
	// not cancelled would be delivered by then.
	must(st.Heartbeat(ctx, hb("marker", "m")))
	waitFor(t, "marker", func() bool { return len(s.got()) == 6 })
	stop(d)
	want := []string{"user.online u", "room.join u r", "room.occupied u r", "user.online w", "room.join w r", "user.online marker"}
	if got := types(s.got()); !equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if n := testutil.ToFloat64(d.m.suppressed); n != 4 {
		t.Errorf("suppressed = %v, want 4 (offline+online, leave+join)", n)
	}
}

func TestNoSuppressionAfterDebounce(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(store.Options{})
	defer st.Close()
	s := newSink(t)
	o := fastOpts(s.srv.URL)
	o.Debounce = 50 * time.Millisecond
	d := startDispatcher(t, st, o)
	if err := st.Heartbeat(ctx, hb("u", "s1")); err != nil {
		t.Fatal(err)
	}
	if err := st.EndSession(ctx, "u", "session-s1"); err != nil {
		t.Fatal(err)
	}
	// The offline is released by the timer once the debounce is over.
	waitFor(t, "offline", func() bool { return len(s.got()) == 2 })
	if err := st.Heartbeat(ctx, hb("u", "s2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "online again", func() bool { return len(s.got()) == 3 })
	stop(d)
	want := []string{"user.online u", "user.offline u", "user.online u"}
	if got := types(s.got()); !equal(got, want) {
		t.Errorf("got %q want %q", got, want)
	}
}

// A receiver answering 503 for 10 s gets everything, once and in order,
// when it comes back; the other receiver is not held up meanwhile.
func TestReceiverDownThenUp(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(store.Options{})
	defer st.Close()
	down, healthy := newSink(t), newSink(t)
	down.down.Store(true)
	o := fastOpts(down.srv.URL, healthy.srv.URL)
	o.BatchSize = 7 // several batches, so order across batches is checked
	d := startDispatcher(t, st, o)
	var want []string
	upAt := time.Now().Add(10 * time.Second)
	for i := 0; i < 40; i++ {
		u := fmt.Sprintf("u%02d", i)
		if err := st.Heartbeat(ctx, hb(u, "s")); err != nil {
			t.Fatal(err)
		}
		want = append(want, "user.online "+u)
	}
	waitFor(t, "healthy receiver", func() bool { return len(healthy.got()) == len(want) })
	if time.Now().Before(upAt) && len(down.got()) != 0 {
		t.Fatal("the down receiver accepted events")
	}
	time.Sleep(time.Until(upAt))
	down.down.Store(false)
	waitFor(t, "receiver back up", func() bool { return len(down.got()) == len(want) })
	stop(d)
	if got := types(down.got()); !equal(got, want) {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	uniqueIDs(t, down.got())
	label := down.srv.Listener.Addr().String()
	if testutil.ToFloat64(d.m.retried.WithLabelValues(label)) == 0 {
		t.Error("retried metric stayed 0")
	}
	if testutil.ToFloat64(d.m.failed.WithLabelValues(label)) != 0 {
		t.Error("events counted as failed")
	}
}

func TestQueueFullDropsOldest(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory(store.Options{})
	defer st.Close()
	s := newSink(t)
	s.down.Store(true)
	o := fastOpts(s.srv.URL)
	o.QueueSize, o.BatchSize = 5, 1
	d := startDispatcher(t, st, o)
	for i := 0; i < 20; i++ {
		if err := st.Heartbeat(ctx, hb(fmt.Sprintf("u%02d", i), "s")); err != nil {
			t.Fatal(err)
		}
	}
	label := s.srv.Listener.Addr().String()
	// Five are queued and the older rest dropped; one of them may have been
	// taken by the sender (in flight, retrying) before the queue filled:
	// whether it was depends on scheduling, so both counts are right.
	dropped := func() float64 { return testutil.ToFloat64(d.m.dropped.WithLabelValues(label)) }
	waitFor(t, "drops", func() bool { return dropped() >= 14 })
	n := dropped()
	if n > 15 {
		t.Fatalf("%v dropped, want 14 or 15", n)
	}
	s.down.Store(false)
	waitFor(t, "the rest", func() bool { return len(s.got()) == 20-int(n) })
	stop(d)
	// The newest five, after the one in flight (an older one) if any.
	want := []string{"user.online u15", "user.online u16", "user.online u17", "user.online u18", "user.online u19"}
	got := types(s.got())
	if n == 14 {
		if len(got) != 6 || !strings.HasPrefix(got[0], "user.online u") || got[0] >= "user.online u15" {
			t.Fatalf("got %q: the first should be the older event in flight", got)
		}
		got = got[1:]
	}
	if !equal(got, want) {
		t.Errorf("got %q want %q (dropped %v)", got, want, n)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	st := store.NewMemory(store.Options{})
	defer st.Close()
	for _, o := range []Options{
		{Secret: testSecret},
		{URLs: []string{"http://x"}},
		{URLs: []string{"ftp://x"}, Secret: testSecret},
		{URLs: []string{"not a url"}, Secret: testSecret},
	} {
		if _, err := New(st, o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
}
