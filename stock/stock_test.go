package stock

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
)

// Invariant: concurrent takers never take more units than the share holds.
func TestShareNeverOvergives(t *testing.T) {
	s := NewShare(1000)
	var taken atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if s.TryTake() {
					taken.Add(1)
					if i%10 == 0 {
						s.Give(1)
						taken.Add(-1)
					}
				}
			}
		}()
	}
	wg.Wait()
	if taken.Load()+s.Left() != 1000 {
		t.Fatalf("taken %d + left %d != 1000", taken.Load(), s.Left())
	}
}

// Invariant: every request gets its own result, batches respect MaxBatch,
// and a full queue is refused at once.
func TestCoalescer(t *testing.T) {
	var maxSeen atomic.Int64
	c := NewCoalescer(CoalescerConfig{MaxBatch: 8, Flushers: 2, QueueSize: 64}, func(reqs []int, res []int) {
		if n := int64(len(reqs)); n > maxSeen.Load() {
			maxSeen.Store(n)
		}
		time.Sleep(time.Millisecond)
		for i, r := range reqs {
			res[i] = r * 2
		}
	})
	var wg sync.WaitGroup
	var refused atomic.Int64
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r, ok := c.Do(g)
			if !ok {
				refused.Add(1)
				return
			}
			if r != g*2 {
				t.Errorf("Do(%d) = %d", g, r)
			}
		}(g)
	}
	wg.Wait()
	c.Close()
	if maxSeen.Load() > 8 || maxSeen.Load() < 2 {
		t.Fatalf("largest batch %d: want coalescing within MaxBatch 8", maxSeen.Load())
	}
	if _, ok := c.Do(1); ok {
		t.Fatal("Do after Close succeeded")
	}
	t.Logf("refused %d of 200 with a queue of 64", refused.Load())
}

func TestCoalescerLingerFillsBatches(t *testing.T) {
	var batches atomic.Int64
	c := NewCoalescer(CoalescerConfig{MaxBatch: 100, Flushers: 1, QueueSize: 100, Linger: 50 * time.Millisecond},
		func(reqs []int, res []int) { batches.Add(1) })
	defer c.Close()
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() { defer wg.Done(); c.Do(1) }()
	}
	wg.Wait()
	if batches.Load() > 3 {
		t.Fatalf("%d batches for 20 requests inside one linger window", batches.Load())
	}
}

// failingConfirmer refuses every other reservation: the seam where Kafka
// would fail.
type failingConfirmer struct{ calls atomic.Int64 }

func (f *failingConfirmer) Confirm(_ context.Context, rs []Reservation, errs []error) {
	for i := range rs {
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
	s := NewSeller(SellerConfig{Node: "n", Coalescer: CoalescerConfig{MaxBatch: 16, Flushers: 2, QueueSize: 256}},
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
	s := NewSeller(SellerConfig{Node: "n", RefreshInterval: time.Hour, Coalescer: CoalescerConfig{MaxBatch: 16, Flushers: 1, QueueSize: 64}},
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

// Buyers who arrive while a reload is running get the reloaded units, not a
// false "sold out".
func TestRefillWaitersShareTheReload(t *testing.T) {
	release := make(chan struct{})
	r := NewRefill(0, time.Nanosecond, func(ctx context.Context) (int64, bool, error) {
		<-release
		return 10, false, nil
	})
	time.Sleep(time.Millisecond)
	var got atomic.Int64
	var wg sync.WaitGroup
	started := make(chan struct{}, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			if ok, _ := r.Take(context.Background()); ok {
				got.Add(1)
			}
		}()
	}
	for i := 0; i < 10; i++ {
		<-started
	}
	time.Sleep(50 * time.Millisecond) // let every buyer find the reload running
	close(release)
	wg.Wait()
	if got.Load() != 10 {
		t.Fatalf("%d of 10 buyers got a unit from a reload of 10", got.Load())
	}
}
