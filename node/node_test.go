package node_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/node"
	"github.com/flashsale/flashsale/order"
	"github.com/segmentio/kafka-go"
)

const adminToken = "test-admin"

type env struct {
	redis *testenv.Redis
	kafka *testenv.Kafka
}

func newEnv(t *testing.T) *env {
	return &env{redis: testenv.StartRedis(t, false), kafka: testenv.StartKafka(t, "flashsale.orders")}
}

type testNode struct {
	*node.Node
	url     string
	statlog string
	stop    func()
}

// start runs a node with the real wiring on a free port.
func (e *env) start(t *testing.T, id string, mutate func(*configs.Config)) *testNode {
	t.Helper()
	cfg, err := configs.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.ID = id
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Redis.Addrs = []string{e.redis.Addr}
	cfg.Kafka.Brokers = []string{e.kafka.Addr}
	cfg.Admin.Token = adminToken
	cfg.StatLog.Path = filepath.Join(t.TempDir(), id+"-stat.log")
	cfg.Expiry.RetryDelay = 200 * time.Millisecond
	cfg.Log.Level = "error"
	if mutate != nil {
		mutate(cfg)
	}
	n, err := node.Open(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	tn := &testNode{Node: n, url: "http://" + n.Addr(), statlog: cfg.StatLog.Path}
	var once sync.Once
	tn.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s stopped with error: %v", id, err)
			}
		})
	}
	t.Cleanup(tn.stop)
	return tn
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512}}

type reply struct {
	status int
	body   map[string]any
	raw    string
}

func (r reply) code() string {
	if e, ok := r.body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

func do(t testing.TB, method, url, body string, hdr ...string) reply {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return reply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, raw: string(b)}
	_ = json.Unmarshal(b, &r.body)
	return r
}

func createSale(t *testing.T, url, body string) {
	t.Helper()
	if r := do(t, "POST", url+"/v1/sales", body, "Authorization", "Bearer "+adminToken); r.status != 201 {
		t.Fatalf("create sale: %d %s", r.status, r.raw)
	}
}

type books struct {
	Stock, Remaining, Pending, Paid, Expired, Cancelled, Aborted int64
}

func getBooks(t *testing.T, url, sale string) books {
	t.Helper()
	r := do(t, "GET", url+"/v1/sales/"+sale, "")
	if r.status != 200 {
		t.Fatalf("get sale: %d %s", r.status, r.raw)
	}
	var b books
	raw, _ := json.Marshal(r.body)
	_ = json.Unmarshal(raw, &b)
	return b
}

// hammer sends one buy per user from many goroutines (bounded by workers)
// and returns the replies by user.
func hammer(t *testing.T, urls []string, sale string, users []string, workers int) []reply {
	out := make([]reply, len(users))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				url := urls[i%len(urls)]
				if i%2 == 0 {
					out[i] = do(t, "POST", url+"/v1/sales/"+sale+"/buy", `{"user_id":"`+users[i]+`"}`)
				} else {
					out[i] = do(t, "GET", url+"/v1/sales/"+sale+"/buy?user_id="+users[i], "")
				}
			}
		}()
	}
	for i := range users {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

func count(rs []reply) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		if r.status == 201 {
			m["ok"]++
		} else {
			m[r.code()]++
		}
	}
	return m
}

// readEvents reads order.created events from the topic until it has n or
// the wait runs out.
func readEvents(t *testing.T, broker string, n int, wait time.Duration) map[string]order.Event {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{broker}, Topic: "flashsale.orders",
		GroupID: fmt.Sprintf("test-%d", time.Now().UnixNano()), StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out := map[string]order.Event{}
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			break
		}
		ev, err := order.ParseEvent(m.Value)
		if err != nil {
			t.Fatalf("bad event %s: %v", m.Value, err)
		}
		if _, dup := out[ev.OrderID]; dup {
			t.Fatalf("order %s published twice", ev.OrderID)
		}
		out[ev.OrderID] = ev
	}
	return out
}

