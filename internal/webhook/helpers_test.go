package webhook

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presenced/presenced/store"
)

var testSecret = []byte("whsec_test")

// sink is a real HTTP receiver that verifies every signature and records
// the events it accepted, in order.
type sink struct {
	t       testing.TB
	srv     *httptest.Server
	down    atomic.Bool // answer 503
	mu      sync.Mutex
	events  []Event
	batches []string
	bad     int // requests with a bad signature or body
	posts   atomic.Int64
}

func newSink(t testing.TB) *sink {
	s := &sink{t: t}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.posts.Add(1)
		body, _ := io.ReadAll(r.Body)
		if s.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		var b Batch
		if !Verify(testSecret, body, r.Header.Get(SignatureHeader), 5*time.Minute, time.Now()) ||
			json.Unmarshal(body, &b) != nil || r.Header.Get("Idempotency-Key") != b.ID {
			s.mu.Lock()
			s.bad++
			s.mu.Unlock()
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.events = append(s.events, b.Events...)
		s.batches = append(s.batches, b.ID)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) got() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// waitFor polls (generous deadline, no timing assertion) until f holds.
func waitFor(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func fastOpts(urls ...string) Options {
	return Options{
		URLs: urls, Secret: testSecret, BatchWait: 20 * time.Millisecond,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
		Visibility: time.Second, Log: quiet(),
	}
}

func startDispatcher(t testing.TB, st store.DeliverySource, o Options) *Dispatcher {
	t.Helper()
	d, err := New(st, o)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	return d
}

func stop(d *Dispatcher) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.Stop(ctx)
}

func hb(uid, sid string) store.Heartbeat {
	return store.Heartbeat{User: store.Profile{ID: uid, Name: "N " + uid}, SessionID: "session-" + sid}
}

// types renders events as "type user [room]" for comparisons.
func types(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type + " " + e.User.ID
		if e.Room != "" {
			out[i] += " " + e.Room
		}
		if e.Type == TypeUserStatus {
			out[i] += " " + string(e.PreviousStatus) + ">" + string(e.Status)
		}
	}
	return out
}

// script runs a fixed set of transitions through st and returns the
// webhook events they must produce, in order.
func script(t testing.TB, ctx context.Context, st store.Store, u1, u2, room string) []string {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.Heartbeat(ctx, hb(u1, "s1")))
	must(st.Join(ctx, room, hb(u1, "s1")))
	must(st.Join(ctx, room, hb(u2, "s2")))
	b := hb(u1, "s1")
	b.Status = store.StatusBusy
	must(st.Heartbeat(ctx, b))
	must(st.Leave(ctx, room, u2, "session-s2"))
	must(st.EndSession(ctx, u2, "session-s2"))
	must(st.Leave(ctx, room, u1, "session-s1"))
	must(st.EndSession(ctx, u1, "session-s1"))
	return []string{
		"user.online " + u1,
		"room.join " + u1 + " " + room, "room.occupied " + u1 + " " + room,
		"user.online " + u2, "room.join " + u2 + " " + room,
		"user.status " + u1 + " online>busy",
		"room.leave " + u2 + " " + room,
		"user.offline " + u2,
		"room.leave " + u1 + " " + room, "room.vacated " + u1 + " " + room,
		"user.offline " + u1,
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func uniqueIDs(t testing.TB, evs []Event) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range evs {
		if seen[e.ID] {
			t.Errorf("event %s (%s) delivered twice", e.ID, e.Type)
		}
		seen[e.ID] = true
	}
}
