package order

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/stock"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
)

// failingConfirmer refuses every other event: the seam where Kafka would
// fail.
type failingConfirmer struct{ calls atomic.Int64 }

func (f *failingConfirmer) Publish(_ context.Context, msgs []kafkago.Message, errs []error) {
	for i := range msgs {
		if f.calls.Add(1)%2 == 0 {
			errs[i] = errors.New("broker said no")
		}
	}
}

// Invariant: a reservation that cannot be confirmed is undone in Redis and
// in the local share, and the buyer hears 503 with the order id.
func TestSellerAbortsUnconfirmed(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	if err := CreateSale(ctx, rdb, flashsale.Sale{ID: "s", Stock: 100, PerUserLimit: 1, PayTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	s := NewSeller(SellerConfig{Node: "n", Coalescer: stock.CoalescerConfig{MaxBatch: 16, Flushers: 2, QueueSize: 256}},
		rdb, &failingConfirmer{}, nil, nil)
	defer s.Close()
	var ok, undone atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := s.Buy(ctx, "s", fmt.Sprint("u", i))
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, ErrNotDurable) && r.Order > 0:
				undone.Add(1)
			default:
				t.Errorf("buy: %v", err)
			}
		}(i)
	}
	wg.Wait()
	_, b, err := LoadSale(ctx, rdb, "s")
	if err != nil {
		t.Fatal(err)
	}
	if ok.Load() != 30 || undone.Load() != 30 || b.Pending != 30 || b.Aborted != 30 || b.Remaining != 70 {
		t.Fatalf("ok=%d undone=%d books=%+v", ok.Load(), undone.Load(), b)
	}
}

func TestShareOf(t *testing.T) {
	s := NewSeller(SellerConfig{BufferUnits: 5, BufferPercent: 10}, nil, nil, fixedMembers(3), nil)
	for _, tc := range []struct{ remaining, want int64 }{{0, 0}, {1, 6}, {2000, 667 + 67}, {30, 10 + 5}} {
		if got := s.ShareOf(tc.remaining); got != tc.want {
			t.Errorf("ShareOf(%d) with 3 nodes = %d, want %d", tc.remaining, got, tc.want)
		}
	}
}

type fixedMembers int

func (f fixedMembers) LiveNodes() int { return int(f) }

// Invariant: a sold-out sale costs Redis at most one read per refresh
// interval, however many buyers ask.
func TestSoldOutCostsNoRedis(t *testing.T) {
	r := testenv.StartRedis(t, false)
	rdb := r.Client(t)
	ctx := context.Background()
	if err := CreateSale(ctx, rdb, flashsale.Sale{ID: "so", Stock: 5, PerUserLimit: 1, PayTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	s := NewSeller(SellerConfig{Node: "n", RefreshInterval: time.Hour, Coalescer: stock.CoalescerConfig{MaxBatch: 16, Flushers: 1, QueueSize: 64}},
		rdb, &failingConfirmer{calls: atomic.Int64{}}, nil, nil)
	defer s.Close()
	for i := 0; ; i++ {
		if st, ok := s.sales.Get("so"); ok && st.share.Left() == 0 {
			break
		}
		s.Buy(ctx, "so", fmt.Sprint("u", i))
	}
	before, _ := rdb.Info(ctx, "stats").Result()
	for i := 0; i < 1000; i++ {
		if _, err := s.Buy(ctx, "so", fmt.Sprint("late", i)); !errors.Is(err, ErrSoldOut) {
			t.Fatalf("buy %d: %v", i, err)
		}
	}
	after, _ := rdb.Info(ctx, "stats").Result()
	if cb, ca := commands(before), commands(after); ca-cb > 2 { // the INFO call itself
		t.Fatalf("1000 sold-out answers cost %d Redis commands", ca-cb)
	}
}

func commands(info string) int64 {
	var n int64
	for _, line := range strings.Split(info, "\n") {
		if _, err := fmt.Sscanf(line, "total_commands_processed:%d", &n); err == nil {
			return n
		}
	}
	return -1
}

// countLoads is a go-redis hook that counts the sale loads (HMGET of a
// sale's meta) and the most that ran at once.
type countLoads struct{ calls, running, most atomic.Int64 }

func (*countLoads) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *countLoads) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "hmget" {
			return next(ctx, cmd)
		}
		c.calls.Add(1)
		n := c.running.Add(1)
		for m := c.most.Load(); n > m && !c.most.CompareAndSwap(m, n); m = c.most.Load() {
		}
		time.Sleep(2 * time.Millisecond) // a loaded Redis: builds overlap
		defer c.running.Add(-1)
		return next(ctx, cmd)
	}
}

