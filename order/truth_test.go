package order

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
)

// slowConfirmer publishes everything, after running hook (the seam where a
// slow or frozen Kafka produce sits).
type slowConfirmer struct{ hook func(msgs []kafkago.Message) }

func (c *slowConfirmer) Publish(_ context.Context, msgs []kafkago.Message, _ []error) {
	if c.hook != nil {
		c.hook(msgs)
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

func oneFlusher(c stock.Publisher, rdb *redis.Client) *Seller {
	return NewSeller(SellerConfig{Node: "n", Coalescer: stock.CoalescerConfig{MaxBatch: 16, Flushers: 1, QueueSize: 64}}, rdb, c, nil, nil)
}

// Invariant: a buyer whose request deadline passes while it waits for a
// batch is answered ErrDeadline and never reaches Redis.
func TestDeadlinePassedBeforeBatchIsNotSent(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "d1", 10, time.Minute)
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	s := oneFlusher(&slowConfirmer{hook: func([]kafkago.Message) {
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
			s := oneFlusher(&slowConfirmer{hook: func([]kafkago.Message) {
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
	frozen := oneFlusher(&slowConfirmer{hook: func([]kafkago.Message) { close(entered); <-release }}, rdb)
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
	frozen2 := oneFlusher(&slowConfirmer{hook: func([]kafkago.Message) { close(entered2); time.Sleep(150 * time.Millisecond) }}, rdb)
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

// recordingPublisher refuses its first Publish (after hook: the seam where
// a frozen node's produce is cut off by the batch's deadline) and records
// every message of the later ones.
type recordingPublisher struct {
	hook  func()
	calls atomic.Int64
	mu    sync.Mutex
	got   []kafkago.Message
}

func (p *recordingPublisher) Publish(_ context.Context, msgs []kafkago.Message, errs []error) {
	if p.calls.Add(1) == 1 {
		p.hook()
		for i := range errs {
			errs[i] = errors.New("deadline passed before the produce")
		}
		return
	}
	p.mu.Lock()
	p.got = append(p.got, msgs...)
	p.mu.Unlock()
}

// Invariant: an order that stands because a repeat on another node was told
// of it has its order.created on Kafka, even when the first attempt's own
// publish failed (its node was frozen past the deadline): its abort is
// refused, and its event is published again.
func TestClaimedOrderIsPublishedAfterAFailedPublish(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "cp", 10, time.Minute)
	ctx := context.Background()
	entered := make(chan struct{})
	release := make(chan struct{})
	pub := &recordingPublisher{hook: func() { close(entered); <-release }}
	frozen := oneFlusher(pub, rdb)
	defer frozen.Close()
	other := oneFlusher(&slowConfirmer{}, rdb)
	defer other.Close()

	firstErr := make(chan error, 1)
	go func() {
		_, err := frozen.BuyKeyed(ctx, "cp", "u", "key", time.Now().Add(100*time.Millisecond))
		firstErr <- err
	}()
	<-entered
	retry, err := other.BuyKeyed(ctx, "cp", "u", "key", time.Now().Add(time.Second))
	if err != nil || !retry.Repeat {
		t.Fatalf("retry on the other node: %+v %v, want the first order", retry, err)
	}
	close(release)
	if err := <-firstErr; !errors.Is(err, ErrNotDurable) {
		t.Fatalf("first attempt: %v, want ErrNotDurable", err)
	}
	if b := truthBooks(t, rdb, "cp"); b.Pending != 1 || b.Aborted != 0 || b.Remaining != 9 {
		t.Fatalf("books %+v: the order told to the retry must stay", b)
	}
	pub.mu.Lock()
	defer pub.mu.Unlock()
	if len(pub.got) != 1 {
		t.Fatalf("%d events published after the failed publish, want the claimed order's one", len(pub.got))
	}
	ev, err := kafka.ParseOrderEvent(pub.got[0].Value)
	if err != nil || ev.OrderID != flashsale.OrderID("cp", retry.Order) || ev.UserID != "u" {
		t.Fatalf("republished event %+v %v, want order %d of u", ev, err, retry.Order)
	}
}

// lostReply is a go-redis hook that runs the first buy script carrying an
// Idempotency-Key and then loses its reply (after hook: the seam where a
// frozen node's read deadline passes with the reply in its socket).
type lostReply struct {
	hook func()
	once sync.Once
}

func (*lostReply) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *lostReply) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		lose := false
		if err == nil && (cmd.Name() == "evalsha" || cmd.Name() == "eval") { // it ran
			for _, a := range cmd.Args() {
				if b, ok := a.([]byte); ok && string(b) == "1:key" { // the script's key argument
					l.once.Do(func() { lose = true })
				}
			}
		}
		if !lose {
			return err
		}
		l.hook()
		err = fmt.Errorf("read tcp: %w", os.ErrDeadlineExceeded)
		cmd.SetErr(err)
		return err
	}
}

func (*lostReply) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Invariant: an order whose batch's reply was lost (so the batch never
// reached Kafka) but which a repeat of its Idempotency-Key on another node
// was told of stands, and its order.created reaches Kafka: resolving the
// batch keeps it (it would otherwise stay on Redis with no event, its buyer
// told 201), and the outbox entry left by that step is published.
func TestClaimedOrderOfALostBatchIsPublished(t *testing.T) {
	srv := testenv.StartRedis(t, false)
	rdb := srv.Client(t)
	truthSale(t, rdb, "lb", 10, time.Minute)
	ctx := context.Background()
	entered := make(chan struct{})
	release := make(chan struct{})
	lost := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr})
	defer lost.Close()
	lost.AddHook(&lostReply{hook: func() { close(entered); <-release }})
	pub := &recordingPublisher{hook: func() {}}
	pub.calls.Store(1) // records every publish
	frozen := oneFlusher(pub, lost)
	defer frozen.Close()
	var released sync.Once
	defer released.Do(func() { close(release) }) // before Close, on any failure
	other := oneFlusher(&slowConfirmer{}, rdb)
	defer other.Close()

	firstErr := make(chan error, 1)
	go func() {
		_, err := frozen.BuyKeyed(ctx, "lb", "u", "key", time.Now().Add(time.Second))
		firstErr <- err
	}()
	<-entered // the script ran; its reply is about to be lost
	retry, err := other.BuyKeyed(ctx, "lb", "u", "key", time.Now().Add(time.Second))
	if err != nil || !retry.Repeat {
		t.Fatalf("retry on the other node: %+v %v, want the first order", retry, err)
	}
	released.Do(func() { close(release) })
	if err := <-firstErr; !errors.Is(err, ErrRedis) {
		t.Fatalf("first attempt: %v, want ErrRedis (reply lost)", err)
	}
	var got []kafkago.Message
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		pub.mu.Lock()
		got = append(got[:0], pub.got...)
		pub.mu.Unlock()
		if len(got) > 0 {
			break
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d events published for the lost batch, want the claimed order's order.created", len(got))
	}
	ev, err := kafka.ParseOrderEvent(got[0].Value)
	if err != nil || ev.Type != kafka.TypeOrderCreated || ev.OrderID != flashsale.OrderID("lb", retry.Order) || ev.UserID != "u" {
		t.Fatalf("event %+v %v, want order.created of order %d of u", ev, err, retry.Order)
	}
	if b := truthBooks(t, rdb, "lb"); b.Pending != 1 || b.Aborted != 0 || b.Remaining != 9 {
		t.Fatalf("books %+v: the order told to the retry must stay", b)
	}
	// Published and acknowledged: nothing is left for the sweeper's drain.
	for end := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		n, err := rdb.HLen(ctx, lua.KeysFor("lb").Outbox).Result()
		if err == nil && n == 0 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("outbox holds %d entries (%v) after the creation was published", n, err)
		}
	}
}

