package webhook

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the dispatcher's Prometheus series, by receiver (host and
// path of its URL: never the query, which may hold a secret).
type Metrics struct {
	delivered, retried, failed, dropped *prometheus.CounterVec
	depth                               *prometheus.GaugeVec
	latency                             *prometheus.HistogramVec
	suppressed                          prometheus.Counter
}

// NewMetrics makes an unregistered set.
func NewMetrics() *Metrics {
	l := []string{"receiver"}
	return &Metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_webhook_delivered_total", Help: "Webhook events a receiver accepted (2xx)."}, l),
		retried:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_webhook_retried_total", Help: "Webhook events sent again after a failed attempt (one per event per retry)."}, l),
		failed:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_webhook_failed_total", Help: "Webhook events given up on after --webhook-retry-for of retries."}, l),
		dropped:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "presenced_webhook_dropped_total", Help: "Webhook events dropped, oldest first, because the receiver's queue was full."}, l),
		depth:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "presenced_webhook_queue_depth", Help: "Webhook events waiting in the receiver's queue (not counting the batch in flight)."}, l),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "presenced_webhook_delivery_latency_seconds",
			Help:    "From the transition to the receiver's 2xx, per event (includes batching, debounce and retries).",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600, 86400},
		}, l),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{Name: "presenced_webhook_suppressed_total", Help: "Webhook events not delivered because they were undone within --leave-debounce (offline+online, leave+join)."}),
	}
}

// Collectors lists the series to register.
func (m *Metrics) Collectors() []prometheus.Collector {
	return []prometheus.Collector{m.delivered, m.retried, m.failed, m.dropped, m.depth, m.latency, m.suppressed}
}

// init makes a receiver's series exist from the start (dashboards see 0).
func (m *Metrics) init(label string) {
	m.delivered.WithLabelValues(label)
	m.retried.WithLabelValues(label)
	m.failed.WithLabelValues(label)
	m.dropped.WithLabelValues(label)
	m.depth.WithLabelValues(label)
	m.latency.WithLabelValues(label)
}
