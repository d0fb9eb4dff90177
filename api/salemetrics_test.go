package api

import (
	"github.com/flashsale/flashsale/admit"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Unknown sales never get a series; known ones do, up to the cap, then
// share "~other".
func TestSaleMetricsBounded(t *testing.T) {
	m := newSaleMetrics()
	start := time.Now()
	for i := range 1000 {
		m.record("ghost"+strconv.Itoa(i), start, "not_found")
	}
	if n := series(m.buys); n != 0 {
		t.Fatalf("not_found buys made %d series", n)
	}
	for i := range maxSaleSeries + 10 {
		m.record("s"+strconv.Itoa(i), start, "ok")
	}
	m.record("s0", start, "sold_out")
	if n := series(m.buys); n != maxSaleSeries+2 {
		t.Fatalf("%d buy series, want %d: the cap, ~other and s0 sold_out", n, maxSaleSeries+2)
	}
	var pb dto.Metric
	if err := m.buys.WithLabelValues(otherSale, "ok").(prometheus.Metric).Write(&pb); err != nil || pb.GetCounter().GetValue() != 10 {
		v := pb.GetCounter().GetValue()
		t.Fatalf("~other counted %v, want 10", v)
	}
}

func series(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

// BenchmarkSaleMetricsRecord is what a buy pays for the per-sale metrics.
func BenchmarkSaleMetricsRecord(b *testing.B) {
	m := newSaleMetrics()
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m.record("s1", start, "sold_out")
	}
}

// BenchmarkRouteMetricsRecord is the route metrics a buy already paid for,
// to read the per-sale cost against in the same run.
func BenchmarkRouteMetricsRecord(b *testing.B) {
	gate := admit.New(admit.Config{Slots: 1})
	defer gate.Close()
	m := newHTTPMetrics(gate).route("buy")
	start := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		m.record(start, "sold_out")
	}
}
