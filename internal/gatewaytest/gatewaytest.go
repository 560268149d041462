// Package gatewaytest starts real gateways for tests outside handlers/
// (the Go client's, the schema tests): handlers.New on a loopback port,
// real HTTP, with the short timings the handlers' own tests use. It is not
// a _test file so that several packages can share it; nothing but tests
// imports it.
package gatewaytest

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presenced/presenced/handlers"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// Timings: short enough that expiries happen within seconds, long enough
// for a loaded 2-core machine under -race. Wait is the upper bound tests
// use for anything to arrive; no test asserts a duration.
const (
	TTL       = 3 * time.Second
	TypingTTL = 2 * time.Second
	Wait      = 20 * time.Second
)

// Secret signs the tests' tokens.
var Secret = []byte("gatewaytest-secret-gatewaytest-secret!")

// Memory returns a memory store closed with the test. Gateways given the
// same one share their state, like nodes sharing a Redis.
func Memory(t testing.TB) *Shared {
	st := store.NewMemory(store.Options{TTL: TTL, TypingTTL: TypingTTL, SweepInterval: 50 * time.Millisecond})
	t.Cleanup(func() { _ = st.Close() })
	return &Shared{st}
}

// Shared is a MemoryStore that a gateway's shutdown does not close (the
// test does), so that a second node can go on using it.
type Shared struct{ *store.MemoryStore }

// Close does nothing: the test closes the store.
func (*Shared) Close() error { return nil }

// Gateway is one running node.
type Gateway struct {
	t    testing.TB
	Srv  *handlers.Server
	Base string // http://127.0.0.1:port
	done bool
}

// Start runs a gateway on st until the test ends (or Shutdown).
func Start(t testing.TB, st store.Store, mutate ...func(*config.Config)) *Gateway {
	t.Helper()
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.Secret = Secret
	cfg.TTL = TTL
	cfg.Heartbeat = time.Second
	cfg.TypingTTL = TypingTTL
	cfg.Keepalive = time.Second
	cfg.LeaveGrace = 300 * time.Millisecond
	cfg.LeaveDebounce = 200 * time.Millisecond
	cfg.WriteDeadline = 2 * time.Second
	cfg.ShutdownTimeout = 5 * time.Second
	for _, m := range mutate {
		m(&cfg)
	}
	srv, err := handlers.New(cfg, st, Logger(t))
	if err != nil {
		t.Fatalf("handlers.New: %v", err)
	}
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	g := &Gateway{t: t, Srv: srv, Base: "http://" + srv.Addr()}
	t.Cleanup(g.Shutdown)
	g.waitReady()
	return g
}

func (g *Gateway) waitReady() {
	g.t.Helper()
	deadline := time.Now().Add(Wait)
	for {
		res, err := http.Get(g.Base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("gateway not ready at %s: %v", g.Base, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Shutdown stops the node: its streams end (the clients see the gateway
// close them), its port closes.
func (g *Gateway) Shutdown() {
	if g.done {
		return
	}
	g.done = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.Srv.Shutdown(ctx); err != nil {
		g.t.Errorf("Shutdown: %v", err)
	}
}

// Token mints a one-hour token for a user (rooms: the rooms it may access;
// none = any).
func (g *Gateway) Token(id, name string, rooms ...string) string {
	g.t.Helper()
	var rs []string
	if len(rooms) > 0 {
		rs = rooms
	}
	tok, err := g.Srv.Auth().Mint(store.Profile{ID: id, Name: name}, time.Hour, rs)
	if err != nil {
		g.t.Fatalf("Mint: %v", err)
	}
	return tok
}

// Logger logs to the test at Warn and above.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