func (*countLoads) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Invariant: the crowd's first buys of a sale on a fresh node cost Redis
// one load, and a flood of buys of sales that do not exist holds at most
// stock.LoadsInFlight Redis connections at once — each answered 404, none
// leaving anything behind.
func TestSaleLoadsAreSharedAndBounded(t *testing.T) {
	srv := testenv.StartRedis(t, false)
	rdb := srv.Client(t)
	truthSale(t, rdb, "crowd", 1000, time.Minute)
	counted := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr, PoolSize: 256})
	defer counted.Close()
	loads := &countLoads{}
	counted.AddHook(loads)
	s := NewSeller(SellerConfig{Node: "n", RefreshInterval: time.Hour, Coalescer: stock.CoalescerConfig{MaxBatch: 64, Flushers: 1, QueueSize: 512}},
		counted, &slowConfirmer{}, nil, nil)
	defer s.Close()
	ctx := context.Background()

	var wg sync.WaitGroup
	var sold atomic.Int64
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := s.Buy(ctx, "crowd", fmt.Sprint("u", i)); err == nil {
				sold.Add(1)
			}
		}(i)
	}
	wg.Wait()
	if n := loads.calls.Load(); n != 1 || sold.Load() != 200 {
		t.Fatalf("200 first buys: %d sale loads (want 1), %d sold (want 200)", n, sold.Load())
	}

	loads.calls.Store(0)
	loads.most.Store(0)
	var notFound atomic.Int64
	errs := make(chan error, 200)
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.Buy(ctx, fmt.Sprint("nosuch", i), "u")
			switch {
			case errors.Is(err, ErrNoSale):
				notFound.Add(1)
			case !errors.Is(err, stock.ErrLoadBusy): // overloaded: a slow machine's wait for a slot
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("buy of an unknown sale: %v, want not found (or overloaded)", err)
	}
	if m := loads.most.Load(); m > stock.LoadsInFlight || m < 2 {
		t.Fatalf("%d sale loads ran at once for unknown sales, want 2..%d", m, stock.LoadsInFlight)
	}
	if notFound.Load() < 100 {
		t.Fatalf("only %d of 200 buys of unknown sales answered not found", notFound.Load())
	}
	if n := len(s.sales.Values()); n != 1 {
		t.Fatalf("the node keeps state for %d sales, want only the real one", n)
	}
	if b := truthBooks(t, rdb, "crowd"); b.Pending != 200 || b.Remaining != 800 {
		t.Fatalf("books %+v after the flood, want 200 pending, 800 left", b)
	}
}

// Invariant: Undo gives the local share a unit back only when the undone
// buy took one from it: a keyed buy of a dry share sold from Redis alone,
// and undoing it must not leave the node believing it holds a unit.
func TestUndoCreditsOnlyAHeldUnit(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	if err := CreateSale(ctx, rdb, flashsale.Sale{ID: "ud", Stock: 100, PerUserLimit: 1, PayTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	// Four live nodes: this one's share is about a quarter of the stock,
	// and an hour between reloads keeps it dry once drained.
	s := NewSeller(SellerConfig{Node: "n", RefreshInterval: time.Hour, Coalescer: stock.CoalescerConfig{MaxBatch: 16, Flushers: 1, QueueSize: 64}},
		rdb, &slowConfirmer{}, fixedMembers(4), nil)
	defer s.Close()
	deadline := func() time.Time { return time.Now().Add(time.Minute) }

	r, err := s.BuyKeyed(ctx, "ud", "held", "k-held", deadline())
	if err != nil {
		t.Fatal(err)
	}
	st, _ := s.sales.Get("ud")
	before := st.share.Left()
	s.Undo(r)
	if got := st.share.Left(); got != before+1 {
		t.Fatalf("undo of a buy that held a unit: share %d, want %d", got, before+1)
	}

	for i := 0; st.share.Left() > 0; i++ {
		if _, err := s.Buy(ctx, "ud", fmt.Sprint("u", i)); err != nil {
			t.Fatalf("drain the share: %v", err)
		}
	}
	if b := truthBooks(t, rdb, "ud"); b.Remaining == 0 {
		t.Fatalf("books %+v: the share took the whole stock; the test needs units left in Redis", b)
	}
	r, err = s.BuyKeyed(ctx, "ud", "dry", "k-dry", deadline())
	if err != nil {
		t.Fatalf("keyed buy of a dry share with units in Redis: %v", err)
	}
	s.Undo(r)
	if got := st.share.Left(); got != 0 {
		t.Fatalf("undo of a buy that held no unit: share %d, want 0", got)
	}
	if b := truthBooks(t, rdb, "ud"); b.Aborted != 2 {
		t.Fatalf("books %+v: want both undone orders aborted", b)
	}
}
