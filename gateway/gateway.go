// Package gateway is presenced as a library: build a gateway on a store and
// mount its http.Handler in your own server, at the root or under a path
// prefix. The binary (cmd/presenced) is this package plus flag parsing and
// a listener.
//
//	st := store.NewMemory(store.Options{})          // or store.NewRedis(…)
//	cfg := gateway.DefaultConfig()
//	cfg.Secret = secret                             // ≥ 32 bytes
//	cfg.BasePath = "/presence"                      // where you mount it
//	gw, err := gateway.New(cfg, st, logger)
//	…
//	if err := gw.Start(); err != nil { … }          // feed, fan-out, session keeper
//	defer gw.Shutdown(ctx)
//	mux.Handle("/presence/", gw.Handler())          // strips the prefix itself
//
// Everything the gateway writes (fragment and stream URLs) carries
// BasePath, so pages work under the prefix.
package gateway

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/presenced/presenced/handlers"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/store"
)

// Config is the gateway's configuration: the same fields the binary's flags
// set (see the README's flag table). Addr and the TLS fields are ignored
// here: your server listens.
type Config = config.Config

// DefaultConfig returns the contract's defaults (Secret empty: set it).
func DefaultConfig() Config { return config.Default() }

// Gateway is one presence gateway node mounted in your server.
type Gateway struct {
	srv     *handlers.Server
	handler http.Handler
	base    string
}

// New builds a gateway on st (store.NewMemory or store.NewRedis). The
// caller owns st and closes it after Shutdown.
func New(cfg Config, st store.Store, log *slog.Logger) (*Gateway, error) {
	srv, err := handlers.New(cfg, st, log)
	if err != nil {
		return nil, err
	}
	h := srv.Handler()
	if cfg.BasePath != "" {
		h = http.StripPrefix(cfg.BasePath, h)
	}
	return &Gateway{srv: srv, handler: h, base: cfg.BasePath}, nil
}

// Start subscribes to the store's change feed and starts the fan-out and
// the session keeper. Serve Handler from then on.
func (g *Gateway) Start() error { return g.srv.StartBackground() }

// Handler serves every route of the gateway (API, streams, fragments,
// static files, /healthz, /readyz, /metrics) under Config.BasePath.
func (g *Gateway) Handler() http.Handler { return g.handler }

// Mount reports the pattern to register Handler under in an http.ServeMux
// ("/presence/" for BasePath "/presence", "/" without one).
func (g *Gateway) Mount() string { return strings.TrimSuffix(g.base, "/") + "/" }

// MintToken signs a token for a user (tests and server-side rendering);
// production apps usually mint in their own language (README).
func (g *Gateway) MintToken(p store.Profile, ttl time.Duration, rooms []string) (string, error) {
	return g.srv.Auth().Mint(p, ttl, rooms)
}

// Shutdown closes every open stream (browsers reconnect) and stops the
// background work. Sessions are left to live on or expire.
func (g *Gateway) Shutdown(ctx context.Context) error { return g.srv.Shutdown(ctx) }
