package hub

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the hub's Prometheus series. The HTTP layer registers
// Collectors on its own registry.
type Metrics struct {
	Published       *prometheus.CounterVec
	FeedEvents      *prometheus.CounterVec
	Resyncs         prometheus.Counter
	Fanout          *prometheus.HistogramVec
	OfflineLateness prometheus.Histogram
	Debounced       *prometheus.CounterVec
	Collapsed       prometheus.Counter
	SnapshotReads   *prometheus.CounterVec
}

// NewMetrics makes the hub's series, every labelled one pre-initialised so
// that dashboards see zeros from the start.
func NewMetrics() *Metrics {
	m := &Metrics{
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_events_published_total",
			Help: "SSE events rendered by the hub (once per change and variant, before fan-out), by event.",
		}, []string{"event"}),
		FeedEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_feed_events_total",
			Help: "Events read from the store's change feed, by kind.",
		}, []string{"kind"}),
		Resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presenced_feed_resyncs_total",
			Help: "Times every open stream was re-sent its state (feed resync, slow or lost feed subscription).",
		}),
		Fanout: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "presenced_fanout_duration_seconds",
			Help:    "Time to render one change and queue it to every interested stream, by scope (room, user).",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"scope"}),
		OfflineLateness: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "presenced_offline_lateness_seconds",
			Help:    "For offline transitions caused by expiry: when this node got the event minus when the session was due to expire.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		Debounced: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_departures_debounced_total",
			Help: "Departures the HTML streams held back for --leave-debounce, by what was held (member: leaving a room's stack; dot: an offline dot) and outcome (returned: back within the window, nothing shown; shown: still gone, shown after it).",
		}, []string{"kind", "outcome"}),
		Collapsed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presenced_stream_queue_resyncs_total",
			Help: "Times a stream's queue overflowed and was replaced by one snapshot per topic (a burst; the stream stays open).",
		}),
		SnapshotReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presenced_snapshot_reads_total",
			Help: "Room snapshots sent to streams, by source (store: a new store read; shared: a current read another snapshot had made).",
		}, []string{"source"}),
	}
	for _, e := range []string{"members", "member-list", "typing", "presence", "sync", "join", "leave", "status"} {
		m.Published.WithLabelValues(e)
	}
	for _, k := range []string{"status", "join", "leave", "typing", "resync"} {
		m.FeedEvents.WithLabelValues(k)
	}
	for _, s := range []string{"room", "user"} {
		m.Fanout.WithLabelValues(s)
	}
	for _, k := range []string{"member", "dot"} {
		for _, o := range []string{"returned", "shown"} {
			m.Debounced.WithLabelValues(k, o)
		}
	}
	for _, s := range []string{"store", "shared"} {
		m.SnapshotReads.WithLabelValues(s)
	}
	return m
}

// Collectors lists every series, for registration.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Published, m.FeedEvents, m.Resyncs, m.Fanout, m.OfflineLateness, m.Debounced, m.Collapsed, m.SnapshotReads}
}
