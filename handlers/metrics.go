package handlers

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus metrics, on a registry of its own so
// that two servers in one process (tests) never collide and nothing a
// library registers globally leaks into /metrics.
type metrics struct {
	reg *prometheus.Registry

	openStreams *prometheus.GaugeVec
	heartbeats  *prometheus.CounterVec
	delivered   *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	ghostLeaves prometheus.Counter

	// deliveredBy caches the delivered counter of each known event name:
	// it is bumped once per connection per event, the hottest path there is.
	deliveredBy map[string]prometheus.Counter
}

// streamEvents are the event names the streams send (presence-{userId}
// counted as "presence").
var streamEvents = []string{"members", "member-list", "typing", "presence", "sync", "join", "leave", "status"}

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
			Help: "SSE streams currently open, by kind (room, users).",
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
			Help: "SSE streams closed by the server, by reason (slow: its queue was full; stalled: a write missed its deadline; no_state: its state could not be read; token_expired: its token expired; shutdown).",
		}, []string{"reason"}),
		ghostLeaves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presenced_stream_room_leaves_total",
			Help: "Room streams that closed without an explicit offline and whose (session, room) this node detached: the store takes the session out of the room --leave-grace later unless a stream of it comes back, on any node (a reload, a room switch, an embed removed, a tab gone without a goodbye)",
		}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.openStreams, m.heartbeats, m.delivered, m.dropped, m.ghostLeaves,
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
	for _, r := range []string{"slow", "stalled", "no_state", "token_expired", "shutdown"} {
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
