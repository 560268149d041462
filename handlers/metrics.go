package handlers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/presenced/presenced/store"
)

// metrics are the gateway's Prometheus metrics, on a registry of its own so
// that two servers in one process (tests) never collide and nothing a
// library registers globally leaks into /metrics.
type metrics struct {
	reg *prometheus.Registry

	openStreams  *prometheus.GaugeVec
	heartbeats   *prometheus.CounterVec
	delivered    *prometheus.CounterVec
	dropped      *prometheus.CounterVec
	ghostLeaves  prometheus.Counter
	httpRequests *prometheus.CounterVec
	httpDuration *prometheus.HistogramVec

	// routes are the registered route patterns (method + " " + path): the
	// only values the route label takes, so that a scan of random paths
	// cannot grow the series.
	routes map[string]bool

	// deliveredBy caches the delivered counter of each known event name:
	// it is bumped once per connection per event, the hottest path there is.
	deliveredBy map[string]prometheus.Counter
}

// streamEvents are the event names the streams send (presence-{userId}
// counted as "presence").
var streamEvents = []string{"members", "member-list", "typing", "presence", "sync", "join", "leave", "status"}

// dropReasons are the reasons of presenced_streams_dropped_total.
var dropReasons = []string{"slow", "stalled", "shutdown", "no_state", "token_expired"}

// deliveredInc counts one event queued to one connection.
func (m *metrics) deliveredInc(event string) {
	if c, ok := m.deliveredBy[event]; ok {
		c.Inc()
		return
	}
	m.delivered.WithLabelValues(event).Inc()
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		openStreams: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "presenced_sse_open_streams",
			Help: "SSE streams currently open, by kind (room: joins a room; watch: watches rooms without joining; users: dots only).",
		}, []string{"kind"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_heartbeats_total",
			Help: "Session refreshes: api = POST /api/presence, stream = an open room stream keeping its session alive.",
		}, []string{"source"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_events_delivered_total",
			Help: "SSE events queued to a connection, by event.",
		}, []string{"event"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_streams_dropped_total",
			Help: "SSE streams closed by the server, by reason (slow: never since streams resync instead, kept for dashboards; stalled: a write missed its deadline; no_state: its state could not be read; token_expired: its token expired; shutdown).",
		}, []string{"reason"}),
		ghostLeaves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presenced_stream_room_leaves_total",
			Help: "Room streams that closed without an explicit offline and whose (session, room) this node detached: the store takes the session out of the room --leave-grace later unless a stream of it comes back, on any node (a reload, a room switch, an embed removed, a tab gone without a goodbye)",
		}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_http_requests_total",
			Help: "HTTP requests answered, by route pattern (e.g. /api/presence/room/:roomId; \"unmatched\" for no route), method and status code. A stream counts when it ends.",
		}, []string{"route", "method", "code"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "presenced_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by route pattern, method and status code. SSE streams (/sse/...) are left out: their duration is how long the page stayed open.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method", "code"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.openStreams, m.heartbeats, m.delivered, m.dropped, m.ghostLeaves,
		m.httpRequests, m.httpDuration,
	)
	m.deliveredBy = make(map[string]prometheus.Counter, len(streamEvents))
	for _, e := range streamEvents {
		m.deliveredBy[e] = m.delivered.WithLabelValues(e)
	}
	// Make the series exist from the start, so dashboards see zeros.
	for _, k := range []string{"room", "watch", "users"} {
		m.openStreams.WithLabelValues(k)
	}
	for _, s := range []string{"api", "stream"} {
		m.heartbeats.WithLabelValues(s)
	}
	for _, r := range dropReasons {
		m.dropped.WithLabelValues(r)
	}
	return m
}

// metricsHandler serves the Prometheus text format, behind
// --metrics-token when one is set: Authorization: Bearer <token>, compared
// in constant time, else 401.
func (s *Server) metricsHandler() http.Handler {
	h := promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{Registry: s.m.reg})
	want := s.cfg.MetricsToken
	if want == "" {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, got, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="presenced-metrics"`)
			w.Header().Set("Content-Type", "application/json; charset=UTF-8")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"/metrics requires Authorization: Bearer <--metrics-token>"}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// startMetrics serves /metrics on --metrics-addr, when set: a listener of
// its own (say, loopback or an internal interface) that serves nothing
// else, while the main address then has no /metrics at all.
func (s *Server) startMetrics() error {
	if s.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metricsHandler())
	s.metricsSrv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
	s.metricsLn = ln
	go func() {
		if err := s.metricsSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics listener failed", "err", err)
		}
	}()
	s.log.Info("metrics listening", "addr", ln.Addr().String())
	return nil
}

// MetricsAddr is the address of the separate /metrics listener (after
// Start), or "" when there is none.
func (s *Server) MetricsAddr() string {
	if s.metricsLn == nil {
		return ""
	}
	return s.metricsLn.Addr().String()
}

func (s *Server) stopMetrics(ctx context.Context) {
	if s.metricsSrv != nil {
		if err := s.metricsSrv.Shutdown(ctx); err != nil {
			_ = s.metricsSrv.Close()
		}
	}
}

// initRoutes records the route patterns and makes each one's success
// series exist at 0.
func (m *metrics) initRoutes(routes []*echo.Route) {
	m.routes = make(map[string]bool, len(routes))
	for _, r := range routes {
		m.routes[r.Method+" "+r.Path] = true
		m.httpRequests.WithLabelValues(r.Path, r.Method, "200")
		if !isStreamPath(r.Path) {
			m.httpDuration.WithLabelValues(r.Path, r.Method, "200")
		}
	}
}

// observe counts every request by route pattern (c.Path(), never the raw
// path) and status code, and times the non-stream ones. It answers errors
// itself (c.Error), so that the code counted is the code sent.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		code := c.Response().Status
		if !c.Response().Committed {
			// Nothing written (a client gone, 499): the code it would have had.
			code = errorCode(err)
		}
		method := c.Request().Method
		route := c.Path()
		if !s.m.routes[method+" "+route] {
			route = "unmatched"
			switch method {
			case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
				http.MethodDelete, http.MethodOptions:
			default:
				method = "OTHER" // any token is a method: keep the label bounded
			}
		}
		cs := strconv.Itoa(code)
		s.m.httpRequests.WithLabelValues(route, method, cs).Inc()
		if !isStreamPath(route) {
			s.m.httpDuration.WithLabelValues(route, method, cs).Observe(time.Since(start).Seconds())
		}
		return nil
	}
}

// errorCode is the status code errorHandler gives err.
func errorCode(err error) int {
	var he *echo.HTTPError
	switch {
	case err == nil:
		return http.StatusOK
	case errors.As(err, &he):
		return he.Code
	case errors.Is(err, store.ErrInvalid):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
