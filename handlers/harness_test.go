package handlers

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/internal/eventstream"
	"github.com/presenced/presenced/store"
	"github.com/presenced/presenced/store/redistest"
)

// Timings for tests: short enough that expiry tests take seconds, long
// enough for a loaded 2-core machine under -race. No test asserts a
// duration; waits are generous upper bounds.
const (
	testTTL       = 2 * time.Second
	testTypingTTL = 1 * time.Second
	testGrace     = 400 * time.Millisecond
	testDebounce  = 300 * time.Millisecond
	wait          = 15 * time.Second // upper bound for anything to arrive
)

var testSecret = []byte("test-secret-test-secret-test-secret!")

func testConfig() config.Config {
	c := config.Default()
	c.Addr = "127.0.0.1:0"
	c.Secret = testSecret
	c.TTL = testTTL
	c.Heartbeat = 500 * time.Millisecond
	c.TypingTTL = testTypingTTL
	c.Keepalive = time.Second
	c.LeaveGrace = testGrace
	c.LeaveDebounce = testDebounce
	c.WriteDeadline = time.Second
	c.Coalesce = 20 * time.Millisecond
	c.ShutdownTimeout = 5 * time.Second
	return c
}

func testLogger(t testing.TB) *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("PRESENCE_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// backend makes stores for one test: every store of a backend shares its
// state (one MemoryStore, or one Redis server and key prefix), the way
// several gateway nodes share one backend.
type backend struct {
	name     string
	newStore func(t *testing.T) store.Store
}

func storeOptions() store.Options {
	return store.Options{TTL: testTTL, TypingTTL: testTypingTTL, SweepInterval: 50 * time.Millisecond}
}

// longTTL is for tests whose sessions come from one API call and must not
// expire however slow the machine is.
func longTTL(o *store.Options) { o.TTL = time.Minute }

// forEachBackend runs f on the memory backend and, when redis-server is
// installed (always under CI=true, where redistest fails instead of
// skipping), on one Redis and on a 3-primary Redis Cluster.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend), mutate ...func(*store.Options)) {
	options := func() store.Options {
		o := storeOptions()
		for _, m := range mutate {
			m(&o)
		}
		return o
	}
	t.Run("memory", func(t *testing.T) {
		var once sync.Once
		var mem *store.MemoryStore
		f(t, backend{name: "memory", newStore: func(t *testing.T) store.Store {
			once.Do(func() {
				mem = store.NewMemory(options())
				t.Cleanup(func() { _ = mem.Close() })
			})
			return sharedStore{mem}
		}})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		prefix := redistest.Prefix(t)
		f(t, backend{name: "redis", newStore: func(t *testing.T) store.Store {
			opts := options()
			opts.KeyPrefix = prefix
			st, err := store.NewRedis(context.Background(), srv.URL, opts, testLogger(t))
			if err != nil {
				t.Fatalf("NewRedis: %v", err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		}})
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.StartCluster(t, redistest.ClusterConfig{})
		prefix := redistest.Prefix(t)
		f(t, backend{name: "cluster", newStore: func(t *testing.T) store.Store {
			opts := options()
			opts.KeyPrefix = prefix
			st, err := store.NewCluster(context.Background(), c.URL(), opts, testLogger(t))
			if err != nil {
				t.Fatalf("NewCluster: %v", err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		}})
	})
}

// sharedStore lets two gateway nodes share one MemoryStore without either
// closing it for the other (the test closes it).
type sharedStore struct{ *store.MemoryStore }

func (sharedStore) Close() error { return nil }

// node is one running gateway.
type node struct {
	t    testing.TB
	srv  *Server
	st   store.Store
	base string
	mc   *http.Client // for metric scrapes
}

func startNode(t testing.TB, st store.Store, mutate ...func(*config.Config)) *node {
	t.Helper()
	cfg := testConfig()
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := New(cfg, st, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	n := &node{t: t, srv: srv, st: st, base: "http://" + srv.Addr()}
	t.Cleanup(func() { n.shutdown() })
	return n
}

func (n *node) shutdown() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		n.t.Errorf("Shutdown: %v", err)
	}
}

// token mints a token for a user.
func (n *node) token(id, name string, rooms ...string) string {
	n.t.Helper()
	var rs []string
	if len(rooms) > 0 {
		rs = rooms
	}
	tok, err := n.srv.Auth().Mint(store.Profile{ID: id, Name: name}, time.Hour, rs)
	if err != nil {
		n.t.Fatal(err)
	}
	return tok
}

// client is a real HTTP client with its own transport, closed with the test.
func newClient(t testing.TB) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 4, DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type response struct {
	code int
	hdr  http.Header
	body []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("not JSON (%d): %s", r.code, r.body)
	}
	return m
}

// do sends one request. hdr are header pairs.
func do(t testing.TB, c *http.Client, method, url, token string, body string, hdr ...string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, hdr: resp.Header, body: b}
}

func mustOK(t testing.TB, r response) {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
}

// ---- a small real SSE client: it parses the wire format itself ----

type sseEvent struct {
	ID      string
	Event   string
	Data    string
	Comment string // set for a comment line (": …"), which has no event
	Retry   int    // a retry field seen with the event
}

type sseClient struct {
	t      testing.TB
	resp   *http.Response
	cancel context.CancelFunc
	events chan sseEvent
	done   chan struct{}
	stop   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	err    error
}

// openSSE connects to a stream and checks the answer is a 200 event
// stream.
func openSSE(t testing.TB, c *http.Client, url, token string, hdr ...string) *sseClient {
	t.Helper()
	s, code := dialSSE(t, c, url, token, hdr...)
	if code != http.StatusOK {
		t.Fatalf("GET %s: status %d", url, code)
	}
	return s
}

func dialSSE(t testing.TB, c *http.Client, url, token string, hdr ...string) (*sseClient, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	req.Header.Set("Accept", "text/event-stream")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	// Streams must not be cut by the client's overall timeout.
	sc := &http.Client{Transport: c.Transport}
	resp, err := sc.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		cancel()
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Fatalf("Content-Type %q", ct)
	}
	s := &sseClient{t: t, resp: resp, cancel: cancel, events: make(chan sseEvent, 4096), done: make(chan struct{}), stop: make(chan struct{})}
	go s.read()
	t.Cleanup(s.close)
	return s, resp.StatusCode
}

