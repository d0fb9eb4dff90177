package stock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

// slowConfirmer confirms everything, after running hook (the seam where a
// slow or frozen Kafka produce sits).
type slowConfirmer struct{ hook func(rs []Reservation) }

func (c *slowConfirmer) Confirm(_ context.Context, rs []Reservation, _ []error) {
	if c.hook != nil {
		c.hook(rs)
	}
}

func truthSale(t *testing.T, rdb *redis.Client, id string, stock int64, pay time.Duration) {
	t.Helper()
	if err := CreateSale(context.Background(), rdb, flashsale.Sale{ID: id, Stock: stock, PerUserLimit: 1, PayTimeout: pay}); err != nil {
		t.Fatal(err)
	}
}

func truthBooks(t *testing.T, rdb *redis.Client, id string) flashsale.Books {
	t.Helper()
	_, b, err := LoadSale(context.Background(), rdb, id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func oneFlusher(c Confirmer, rdb *redis.Client) *Seller {
	return NewSeller(SellerConfig{Node: "n", Coalescer: CoalescerConfig{MaxBatch: 16, Flushers: 1, QueueSize: 64}}, rdb, c, nil, nil)
}

// Invariant: a buyer whose request deadline passes while it waits for a
// batch is answered ErrDeadline and never reaches Redis.
func TestDeadlinePassedBeforeBatchIsNotSent(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "d1", 10, time.Minute)
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	s := oneFlusher(&slowConfirmer{hook: func([]Reservation) {
		once.Do(func() { close(entered); <-release })
	}}, rdb)
	defer s.Close()
	ctx := context.Background()
	first := make(chan error, 1)
	go func() { _, err := s.Buy(ctx, "d1", "first"); first <- err }()
	<-entered // the only flusher is now stuck confirming "first"
	second := make(chan error, 1)
	go func() {
		_, err := s.BuyKeyed(ctx, "d1", "second", "", time.Now().Add(50*time.Millisecond))
		second <- err
	}()
	time.Sleep(150 * time.Millisecond) // "second" queues past its deadline
	close(release)
	if err := <-first; err != nil {
		t.Fatalf("first buyer: %v", err)
	}
	if err := <-second; !errors.Is(err, ErrDeadline) {
		t.Fatalf("second buyer: %v, want ErrDeadline", err)
	}
	if b := truthBooks(t, rdb, "d1"); b.Pending != 1 || b.Aborted != 0 || b.Remaining != 9 {
		t.Fatalf("books %+v: want only the first buyer's order, the second never sent", b)
	}
}

// Invariant: when the script ran but the answer would come after the
// request deadline, after the pay deadline, or after the client left, the
// buyer hears ErrDeadline and the order is undone (aborted): no unit is held
// for a buyer told no.
func TestLateAnswerIsUndone(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	for _, tc := range []struct {
		name  string
		pay   time.Duration
		limit time.Duration // request deadline from now
		delay time.Duration // how long the confirm takes
		leave bool          // the client goes away during the confirm
	}{
		{name: "request deadline", pay: time.Minute, limit: 100 * time.Millisecond, delay: 250 * time.Millisecond},
		{name: "pay deadline", pay: time.Second, limit: time.Minute, delay: 1100 * time.Millisecond},
		{name: "client left", pay: time.Minute, limit: time.Minute, leave: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "late" + string(rune('a'+len(tc.name)%26))
			truthSale(t, rdb, id, 5, tc.pay)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var calls atomic.Int64
			s := oneFlusher(&slowConfirmer{hook: func([]Reservation) {
				if calls.Add(1) > 1 {
					return // the buy again below is answered in time
				}
				if tc.leave {
					cancel()
				}
				time.Sleep(tc.delay)
			}}, rdb)
			defer s.Close()
			r, err := s.BuyKeyed(ctx, id, "u", "", time.Now().Add(tc.limit))
			if !errors.Is(err, ErrDeadline) || r.Order <= 0 {
				t.Fatalf("late answer: order %d err %v, want ErrDeadline naming the undone order", r.Order, err)
			}
			if b := truthBooks(t, rdb, id); b.Pending != 0 || b.Aborted != 1 || b.Remaining != 5 {
				t.Fatalf("books %+v: want the order aborted and its unit back", b)
			}
			// Nothing is held: the same buyer may buy again at once.
			if _, err := s.Buy(context.Background(), id, "u"); err != nil {
				t.Fatalf("buy again after an undone late answer: %v", err)
			}
		})
	}
}