// Invariant: a kept order's creation that could not be published at once
// stays in the outbox, and the sweeper's Drain publishes it as an
// order.created (not as a transition), then forgets it.
func TestKeptCreationWaitsInTheOutboxForDrain(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "kd", 10, time.Minute)
	ctx := context.Background()
	r, err := lua.BuyKeyed(ctx, rdb, "kd", "n1", "b1", []string{"u"}, []string{"key"}, nil)
	if err != nil || r.Results[0] != 1 {
		t.Fatalf("buy: %+v %v", r, err)
	}
	if _, res, err := lua.Settle(ctx, rdb, "kd", lua.Claim, []int64{1}); err != nil || res[0].Code != lua.SettleDone {
		t.Fatalf("claim: %+v %v", res, err)
	}
	if _, kept, err := lua.ResolveBatch(ctx, rdb, "kd", "b1"); err != nil || len(kept) != 1 {
		t.Fatalf("resolve: kept %v %v", kept, err)
	}
	// The publisher refuses its first publish: the announce fails.
	NewOutbox(rdb, &recordingPublisher{hook: func() {}}, time.Second, 0, nil).AnnounceKept(ctx, "kd", []int64{1})
	if n, err := rdb.HLen(ctx, lua.KeysFor("kd").Outbox).Result(); err != nil || n != 1 {
		t.Fatalf("outbox holds %d entries (%v) after a failed announce, want the creation", n, err)
	}
	pub := &recordingPublisher{}
	pub.calls.Store(1) // records every publish
	if n, err := NewOutbox(rdb, pub, time.Second, 0, nil).Drain(ctx, "kd"); err != nil || n != 1 {
		t.Fatalf("drain published %d (%v), want 1", n, err)
	}
	ev, err := kafka.ParseOrderEvent(pub.got[0].Value)
	if err != nil || ev.Type != kafka.TypeOrderCreated || ev.OrderID != flashsale.OrderID("kd", 1) || ev.UserID != "u" ||
		ev.Node != "n1" || ev.DeadlineMs == 0 {
		t.Fatalf("drained event %+v %v, want order.created of order 1 of u", ev, err)
	}
	if n, err := rdb.HLen(ctx, lua.KeysFor("kd").Outbox).Result(); err != nil || n != 0 {
		t.Fatalf("outbox holds %d entries (%v) after the drain", n, err)
	}
}

