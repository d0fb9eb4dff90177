package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flashsale/flashsale/bench"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/e2e"
)

func TestKendallTau(t *testing.T) {
	for _, c := range []struct {
		xs   []int64
		want float64
	}{{[]int64{1, 2, 3, 4}, 1}, {[]int64{4, 3, 2, 1}, -1}, {[]int64{2, 1, 3, 4}, 4.0 / 6}, {nil, 1}} {
		if got := bench.KendallTau(c.xs); got != c.want {
			t.Errorf("tau(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}

// Invariant: a crowd larger than the stock, all joining the waiting room
// before the opening, buys exactly the stock, nobody buys before being
// admitted, everyone else is told sold_out, and purchases follow the
// shuffled queue order.
func TestQueueScenarioAgainstARealNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server, a broker and a node")
	}
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) {
		c.WaitingRoom.Secret = "bench-test"
		c.WaitingRoom.Tick = 20 * time.Millisecond
	})
	// One run: its own sale, checked in full; it returns the report.
	run := func(sale string) (bench.QueueReport, string) {
		var out bytes.Buffer
		js := filepath.Join(t.TempDir(), sale+".json")
		o := bench.Options{
			Config: bench.Config{Targets: []string{n.URL}, Scenario: bench.ScenarioQueue, Sale: sale,
				Users: 120, Progress: &out, Timeout: 10 * time.Second, Duration: time.Minute,
				PriceCents: 100, AuthSecret: []byte(e2e.AuthSecret)},
			CreateSale: true, Stock: 24, Limit: 1, PayTimeout: "5m", AdminToken: e2e.AdminToken,
			AdmitPerSec: 4, OpensIn: 1500 * time.Millisecond, JSON: js,
		}
		if err := bench.Main(context.Background(), o, &out); err != nil {
			t.Fatalf("%v\n%s", err, out.String())
		}
		var r bench.QueueReport
		b, err := os.ReadFile(js)
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			t.Fatal(err)
		}
		books := e2e.GetBooks(t, n.URL, sale)
		if r.Sold != 24 || books.Pending != 24 || books.Remaining != 0 || r.Closed != 96 || r.BoughtUnadmitted != 0 || r.Errors != 0 {
			t.Fatalf("report %+v, books %+v\n%s", r, books, out.String())
		}
		return r, out.String()
	}
	// Fairness: purchase order (the sale's order numbers) follows queue
	// rank. Buyers poll to just past their estimated turn, so they learn of
	// admission in rank order; the room admits one buyer per 250 ms here,
	// and the tick is 20 ms. What the test cannot control is when the
	// buyers' goroutines run: under -race with every package of the suite
	// running on two cores, a buyer (or the room's tick, which then admits
	// two at once) wakes hundreds of milliseconds late, and buyers admitted a
	// turn or two apart buy in either order without the room being unfair —
	// τ fell to 0.82 (at 40 a second), 0.79 (12) and 0.89 (6) in CI runs and
	// was 1.0 every time beside three CPU hogs. So a run under 0.95 is run
	// once more, on a fresh sale; two in a row fail.
	r, out := run("wrq")
	if r.KendallTau < 0.95 {
		t.Logf("first run: Kendall tau %.4f (want >= 0.95); once more:\n%s", r.KendallTau, out)
		r, out = run("wrq2")
	}
	if r.KendallTau < 0.95 {
		t.Fatalf("Kendall tau %.4f (want >= 0.95) in two runs in a row\n%s", r.KendallTau, out)
	}
	t.Log(out)
}