// read parses the event stream with the spec-conforming parser
// (internal/eventstream: CR, LF and CRLF all end a line).
func (s *sseClient) read() {
	defer close(s.done)
	defer close(s.events)
	p := eventstream.NewParser(s.resp.Body)
	for {
		e, err := p.Next()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		ev := sseEvent{ID: e.ID, Event: e.Type, Data: e.Data, Comment: e.Comment, Retry: e.Retry}
		if e.IsComment() && ev.Comment == "" {
			ev.Comment = " " // an empty comment is still a comment
		}
		if !s.emit(ev) {
			return
		}
	}
}

func (s *sseClient) emit(ev sseEvent) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.stop:
		return false
	}
}

// close ends the stream from the client side (like a closed tab).
func (s *sseClient) close() {
	s.once.Do(func() {
		close(s.stop)
		s.cancel()
		<-s.done
		s.resp.Body.Close()
	})
}

// next returns the next event (comments included), or false when the
// stream ended or nothing came within d.
func (s *sseClient) next(d time.Duration) (sseEvent, bool) {
	select {
	case ev, ok := <-s.events:
		return ev, ok
	case <-time.After(d):
		return sseEvent{}, false
	}
}

// nextEvent skips comments.
func (s *sseClient) nextEvent(d time.Duration) (sseEvent, bool) {
	deadline := time.Now().Add(d)
	for {
		ev, ok := s.next(time.Until(deadline))
		if !ok || ev.Comment == "" {
			return ev, ok
		}
	}
}

// waitFor reads until an event matches, failing the test after wait.
func (s *sseClient) waitFor(what string, match func(sseEvent) bool) sseEvent {
	s.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ev, ok := s.next(time.Until(deadline))
		if !ok {
			s.t.Fatalf("no event %s within %s (stream ended: %v)", what, wait, s.ended())
		}
		if ev.Comment == "" && match(ev) {
			return ev
		}
	}
}

func (s *sseClient) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// event matchers.
func named(name string, contains ...string) func(sseEvent) bool {
	return func(ev sseEvent) bool {
		if ev.Event != name {
			return false
		}
		for _, c := range contains {
			if !strings.Contains(ev.Data, c) {
				return false
			}
		}
		return true
	}
}

var countRe = regexp.MustCompile(`data-count="(\d+)"`)

// membersCount reads data-count from a members fragment.
func membersCount(html string) int {
	m := countRe.FindStringSubmatch(html)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func decodeJSON(t testing.TB, data string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.NewDecoder(bytes.NewReader([]byte(data))).Decode(&m); err != nil {
		t.Fatalf("event data is not JSON: %q", data)
	}
	return m
}

// eventually polls f until it is true.
func eventually(t testing.TB, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitAll reads until every matcher has matched some event (in any order).
func (s *sseClient) waitAll(what string, matchers ...func(sseEvent) bool) {
	s.t.Helper()
	left := append([]func(sseEvent) bool(nil), matchers...)
	deadline := time.Now().Add(wait)
	for len(left) > 0 {
		ev, ok := s.next(time.Until(deadline))
		if !ok {
			s.t.Fatalf("%s: %d of %d expected events missing after %s (stream ended: %v)", what, len(left), len(matchers), wait, s.ended())
		}
		if ev.Comment != "" {
			continue
		}
		for i, m := range left {
			if m(ev) {
				left = append(left[:i], left[i+1:]...)
				break
			}
		}
	}
}

// drain collects the events that arrive within d.
func (s *sseClient) drain(d time.Duration) []sseEvent {
	var out []sseEvent
	deadline := time.Now().Add(d)
	for {
		ev, ok := s.next(time.Until(deadline))
		if !ok {
			return out
		}
		if ev.Comment == "" {
			out = append(out, ev)
		}
	}
}

var metricLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$`)

// metric scrapes /metrics and sums the samples of name whose labels contain
// every given "k=\"v\"" pair.
func (n *node) metric(name string, labels ...string) float64 {
	n.t.Helper()
	if n.mc == nil {
		n.mc = newClient(n.t)
	}
	r := do(n.t, n.mc, http.MethodGet, n.base+"/metrics", "", "")
	mustOK(n.t, r)
	var sum float64
	for _, line := range strings.Split(string(r.body), "\n") {
		m := metricLine.FindStringSubmatch(line)
		if m == nil || m[1] != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(m[2], l) {
				ok = false
			}
		}
		if ok {
			v, _ := strconv.ParseFloat(m[3], 64)
			sum += v
		}
	}
	return sum
}
