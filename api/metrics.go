package api

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.HistogramVec
	// lockWaiting counts acquire requests this node holds open waiting for
	// a grant (the replicated queue is the engine's cairn_lock_waiters).
	lockWaiting prometheus.Gauge
	// lockWait times those waits by how they ended: granted or not.
	lockWait *prometheus.HistogramVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "cairn",
			Name:      "http_request_duration_seconds",
			Help:      "HTTP API requests by route, method and status code.",
			Buckets:   prometheus.ExponentialBuckets(0.0005, 2, 14),
		}, []string{"route", "method", "code"}),
	}
	m.lockWaiting = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "cairn",
		Name:      "api_lock_waiting_requests",
		Help:      "Lock acquire requests this node holds open, queued and waiting for a grant.",
	})
	m.lockWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "cairn",
		Name:      "api_lock_wait_seconds",
		Help:      "How long queued lock acquires waited on this node, by outcome (granted, not_granted).",
		Buckets:   prometheus.ExponentialBuckets(0.001, 4, 10),
	}, []string{"outcome"})
	reg.MustRegister(m.requests, m.lockWaiting, m.lockWait)
	return m
}

func (m *metrics) observe(route, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Observe(d.Seconds())
}