// failAborts is a go-redis hook that fails every abort while down is set
// (the seam where Redis goes away between a buy and its abort).
type failAborts struct{ down atomic.Bool }

func (*failAborts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f *failAborts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if f.down.Load() {
			for _, a := range cmd.Args() {
				if a == lua.Abort || a == lua.AbortUnsent {
					err := errors.New("connection refused")
					cmd.SetErr(err)
					return err
				}
			}
		}
		return next(ctx, cmd)
	}
}

func (*failAborts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Invariant: a buyer told 503 is not left holding an order because the
// abort itself failed (Redis gone for a moment): the abort is retried in the
// background, and once Redis answers the unit and the limit slot are back,
// long before the order's pay deadline.
func TestFailedAbortIsRetried(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	truthSale(t, rdb, "fa", 10, time.Hour)
	hook := &failAborts{}
	hook.down.Store(true)
	flaky := redis.NewClient(&redis.Options{Addr: rdb.Options().Addr})
	defer flaky.Close()
	flaky.AddHook(hook)
	s := oneFlusher(&recordingPublisher{hook: func() {}}, flaky) // refuses the batch's publish
	defer s.Close()
	if _, err := s.Buy(context.Background(), "fa", "u"); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("buy: %v, want ErrNotDurable", err)
	}
	if b := truthBooks(t, rdb, "fa"); b.Pending != 1 {
		t.Fatalf("books %+v: the abort was to fail, leaving the order pending", b)
	}
	hook.down.Store(false)
	for end := time.Now().Add(3 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b := truthBooks(t, rdb, "fa")
		if b.Pending == 0 && b.Aborted == 1 && b.Remaining == 10 {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("books %+v 3 s after Redis came back: the failed abort was not retried", b)
		}
	}
	if held, err := rdb.HGet(context.Background(), lua.KeysFor("fa").Users, "u").Result(); err != redis.Nil {
		t.Fatalf("user u still holds %q (%v) after the retried abort", held, err)
	}
}

func TestAbortJobRoundTrips(t *testing.T) {
	for _, c := range []struct {
		action string
		orders []int64
	}{{lua.Abort, []int64{1}}, {lua.AbortUnsent, []int64{7, 12, 9000000000}}} {
		action, orders, ok := parseAbortJob(abortJob(c.action, c.orders))
		if !ok || action != c.action || !slices.Equal(orders, c.orders) {
			t.Fatalf("round trip of %v: %q %v %v", c, action, orders, ok)
		}
	}
	for _, batch := range []string{stock.NewBatchID("node-1"), "", "|", "|abort|", "|pay|1", "|abort|1,x", "|abort|0"} {
		if _, _, ok := parseAbortJob(batch); ok {
			t.Fatalf("%q read as an abort job", batch)
		}
	}
}
