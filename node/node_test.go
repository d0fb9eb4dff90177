package node_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/admit"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/e2e"
)

// Invariant: 2,000 distinct buyers, 500 units → exactly 500 orders, each in
// Redis and on Kafka once, remaining 0, and stat.log tells the same story.
func TestConcurrentBuyersExactBooks(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"s1","name":"G1234","stock":500,"price_cents":55300}`)

	rs := e2e.Hammer(t, []string{n.URL}, "s1", e2e.Users("u", 2000), 256)
	c := e2e.Count(rs)
	if c["ok"] != 500 || c["sold_out"] != 1500 {
		t.Fatalf("outcomes = %v, want 500 ok and 1500 sold_out", c)
	}
	b := e2e.GetBooks(t, n.URL, "s1")
	if b.Remaining != 0 || b.Pending != 500 || b.Remaining+b.Pending+b.Paid != b.Stock {
		t.Fatalf("books = %+v", b)
	}
	ids := map[string]string{}
	for _, r := range rs {
		if r.Status == 201 {
			id := r.Body["order_id"].(string)
			if _, dup := ids[id]; dup {
				t.Fatalf("order id %s handed out twice", id)
			}
			ids[id] = r.Body["user_id"].(string)
			if g := e2e.Do(t, "GET", n.URL+"/v1/orders/"+id, "", e2e.As(t, ids[id])...); g.Status != 200 || g.Body["status"] != "pending" || g.Body["user_id"] != ids[id] {
				t.Fatalf("order %s in Redis: %d %s", id, g.Status, g.Raw)
			}
		}
	}
	events := e2e.ReadEvents(t, e.Kafka.Addr, 501, 3*time.Second)
	if len(events) != 500 {
		t.Fatalf("%d order events on Kafka, want 500", len(events))
	}
	for id, user := range ids {
		if ev, ok := events[e2e.RecordID(id)]; !ok || ev.UserID != user || ev.Node != "n1" {
			t.Fatalf("success %s (user %s) has event %+v", id, user, ev)
		}
	}
	n.Stop() // graceful: stat.log flushed
	lines := e2e.ReadStatLog(t, n.StatLog)
	if lines["ok"] != 500 || lines["sold_out"] != 1500 {
		t.Fatalf("stat.log outcomes = %v", lines)
	}
}

// Invariant: one user hammering gets exactly per_user_limit orders.
func TestSameUserGetsExactlyTheLimit(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"lim","stock":100,"per_user_limit":3}`)
	same := make([]string, 300)
	for i := range same {
		same[i] = "greedy"
	}
	c := e2e.Count(e2e.Hammer(t, []string{n.URL}, "lim", same, 64))
	if c["ok"] != 3 || c["limit_reached"] != 297 {
		t.Fatalf("outcomes = %v, want 3 ok", c)
	}
	if b := e2e.GetBooks(t, n.URL, "lim"); b.Remaining != 97 || b.Pending != 3 {
		t.Fatalf("books = %+v", b)
	}
}

// Invariant: two nodes selling one sale never sell more than the stock.
func TestTwoNodesOneSale(t *testing.T) {
	e := e2e.NewEnv(t)
	a := e.StartNode(t, "a", nil)
	b := e.StartNode(t, "b", nil)
	e2e.CreateSale(t, a.URL, `{"id":"two","stock":300}`)
	c := e2e.Count(e2e.Hammer(t, []string{a.URL, b.URL}, "two", e2e.Users("x", 1200), 128))
	if c["ok"] != 300 {
		t.Fatalf("outcomes = %v, want 300 ok", c)
	}
	if bk := e2e.GetBooks(t, b.URL, "two"); bk.Remaining != 0 || bk.Pending != 300 {
		t.Fatalf("books = %+v", bk)
	}
}

