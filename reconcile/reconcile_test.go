package reconcile_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/reconcile"
	"github.com/redis/go-redis/v9"
)

func failed(rep *reconcile.Report) []string {
	var out []string
	for _, c := range rep.Checks {
		if !c.OK {
			out = append(out, c.Name)
		}
	}
	return out
}

// Reconcile passes on true books and fails on each kind of corruption.
func TestReconcileCatchesCorruptBooks(t *testing.T) {
	e := e2e.NewEnv(t)
	a := e.StartNode(t, "a", nil)
	b := e.StartNode(t, "b", nil)
	e2e.CreateSale(t, a.URL, `{"id":"r1","stock":200,"per_user_limit":1}`)
	rs := e2e.Hammer(t, []string{a.URL, b.URL}, "r1", e2e.Users("u", 600), 64)
	paid := 0
	for _, r := range rs {
		if r.Status == 201 && paid < 20 {
			if p := e2e.Pay(t, a.URL, r.Body["order_id"].(string), "pay-"+r.Body["user_id"].(string), 0); p.Status != 200 {
				t.Fatalf("pay: %d %s", p.Status, p.Raw)
			}
			paid++
		}
	}
	a.Stop()
	b.Stop()

	rdb := e.Redis.Client(t)
	ctx := context.Background()
	in := reconcile.Input{Sale: "r1", Redis: rdb, Brokers: []string{e.Kafka.Addr}, Topic: "flashsale.orders",
		StatLogs: []string{a.StatLog, b.StatLog}, ExpectSellout: true}
	run := func() *reconcile.Report {
		t.Helper()
		rep, err := reconcile.Run(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	rep := run()
	if !rep.OK {
		var sb strings.Builder
		rep.WriteText(&sb)
		t.Fatalf("true books reported as failing:\n%s", sb.String())
	}
	if rep.Events != 200 || rep.Books.Paid != 20 || len(rep.Nodes) != 2 || rep.Nodes[0].OK+rep.Nodes[1].OK != 200 {
		t.Fatalf("report = %+v", rep)
	}

	keys := lua.KeysFor("r1")
	corruptions := []struct {
		name  string
		apply func()
		undo  func()
		want  string
	}{
		{"oversell by one", func() { rdb.HIncrBy(ctx, keys.Meta, "pending", 1) }, func() { rdb.HIncrBy(ctx, keys.Meta, "pending", -1) }, "no_oversell"},
		{"a unit vanished", func() { rdb.HIncrBy(ctx, keys.Meta, "remaining", 1) }, func() { rdb.HIncrBy(ctx, keys.Meta, "remaining", -1) }, "conservation"},
		{"an order nobody was told about", func() {
			rdb.HSet(ctx, keys.Orders, 999, "p|1|1|a|ghost")
		}, func() { rdb.HDel(ctx, keys.Orders, "999") }, "orders_have_successes"},
		{"a success with no order", func() {
			f, _ := os.OpenFile(a.StatLog, os.O_APPEND|os.O_WRONLY, 0)
			f.WriteString(`{"ts":"2026-01-01T00:00:00Z","node":"a","kind":"buy","sale":"r1","user":"x","result":"ok","order":"r1.5000","latency_us":1}` + "\n")
			f.Close()
		}, func() {}, "successes_have_orders"},
		{"a user over the limit", func() {
			first := ""
			for id := range mustOrders(t, rdb, keys) {
				first = id
				break
			}
			rec, _ := rdb.HGet(ctx, keys.Orders, first).Result()
			user := rec[strings.LastIndexByte(rec, '|')+1:]
			rdb.HSet(ctx, keys.Orders, 998, "y|1|1|a|"+user)
		}, func() { rdb.HDel(ctx, keys.Orders, "998") }, "per_user_limit"},
	}
	// An order a node reserved in Redis but never published because it was
	// SIGKILLed first: nobody was told, so it passes for a killed node
	// while unpaid, and fails otherwise.
	lost := func(status string) func() {
		return func() {
			rdb.HSet(ctx, keys.Orders, 997, status+"|1|1|a|lost")
			rdb.HIncrBy(ctx, keys.Meta, "seq", 1)
			rdb.HIncrBy(ctx, keys.Meta, "expired", 1)
		}
	}
	unlost := func() {
		rdb.HDel(ctx, keys.Orders, "997")
		rdb.HIncrBy(ctx, keys.Meta, "seq", -1)
		rdb.HIncrBy(ctx, keys.Meta, "expired", -1)
	}
	t.Run("an unpublished order of a killed node", func(t *testing.T) {
		lost("x")()
		defer unlost()
		killed := in
		killed.Killed = []string{"a"}
		rep, err := reconcile.Run(ctx, killed)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.OK {
			t.Fatalf("failed checks %v for an unpublished expired order of a killed node", failed(rep))
		}
		crashed := in
		crashed.RedisCrashed = true
		if rep, err = reconcile.Run(ctx, crashed); err != nil || !rep.OK {
			t.Fatalf("an unanswered expired order after a Redis crash: %v, failed checks %v", err, failed(rep))
		}
		if got := failed(run()); !contains(got, "orders_have_one_event") || !contains(got, "orders_have_successes") {
			t.Fatalf("failed checks %v when nothing was killed, want orders_have_one_event and orders_have_successes", got)
		}
		unlost()
		lost("y")()
		rep, err = reconcile.Run(ctx, killed)
		if err != nil {
			t.Fatal(err)
		}
		if got := failed(rep); !contains(got, "orders_have_one_event") {
			t.Fatalf("failed checks %v for a paid order never published, want orders_have_one_event", got)
		}
		if rep, err = reconcile.Run(ctx, crashed); err != nil || !contains(failed(rep), "orders_have_one_event") {
			t.Fatalf("a paid order never published after a Redis crash: %v, failed checks %v", err, failed(rep))
		}
	})
	for _, c := range corruptions {
		t.Run(c.name, func(t *testing.T) {
			c.apply()
			defer c.undo()
			got := failed(run())
			if !contains(got, c.want) {
				t.Fatalf("failed checks %v, want %s among them", got, c.want)
			}
		})
	}
}

func mustOrders(t *testing.T, rdb *redis.Client, keys lua.SaleKeys) map[string]string {
	m, err := rdb.HGetAll(context.Background(), keys.Orders).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}
