package api

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/prometheus/client_golang/prometheus"
)

// maxSaleSeries caps how many sales get their own label values in the
// per-sale buy metrics; later sales share the label otherSale. Sales are
// created only by the admin, and a sale id gets a series only once the node
// found the sale (never for not_found), so buyers cannot grow the series.
const maxSaleSeries = 256

// otherSale is the sale label of sales beyond maxSaleSeries. '~' is not a
// legal id character, so no real sale can collide with it.
const otherSale = "~other"

// saleMetrics are the buy outcomes and latencies per sale, which the live
// dashboard and Grafana chart per sale (the route metrics are per node
// only). Children are bound once per sale and result, so a buy costs two
// map loads and no allocation once its sale is known.
type saleMetrics struct {
	buys     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	sales    sync.Map // sale id -> *saleObs
	n        atomic.Int64
	mu       sync.Mutex // serialises adding a sale, so the cap holds
}

// saleObs is one sale's pre-bound metrics.
type saleObs struct {
	sale    string
	hist    prometheus.Observer
	results sync.Map // result -> prometheus.Counter
	vec     *prometheus.CounterVec
}

func newSaleMetrics() *saleMetrics {
	return &saleMetrics{
		buys: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "flashsale_sale_buys_total",
			Help: "Buy answers by sale and result (ok or an error code); unknown sales are not counted."}, []string{"sale", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "flashsale_sale_buy_duration_seconds",
			Help:    "Buy latency by sale, from the request's arrival to its answer.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}, []string{"sale"}),
	}
}

// Describe implements prometheus.Collector.
func (m *saleMetrics) Describe(ch chan<- *prometheus.Desc) {
	m.buys.Describe(ch)
	m.duration.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *saleMetrics) Collect(ch chan<- prometheus.Metric) {
	m.buys.Collect(ch)
	m.duration.Collect(ch)
}

// record observes one buy answer of sale.
func (m *saleMetrics) record(sale string, start time.Time, result string) {
	if result == flashsale.ENOTFOUND {
		return
	}
	o := m.obs(sale)
	o.hist.Observe(time.Since(start).Seconds())
	if c, ok := o.results.Load(result); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := o.vec.WithLabelValues(o.sale, result)
	o.results.Store(result, c)
	c.Inc()
}

func (m *saleMetrics) obs(sale string) *saleObs {
	if o, ok := m.sales.Load(sale); ok {
		return o.(*saleObs)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if o, ok := m.sales.Load(sale); ok {
		return o.(*saleObs)
	}
	label := sale
	if m.n.Load() >= maxSaleSeries {
		label = otherSale
		if o, ok := m.sales.Load(otherSale); ok {
			return o.(*saleObs)
		}
	}
	o := &saleObs{sale: label, hist: m.duration.WithLabelValues(label), vec: m.buys}
	m.sales.Store(label, o)
	m.n.Add(1)
	return o
}

// nodeInfo is the constant 1 labelled with the node's id, so a scraper
// (the dashboard, Prometheus) learns which node a metrics URL belongs to
// whatever listener serves it.
func nodeInfo(id string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "flashsale_node_info",
		Help: "Always 1; the node label is this node's id.", ConstLabels: prometheus.Labels{"node": id}})
	g.Set(1)
	return g
}