// Invariant: unpaid orders come back to stock after their deadline, once,
// and are sold again; paid ones stay sold.
func TestUnpaidOrdersReturnAndSellAgain(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) { c.Stock.RefreshInterval = 10 * time.Millisecond })
	e2e.CreateSale(t, n.URL, `{"id":"exp","stock":20,"pay_timeout":"1s"}`)
	rs := e2e.Hammer(t, []string{n.URL}, "exp", e2e.Users("first", 20), 8)
	paid := 0
	for _, r := range rs {
		if r.Status != 201 {
			t.Fatalf("first wave: %d %s", r.Status, r.Raw)
		}
		if paid < 5 {
			if p := e2e.Pay(t, n.URL, r.Body["order_id"].(string), fmt.Sprint("pay", paid), 0); p.Status != 200 || p.Body["status"] != "paid" {
				t.Fatalf("pay: %d %s", p.Status, p.Raw)
			}
			paid++
		}
	}
	if c := e2e.Count(e2e.Hammer(t, []string{n.URL}, "exp", []string{"late"}, 1)); c["sold_out"] != 1 {
		t.Fatalf("before expiry the sale is sold out: %v", c)
	}
	deadline := time.Now().Add(10 * time.Second)
	var b e2e.Books
	for time.Now().Before(deadline) {
		if b = e2e.GetBooks(t, n.URL, "exp"); b.Expired == 15 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.Expired != 15 || b.Remaining != 15 || b.Paid != 5 || b.Pending != 0 {
		t.Fatalf("after deadline books = %+v, want 15 expired back in stock", b)
	}
	// Paying an expired order is 410 and changes nothing.
	for _, r := range rs[5:6] {
		if p := e2e.Pay(t, n.URL, r.Body["order_id"].(string), "late-pay", 0); p.Status != 410 || p.Code() != "expired" {
			t.Fatalf("pay after expiry: %d %s", p.Status, p.Raw)
		}
	}
	c := e2e.Count(e2e.Hammer(t, []string{n.URL}, "exp", e2e.Users("second", 40), 8))
	if c["ok"] != 15 {
		t.Fatalf("second wave outcomes = %v, want the 15 returned units sold again", c)
	}
	b = e2e.GetBooks(t, n.URL, "exp")
	if b.Remaining != 0 || b.Pending != 15 || b.Paid != 5 || b.Expired != 15 {
		t.Fatalf("final books = %+v", b)
	}
}

// Invariant: with the broker gone mid-sale, every buy either succeeds (its
// event acked) or fails with its unit back; nothing is stranded.
func TestKafkaDownStrandsNothing(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) {
		c.Kafka.WriteTimeout = 500 * time.Millisecond
		c.Kafka.MaxAttempts = 1
		c.Stock.RefreshInterval = 10 * time.Millisecond
	})
	e2e.CreateSale(t, n.URL, `{"id":"kd","stock":400,"pay_timeout":"1s"}`)
	first := e2e.Count(e2e.Hammer(t, []string{n.URL}, "kd", e2e.Users("a", 100), 16))
	e.Kafka.Stop()
	down := e2e.Count(e2e.Hammer(t, []string{n.URL}, "kd", e2e.Users("b", 100), 16))
	if down["ok"] != 0 || down["unavailable"] != 100 {
		t.Fatalf("with the broker down: %v, want all 503 unavailable", down)
	}
	b := e2e.GetBooks(t, n.URL, "kd")
	if b.Pending != int64(first["ok"]) || b.Aborted != 100 || b.Remaining+b.Pending+b.Paid != b.Stock {
		t.Fatalf("books with broker down = %+v (first wave %v)", b, first)
	}
	e.Kafka.Restart()
	// The restarted broker lost the first wave's events: the sweeper is the
	// backstop that returns them after deadline + grace.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b = e2e.GetBooks(t, n.URL, "kd"); b.Remaining == b.Stock {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if b.Remaining != 400 || b.Pending != 0 {
		t.Fatalf("after recovery books = %+v, want every unit back", b)
	}
	after := e2e.Count(e2e.Hammer(t, []string{n.URL}, "kd", e2e.Users("c", 50), 8))
	if after["ok"] != 50 {
		t.Fatalf("after the broker came back: %v", after)
	}
}

