package dashboard

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/internal/testenv"
)

// A slow page is dropped, never waited for: publish returns at once and the
// fast page still gets every message.
func TestHubDropsSlowSubscriber(t *testing.T) {
	h := newHub(2, 2)
	slow, _ := h.subscribe()
	fast, _ := h.subscribe()
	if _, ok := h.subscribe(); ok {
		t.Fatal("a third subscriber was let in with max 2")
	}
	for i := range 5 {
		start := time.Now()
		h.publish([]byte{byte(i)})
		if d := time.Since(start); d > 100*time.Millisecond {
			t.Fatalf("publish blocked for %v", d)
		}
		<-fast.ch
	}
	n, dropped := h.stats()
	if n != 1 || dropped != 1 {
		t.Fatalf("subscribers %d, dropped %d; want 1 and 1", n, dropped)
	}
	got := 0
	for range slow.ch { // closed after its buffer's 2 messages
		got++
	}
	if got != 2 {
		t.Fatalf("slow subscriber got %d buffered messages, want 2", got)
	}
	h.unsubscribe(slow) // already gone: no double close
	if _, ok := h.subscribe(); !ok {
		t.Fatal("the dropped subscriber's place was not freed")
	}
	h.close()
	if _, ok := <-fast.ch; ok {
		t.Fatal("close left a subscription open")
	}
}

func TestRing(t *testing.T) {
	r := newRing[int](3)
	if _, ok := r.last(); ok {
		t.Fatal("empty ring has a last value")
	}
	for i := 1; i <= 5; i++ {
		r.push(i)
	}
	if got := r.items(); len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Fatalf("items %v, want [3 4 5]", got)
	}
	if v, _ := r.last(); v != 5 {
		t.Fatalf("last %d", v)
	}
}

func TestQuantile(t *testing.T) {
	// 100 observations: 50 <= 1 ms, 40 in (1, 2] ms, 10 in (2, 4] ms.
	h := &hist{le: []float64{0.001, 0.002, 0.004}, counts: []float64{50, 90, 100}, total: 100}
	for _, c := range []struct{ q, want float64 }{{0.5, 0.001}, {0.7, 0.0015}, {0.95, 0.003}, {0.99, 0.0038}} {
		got, ok := h.quantile(c.q)
		if !ok || math.Abs(got-c.want) > 1e-9 {
			t.Errorf("q%.2f = %v, want %v", c.q, got, c.want)
		}
	}
	if _, ok := (&hist{le: []float64{1}, counts: []float64{0}}).quantile(0.5); ok {
		t.Error("a quantile of no observations")
	}
	// Deltas: a restarted node (count went back) is taken whole.
	prev := &hist{le: h.le, counts: []float64{10, 20, 30}, total: 30}
	if d := h.since(prev); d.total != 70 || d.counts[0] != 40 {
		t.Errorf("since = %+v", d)
	}
	if d := prev.since(h); d != prev {
		t.Error("a histogram that went back is not taken whole")
	}
	if delta(5, 8) != 5 || delta(8, 5) != 3 {
		t.Error("delta")
	}
}

const sampleMetrics = `# TYPE flashsale_sale_buys_total counter
flashsale_sale_buys_total{result="ok",sale="s1"} 7
flashsale_sale_buys_total{result="sold_out",sale="s1"} 3
# TYPE flashsale_sale_buy_duration_seconds histogram
flashsale_sale_buy_duration_seconds_bucket{sale="s1",le="0.001"} 5
flashsale_sale_buy_duration_seconds_bucket{sale="s1",le="0.002"} 10
flashsale_sale_buy_duration_seconds_bucket{sale="s1",le="+Inf"} 10
flashsale_sale_buy_duration_seconds_sum{sale="s1"} 0.01
flashsale_sale_buy_duration_seconds_count{sale="s1"} 10
# TYPE flashsale_stock_local_share_units gauge
flashsale_stock_local_share_units{sale="s1"} 12
# TYPE flashsale_kafka_consumer_lag_messages gauge
flashsale_kafka_consumer_lag_messages{consumer="expiry"} 4
flashsale_kafka_consumer_lag_messages{consumer="refund"} 1
# TYPE flashsale_node_info gauge
flashsale_node_info{node="node1"} 1
`

func TestParseMetrics(t *testing.T) {
	s, err := parseMetrics(strings.NewReader(sampleMetrics))
	if err != nil {
		t.Fatal(err)
	}
	if s.buys["s1"]["ok"] != 7 || s.buys["s1"]["sold_out"] != 3 || s.share["s1"] != 12 || s.lag != 5 || s.node != "node1" {
		t.Fatalf("parsed %+v", s)
	}
	if h := s.hist["s1"]; h == nil || len(h.le) != 2 || h.total != 10 {
		t.Fatalf("histogram %+v", s.hist["s1"])
	}
	if _, err := parseMetrics(strings.NewReader("flashsale_x{ 1\n")); err == nil {
		t.Fatal("garbage parsed")
	}
}

// FuzzParseMetrics: whatever a node (or something pretending to be one)
// answers, the parser returns an error or a scrape, never panics.
func FuzzParseMetrics(f *testing.F) {
	f.Add(sampleMetrics)
	f.Add("flashsale_sale_buys_total{sale=\"a\"} NaN\n")
	f.Add("# TYPE x histogram\nx_bucket{le=\"1\"} 1\nx_count 0\n")
	f.Fuzz(func(t *testing.T, in string) {
		s, err := parseMetrics(strings.NewReader(in))
		if err == nil {
			for _, h := range s.hist {
				h.quantile(0.99)
				h.since(h)
			}
		}
	})
}

func TestMetricsURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://127.0.0.1:8081":          "http://127.0.0.1:8081/metrics",
		"http://127.0.0.1:8081/":         "http://127.0.0.1:8081/metrics",
		"http://127.0.0.1:9081/metrics":  "http://127.0.0.1:9081/metrics",
		" https://node:1/admin/metrics ": "https://node:1/admin/metrics",
	} {
		if got, err := metricsURL(in); err != nil || got != want {
			t.Errorf("metricsURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "127.0.0.1:8081", "ftp://x/", "http://"} {
		if _, err := metricsURL(bad); err == nil {
			t.Errorf("metricsURL(%q) accepted", bad)
		}
	}
}

// The sampler against real Redis and a fake node's metrics: books from
// Redis, rates from counter deltas, events for a node leaving and Redis
// going away and coming back, the stream, the report and the exported books.
func TestTickEventsAndStream(t *testing.T) {
	rs := testenv.StartRedis(t, false)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	rdb.HSet(ctx, "fs:{sale:s1}:meta", "stock", 10, "remaining", 4, "pending", 5, "paid", 1)
	rdb.SAdd(ctx, "fs:sales", "s1")
	now, _ := rdb.Time(ctx).Result()
	rdb.ZAdd(ctx, MembersKey, redis.Z{Score: float64(now.UnixMilli()), Member: "node1"})

	ok := 7.0
	node := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(strings.Replace(sampleMetrics, "} 7\n", "} "+jsonNum(ok)+"\n", 1)))
	}))
	t.Cleanup(node.Close)

	d, err := New(Config{Redis: rdb, Nodes: []string{node.URL}, Interval: 100 * time.Millisecond, MemberTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)

	s := d.Tick(ctx)
	if len(s.Sales) != 1 || s.Sales[0].Books == nil || s.Sales[0].Books.Remaining != 4 || s.Nodes[0].Name != "node1" {
		t.Fatalf("first sample %+v", s)
	}
	time.Sleep(50 * time.Millisecond)
	ok = 17
	s = d.Tick(ctx)
	if r := s.Sales[0].Sales; r <= 0 {
		t.Fatalf("sales/s %v after 10 more ok", r)
	}
	// The fake's histogram did not move: no buys timed, so no latency point.
	if s.Sales[0].PerNode["node1"].Share != 12 || s.Sales[0].P50 != nil {
		t.Fatalf("per node %+v, p50 %v", s.Sales[0].PerNode, s.Sales[0].P50)
	}

	// The stream: history first, then live samples.
	resp, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	readEvent := func() (string, string) {
		var ev, data string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("stream: %v", err)
			}
			line = strings.TrimRight(line, "\n")
			switch {
			case strings.HasPrefix(line, "event: "):
				ev = line[7:]
			case strings.HasPrefix(line, "data: "):
				data = line[6:]
			case line == "":
				return ev, data
			}
		}
	}
	if ev, data := readEvent(); ev != "history" || !strings.Contains(data, `"id":"s1"`) {
		t.Fatalf("first event %s %.80s", ev, data)
	}

	rdb.ZRem(ctx, MembersKey, "node1")
	s = d.Tick(ctx)
	if !hasEvent(s, "node1 left") {
		t.Fatalf("no leave event: %+v", s.Events)
	}
	if ev, data := readEvent(); ev != "sample" || !strings.Contains(data, "node1 left") {
		t.Fatalf("live event %s %.120s", ev, data)
	}

	m, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Body.Close()
	var mb bytes.Buffer
	_, _ = mb.ReadFrom(m.Body)
	if !strings.Contains(mb.String(), `flashsale_sale_stock_units{sale="s1",state="remaining"} 4`) {
		t.Fatalf("exported books:\n%s", mb.String())
	}

	rs.Kill()
	s = d.Tick(ctx)
	if s.Redis || !hasEvent(s, "Redis unreachable") || s.Sales[0].Books != nil {
		t.Fatalf("Redis down not seen: %+v", s)
	}
	rs.Restart()
	s = d.Tick(ctx)
	if !s.Redis || !hasEvent(s, "Redis back") || !hasEvent(s, "run_id") {
		t.Fatalf("Redis back not seen: %+v", s.Events)
	}

	var buf bytes.Buffer
	if err := WriteReport(&buf, d.History()); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(buf.Bytes(), dataMarker) || !bytes.Contains(buf.Bytes(), []byte(`"Redis back"`)) {
		t.Fatal("report has no inlined data")
	}
}

func jsonNum(v float64) string { b, _ := json.Marshal(v); return string(b) }

func hasEvent(s Sample, text string) bool {
	for _, e := range s.Events {
		if strings.Contains(e.Text, text) {
			return true
		}
	}
	return false
}

// Pages beyond max_subscribers get a 503 at once, and the place frees up
// when a page goes away.
func TestEventStreamCap(t *testing.T) {
	rs := testenv.StartRedis(t, false)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	t.Cleanup(func() { rdb.Close() })
	d, err := New(Config{Redis: rdb, Nodes: []string{"http://127.0.0.1:1"}, MaxSubscribers: 1})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	first, err := http.Get(srv.URL + "/events")
	if err != nil || first.StatusCode != 200 || first.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("first page: %v %v", err, first)
	}
	second, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	second.Body.Close()
	if second.StatusCode != http.StatusServiceUnavailable || second.Header.Get("Retry-After") == "" {
		t.Fatalf("second page: %s, want 503 with Retry-After", second.Status)
	}
	first.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d.hub.publish([]byte(": ping\n\n")) // a write to the gone page ends its handler
		if n, _ := d.hub.stats(); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the closed page kept its place")
		}
		time.Sleep(20 * time.Millisecond)
	}
	third, err := http.Get(srv.URL + "/events")
	if err != nil || third.StatusCode != 200 {
		t.Fatalf("after the first page left: %v %v", err, third)
	}
	third.Body.Close()
}
