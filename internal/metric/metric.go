// Package metric names flashsale's Prometheus metrics in one place, as
// flashsale_<subsystem>_<name>, so every subsystem spells them alike: one
// subsystem per room (order, envelope, shake, kafka, expiry, refund, ...),
// counters ending in _total, durations in _seconds.
package metric

import "github.com/prometheus/client_golang/prometheus"

// Name returns flashsale_<subsystem>_<name>.
func Name(subsystem, name string) string {
	return prometheus.BuildFQName("flashsale", subsystem, name)
}

// Counter returns a counter named Name(subsystem, name).
func Counter(subsystem, name, help string, labels prometheus.Labels) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Namespace: "flashsale", Subsystem: subsystem, Name: name,
		Help: help, ConstLabels: labels})
}

// Gauge returns a gauge named Name(subsystem, name).
func Gauge(subsystem, name, help string, labels prometheus.Labels) prometheus.Gauge {
	return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "flashsale", Subsystem: subsystem, Name: name,
		Help: help, ConstLabels: labels})
}

// GaugeFunc returns a gauge named Name(subsystem, name) that reads fn at
// scrape time, so the hot path pays nothing for it.
func GaugeFunc(subsystem, name, help string, labels prometheus.Labels, fn func() float64) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "flashsale", Subsystem: subsystem, Name: name,
		Help: help, ConstLabels: labels}, fn)
}

// Histogram returns a histogram named Name(subsystem, name).
func Histogram(subsystem, name, help string, labels prometheus.Labels, buckets []float64) prometheus.Histogram {
	return prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "flashsale", Subsystem: subsystem, Name: name,
		Help: help, ConstLabels: labels, Buckets: buckets})
}

// Desc returns the description of a metric named Name(subsystem, name) that
// a collector computes at scrape time.
func Desc(subsystem, name, help string, variableLabels []string) *prometheus.Desc {
	return prometheus.NewDesc(Name(subsystem, name), help, variableLabels, nil)
}

// Set is a list of collectors that is itself one, so a service with several
// metrics registers as one collector without its own Describe/Collect loops.
type Set []prometheus.Collector

// Describe implements prometheus.Collector.
func (s Set) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s Set) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s {
		c.Collect(ch)
	}
}
