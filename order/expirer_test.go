package order_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/stock"
	"github.com/redis/go-redis/v9"
)

const topic = "flashsale.orders"

// sell creates a sale and sells n units through a Seller whose Confirmer is
// the real Kafka publisher.
func sell(t *testing.T, rdb *redis.Client, broker, sale string, n int, pay time.Duration) *order.Publisher {
	t.Helper()
	ctx := context.Background()
	if err := stock.CreateSale(ctx, rdb, flashsale.Sale{ID: sale, Stock: int64(n), PerUserLimit: 1, PayTimeout: pay}); err != nil {
		t.Fatal(err)
	}
	pub := order.NewPublisher(order.PublisherConfig{Brokers: []string{broker}, Topic: topic,
		WriteTimeout: 5 * time.Second, MaxAttempts: 3})
	t.Cleanup(func() { pub.Close() })
	s := stock.NewSeller(stock.SellerConfig{Node: "n1", Coalescer: stock.CoalescerConfig{MaxBatch: 32, Flushers: 2, QueueSize: 1024}},
		rdb, pub, nil, nil)
	defer s.Close()
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := s.Buy(ctx, sale, fmt.Sprint("u", i)); err != nil {
				t.Errorf("buy: %v", err)
			}
		}(i)
	}
	wg.Wait()
	return pub
}

func runExpirer(t *testing.T, rdb *redis.Client, broker, group string) (stop func()) {
	e := order.NewExpirer(order.ExpirerConfig{Brokers: []string{broker}, Topic: topic, Group: group,
		Workers: 2, QueueSize: 4, MaxHeld: 50, BatchMax: 16, RetryDelay: 100 * time.Millisecond}, rdb, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func waitBooks(t *testing.T, rdb *redis.Client, sale string, ok func(flashsale.Books) bool, wait time.Duration) flashsale.Books {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		_, b, err := stock.LoadSale(context.Background(), rdb, sale)
		if err != nil {
			t.Fatal(err)
		}
		if ok(b) || time.Now().After(deadline) {
			return b
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Invariant: each unpaid order is released once, not before its deadline —
// even when its consumer dies while holding it and a second consumer of the
// group gets it again, and when a second group reads every event too.
func TestExpiryExactlyOnceAcrossCrashAndRedelivery(t *testing.T) {
	r := testenv.StartRedis(t, false)
	rdb := r.Client(t)
	k := testenv.StartKafka(t, topic)
	// 120 orders with more than MaxHeld (50) of them: fetching must pause
	// and resume, bounded.
	sell(t, rdb, k.Addr, "ex", 120, 2*time.Second)
	ctx := context.Background()
	// Pay some before the deadline; they must stay paid.
	svc := order.NewService(rdb, time.Second)
	for i := int64(1); i <= 20; i++ {
		if _, err := svc.Pay(ctx, "ex", i, fmt.Sprint("pay-", i), 0); err != nil {
			t.Fatal(err)
		}
	}

	stopA := runExpirer(t, rdb, k.Addr, "g1")
	time.Sleep(700 * time.Millisecond) // A holds orders, none due yet
	if _, b, _ := stock.LoadSale(ctx, rdb, "ex"); b.Expired != 0 {
		t.Fatalf("released before the deadline: %+v", b)
	}
	stopA() // "crash": nothing was committed for unsettled orders

	runExpirer(t, rdb, k.Addr, "g1")
	runExpirer(t, rdb, k.Addr, "g2") // a whole second copy of every event
	waitBooks(t, rdb, "ex", func(b flashsale.Books) bool { return b.Expired == 100 }, 15*time.Second)
	time.Sleep(300 * time.Millisecond) // let the duplicate copy finish too
	_, b, _ := stock.LoadSale(ctx, rdb, "ex")
	if b.Expired != 100 || b.Paid != 20 || b.Remaining != 100 || b.Pending != 0 || !b.Balanced() {
		t.Fatalf("books = %+v, want exactly 100 released once", b)
	}
}

// The sweeper returns units whose events never reached Kafka.
func TestSweeperReleasesLostOrders(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	if err := stock.CreateSale(ctx, rdb, flashsale.Sale{ID: "sw", Stock: 10, PerUserLimit: 1, PayTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	s := stock.NewSeller(stock.SellerConfig{Node: "n1", Coalescer: stock.CoalescerConfig{MaxBatch: 8, Flushers: 1, QueueSize: 64}},
		rdb, noKafka{}, nil, nil)
	// Concurrent buyers, so batches (and their index ranges) hold several
	// orders; some orders of the ranges get paid, the rest are "lost".
	orders := make([]int64, 10)
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			r, err := s.Buy(ctx, "sw", fmt.Sprint("u", i))
			if err != nil {
				t.Error(err)
			}
			orders[i] = r.Order
		})
	}
	wg.Wait()
	s.Close()
	if ranges, _ := rdb.ZCard(ctx, lua.KeysFor("sw").Deadlines).Result(); ranges >= 10 {
		t.Logf("no batch held two orders (%d ranges): the range path is not exercised this run", ranges)
	}
	paid := []int64{orders[0], orders[4], orders[8]}
	if _, res, err := lua.Settle(ctx, rdb, "sw", lua.Pay, paid); err != nil || res[0].Code != lua.SettleDone {
		t.Fatal(res, err)
	}
	sw := order.NewSweeper(rdb, time.Hour, 200*time.Millisecond, 3, time.Second, nil)
	if n, err := sw.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("swept %d before the deadline (%v)", n, err)
	}
	time.Sleep(1300 * time.Millisecond)
	want := 10 - len(paid)
	if n, err := sw.Sweep(ctx); err != nil || n != want {
		t.Fatalf("swept %d, want %d (%v)", n, want, err)
	}
	if n, _ := sw.Sweep(ctx); n != 0 {
		t.Fatalf("second sweep released %d more", n)
	}
	if _, b, _ := stock.LoadSale(ctx, rdb, "sw"); b.Remaining != int64(want) || b.Expired != int64(want) || b.Paid != int64(len(paid)) {
		t.Fatalf("books = %+v", b)
	}
	if n, _ := rdb.ZCard(ctx, lua.KeysFor("sw").Deadlines).Result(); n != 0 {
		t.Fatalf("the deadline index still holds %d ranges after the sweep", n)
	}
}

// noKafka confirms everything without publishing: the event is "lost".
type noKafka struct{}

func (noKafka) Confirm(context.Context, []stock.Reservation, []error) {}
