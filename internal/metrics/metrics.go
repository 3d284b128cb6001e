// Package metrics holds the Prometheus metrics of one server, on its own
// registry (no global state). A nil *Metrics records nothing.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the server's counters, gauges and histograms.
type Metrics struct {
	reg        *prometheus.Registry
	calls      *prometheus.CounterVec
	bytes      *prometheus.CounterVec
	processing *prometheus.HistogramVec
}

// QueueDepthFunc reports the requests queued and processing.
type QueueDepthFunc func(ctx context.Context) (queued, processing int, err error)

// New registers every metric. depth is read at each scrape.
func New(depth QueueDepthFunc) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.calls = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upgrade_api_calls_total",
		Help: "Upgrade API v1 calls by method and outcome (ok, or the first failure reason)."}, []string{"method", "outcome"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "upgrade_transfer_bytes_total",
		Help: "Bytes uploaded and downloaded, by protocol (http, sftp) and direction (up, down)."}, []string{"protocol", "direction"})
	m.processing = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "upgrade_processing_seconds",
		Help: "Time from claim to the end of processing, by outcome.", Buckets: prometheus.ExponentialBuckets(0.05, 3, 12)}, []string{"outcome"})
	m.reg.MustRegister(m.calls, m.bytes, m.processing,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if depth != nil {
		gauge := func(name, help string, pick func(q, p int) int) prometheus.GaugeFunc {
			return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second) // bounded scrape-time read
				defer cancel()
				q, p, err := depth(ctx)
				if err != nil {
					return -1
				}
				return float64(pick(q, p))
			})
		}
		m.reg.MustRegister(
			gauge("upgrade_queue_depth", "Requests queued for a worker.", func(q, _ int) int { return q }),
			gauge("upgrade_processing", "Requests being processed.", func(_, p int) int { return p }))
	}
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Call counts one API call.
func (m *Metrics) Call(method, outcome string) {
	if m != nil {
		m.calls.WithLabelValues(method, outcome).Inc()
	}
}

// Bytes counts bytes moved.
func (m *Metrics) Bytes(protocol, direction string, n int64) {
	if m != nil && n > 0 {
		m.bytes.WithLabelValues(protocol, direction).Add(float64(n))
	}
}

// Processed records one processing run.
func (m *Metrics) Processed(outcome string, d time.Duration) {
	if m != nil {
		m.processing.WithLabelValues(outcome).Observe(d.Seconds())
	}
}
