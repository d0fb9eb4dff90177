package reconcile_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

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
	began := time.Now()
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
	// The client view: true answers pass; a 201 for no order, and a 503 to
	// a buyer who holds the order made for that request, fail.
	t.Run("client view", func(t *testing.T) {
		var answers []reconcile.ClientAnswer
		var winner string
		for i, r := range rs {
			a := reconcile.ClientAnswer{Sale: "r1", User: fmt.Sprint("u", i), Status: r.Status, Sent: began, Got: time.Now()}
			if r.Status == 201 {
				a.Order, a.User = r.Body["order_id"].(string), r.Body["user_id"].(string)
				winner = a.User
			} else {
				a.User = ""
				continue // sold out: no claim either way
			}
			answers = append(answers, a)
		}
		with := func(extra ...reconcile.ClientAnswer) *reconcile.Report {
			cv := in
			cv.Client = append(append([]reconcile.ClientAnswer{}, answers...), extra...)
			rep, err := reconcile.Run(ctx, cv)
			if err != nil {
				t.Fatal(err)
			}
			return rep
		}
		if rep := with(); !rep.OK {
			t.Fatalf("true client answers fail: %v", failed(rep))
		}
		if got := failed(with(reconcile.ClientAnswer{Sale: "r1", User: "x", Status: 201, Order: "r1.9999", Got: time.Now()})); !contains(got, "client_successes_are_orders") {
			t.Fatalf("a 201 for no order: failed %v", got)
		}
		// The winner's own answer replaced by a 503: told no, but holding.
		var lie []reconcile.ClientAnswer
		for _, a := range answers {
			if a.User == winner {
				a.Status, a.Order = 503, ""
			}
			lie = append(lie, a)
		}
		cv := in
		cv.Client = lie
		rep, err := reconcile.Run(ctx, cv)
		if err != nil || !contains(failed(rep), "client_told_no_holds_nothing") {
			t.Fatalf("a 503 to a buyer holding the order: %v, failed %v", err, failed(rep))
		}
	})
	// A line lost on a full disk: the node's gap record says so, and the
	// order without its line is a named note, not a failure; the same
	// missing line without the gap record (or a corrupt line) stays apart.
	t.Run("a line lost on a full disk", func(t *testing.T) {
		raw, err := os.ReadFile(a.StatLog)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitAfter(string(raw), "\n")
		cut := -1
		for i, l := range lines {
			if strings.Contains(l, `"result":"ok"`) {
				cut = i
				break
			}
		}
		if cut < 0 {
			t.Fatal("node a answered no ok")
		}
		write := func(replacement string) string {
			p := t.TempDir() + "/a-stat.log"
			body := strings.Join(lines[:cut], "") + replacement + strings.Join(lines[cut+1:], "")
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		with := func(path string) *reconcile.Report {
			lost := in
			lost.StatLogs = []string{path, b.StatLog}
			rep, err := reconcile.Run(ctx, lost)
			if err != nil {
				t.Fatal(err)
			}
			return rep
		}
		gap := `{"ts":"2026-01-01T00:00:00Z","node":"a","kind":"gap","sale":"","user":"","result":"lost","lost":1,"latency_us":0}` + "\n"
		rep := with(write(gap))
		if !rep.OK || !hasNote(rep, "statlog_lines_lost", 1) || !hasNote(rep, "orders_without_line_explained_by_lost_lines", 1) {
			t.Fatalf("a stated lost line: failed %v, notes %+v", failed(rep), rep.Notes)
		}
		if rep := with(write("")); !contains(failed(rep), "orders_have_successes") || len(rep.Notes) != 0 {
			t.Fatalf("a line missing with no gap record: failed %v, notes %+v; want orders_have_successes", failed(rep), rep.Notes)
		}
		rep = with(write(lines[cut][:40] + "\n"))
		if !rep.OK || !hasNote(rep, "statlog_corrupt_lines", 1) {
			t.Fatalf("a corrupt line: failed %v, notes %+v", failed(rep), rep.Notes)
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

func hasNote(rep *reconcile.Report, name string, count int64) bool {
	for _, n := range rep.Notes {
		if n.Name == name && n.Count == count {
			return true
		}
	}
	return false
}
