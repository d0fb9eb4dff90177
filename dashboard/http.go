package dashboard

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

//go:embed index.html
var indexHTML []byte

// dataMarker is where the report inlines its samples; the live page leaves
// it null and opens the event stream instead.
var dataMarker = []byte("/*FS_DATA*/null")

// writeTimeout bounds each write to a page's stream, so a browser that
// stopped reading frees its handler even between samples.
const writeTimeout = 5 * time.Second

// Handler serves the page (/), its event stream (/events), the history as
// JSON (/api/history), the saved-report form of the page (/report), the
// dashboard's own metrics — the books it reads from Redis, for Prometheus —
// (/metrics) and /healthz.
func (d *Dashboard) Handler() http.Handler {
	mux := http.NewServeMux()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector{d})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(indexHTML)
	})
	mux.HandleFunc("GET /events", d.serveEvents)
	mux.HandleFunc("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(joinSamples(d.historyRaw()))
	})
	mux.HandleFunc("GET /report", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = writeReport(w, joinSamples(d.historyRaw()))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

// serveEvents streams samples: first the whole history as one "history"
// event, then one "sample" event per tick. A full hub answers 503.
func (d *Dashboard) serveEvents(w http.ResponseWriter, r *http.Request) {
	s, ok := d.hub.subscribe()
	if !ok {
		w.Header().Set("Retry-After", "5")
		http.Error(w, "too many dashboard pages open", http.StatusServiceUnavailable)
		return
	}
	defer d.hub.unsubscribe(s)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// Subscribed before the history is read, so no tick falls in between;
	// the page ignores a sample it already has.
	send := func(msg []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		if _, err := w.Write(msg); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send(sseMessage("history", joinSamples(d.historyRaw()))) {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case msg, ok := <-s.ch:
			if !ok { // dropped for being slow, or the dashboard stopped
				return
			}
			if !send(msg) {
				return
			}
		}
	}
}

// sseMessage frames one event; data is JSON, which has no raw newlines.
func sseMessage(event string, data []byte) []byte {
	b := make([]byte, 0, len(event)+len(data)+16)
	b = append(b, "event: "...)
	b = append(b, event...)
	b = append(b, "\ndata: "...)
	b = append(b, data...)
	return append(b, "\n\n"...)
}

func joinSamples(raw []json.RawMessage) []byte {
	n := 2
	for _, r := range raw {
		n += len(r) + 1
	}
	b := make([]byte, 0, n)
	b = append(b, '[')
	for i, r := range raw {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, r...)
	}
	return append(b, ']')
}

// WriteReport writes the page with samples inlined: a self-contained HTML
// report that draws the same charts without a server.
func WriteReport(w io.Writer, samples []Sample) error {
	b, err := json.Marshal(samples)
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	return writeReport(w, b)
}

func writeReport(w io.Writer, data []byte) error {
	// json.Marshal escapes '<', so the data cannot close the script tag.
	i := bytes.Index(indexHTML, dataMarker)
	if i < 0 {
		return fmt.Errorf("report: page has no data marker")
	}
	if _, err := w.Write(indexHTML[:i]); err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	_, err := w.Write(indexHTML[i+len(dataMarker):])
	return err
}

// collector exports the newest sample's Redis view for Prometheus: the
// books per sale and the live node count (the nodes export their own
// counters). Values are read at scrape time.
type collector struct{ d *Dashboard }

var (
	descUnits = prometheus.NewDesc("flashsale_sale_stock_units",
		"A sale's units by state in Redis: remaining, pending (held, unpaid) or paid.", []string{"sale", "state"}, nil)
	descReleased = prometheus.NewDesc("flashsale_sale_released_total",
		"A sale's orders whose unit went back to stock, by reason: expired, cancelled or aborted.", []string{"sale", "reason"}, nil)
	descLive = prometheus.NewDesc("flashsale_cluster_live_nodes",
		"Nodes beating in Redis's members set.", nil, nil)
	descRedisUp = prometheus.NewDesc("flashsale_dashboard_redis_up",
		"1 when the dashboard's last Redis read succeeded.", nil, nil)
	descPages = prometheus.NewDesc("flashsale_dashboard_pages",
		"Live pages subscribed to the dashboard's event stream.", nil, nil)
	descDropped = prometheus.NewDesc("flashsale_dashboard_dropped_pages_total",
		"Pages dropped because they read the stream too slowly.", nil, nil)
)

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUnits, descReleased, descLive, descRedisUp, descPages, descDropped} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	n, dropped := c.d.hub.stats()
	ch <- prometheus.MustNewConstMetric(descPages, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(dropped))
	s, ok := c.d.Last()
	if !ok {
		return
	}
	up := 0.0
	if s.Redis {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(descRedisUp, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(len(s.Live)))
	for _, ss := range s.Sales {
		b := ss.Books
		if b == nil {
			continue
		}
		for state, v := range map[string]int64{"remaining": b.Remaining, "pending": b.Pending, "paid": b.Paid} {
			ch <- prometheus.MustNewConstMetric(descUnits, prometheus.GaugeValue, float64(v), ss.ID, state)
		}
		for reason, v := range map[string]int64{"expired": b.Expired, "cancelled": b.Cancelled, "aborted": b.Aborted} {
			ch <- prometheus.MustNewConstMetric(descReleased, prometheus.CounterValue, float64(v), ss.ID, reason)
		}
	}
}
