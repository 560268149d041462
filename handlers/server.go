// Package handlers is the gateway's HTTP side: the JSON API, the SSE streams
// (GET /sse and the v1 stream paths, written by each connection's own goroutine from
// its internal/hub queue), the embeddable HTML fragments, the dev demo and the
// operations endpoints, on one Echo app.
package handlers

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	presenced "github.com/presenced/presenced"
	"github.com/presenced/presenced/internal/config"
	"github.com/presenced/presenced/internal/hub"
	"github.com/presenced/presenced/internal/session"
	"github.com/presenced/presenced/internal/tlsreload"
	"github.com/presenced/presenced/internal/webhook"
	"github.com/presenced/presenced/store"
)

// Server is one gateway node: an Echo app on its own http.Server, usable
// from main and from tests (Start on a free port, Shutdown).
type Server struct {
	cfg    config.Config
	store  store.Store
	log    *slog.Logger
	auth   *Auth
	m      *metrics
	lim    *limits
	hub    *hub.Hub
	keeper *session.Keeper
	hooks  *webhook.Dispatcher // nil without --webhook-url
	static staticFiles
	echo   *echo.Echo
	http   *http.Server
	// certs is the TLS certificate in service (nil without --tls-cert).
	certs     *tlsreload.Reloader
	stopWatch context.CancelFunc
	watchDone chan struct{}
	// warnedForwarded: X-Forwarded-* from an untrusted peer was logged once.
	warnedForwarded atomic.Bool

	closing  atomic.Bool
	ln       net.Listener
	serveErr chan error
	stopOnce sync.Once

	// The separate /metrics listener (--metrics-addr), if any.
	metricsSrv *http.Server
	metricsLn  net.Listener
}

// New builds the gateway on st. It does not start anything; the caller
// owns st and closes it after Shutdown.
func New(cfg config.Config, st store.Store, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.Default()
	}
	if cfg.Coalesce <= 0 {
		cfg.Coalesce = config.Default().Coalesce
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = config.Default().ShutdownTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = config.Default().ReadTimeout
	}
	sub, err := fs.Sub(presenced.Static, "static")
	if err != nil {
		return nil, err
	}
	files, err := loadStatic(sub)
	if err != nil {
		return nil, fmt.Errorf("load static files: %w", err)
	}
	s := &Server{
		cfg: cfg, store: st, log: log,
		auth:   NewAuth(cfg.Secret),
		m:      newMetrics(),
		static: files,
	}
	s.lim = newLimits(cfg.RateLimit, time.Now, s.m.reg)
	hm := hub.NewMetrics()
	s.m.reg.MustRegister(hm.Collectors()...)
	// A held membership outlives its session's TTL by one refresh: when a
	// node dies, a session nothing else keeps alive expires first (its
	// offline reaches the rooms it was in); the hold only ends memberships
	// whose session lives on elsewhere (heartbeats), about a TTL later.
	s.keeper = session.New(st, log, session.Options{
		Refresh: cfg.RefreshInterval(), Hold: cfg.TTL + cfg.RefreshInterval(), Grace: cfg.LeaveGrace,
	})
	s.hub = hub.New(st, renderer{}, log, hm, hub.Options{
		Coalesce: cfg.Coalesce, Debounce: cfg.LeaveDebounce, Keepalive: cfg.Keepalive,
		BeforeResync: s.keeper.RefreshAll,
	})
	s.keeper.OnRefresh = func(n int) { s.m.heartbeats.WithLabelValues("stream").Add(float64(n)) }
	s.keeper.OnDetach = s.m.ghostLeaves.Inc
	if len(cfg.WebhookURLs) > 0 {
		if err := s.newWebhooks(); err != nil {
			return nil, err
		}
	}
	s.echo = s.routes()
	s.http = &http.Server{
		Handler: s.echo,
		// No WriteTimeout: it would cut every SSE stream after that long.
		// Streams get a deadline per write instead; other routes get one
		// per request (writeDeadline middleware).
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if cfg.TLSCert != "" {
		if s.certs, err = tlsreload.New(cfg.TLSCert, cfg.TLSKey, log); err != nil {
			return nil, err
		}
		// h2 first: browsers multiplex every tab's stream and POSTs over
		// one connection instead of queueing behind six.
		s.http.TLSConfig = &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{"h2", "http/1.1"},
			GetCertificate: s.certs.GetCertificate,
		}
	}
	if sc, ok := st.(interface{ Collector() prometheus.Collector }); ok {
		s.m.reg.MustRegister(sc.Collector()) // e.g. the Redis store's error counts
	}
	return s, nil
}