// Invariant: a retry with the same Idempotency-Key by the same buyer gets
// the first order back (never a second order, never limit_reached); another
// key is a new attempt; a key whose order was undone buys anew.
func TestIdempotentBuy(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "i1", 10, time.Minute)
	s := oneFlusher(&slowConfirmer{}, rdb)
	defer s.Close()
	ctx := context.Background()
	first, err := s.BuyKeyed(ctx, "i1", "u", "k-1", time.Time{})
	if err != nil || first.Repeat {
		t.Fatalf("first attempt: %+v %v", first, err)
	}
	for i := 0; i < 3; i++ {
		again, err := s.BuyKeyed(ctx, "i1", "u", "k-1", time.Time{})
		if err != nil || !again.Repeat || again.Order != first.Order || again.DeadlineMs != first.DeadlineMs {
			t.Fatalf("retry %d: %+v %v, want order %d again", i, again, err, first.Order)
		}
	}
	if _, err := s.BuyKeyed(ctx, "i1", "u", "k-2", time.Time{}); !errors.Is(err, ErrLimit) {
		t.Fatalf("another key of a buyer at the limit: %v, want ErrLimit", err)
	}
	// The same key of another buyer is that buyer's own attempt.
	other, err := s.BuyKeyed(ctx, "i1", "v", "k-1", time.Time{})
	if err != nil || other.Repeat || other.Order == first.Order {
		t.Fatalf("same key, other buyer: %+v %v", other, err)
	}
	// Concurrent repeats in one batch: one order.
	var wg sync.WaitGroup
	orders := make([]int64, 8)
	for i := range orders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.BuyKeyed(ctx, "i1", "w", "k-9", time.Time{})
			if err != nil {
				t.Errorf("concurrent retry: %v", err)
			}
			orders[i] = r.Order
		}()
	}
	wg.Wait()
	for _, o := range orders {
		if o != orders[0] {
			t.Fatalf("concurrent attempts with one key got orders %v", orders)
		}
	}
	if b := truthBooks(t, rdb, "i1"); b.Pending != 3 || b.Remaining != 7 {
		t.Fatalf("books %+v: want 3 orders (u, v, w)", b)
	}
	// A cancelled order's key buys anew.
	if _, _, err := lua.Settle(ctx, rdb, "i1", lua.Cancel, []int64{first.Order}); err != nil {
		t.Fatal(err)
	}
	anew, err := s.BuyKeyed(ctx, "i1", "u", "k-1", time.Time{})
	if err != nil || anew.Repeat || anew.Order == first.Order {
		t.Fatalf("key of a cancelled order: %+v %v, want a new order", anew, err)
	}
	nums, recs, err := lua.UserOrders(ctx, rdb, "i1", "u")
	if err != nil || len(nums) != 1 || nums[0] != anew.Order || recs[0].Status != lua.StatusPending {
		t.Fatalf("live orders of u: %v %v %v, want only %d", nums, recs, err, anew.Order)
	}
}

