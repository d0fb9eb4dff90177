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