// ReloadTLS re-reads --tls-cert and --tls-key (SIGHUP). On error the
// previous certificate stays in service.
func (s *Server) ReloadTLS() error {
	if s.certs == nil {
		return errors.New("no --tls-cert configured")
	}
	return s.certs.Reload()
}

// Handler is the gateway's http.Handler.
func (s *Server) Handler() http.Handler { return s.echo }

// Auth is the token verifier and minter (tests and tools mint with it).
func (s *Server) Auth() *Auth { return s.auth }

func (s *Server) routes() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.Logger.SetOutput(slog.NewLogLogger(s.log.Handler(), slog.LevelWarn).Writer())
	e.HTTPErrorHandler = s.errorHandler
	e.IPExtractor = s.ipExtractor()
	e.Use(s.forwarded, s.observe, s.recoverer, s.logRequests, s.securityHeaders, s.writeDeadline, s.cors)

	e.GET("/healthz", s.healthz)
	e.GET("/readyz", s.readyz)
	if s.cfg.MetricsAddr == "" { // else only on its own listener (startMetrics)
		e.GET("/metrics", echo.WrapHandler(s.metricsHandler()))
	}
	e.GET("/favicon.ico", s.favicon)
	e.GET("/static/*", s.static.serve)
	e.HEAD("/static/*", s.static.serve)

	// Middleware is attached per route, not per group: an Echo group with
	// middleware answers 404 instead of 405 for a wrong method.
	auth := s.requireAuth(false)
	e.POST("/api/presence", s.postPresence, auth)
	e.GET("/api/presence", s.getPresence, auth)
	e.POST("/api/presence/room/:roomId", s.postRoom, auth)
	e.GET("/api/presence/room/:roomId", s.getRoom, auth)
	e.POST("/api/presence/room/:roomId/typing", s.postTyping, auth)
	e.GET("/api/presence/room/:roomId/typing", s.getTyping, auth)

	// Streams that join a room change state: cookie-authenticated ones get
	// the cross-site check too (a watch-only or users stream does as well:
	// one rule for every stream is simpler to reason about). streamOrigin
	// runs first: a page of a foreign origin is refused before its stream
	// is authenticated or joins anything.
	e.GET("/sse", s.stream, s.streamOrigin, s.requireAuth(true))
	e.GET("/sse/room/:roomId", s.roomStream, s.streamOrigin, s.requireAuth(true))
	e.GET("/sse/users", s.usersStream, s.streamOrigin, auth)

	e.GET("/fragments/user/:userId/dot", s.dotFragment, auth)
	e.GET("/fragments/user/:userId/avatar", s.avatarFragment, auth)
	e.GET("/fragments/room/:roomId/members", s.membersFragment, auth)
	e.GET("/fragments/room/:roomId/typing", s.typingFragment, auth)
	e.GET("/fragments/room/:roomId/live", s.liveFragment, auth)

	if s.cfg.Dev {
		e.GET("/", s.demo)
		e.GET("/login", s.loginPage)
		e.POST("/login", s.login)
		e.POST("/logout", s.logout)
	}
	s.m.initRoutes(e.Routes())
	return e
}

// Start subscribes to the store's feed and starts serving on cfg.Addr
// (":0" picks a free port; see Addr). It returns once the server accepts
// connections.
// StartBackground starts what the gateway runs besides serving (the feed
// subscription and fan-out, the session keeper) without listening: for a
// gateway whose Handler is mounted in another server (the gateway package).
// Shutdown stops it.
func (s *Server) StartBackground() error {
	if err := s.hub.Start(); err != nil {
		return fmt.Errorf("subscribe to the store feed: %w", err)
	}
	if s.hooks != nil {
		if err := s.hooks.Start(); err != nil {
			s.hub.Close(errShutdown)
			return fmt.Errorf("start webhooks: %w", err)
		}
	}
	s.keeper.Start()
	return nil
}

