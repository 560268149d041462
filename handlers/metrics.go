package handlers

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/presenced/presenced/store"
)

// metrics are the gateway's Prometheus metrics, on a registry of its own so
// that two servers in one process (tests) never collide and nothing a
// library registers globally leaks into /metrics.
type metrics struct {
	reg *prometheus.Registry

	openStreams     *prometheus.GaugeVec
	heartbeats      *prometheus.CounterVec
	published       *prometheus.CounterVec
	delivered       *prometheus.CounterVec
	dropped         *prometheus.CounterVec
	feedEvents      *prometheus.CounterVec
	resyncs         prometheus.Counter
	fanout          *prometheus.HistogramVec
	offlineLateness prometheus.Histogram
	debounced       *prometheus.CounterVec
	ghostLeaves     prometheus.Counter
	httpRequests    *prometheus.CounterVec
	httpDuration    *prometheus.HistogramVec

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
			Help: "SSE streams currently open, by kind (room, users).",
		}, []string{"kind"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_heartbeats_total",
			Help: "Session refreshes: api = POST /api/presence, stream = an open room stream keeping its session alive.",
		}, []string{"source"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_events_published_total",
			Help: "SSE events rendered by the hub (once per change, before fan-out), by event.",
		}, []string{"event"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_events_delivered_total",
			Help: "SSE events queued to a connection, by event.",
		}, []string{"event"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_streams_dropped_total",
			Help: "SSE streams closed by the server, by reason (slow: its queue was full; stalled: a write missed its deadline; no_state: its state could not be read; token_expired: its token expired; shutdown).",
		}, []string{"reason"}),
		feedEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_feed_events_total",
			Help: "Events read from the store's change feed, by kind.",
		}, []string{"kind"}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presenced_feed_resyncs_total",
			Help: "Times every open stream was re-sent its state (feed resync, slow or lost feed subscription).",
		}),
		fanout: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "presenced_fanout_duration_seconds",
			Help:    "Time to render one change and queue it to every interested connection, by scope (room, user).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"scope"}),
		offlineLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "presenced_offline_lateness_seconds",
			Help:    "For offline transitions caused by expiry: when this node got the event minus when the session was due to expire.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		debounced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_departures_debounced_total",
			Help: "Departures the HTML streams held back for --leave-debounce, by what was held (member: leaving a room's stack; dot: an offline dot) and outcome (returned: back within the window, nothing shown; shown: still gone, shown after it).",
		}, []string{"kind", "outcome"}),
		ghostLeaves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presenced_stream_room_leaves_total",
			Help: "Leaves of a (session, room) whose room stream closed without an explicit offline and was not reopened on this node within --leave-grace (a room switch, an embed removed, a tab gone without a goodbye); a no-op in the store when the session had expired meanwhile.",
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
		m.openStreams, m.heartbeats, m.published, m.delivered, m.dropped,
		m.feedEvents, m.resyncs, m.fanout, m.offlineLateness, m.debounced, m.ghostLeaves,
		m.httpRequests, m.httpDuration,
	)
	m.deliveredBy = make(map[string]prometheus.Counter, len(streamEvents))
	for _, e := range streamEvents {
		m.deliveredBy[e] = m.delivered.WithLabelValues(e)
	}
	// Make the series exist from the start, so dashboards see zeros.
	for _, k := range []string{"room", "users"} {
		m.openStreams.WithLabelValues(k)
	}
	for _, s := range []string{"api", "stream"} {
		m.heartbeats.WithLabelValues(s)
	}
	for _, e := range streamEvents {
		m.published.WithLabelValues(e)
	}
	for _, r := range dropReasons {
		m.dropped.WithLabelValues(r)
	}
	for _, k := range []store.EventKind{store.EventStatus, store.EventJoin, store.EventLeave, store.EventTyping, store.EventResync} {
		m.feedEvents.WithLabelValues(string(k))
	}
	for _, sc := range []string{"room", "user"} {
		m.fanout.WithLabelValues(sc)
	}
	for _, k := range []string{"member", "dot"} {
		for _, o := range []string{"returned", "shown"} {
			m.debounced.WithLabelValues(k, o)
		}
	}
	return m
}

// initRoutes records the route patterns and makes each one's success
// series exist at 0.
func (m *metrics) initRoutes(routes []*echo.Route) {
	m.routes = make(map[string]bool, len(routes))
	for _, r := range routes {
		m.routes[r.Method+" "+r.Path] = true
		m.httpRequests.WithLabelValues(r.Path, r.Method, "200")
		if !strings.HasPrefix(r.Path, "/sse/") {
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
		if !strings.HasPrefix(route, "/sse/") {
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
