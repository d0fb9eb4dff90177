package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/store"
	"github.com/redis/go-redis/v9"
)

func openStore(t *testing.T, dsn string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DSN: dsn, MaxConns: 4, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func lookup(rdb redis.UniversalClient) store.SaleLookup {
	r := store.NewRunner(store.RunnerConfig{RedisTimeout: time.Second}, rdb, nil)
	return r.Lookup
}

// redisOrders returns the sale's order records in Redis by order number.
func redisOrders(t *testing.T, rdb redis.UniversalClient, sale string) map[int64]lua.Record {
	t.Helper()
	raw, err := rdb.HGetAll(context.Background(), lua.KeysFor(sale).Orders).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]lua.Record{}
	for k, v := range raw {
		n, _ := strconv.ParseInt(k, 10, 64)
		r, err := lua.ParseRecord(v)
		if err != nil {
			t.Fatal(err)
		}
		out[n] = r
	}
	return out
}

// sameBooks fails unless the store holds exactly Redis's orders of sale,
// each with the same user, node and status.
func sameBooks(t *testing.T, rdb redis.UniversalClient, s *store.Store, sale string) {
	t.Helper()
	want := redisOrders(t, rdb, sale)
	got, err := s.SaleOrders(context.Background(), sale)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("store has %d orders of %s, Redis %d", len(got), sale, len(want))
	}
	for n, r := range want {
		o, ok := got[n]
		if !ok || o.UserID != r.User || o.Node != r.Node || o.Status != order.StatusOf(r.Status) {
			t.Fatalf("order %d: Redis %+v, store %+v (found %v)", n, r, o, ok)
		}
	}
}

// waitFor polls cond until it holds or the wait runs out.
func waitFor(t *testing.T, wait time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", wait, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// paymentID is the test payment provider's id for paying order id.
func paymentID(id string) string { return "psp-" + strings.ReplaceAll(e2e.RecordID(id), ".", "-") }

// sell runs a sale of stock units for 2×stock buyers on n, then pays every
// third order and cancels every seventh. It returns the order ids.
func sell(t *testing.T, url, sale string, stock int) []string {
	t.Helper()
	e2e.CreateSale(t, url, fmt.Sprintf(`{"id":%q,"name":"G1","stock":%d,"price_cents":1250}`, sale, stock))
	rs := e2e.Hammer(t, []string{url}, sale, e2e.Users(sale+"-u", 2*stock), 64)
	var ids, owners []string
	for i, r := range rs {
		if r.Status == 201 {
			ids = append(ids, r.Body["order_id"].(string))
			owners = append(owners, e2e.Users(sale+"-u", 2*stock)[i])
		}
	}
	if len(ids) != stock {
		t.Fatalf("%d orders for %d units: %v", len(ids), stock, e2e.Count(rs))
	}
	for i, id := range ids {
		switch {
		case i%3 == 0:
			if r := e2e.Pay(t, url, id, paymentID(id), 1250); r.Status != 200 {
				t.Fatalf("pay %s: %d %s", id, r.Status, r.Raw)
			}
		case i%7 == 0:
			if r := e2e.Do(t, "POST", url+"/v1/orders/"+id+"/cancel", "", e2e.As(t, owners[i])...); r.Status != 200 {
				t.Fatalf("cancel %s: %d %s", id, r.Status, r.Raw)
			}
		}
	}
	return ids
}

// Invariant: a store consumer killed after its transaction committed but
// before its offsets were (mid-batch, from Kafka's view) gets the batch
// again on restart, and every order is in the store exactly once with its
// final status.
func TestExactlyOnceUnderRedelivery(t *testing.T) {
	t.Parallel() // nothing here is timed against another test
	e := e2e.NewEnv(t)
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	n := e.StartNode(t, "n1", nil) // no store on the node: this test runs its own consumers
	sell(t, n.URL, "s1", 300)
	rdb := e.Redis.Client(t)
	s := openStore(t, pg.DSN)
	cfg := store.ConsumerConfig{Brokers: []string{e.Kafka.Addr}, OrderTopic: "flashsale.orders",
		EnvelopeTopic: "flashsale.envelopes", Group: "store-test", BatchMax: 64, Linger: 5 * time.Millisecond}

	// First consumer: dies right after its second transaction commits.
	c1 := store.NewConsumer(cfg, s, lookup(rdb), slog.Default())
	ctx1, kill := context.WithCancel(context.Background())
	var batches, killedBatch atomic.Int64
	c1.BeforeCommit = func(events int) {
		if batches.Add(1) == 2 {
			killedBatch.Store(int64(events))
			kill() // the offset commit that follows fails: a crash
		}
	}
	done := make(chan error, 1)
	go func() { done <- c1.Run(ctx1) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("first consumer: %v", err)
		}
	case <-time.After(60 * time.Second):
		kill()
		t.Fatal("first consumer never reached its second batch")
	}
	if killedBatch.Load() == 0 {
		t.Fatal("the consumer was not killed mid-way")
	}

	// Second consumer: same group, resumes from the last committed offset.
	c2 := store.NewConsumer(cfg, s, lookup(rdb), slog.Default())
	ctx2, stop := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- c2.Run(ctx2) }()
	defer func() { stop(); <-done2 }()
	waitFor(t, 60*time.Second, "the store to hold every order with its final status", func() bool {
		c, err := s.SaleCounts(context.Background(), "s1")
		return err == nil && c.Orders == 300 && c.Pending == 300-c.Paid-c.Cancelled
	})
	waitFor(t, 30*time.Second, "lag 0", func() bool {
		lag, err := c2.MeasureLag(context.Background())
		return err == nil && lag == 0
	})
	sameBooks(t, rdb, s, "s1")
	var prices int
	if err := s.Pool.QueryRow(context.Background(), "SELECT count(*) FROM orders WHERE price_cents = 1250").Scan(&prices); err != nil || prices != 300 {
		t.Fatalf("%d orders priced 12.50 (%v), want 300", prices, err)
	}
	t.Logf("killed after a committed batch of %d events; the restart applied them again without a duplicate", killedBatch.Load())
}