func users(prefix string, n int) []string {
	u := make([]string, n)
	for i := range u {
		u[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return u
}

// Invariant: 2,000 distinct buyers, 500 units → exactly 500 orders, each in
// Redis and on Kafka once, remaining 0, and stat.log tells the same story.
func TestConcurrentBuyersExactBooks(t *testing.T) {
	e := newEnv(t)
	n := e.start(t, "n1", nil)
	createSale(t, n.url, `{"id":"s1","name":"G1234","stock":500,"price_cents":55300}`)

	rs := hammer(t, []string{n.url}, "s1", users("u", 2000), 256)
	c := count(rs)
	if c["ok"] != 500 || c["sold_out"] != 1500 {
		t.Fatalf("outcomes = %v, want 500 ok and 1500 sold_out", c)
	}
	b := getBooks(t, n.url, "s1")
	if b.Remaining != 0 || b.Pending != 500 || b.Remaining+b.Pending+b.Paid != b.Stock {
		t.Fatalf("books = %+v", b)
	}
	ids := map[string]string{}
	for _, r := range rs {
		if r.status == 201 {
			id := r.body["order_id"].(string)
			if _, dup := ids[id]; dup {
				t.Fatalf("order id %s handed out twice", id)
			}
			ids[id] = r.body["user_id"].(string)
			if g := do(t, "GET", n.url+"/v1/orders/"+id, ""); g.status != 200 || g.body["status"] != "pending" || g.body["user_id"] != ids[id] {
				t.Fatalf("order %s in Redis: %d %s", id, g.status, g.raw)
			}
		}
	}
	events := readEvents(t, e.kafka.Addr, 501, 3*time.Second)
	if len(events) != 500 {
		t.Fatalf("%d order events on Kafka, want 500", len(events))
	}
	for id, user := range ids {
		if ev, ok := events[id]; !ok || ev.UserID != user || ev.Node != "n1" {
			t.Fatalf("success %s (user %s) has event %+v", id, user, ev)
		}
	}
	n.stop() // graceful: stat.log flushed
	lines := readStatLog(t, n.statlog)
	if lines["ok"] != 500 || lines["sold_out"] != 1500 {
		t.Fatalf("stat.log outcomes = %v", lines)
	}
}

func readStatLog(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct{ Result string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("stat.log line %q: %v", sc.Text(), err)
		}
		m[rec.Result]++
	}
	return m
}

// Invariant: one user hammering gets exactly per_user_limit orders.
func TestSameUserGetsExactlyTheLimit(t *testing.T) {
	e := newEnv(t)
	n := e.start(t, "n1", nil)
	createSale(t, n.url, `{"id":"lim","stock":100,"per_user_limit":3}`)
	same := make([]string, 300)
	for i := range same {
		same[i] = "greedy"
	}
	c := count(hammer(t, []string{n.url}, "lim", same, 64))
	if c["ok"] != 3 || c["limit_reached"] != 297 {
		t.Fatalf("outcomes = %v, want 3 ok", c)
	}
	if b := getBooks(t, n.url, "lim"); b.Remaining != 97 || b.Pending != 3 {
		t.Fatalf("books = %+v", b)
	}
}

// Invariant: two nodes selling one sale never sell more than the stock.
func TestTwoNodesOneSale(t *testing.T) {
	e := newEnv(t)
	a := e.start(t, "a", nil)
	b := e.start(t, "b", nil)
	createSale(t, a.url, `{"id":"two","stock":300}`)
	c := count(hammer(t, []string{a.url, b.url}, "two", users("x", 1200), 128))
	if c["ok"] != 300 {
		t.Fatalf("outcomes = %v, want 300 ok", c)
	}
	if bk := getBooks(t, b.url, "two"); bk.Remaining != 0 || bk.Pending != 300 {
		t.Fatalf("books = %+v", bk)
	}
}

// Invariant: unpaid orders come back to stock after their deadline, once,
// and are sold again; paid ones stay sold.
func TestUnpaidOrdersReturnAndSellAgain(t *testing.T) {
	e := newEnv(t)
	n := e.start(t, "n1", func(c *configs.Config) { c.Stock.RefreshInterval = 10 * time.Millisecond })
	createSale(t, n.url, `{"id":"exp","stock":20,"pay_timeout":"1s"}`)
	rs := hammer(t, []string{n.url}, "exp", users("first", 20), 8)
	paid := 0
	for _, r := range rs {
		if r.status != 201 {
			t.Fatalf("first wave: %d %s", r.status, r.raw)
		}
		if paid < 5 {
			if p := do(t, "POST", n.url+"/v1/orders/"+r.body["order_id"].(string)+"/pay", ""); p.status != 200 || p.body["status"] != "paid" {
				t.Fatalf("pay: %d %s", p.status, p.raw)
			}
			paid++
		}
	}
	if c := count(hammer(t, []string{n.url}, "exp", []string{"late"}, 1)); c["sold_out"] != 1 {
		t.Fatalf("before expiry the sale is sold out: %v", c)
	}
	deadline := time.Now().Add(10 * time.Second)
	var b books
	for time.Now().Before(deadline) {
		if b = getBooks(t, n.url, "exp"); b.Expired == 15 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.Expired != 15 || b.Remaining != 15 || b.Paid != 5 || b.Pending != 0 {
		t.Fatalf("after deadline books = %+v, want 15 expired back in stock", b)
	}
	// Paying an expired order is 410 and changes nothing.
	for _, r := range rs[5:6] {
		if p := do(t, "POST", n.url+"/v1/orders/"+r.body["order_id"].(string)+"/pay", ""); p.status != 410 || p.code() != "expired" {
			t.Fatalf("pay after expiry: %d %s", p.status, p.raw)
		}
	}
	c := count(hammer(t, []string{n.url}, "exp", users("second", 40), 8))
	if c["ok"] != 15 {
		t.Fatalf("second wave outcomes = %v, want the 15 returned units sold again", c)
	}
	b = getBooks(t, n.url, "exp")
	if b.Remaining != 0 || b.Pending != 15 || b.Paid != 5 || b.Expired != 15 {
		t.Fatalf("final books = %+v", b)
	}
}

// Invariant: with the broker gone mid-sale, every buy either succeeds (its
// event acked) or fails with its unit back; nothing is stranded.
func TestKafkaDownStrandsNothing(t *testing.T) {
	e := newEnv(t)
	n := e.start(t, "n1", func(c *configs.Config) {
		c.Kafka.WriteTimeout = 500 * time.Millisecond
		c.Kafka.MaxAttempts = 1
		c.Stock.RefreshInterval = 10 * time.Millisecond
	})
	createSale(t, n.url, `{"id":"kd","stock":400,"pay_timeout":"1s"}`)
	first := count(hammer(t, []string{n.url}, "kd", users("a", 100), 16))
	e.kafka.Stop()
	down := count(hammer(t, []string{n.url}, "kd", users("b", 100), 16))
	if down["ok"] != 0 || down["unavailable"] != 100 {
		t.Fatalf("with the broker down: %v, want all 503 unavailable", down)
	}
	b := getBooks(t, n.url, "kd")
	if b.Pending != int64(first["ok"]) || b.Aborted != 100 || b.Remaining+b.Pending+b.Paid != b.Stock {
		t.Fatalf("books with broker down = %+v (first wave %v)", b, first)
	}
	e.kafka.Restart()
	// The restarted broker lost the first wave's events: the sweeper is the
	// backstop that returns them after deadline + grace.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b = getBooks(t, n.url, "kd"); b.Remaining == b.Stock {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if b.Remaining != 400 || b.Pending != 0 {
		t.Fatalf("after recovery books = %+v, want every unit back", b)
	}
	after := count(hammer(t, []string{n.url}, "kd", users("c", 50), 8))
	if after["ok"] != 50 {
		t.Fatalf("after the broker came back: %v", after)
	}
}

// Bad input gets a clear JSON error with the right status and changes nothing.
func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	n := e.start(t, "n1", nil)
	createSale(t, n.url, `{"id":"ok","stock":10}`)
	auth := []string{"Authorization", "Bearer " + adminToken}
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
		{"buy empty body", "POST", "/v1/sales/ok/buy", ``, nil, 400, "invalid"},
		{"buy no user", "POST", "/v1/sales/ok/buy", `{}`, nil, 400, "invalid"},
		{"buy long user", "POST", "/v1/sales/ok/buy", `{"user_id":"` + long + `"}`, nil, 400, "invalid"},
		{"buy user wrong type", "POST", "/v1/sales/ok/buy", `{"user_id":7}`, nil, 400, "invalid"},
		{"buy query no user", "GET", "/v1/sales/ok/buy", ``, nil, 400, "invalid"},
		{"buy query twice", "GET", "/v1/sales/ok/buy?user_id=a&user_id=b", ``, nil, 400, "invalid"},
		{"buy query escaped", "GET", "/v1/sales/ok/buy?user_id=a%20b", ``, nil, 400, "invalid"},
		{"buy unknown sale", "POST", "/v1/sales/nosuch/buy", `{"user_id":"u"}`, nil, 404, "not_found"},
		{"sale bad id", "GET", "/v1/sales/" + long, ``, nil, 400, "invalid"},
		{"order bad id", "GET", "/v1/orders/garbage", ``, nil, 400, "invalid"},
		{"order unknown", "POST", "/v1/orders/ok.999/pay", ``, nil, 404, "not_found"},
		{"no route", "GET", "/v2/anything", ``, nil, 404, "not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, n.url+tc.path, tc.body, tc.hdr...)
			if r.status != tc.status || r.code() != tc.code {
				t.Fatalf("%d %s, want %d %s", r.status, r.raw, tc.status, tc.code)
			}
			if msg, _ := r.body["error"].(map[string]any)["message"].(string); msg == "" {
				t.Fatalf("no message in %s", r.raw)
			}
		})
	}
	if b := getBooks(t, n.url, "ok"); b != (books{Stock: 10, Remaining: 10}) {
		t.Fatalf("books changed by bad input: %+v", b)
	}
	if r := do(t, "GET", n.url+"/v1/sales/y", ""); r.status != 404 {
		t.Fatalf("a rejected sale was created: %d", r.status)
	}
}

// Redis down: buys answer 503 quickly, never hang; it recovers by itself.
func TestRedisDownAnswersFast(t *testing.T) {
	e := newEnv(t)
	n := e.start(t, "n1", nil)
	createSale(t, n.url, `{"id":"rd","stock":100}`)
	if c := count(hammer(t, []string{n.url}, "rd", users("a", 10), 4)); c["ok"] != 10 {
		t.Fatalf("before: %v", c)
	}
	e.redis.Kill()
	start := time.Now()
	c := count(hammer(t, []string{n.url}, "rd", users("b", 40), 8))
	if took := time.Since(start); c["unavailable"] != 40 || took > 8*time.Second {
		t.Fatalf("with Redis down: %v in %v, want fast 503s", c, took)
	}
	if r := do(t, "GET", n.url+"/readyz", ""); r.status != 503 {
		t.Fatalf("readyz with Redis down: %d", r.status)
	}
	e.redis.Restart() // no AOF: a fresh, empty Redis
	createSale(t, n.url, `{"id":"rd2","stock":5}`)
	if c := count(hammer(t, []string{n.url}, "rd2", users("c", 10), 4)); c["ok"] != 5 {
		t.Fatalf("after Redis came back: %v", c)
	}
}
