package dashboard

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The node metrics the dashboard reads. Their names are the node's contract
// with the dashboard and with the Grafana panels (grafana_test.go checks
// that a real node exports each of them).
const (
	metricBuys      = "flashsale_sale_buys_total"
	metricBuyTime   = "flashsale_sale_buy_duration_seconds"
	metricShare     = "flashsale_stock_local_share_units"
	metricShed      = "flashsale_http_shed_total"
	metricPublished = "flashsale_kafka_published_total"
	metricPubErrors = "flashsale_kafka_publish_errors_total"
	metricLag       = "flashsale_kafka_consumer_lag_messages"
	metricNodeInfo  = "flashsale_node_info"
)

// maxMetricsBytes caps one scrape: a node's whole exposition is tens of KiB.
const maxMetricsBytes = 8 << 20

// scrape is what one read of a node's metrics endpoint yielded.
type scrape struct {
	node      string                        // the node's id: flashsale_node_info, else X-Flashsale-Node
	buys      map[string]map[string]float64 // sale -> result -> count
	hist      map[string]*hist              // sale -> buy latency buckets
	share     map[string]float64            // sale -> local share units
	shed      float64
	published float64
	pubErrors float64
	lag       float64 // summed over the node's consumers
}

// hist is a cumulative histogram: counts[i] observations were <= le[i].
type hist struct {
	le     []float64
	counts []float64
	total  float64
}

// metricsURL turns a node URL into its metrics URL: a URL without a path
// gets /metrics, so both "http://host:port" and an admin listener's full
// ".../metrics" work.
func metricsURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("node metrics URL %q: want http(s)://host:port[/path]", raw)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/metrics"
	}
	return u.String(), nil
}

// fetchMetrics reads and parses one node's metrics.
func fetchMetrics(ctx context.Context, c *http.Client, url string) (*scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	// The plain text format: promhttp answers it whatever else it supports.
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	s, err := parseMetrics(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", url, err)
	}
	if s.node == "" {
		s.node = resp.Header.Get("X-Flashsale-Node")
	}
	return s, nil
}

// parseMetrics reads the Prometheus text format and keeps what the
// dashboard charts.
func parseMetrics(r io.Reader) (*scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	s := &scrape{buys: map[string]map[string]float64{}, hist: map[string]*hist{}, share: map[string]float64{}}
	for _, m := range fams[metricBuys].GetMetric() {
		sale, result := label(m, "sale"), label(m, "result")
		if sale == "" || result == "" {
			continue
		}
		if s.buys[sale] == nil {
			s.buys[sale] = map[string]float64{}
		}
		s.buys[sale][result] += m.GetCounter().GetValue()
	}
	for _, m := range fams[metricBuyTime].GetMetric() {
		if sale := label(m, "sale"); sale != "" {
			s.hist[sale] = toHist(m.GetHistogram())
		}
	}
	for _, m := range fams[metricShare].GetMetric() {
		if sale := label(m, "sale"); sale != "" {
			s.share[sale] = m.GetGauge().GetValue()
		}
	}
	for _, m := range fams[metricNodeInfo].GetMetric() {
		s.node = label(m, "node")
	}
	s.shed = sum(fams[metricShed])
	s.published = sum(fams[metricPublished])
	s.pubErrors = sum(fams[metricPubErrors])
	s.lag = sum(fams[metricLag])
	return s, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sum adds every series of a counter or gauge family.
func sum(f *dto.MetricFamily) float64 {
	var t float64
	for _, m := range f.GetMetric() {
		t += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return t
}

func toHist(h *dto.Histogram) *hist {
	out := &hist{total: float64(h.GetSampleCount())}
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), 1) {
			continue
		}
		out.le = append(out.le, b.GetUpperBound())
		out.counts = append(out.counts, float64(b.GetCumulativeCount()))
	}
	return out
}

// delta returns cur - prev, or cur when the counter went back (the node
// restarted), as Prometheus's rate() does.
func delta(cur, prev float64) float64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// since returns the observations of h after prev (nil: all of them). A
// histogram whose count went back is taken whole.
func (h *hist) since(prev *hist) *hist {
	if prev == nil || h.total < prev.total || len(prev.le) != len(h.le) {
		return h
	}
	d := &hist{le: h.le, counts: make([]float64, len(h.counts)), total: h.total - prev.total}
	for i := range h.counts {
		d.counts[i] = h.counts[i] - prev.counts[i]
	}
	return d
}

// add accumulates o into h (same bucket layout; others are skipped).
func (h *hist) add(o *hist) *hist {
	if h == nil {
		return &hist{le: o.le, counts: append([]float64(nil), o.counts...), total: o.total}
	}
	if len(h.le) != len(o.le) {
		return h
	}
	for i := range h.counts {
		h.counts[i] += o.counts[i]
	}
	h.total += o.total
	return h
}

// quantile estimates the q-quantile like PromQL's histogram_quantile: linear
// inside the bucket holding the rank. It reports false without observations.
func (h *hist) quantile(q float64) (float64, bool) {
	if h == nil || h.total <= 0 || len(h.le) == 0 {
		return 0, false
	}
	rank := q * h.total
	lower, below := 0.0, 0.0
	for i, c := range h.counts {
		if c >= rank {
			if c == below {
				return h.le[i], true
			}
			return lower + (h.le[i]-lower)*(rank-below)/(c-below), true
		}
		lower, below = h.le[i], c
	}
	// Above the last finite bucket: its bound is the best we can say.
	return h.le[len(h.le)-1], true
}
