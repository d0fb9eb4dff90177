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
	var out bytes.Buffer
	js := filepath.Join(t.TempDir(), "queue.json")
	o := bench.Options{
		Config: bench.Config{Targets: []string{n.URL}, Scenario: bench.ScenarioQueue, Sale: "wrq",
			Users: 150, Progress: &out, Timeout: 10 * time.Second, Duration: time.Minute,
			PriceCents: 100, AuthSecret: []byte(e2e.AuthSecret)},
		CreateSale: true, Stock: 30, Limit: 1, PayTimeout: "5m", AdminToken: e2e.AdminToken,
		AdmitPerSec: 6, OpensIn: 1500 * time.Millisecond, JSON: js,
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
	books := e2e.GetBooks(t, n.URL, "wrq")
	if r.Sold != 30 || books.Pending != 30 || books.Remaining != 0 || r.Closed != 120 || r.BoughtUnadmitted != 0 {
		t.Fatalf("report %+v, books %+v\n%s", r, books, out.String())
	}
	// Fairness: purchase order (the sale's order numbers) follows queue
	// rank. Buyers poll to just past their estimated turn, so they learn of
	// admission in rank order; the room admits one buyer per 167 ms here,
	// and the tick is 20 ms. At 40 a second (25 ms apart) τ fell to 0.82
	// once in CI, and at 12 a second (83 ms) to 0.79 on a slower CI box:
	// under -race with every package running, a buyer's goroutine (or the
	// room's tick, which then admits two at once) can wake a hundred
	// milliseconds late, which reorders buyers admitted a turn or two apart
	// without the room being unfair.
	if r.KendallTau < 0.95 || r.Errors != 0 {
		t.Fatalf("Kendall tau %.4f (want >= 0.95), errors %d\n%s", r.KendallTau, r.Errors, out.String())
	}
	t.Log(out.String())
}
