package bench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/bench"
	"github.com/flashsale/flashsale/internal/e2e"
)

// Invariant: against two real nodes, the clients win exactly the stock, the
// winners who paid are paid on the server, and --check finds the client
// tally equal to the server's books.
func TestAgainstRealNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server, a broker and two nodes")
	}
	e := e2e.NewEnv(t)
	a := e.StartNode(t, "n1", nil).URL
	b := e.StartNode(t, "n2", nil).URL

	var out bytes.Buffer
	o := bench.Options{
		Config: bench.Config{
			Targets: []string{a, b}, Scenario: bench.ScenarioBuy, Sale: "e2e",
			Users: 1000, Connections: 16, Requests: 3000, PayFraction: 0.25,
			Progress: &out, Timeout: 10 * time.Second,
		},
		CreateSale: true, Stock: 300, Limit: 1, PriceCents: 100, PayTimeout: "5m",
		AdminToken: e2e.AdminToken, Check: true,
	}
	if err := bench.Main(context.Background(), o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	s := out.String()
	for _, want := range []string{"won       300 units by 300 users (max 1 per user), 75 paid", "check     ok: 300", "n1=", "n2="} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	v, err := bench.NewAPI(a, "").Sale(context.Background(), "e2e")
	if err != nil {
		t.Fatal(err)
	}
	if v.Paid != 75 || v.Pending != 225 || v.Remaining != 0 {
		t.Fatalf("server books %+v, want paid 75, pending 225, remaining 0", v)
	}
}
