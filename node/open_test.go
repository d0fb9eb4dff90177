package node_test

import (
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/node"
)

// Invariant: an Open that fails part-way (here at the end: the listen
// address, or the admin address, is taken) leaves nothing running behind — no flusher, resolver,
// Kafka or Redis goroutine — and a node opened but never run closes with
// Close.
func TestOpenCleansUpOnFailureAndCloseStopsAnOpenNode(t *testing.T) {
	e := e2e.NewEnv(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	config := func(addr string) *configs.Config {
		cfg, err := configs.Load(nil)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Node.ID = "open1"
		cfg.HTTP.Addr = addr
		cfg.Redis.Addrs = []string{e.Redis.Addr}
		cfg.Kafka.Brokers = []string{e.Kafka.Addr}
		cfg.StatLog.Path = t.TempDir() + "/stat.log"
		cfg.Log.Level = "error"
		cfg.Auth.Secret = e2e.AuthSecret
		cfg.Payment.Secret = e2e.PaymentSecret
		return cfg
	}
	settle := func(want int) int {
		var n int
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n = runtime.NumGoroutine(); n <= want {
				break
			}
		}
		return n
	}
	before := settle(0)

	if _, err := node.Open(config(busy.Addr().String()), nil); err == nil {
		t.Fatal("Open on a taken address succeeded")
	}
	if after := settle(before); after > before {
		t.Fatalf("%d goroutines before a failed Open, %d after", before, after)
	}
	// The admin listener is the last thing Open binds: its failure closes
	// the public listener and everything before it too.
	withAdmin := config("127.0.0.1:0")
	withAdmin.HTTP.AdminAddr = busy.Addr().String()
	if _, err := node.Open(withAdmin, nil); err == nil {
		t.Fatal("Open on a taken admin address succeeded")
	}
	if after := settle(before); after > before {
		t.Fatalf("%d goroutines before a failed Open (admin address), %d after", before, after)
	}

	n, err := node.Open(config("127.0.0.1:0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("close an open node: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if after := settle(before); after > before {
		t.Fatalf("%d goroutines before Open, %d after Close", before, after)
	}
}