// Bad input gets a clear JSON error with the right status and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"ok","stock":10}`)
	auth := []string{"Authorization", "Bearer " + e2e.AdminToken}
	u := e2e.As(t, "u")
	long := strings.Repeat("x", 65)
	cases := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		code                     string
	}{
		{"no auth", "POST", "/v1/sales", `{"id":"x","stock":1}`, nil, 401, "unauthorized"},
		{"wrong auth", "POST", "/v1/sales", `{"id":"x","stock":1}`, []string{"Authorization", "Bearer nope"}, 401, "unauthorized"},
		{"existing id", "POST", "/v1/sales", `{"id":"ok","stock":99}`, auth, 409, "conflict"},
		{"malformed json", "POST", "/v1/sales", `{"id":`, auth, 400, "invalid"},
		{"unknown field", "POST", "/v1/sales", `{"id":"y","stock":1,"evil":1}`, auth, 400, "invalid"},
		{"negative stock", "POST", "/v1/sales", `{"id":"y","stock":-1}`, auth, 400, "invalid"},
		{"absurd stock", "POST", "/v1/sales", `{"id":"y","stock":1e12}`, auth, 400, "invalid"},
		{"no stock", "POST", "/v1/sales", `{"id":"y"}`, auth, 400, "invalid"},
		{"bad id", "POST", "/v1/sales", `{"id":"a.b","stock":1}`, auth, 400, "invalid"},
		{"long id", "POST", "/v1/sales", `{"id":"` + long + `","stock":1}`, auth, 400, "invalid"},
		{"bad pay timeout", "POST", "/v1/sales", `{"id":"y","stock":1,"pay_timeout":"soon"}`, auth, 400, "invalid"},
		{"trailing data", "POST", "/v1/sales", `{"id":"y","stock":1} {}`, auth, 400, "invalid"},
		{"huge body", "POST", "/v1/sales", `{"id":"y","stock":1,"name":"` + strings.Repeat("n", 5000) + `"}`, auth, 413, "too_large"},
		{"buy no token", "POST", "/v1/sales/ok/buy", ``, nil, 401, "unauthorized"},
		{"buy admin token", "POST", "/v1/sales/ok/buy", ``, auth, 401, "unauthorized"},
		{"buy malformed body", "POST", "/v1/sales/ok/buy", `{`, u, 400, "invalid"},
		{"buy long user", "POST", "/v1/sales/ok/buy", `{"user_id":"` + long + `"}`, u, 400, "invalid"},
		{"buy user wrong type", "POST", "/v1/sales/ok/buy", `{"user_id":7}`, u, 400, "invalid"},
		{"buy another user", "POST", "/v1/sales/ok/buy", `{"user_id":"v"}`, u, 403, "forbidden"},
		{"buy query another user", "GET", "/v1/sales/ok/buy?user_id=v", ``, u, 403, "forbidden"},
		{"buy query twice", "GET", "/v1/sales/ok/buy?user_id=u&user_id=u", ``, u, 400, "invalid"},
		{"buy query escaped", "GET", "/v1/sales/ok/buy?user_id=a%20b", ``, u, 400, "invalid"},
		{"buy unknown sale", "POST", "/v1/sales/nosuch/buy", `{"user_id":"u"}`, u, 404, "not_found"},
		{"sale bad id", "GET", "/v1/sales/" + long, ``, nil, 400, "invalid"},
		{"order bad id", "GET", "/v1/orders/garbage", ``, u, 404, "not_found"},
		{"order untagged", "GET", "/v1/orders/ok.1", ``, u, 404, "not_found"},
		{"order no token", "GET", "/v1/orders/ok.1", ``, nil, 401, "unauthorized"},
		{"buyer pay route gone", "POST", "/v1/orders/ok.1/pay", ``, u, 404, "not_found"},
		{"no route", "GET", "/v2/anything", ``, nil, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e2e.Do(t, tc.method, n.URL+tc.path, tc.body, tc.hdr...)
			if r.Status != tc.status || r.Code() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.Status, r.Raw, tc.status, tc.code)
			}
			if msg, _ := r.Body["error"].(map[string]any)["message"].(string); msg == "" {
				t.Fatalf("no message in %s", r.Raw)
			}
		})
	}
	if b := e2e.GetBooks(t, n.URL, "ok"); b != (e2e.Books{Stock: 10, Remaining: 10}) {
		t.Fatalf("books changed by bad input: %+v", b)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/sales/y", ""); r.Status != 404 {
		t.Fatalf("a rejected sale was created: %d", r.Status)
	}
}

