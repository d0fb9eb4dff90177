package bench_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/bench"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/node"
)

// startNode runs a real node (gin API, Redis Lua, Kafka) on a free port
// with the same wiring as `flashsale node`.
func startNode(t *testing.T, id string, redisAddr, kafkaAddr string) string {
	t.Helper()
	cfg, err := configs.Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Node.ID = id
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Redis.Addrs = []string{redisAddr}
	cfg.Kafka.Brokers = []string{kafkaAddr}
	cfg.Admin.Token = "admin"
	cfg.StatLog.Path = filepath.Join(t.TempDir(), id+"-stat.log")
	cfg.Log.Level = "error"
	n, err := node.Open(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node %s: %v", id, err)
			}
		})
	})
	return "http://" + n.Addr()
}

// Invariant: against two real nodes, the clients win exactly the stock, the
// winners who paid are paid on the server, and --check finds the client
// tally equal to the server's books.
func TestAgainstRealNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server, a broker and two nodes")
	}
	redis := testenv.StartRedis(t, false)
	kafka := testenv.StartKafka(t, "flashsale.orders")
	a := startNode(t, "n1", redis.Addr, kafka.Addr)
	b := startNode(t, "n2", redis.Addr, kafka.Addr)

	var out bytes.Buffer
	o := bench.Options{
		Config: bench.Config{
			Targets: []string{a, b}, Scenario: bench.ScenarioBuy, Sale: "e2e",
			Users: 1000, Connections: 16, Requests: 3000, PayFraction: 0.25,
			Progress: &out, Timeout: 10 * time.Second,
		},
		CreateSale: true, Stock: 300, Limit: 1, PriceCents: 100, PayTimeout: "5m",
		AdminToken: "admin", Check: true,
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