func (s *Server) Start() error {
	if err := s.hub.Start(); err != nil {
		return fmt.Errorf("subscribe to the store feed: %w", err)
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		s.hub.Close(errShutdown)
		return err
	}
	if err := s.startMetrics(); err != nil {
		_ = ln.Close()
		s.hub.Close(errShutdown)
		return err
	}
	if s.hooks != nil {
		if err := s.hooks.Start(); err != nil {
			_ = ln.Close()
			s.stopMetrics(context.Background())
			s.hub.Close(errShutdown)
			return fmt.Errorf("start webhooks: %w", err)
		}
	}
	s.keeper.Start()
	s.ln = ln
	s.serveErr = make(chan error, 1)
	scheme := "http"
	if s.certs != nil {
		scheme = "https"
		wctx, cancel := context.WithCancel(context.Background())
		s.stopWatch, s.watchDone = cancel, make(chan struct{})
		go func() { defer close(s.watchDone); s.certs.Watch(wctx, tlsreload.DefaultPoll) }()
	}
	go func() {
		var err error
		if s.certs != nil {
			err = s.http.ServeTLS(ln, "", "") // the certificate comes from TLSConfig
		} else {
			err = s.http.Serve(ln)
		}
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.serveErr <- err
	}()
	switch {
	case s.cfg.Dev && s.cfg.GeneratedSecret:
		s.log.Warn("DEV MODE: /login signs anyone in, and tokens are signed with a throwaway random secret that dies with this process. Never run this in production: drop --dev and pass --secret.")
	case s.cfg.Dev:
		s.log.Warn("DEV MODE: /login signs anyone in with a token of your --secret. Never run this in production: drop --dev.")
	}
	if s.cfg.PublicURL == "" {
		s.log.Info("no --public-url: absolute URLs and same-origin checks follow each request's Host header; set --public-url in production")
	}
	s.log.Info("presenced listening", "addr", ln.Addr().String(), "scheme", scheme, "dev", s.cfg.Dev, "public_url", s.cfg.PublicURL)
	return nil
}

// Addr is the address the server listens on (after Start).
func (s *Server) Addr() string {
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Done delivers the serve loop's error (nil after Shutdown).
func (s *Server) Done() <-chan error { return s.serveErr }

// Shutdown stops the node: no new connections, every open stream closed
// (browsers reconnect, to another node), sessions left alone (they live on
// in a shared store, or expire by their TTL), then the feed. It does not
// close the store: its owner does, after this.
func (s *Server) Shutdown(ctx context.Context) error {
	var err error
	s.stopOnce.Do(func() {
		s.closing.Store(true)
		s.hub.CloseSubscribers(errShutdown)
		err = s.http.Shutdown(ctx)
		if err != nil {
			// Streams that did not end in time: cut them.
			_ = s.http.Close()
		}
		s.stopMetrics(ctx)
		s.keeper.Close()
		s.hub.Close(errShutdown)
		if s.stopWatch != nil {
			s.stopWatch()
			<-s.watchDone
		}
		if s.hooks != nil {
			s.hooks.Stop(ctx)
		}
	})
	return err
}

// healthz: the process is alive.
func (s *Server) healthz(c echo.Context) error {
	return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
}

// readyz: the store is reachable and this node is subscribed to its feed.
// A node that is not ready would show stale presence.
func (s *Server) readyz(c echo.Context) error {
	if s.closing.Load() {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "shutting down"})
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
	defer cancel()
	if err := s.store.Ready(ctx); err != nil {
		// The detail (addresses, driver errors) is for the log, not for an
		// anonymous caller.
		s.log.Warn("readyz: store not ready", "err", err)
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "store unreachable"})
	}
	if !s.hub.Subscribed() {
		return c.JSON(http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": "change feed not subscribed"})
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

// errorHandler answers every error as {"error": "…"}; 5xx are logged.
func (s *Server) errorHandler(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	code, msg := http.StatusInternalServerError, "internal error"
	var he *echo.HTTPError
	if errors.As(err, &he) {
		code = he.Code
		if m, ok := he.Message.(string); ok {
			msg = m
		} else {
			msg = http.StatusText(code)
		}
	} else if errors.Is(err, store.ErrInvalid) {
		code, msg = http.StatusBadRequest, err.Error()
	}
	if code >= 500 && code != http.StatusServiceUnavailable {
		s.log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "err", err)
	}
	if code == 499 {
		return // the client is gone; nobody to answer
	}
	if c.Request().Method == http.MethodHead {
		_ = c.NoContent(code)
		return
	}
	_ = c.JSON(code, map[string]string{"error": msg})
}

// recoverer turns a panic into a logged 500 instead of a dead connection.
func (s *Server) recoverer(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.Error("panic in handler", "path", c.Request().URL.Path, "panic", r)
				err = apiError(http.StatusInternalServerError, "internal error")
			}
		}()
		return next(c)
	}
}