// Invariant: a retry on another node that is answered with the first
// attempt's order claims it, so the first attempt's late abort (its node was
// frozen past the deadline) cannot take back an order a buyer was told of;
// and a retry that comes after that abort buys anew.
func TestRepeatClaimBeatsLateAbort(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "c1", 10, time.Minute)
	ctx := context.Background()
	entered := make(chan struct{})
	release := make(chan struct{})
	frozen := oneFlusher(&slowConfirmer{hook: func([]Reservation) { close(entered); <-release }}, rdb)
	defer frozen.Close()
	other := oneFlusher(&slowConfirmer{}, rdb)
	defer other.Close()

	firstErr := make(chan error, 1)
	var first Reservation
	go func() {
		var err error
		first, err = frozen.BuyKeyed(ctx, "c1", "u", "key", time.Now().Add(100*time.Millisecond))
		firstErr <- err
	}()
	<-entered // the script ran; the node is "frozen" before its answer
	retry, err := other.BuyKeyed(ctx, "c1", "u", "key", time.Now().Add(time.Second))
	if err != nil || !retry.Repeat {
		t.Fatalf("retry on the other node: %+v %v, want the first order", retry, err)
	}
	time.Sleep(150 * time.Millisecond) // past the first attempt's deadline
	close(release)
	if err := <-firstErr; !errors.Is(err, ErrDeadline) || first.Order != retry.Order {
		t.Fatalf("first attempt: order %d err %v, want ErrDeadline for order %d", first.Order, err, retry.Order)
	}
	if b := truthBooks(t, rdb, "c1"); b.Pending != 1 || b.Aborted != 0 {
		t.Fatalf("books %+v: the order told to the retry must stay", b)
	}

	// Without a retry in between, the late abort wins and the key buys anew.
	entered2 := make(chan struct{})
	frozen2 := oneFlusher(&slowConfirmer{hook: func([]Reservation) { close(entered2); time.Sleep(150 * time.Millisecond) }}, rdb)
	defer frozen2.Close()
	r, err := frozen2.BuyKeyed(ctx, "c1", "v", "key", time.Now().Add(100*time.Millisecond))
	if !errors.Is(err, ErrDeadline) {
		t.Fatalf("late first attempt of v: %v", err)
	}
	again, err := other.BuyKeyed(ctx, "c1", "v", "key", time.Time{})
	if err != nil || again.Repeat || again.Order == r.Order {
		t.Fatalf("retry after the abort: %+v %v, want a new order", again, err)
	}
	if b := truthBooks(t, rdb, "c1"); b.Pending != 2 || b.Aborted != 1 || b.Remaining != 8 {
		t.Fatalf("books %+v", b)
	}
}

// recordingConfirmer fails its first call after running hook (a frozen
// node's produce that times out) and records every reservation confirmed
// later.
type recordingConfirmer struct {
	hook  func()
	calls atomic.Int64
	mu    sync.Mutex
	got   []Reservation
}

func (c *recordingConfirmer) Confirm(_ context.Context, rs []Reservation, errs []error) {
	if c.calls.Add(1) == 1 {
		c.hook()
		for i := range errs {
			errs[i] = errors.New("produce timed out")
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, rs...)
}

// Invariant: an order whose first Confirm failed but which a repeat of its
// Idempotency-Key was answered with on another node meanwhile (claimed) is
// kept by the abort and still gets its order.created, exactly once.
func TestClaimedOrderIsConfirmedAfterAFailedPublish(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "c2", 10, time.Minute)
	ctx := context.Background()
	other := oneFlusher(&slowConfirmer{}, rdb)
	defer other.Close()
	var retry Reservation
	rc := &recordingConfirmer{hook: func() {
		var err error
		if retry, err = other.BuyKeyed(ctx, "c2", "u", "key", time.Now().Add(time.Second)); err != nil || !retry.Repeat {
			t.Errorf("retry on the other node: %+v %v, want the first order", retry, err)
		}
	}}
	frozen := oneFlusher(rc, rdb)
	defer frozen.Close()
	first, err := frozen.BuyKeyed(ctx, "c2", "u", "key", time.Now().Add(time.Second))
	if !errors.Is(err, ErrNotDurable) {
		t.Fatalf("first attempt: %+v %v, want ErrNotDurable", first, err)
	}
	if b := truthBooks(t, rdb, "c2"); b.Pending != 1 || b.Aborted != 0 || b.Remaining != 9 {
		t.Fatalf("books %+v: the order told to the retry must stay", b)
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(rc.got) != 1 || rc.got[0].Order != retry.Order || rc.got[0].UserID != "u" {
		t.Fatalf("confirmed after the failed publish: %+v, want order %d once", rc.got, retry.Order)
	}
}
