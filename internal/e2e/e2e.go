// Package e2e has the helpers of flashsale's end-to-end tests: real nodes
// (the same wiring as `flashsale node`) on a real redis-server and a kfake
// broker, driven over HTTP.
package e2e

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

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/client"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/httpserve"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/node"
	kafkago "github.com/segmentio/kafka-go"
)

// AdminToken is the admin token of every test node.
const AdminToken = "test-admin"

// AuthSecret and PaymentSecret are every test node's auth.secret and
// payment.secret: tests mint buyer tokens (Token) and sign payment
// callbacks (Pay) with them.
const (
	AuthSecret    = "e2e-auth-secret-0123456789abcdef0123"
	PaymentSecret = "e2e-payment-secret-0123456789abcdef"
)

// Token returns a bearer token for user, valid for an hour, signed with
// AuthSecret.
func Token(t testing.TB, user string) string {
	t.Helper()
	tok, err := auth.Mint([]byte(AuthSecret), user, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// As returns the Authorization header pair of user, for Do's hdr.
func As(t testing.TB, user string) []string {
	return []string{"Authorization", "Bearer " + Token(t, user)}
}

// Pay sends the payment provider's signed callback for an order (the only
// way an order is paid) and returns the reply.
func Pay(t testing.TB, url, orderID, paymentID string, amountCents int64) Reply {
	t.Helper()
	body := fmt.Sprintf(`{"order_id":%q,"payment_id":%q,"amount_cents":%d}`, orderID, paymentID, amountCents)
	return Do(t, "POST", url+"/v1/payments/callback", body,
		auth.SignatureHeader, auth.SignPayload([]byte(PaymentSecret), time.Now(), []byte(body)))
}

// RecordID is the record id ("<sale>.<seq>", as in Redis, Kafka and
// stat.log) of a public order id ("<sale>.<seq>.<tag>").
func RecordID(public string) string {
	if i := strings.LastIndexByte(public, '.'); i > 0 {
		return public[:i]
	}
	return public
}

// Credit puts cents into user's wallet through the admin credit route.
func Credit(t testing.TB, url, user string, cents int64, reference string) Reply {
	t.Helper()
	r := Do(t, "POST", url+"/v1/users/"+user+"/wallet/credit", fmt.Sprintf(`{"cents":%d,"reference":%q}`, cents, reference),
		"Authorization", "Bearer "+AdminToken)
	if r.Status != 200 {
		t.Fatalf("credit %s: %d %s", user, r.Status, r.Raw)
	}
	return r
}

// Env is one real Redis and one real broker shared by a test's nodes.
type Env struct {
	Redis *testenv.Redis
	Kafka *testenv.Kafka
	// RedisAddrs, when set, replace Redis: sentinels (with MasterName) or
	// Redis Cluster seeds (with Cluster), for the Redis HA tests.
	RedisAddrs []string
	MasterName string
	Cluster    bool
	// Postgres, when set (WithStore), is the order store every node
	// started afterwards writes to.
	Postgres *testenv.Postgres
}

// WithStore starts a PostgreSQL for the order store; nodes started after it
// run the store consumer against it.
func (e *Env) WithStore(t *testing.T) *testenv.Postgres {
	e.Postgres = testenv.StartPostgres(t, testenv.PostgresOptions{})
	return e.Postgres
}

// NewEnv starts Redis (without AOF) and a broker with the order and
// envelope topics.
func NewEnv(t *testing.T) *Env {
	return &Env{Redis: testenv.StartRedis(t, false), Kafka: testenv.StartKafka(t, "flashsale.orders", "flashsale.envelopes")}
}

// Node is a node started by a test.
type Node struct {
	*node.Node
	URL      string
	AdminURL string // the admin listener: /metrics, /readyz with details, pprof
	StatLog  string
	Stop     func() // graceful stop; also run at cleanup
}

// StartNode runs a node with the real wiring on a free port.
func (e *Env) StartNode(t *testing.T, id string, mutate func(*configs.Config)) *Node {
	t.Helper()
	cfg, err := configs.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.ID = id
	cfg.HTTP.Addr = "127.0.0.1:0"
	if e.Redis != nil {
		cfg.Redis.Addrs = []string{e.Redis.Addr}
	}
	if len(e.RedisAddrs) > 0 {
		cfg.Redis.Addrs, cfg.Redis.MasterName, cfg.Redis.Cluster = e.RedisAddrs, e.MasterName, e.Cluster
	}
	cfg.Kafka.Brokers = []string{e.Kafka.Addr}
	cfg.Admin.Token = AdminToken
	cfg.Auth.Secret = AuthSecret
	cfg.Payment.Secret = PaymentSecret
	cfg.HTTP.AdminAddr = "127.0.0.1:0"
	// Tests hammer from one loopback IP with few users; the ones about
	// abuse limits turn them back on.
	cfg.Rate.PerUser, cfg.Rate.PerIP = 0, 0
	cfg.StatLog.Path = filepath.Join(t.TempDir(), id+"-stat.log")
	cfg.Expiry.RetryDelay = 200 * time.Millisecond
	cfg.Log.Level = "error"
	if e.Postgres != nil {
		cfg.Store.DSN = e.Postgres.DSN
		cfg.Store.Linger = 5 * time.Millisecond
	}
	if mutate != nil {
		mutate(cfg)
	}
	if cfg.HTTP.Engine == httpserve.NBIO && testenv.RaceEnabled {
		// A race report from nbio's own pollers would fail the test for
		// nothing flashsale does.
		t.Fatal("FLASHSALE_HTTP_ENGINE=nbio under -race: nbio is not race-clean; run it without -race (make test-nbio)")
	}
	n, err := node.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	tn := &Node{Node: n, URL: "http://" + n.Addr(), AdminURL: "http://" + n.AdminAddr(), StatLog: cfg.StatLog.Path}
	var once sync.Once
	tn.Stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s stopped with error: %v", id, err)
			}
			// Run closed the node; Close must then be a harmless no-op.
			if err := n.Close(); err != nil {
				t.Errorf("close node %s after Run: %v", id, err)
			}
		})
	}
	t.Cleanup(tn.Stop)
	return tn
}

var httpClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 512}}

// Reply is a decoded HTTP response.
type Reply struct {
	Status     int
	Body       map[string]any
	Raw        string
	RetryAfter string // the Retry-After header, if any
	// WWWAuthenticate is the WWW-Authenticate header, if any.
	WWWAuthenticate string
}

// Code is the error code of an error reply, "" otherwise.
func (r Reply) Code() string {
	if e, ok := r.Body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

// Do sends one request; a transport error fails the test.
func Do(t testing.TB, method, url, body string, hdr ...string) Reply {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return Reply{}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := Reply{Status: resp.StatusCode, Raw: string(b), RetryAfter: resp.Header.Get("Retry-After"),
		WWWAuthenticate: resp.Header.Get("WWW-Authenticate")}
	_ = json.Unmarshal(b, &r.Body)
	return r
}

// CreateSale creates a sale through the admin API.
func CreateSale(t *testing.T, url, body string) {
	t.Helper()
	if r := Do(t, "POST", url+"/v1/sales", body, "Authorization", "Bearer "+AdminToken); r.Status != 201 {
		t.Fatalf("create sale: %d %s", r.Status, r.Raw)
	}
}

// Books are a sale's counters as GET /v1/sales/{id} shows them: a value
// tests compare with ==.
type Books struct {
	Stock, Remaining, Pending, Paid, Expired, Cancelled, Aborted int64
}

// GetBooks reads a sale's books over HTTP, through the SDK (strictly: a
// field the SDK does not know fails the test).
func GetBooks(t *testing.T, url, sale string) Books {
	t.Helper()
	c := &client.Client{Base: url, HTTP: httpClient, Strict: true}
	v, err := c.Sale(context.Background(), sale)
	if err != nil {
		t.Fatalf("get sale: %v", err)
	}
	return Books{Stock: v.Stock, Remaining: v.Remaining, Pending: v.Pending, Paid: v.Paid, Expired: v.Expired,
		Cancelled: v.Cancelled, Aborted: v.Aborted}
}

// Hammer sends one buy per user from many goroutines (bounded by workers)
// and returns the replies by user.
func Hammer(t *testing.T, urls []string, sale string, users []string, workers int) []Reply {
	out := make([]Reply, len(users))
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				url := urls[i%len(urls)]
				if i%2 == 0 {
					out[i] = Do(t, "POST", url+"/v1/sales/"+sale+"/buy", "", As(t, users[i])...)
				} else {
					out[i] = Do(t, "GET", url+"/v1/sales/"+sale+"/buy", "", As(t, users[i])...)
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

// Count tallies replies: "ok" for 201, else the error code.
func Count(rs []Reply) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		if r.Status == 201 {
			m["ok"]++
		} else {
			m[r.Code()]++
		}
	}
	return m
}

// ReadEvents reads order.created events from the topic until it has n or
// the wait runs out.
func ReadEvents(t *testing.T, broker string, n int, wait time.Duration) map[string]kafka.OrderEvent {
	t.Helper()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: []string{broker}, Topic: "flashsale.orders",
		GroupID: fmt.Sprintf("test-%d", time.Now().UnixNano()), StartOffset: kafkago.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	out := map[string]kafka.OrderEvent{}
	for len(out) < n {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			break
		}
		ev, err := kafka.ParseOrderEvent(m.Value)
		if err != nil {
			t.Fatalf("bad event %s: %v", m.Value, err)
		}
		if ev.Type != kafka.TypeOrderCreated {
			continue // order.paid and the other transitions
		}
		if _, dup := out[ev.OrderID]; dup {
			t.Fatalf("order %s published twice", ev.OrderID)
		}
		out[ev.OrderID] = ev
	}
	return out
}

// Users returns n user ids prefix0..prefixN-1.
func Users(prefix string, n int) []string {
	u := make([]string, n)
	for i := range u {
		u[i] = fmt.Sprintf("%s%d", prefix, i)
	}
	return u
}

// ReadStatLog tallies a stat.log's lines by result.
func ReadStatLog(t *testing.T, path string) map[string]int {
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