// logRequests logs each request at debug level, without the query string
// (it may hold a token).
func (s *Server) logRequests(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if s.log.Enabled(c.Request().Context(), slog.LevelDebug) {
			status := c.Response().Status
			var he *echo.HTTPError
			if errors.As(err, &he) {
				status = he.Code
			}
			s.log.Debug("request", "method", c.Request().Method, "path", c.Request().URL.Path,
				"status", status, "duration", time.Since(start))
		}
		return err
	}
}

func (s *Server) securityHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		// Not no-referrer: under it browsers send "Origin: null" on form
		// POSTs, which the cross-site check must refuse.
		h.Set("Referrer-Policy", "strict-origin-when-cross-origin")
		return next(c)
	}
}

// writeDeadline gives every non-stream response 30 s to be written (the
// server has no global WriteTimeout because of the streams).
func (s *Server) writeDeadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !isStreamPath(c.Request().URL.Path) {
			_ = http.NewResponseController(c.Response()).SetWriteDeadline(time.Now().Add(30 * time.Second))
		}
		return next(c)
	}
}

// streamOrigin refuses (403) a stream requested by a page of another
// origin that --allow-origin does not list. CORS alone only hides the
// answer from that page: the stream would still have joined the room as
// the token's user (a ?token= leaked to another site would do). A request
// without Origin (same-origin EventSource, curl, servers) passes; "null"
// (sandboxed frames) passes only under --allow-origin '*'.
func (s *Server) streamOrigin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		o := r.Header.Get("Origin")
		if o == "" {
			return next(c)
		}
		ok := false
		if o == "null" {
			ok = s.originAllowed("*", false)
		} else if n, err := config.NormalizeOrigin(o); err == nil {
			ok = n == selfOrigin(r) || s.originAllowed(n, false)
		}
		if !ok {
			return apiError(http.StatusForbidden, "stream refused: this page's origin is not allowed (--allow-origin)")
		}
		return next(c)
	}
}

// cors lets allow-listed origins call the API, open streams and fetch
// fragments (the live widget embedded on their pages). An origin listed by
// name also gets Access-Control-Allow-Credentials: htmx-ext-sse opens every
// EventSource withCredentials, and a browser refuses such a stream without
// it. The "*" entry grants reads without credentials only (tokens travel as
// ?token= or Authorization then).
func (s *Server) cors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		p := r.URL.Path
		if !strings.HasPrefix(p, "/api/") && !isStreamPath(p) && !strings.HasPrefix(p, "/fragments/") {
			return next(c)
		}
		h := c.Response().Header()
		h.Add("Vary", "Origin")
		origin := r.Header.Get("Origin")
		allowed := false
		if origin != "" {
			if n, err := config.NormalizeOrigin(origin); err == nil && n != selfOrigin(r) && s.originAllowed(n, false) {
				allowed = true
				h.Set("Access-Control-Allow-Origin", origin)
				if s.originAllowed(n, true) {
					h.Set("Access-Control-Allow-Credentials", "true")
				}
			}
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
				if rh := r.Header.Get("Access-Control-Request-Headers"); rh != "" {
					h.Set("Access-Control-Allow-Headers", rh)
				}
				h.Set("Access-Control-Max-Age", "600")
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
			}
			return c.NoContent(http.StatusNoContent)
		}
		return next(c)
	}
}

// isStreamPath reports whether a request path is an SSE stream (/sse,
// /sse/room/…, /sse/users).
func isStreamPath(p string) bool { return p == "/sse" || strings.HasPrefix(p, "/sse/") }

// newWebhooks builds the webhook dispatcher (--webhook-url): it reads the
// store's deliveries, not the hub, so a slow receiver never touches the
// streams.
func (s *Server) newWebhooks() error {
	src, ok := s.store.(store.DeliverySource)
	if !ok {
		return errors.New("--webhook-url: this store cannot hand out deliveries")
	}
	d, err := webhook.New(src, webhook.Options{
		URLs: s.cfg.WebhookURLs, Secret: s.cfg.WebhookSecret, RetryFor: s.cfg.WebhookRetryFor,
		Debounce: s.cfg.LeaveDebounce, Log: s.log,
	})
	if err != nil {
		return err
	}
	s.m.reg.MustRegister(d.Metrics().Collectors()...)
	s.hooks = d
	return nil
}