// Redis down: buys answer 503 quickly, never hang; it recovers by itself.
func TestRedisDownAnswersFast(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"rd","stock":100}`)
	if c := e2e.Count(e2e.Hammer(t, []string{n.URL}, "rd", e2e.Users("a", 10), 4)); c["ok"] != 10 {
		t.Fatalf("before: %v", c)
	}
	e.Redis.Kill()
	start := time.Now()
	c := e2e.Count(e2e.Hammer(t, []string{n.URL}, "rd", e2e.Users("b", 40), 8))
	if took := time.Since(start); c["unavailable"] != 40 || took > 8*time.Second {
		t.Fatalf("with Redis down: %v in %v, want fast 503s", c, took)
	}
	if r := e2e.Do(t, "GET", n.URL+"/readyz", ""); r.Status != 503 {
		t.Fatalf("readyz with Redis down: %d", r.Status)
	}
	e.Redis.Restart() // no AOF: a fresh, empty Redis
	// The node recovers by itself (no restart) within a few seconds.
	recovered := false
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		r := e2e.Do(t, "POST", n.URL+"/v1/sales", `{"id":"rd2","stock":5}`, "Authorization", "Bearer "+e2e.AdminToken)
		if r.Status == 201 {
			recovered = true
			break
		}
	}
	if !recovered {
		t.Fatal("node did not recover within 10s of Redis coming back")
	}
	if c := e2e.Count(e2e.Hammer(t, []string{n.URL}, "rd2", e2e.Users("c", 10), 4)); c["ok"] != 5 {
		t.Fatalf("after Redis came back: %v", c)
	}
}

// Overload: with Redis stalled, requests beyond max_inflight wait in the
// admission line at most half the request deadline and are then refused
// with 503 overloaded, none hangs, and every admitted buy settles exactly
// once when Redis comes back.
func TestOverloadShedsFast(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", func(c *configs.Config) { c.HTTP.MaxInflight = 8; c.HTTP.RequestDeadline = 600 * time.Millisecond })
	e2e.CreateSale(t, n.URL, `{"id":"ov","stock":1000}`)
	rdb := e.Redis.Client(t)
	paused := time.Now()
	if err := rdb.Do(context.Background(), "CLIENT", "PAUSE", "1500", "ALL").Err(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var waits503 []time.Duration
	rs := make([]e2e.Reply, 200)
	var wg sync.WaitGroup
	for i := range rs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			start := time.Now()
			rs[i] = e2e.Do(t, "GET", n.URL+"/v1/sales/ov/buy", "", e2e.As(t, fmt.Sprintf("u%d", i))...)
			if rs[i].Status == 503 && rs[i].RetryAfter != "1" {
				t.Errorf("503 without Retry-After: %q", rs[i].RetryAfter)
			}
			if rs[i].Code() == "overloaded" {
				mu.Lock()
				waits503 = append(waits503, time.Since(start))
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	c := e2e.Count(rs)
	if c["overloaded"] < 150 || c["ok"]+c["overloaded"]+c["unavailable"] != 200 {
		t.Fatalf("outcomes %v: want most refused as overloaded, the rest settled", c)
	}
	// The median, not the slowest: on a loaded box a straggler's own client
	// goroutine may start late. Refusals that waited for Redis would take
	// the whole 1.5 s pause.
	slices.Sort(waits503)
	if med := waits503[len(waits503)/2]; med > 1400*time.Millisecond {
		t.Fatalf("median 503 took %v: nobody may wait in line past half the 600ms deadline, let alone for Redis's 1.5 s pause", med)
	}
	if st := n.API.Admission().Stats(); st.Refused[admit.ReasonDeadline]+st.Refused[admit.ReasonCoDel] != int64(c["overloaded"]) {
		t.Fatalf("admission stats %+v for outcomes %v: every 503 overloaded must be a refusal by time", st, c)
	}
	// Buys whose script Redis ran after the node stopped waiting were
	// answered 503: the node resolves those batches once Redis is back, so
	// the books come to match exactly what the clients were told.
	time.Sleep(time.Until(paused.Add(1500 * time.Millisecond)))
	var b e2e.Books
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if b = e2e.GetBooks(t, n.URL, "ov"); b.Pending == int64(c["ok"]) {
			break
		}
	}
	if b.Pending != int64(c["ok"]) || b.Remaining+b.Pending != 1000 {
		t.Fatalf("books %+v for outcomes %v: every order must be one a client was told of", b, c)
	}
	t.Logf("outcomes %v, books %+v", c, b)
}
