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
			Users: 1000, Connections: 16, Requests: 3000, PayFraction: 0.25, PriceCents: 100,
			Progress: &out, Timeout: 10 * time.Second,
			AuthSecret: []byte(e2e.AuthSecret), PaymentSecret: []byte(e2e.PaymentSecret),
		},
		CreateSale: true, Stock: 300, Limit: 1, PayTimeout: "5m",
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

// Invariant: the client tally of envelope opens and shake wins equals, to the
// cent, what a real node's books say it issued (--check).
func TestOpenAndShakeAgainstARealNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server, a broker and a node")
	}
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.Credit(t, n.URL, "boss", 88888, "boss-funds")
	r := e2e.Do(t, "POST", n.URL+"/v1/envelopes", `{"total_cents":88888,"count":100}`, e2e.As(t, "boss")...)
	if r.Status != 201 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	env := r.Body["envelope_id"].(string)
	if r := e2e.Do(t, "POST", n.URL+"/v1/shakes", `{"id":"rain","total_envelopes":50,"budget_cents":5000,"rate_per_sec":200}`,
		"Authorization", "Bearer "+e2e.AdminToken); r.Status != 201 {
		t.Fatalf("create shake: %d %s", r.Status, r.Raw)
	}
	for _, tc := range []struct {
		c   bench.Config
		won string // every share, to the cent: the run must win something real
	}{
		{bench.Config{Scenario: bench.ScenarioOpen, Envelope: env, Users: 1000, Requests: 1000}, "won       88888 cents by 100 users"},
		{bench.Config{Scenario: bench.ScenarioShake, Campaign: "rain", Users: 20000, Requests: 20000, Rate: 5000}, "won       5000 cents by 50 users"},
	} {
		c := tc.c
		c.Targets, c.Connections, c.Timeout = []string{n.URL}, 16, 10*time.Second
		c.AuthSecret = []byte(e2e.AuthSecret)
		var out bytes.Buffer
		c.Progress = &out
		if err := bench.Main(context.Background(), bench.Options{Config: c, AdminToken: e2e.AdminToken, Check: true}, &out); err != nil {
			t.Fatalf("%s: %v\n%s", c.Scenario, err, out.String())
		}
		if !strings.Contains(out.String(), "check     ok") {
			t.Fatalf("%s: no passing check in:\n%s", c.Scenario, out.String())
		}
		if !strings.Contains(out.String(), tc.won) {
			t.Fatalf("%s: summary lacks %q:\n%s", c.Scenario, tc.won, out.String())
		}
	}
}
