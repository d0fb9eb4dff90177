package lua_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

func newSale(t *testing.T, rdb *redis.Client, id string, stock, limit int64, pay time.Duration) {
	t.Helper()
	ok, err := lua.CreateSale(context.Background(), rdb, id, []any{"name", id, "stock", stock, "price_cents", 100,
		"per_user_limit", limit, "pay_timeout_ms", pay.Milliseconds(), "starts_at_ms", 0, "ends_at_ms", 0})
	if err != nil || !ok {
		t.Fatalf("create sale %s: %v %v", id, ok, err)
	}
}

func books(t *testing.T, rdb *redis.Client, id string) map[string]string {
	t.Helper()
	m, err := rdb.HGetAll(context.Background(), lua.KeysFor(id).Meta).Result()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestCreateSaleNeverResets(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	newSale(t, rdb, "s", 5, 1, time.Minute)
	if _, err := lua.Buy(ctx, rdb, "s", "n1", newBatch(), []string{"u1"}, nil); err != nil {
		t.Fatal(err)
	}
	ok, err := lua.CreateSale(ctx, rdb, "s", []any{"stock", 100})
	if err != nil || ok {
		t.Fatalf("second create: ok=%v err=%v, want false", ok, err)
	}
	if b := books(t, rdb, "s"); b["remaining"] != "4" || b["stock"] != "5" {
		t.Fatalf("live sale changed by a second create: %v", b)
	}
}

// One batch mixing fresh users, repeated users and more buyers than units.
func TestBuyBatchSettlesExactly(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	newSale(t, rdb, "b", 3, 2, time.Minute)
	users := []string{"a", "a", "a", "b", "c", "d", "b"}
	r, err := lua.Buy(context.Background(), rdb, "b", "n1", newBatch(), users, nil)
	if err != nil {
		t.Fatal(err)
	}
	// a:1, a:2, a: limit (2), b:3, c: sold out, d: sold out, b: sold out.
	want := []int64{1, 2, lua.BuyLimit, 3, lua.BuySoldOut, lua.BuySoldOut, lua.BuySoldOut}
	for i := range want {
		if r.Results[i] != want[i] {
			t.Fatalf("results = %v, want %v", r.Results, want)
		}
	}
	b := books(t, rdb, "b")
	if b["remaining"] != "0" || b["pending"] != "3" || b["seq"] != "3" {
		t.Fatalf("books after batch: %v", b)
	}
	held, _ := rdb.HGetAll(context.Background(), lua.KeysFor("b").Users).Result()
	if held["a"] != "1,2" || held["b"] != "3" || held["c"] != "" {
		t.Fatalf("users = %v", held)
	}
	if r.DeadlineMs-r.NowMs != 60_000 {
		t.Fatalf("deadline %d - now %d != pay timeout", r.DeadlineMs, r.NowMs)
	}
}

// The seed's off-by-one sold one unit too many; the last unit goes once.
func TestLastUnitSoldOnce(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	newSale(t, rdb, "l", 1, 1, time.Minute)
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := lua.Buy(context.Background(), rdb, "l", "n1", newBatch(), []string{"u" + string(rune('A'+i))}, nil)
			if err != nil {
				t.Error(err)
				return
			}
			if r.Results[0] > 0 {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if b := books(t, rdb, "l"); won != 1 || b["remaining"] != "0" {
		t.Fatalf("won=%d books=%v, want exactly one sale", won, b)
	}
}

func TestSaleCodes(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	r, err := lua.Buy(ctx, rdb, "nope", "n1", newBatch(), []string{"u"}, nil)
	if err != nil || r.SaleCode != lua.BuyNoSale {
		t.Fatalf("unknown sale: %+v %v", r, err)
	}
	now := time.Now().UnixMilli()
	lua.CreateSale(ctx, rdb, "later", []any{"stock", 5, "per_user_limit", 1, "pay_timeout_ms", 1000, "starts_at_ms", now + 3_600_000, "ends_at_ms", 0})
	lua.CreateSale(ctx, rdb, "over", []any{"stock", 5, "per_user_limit", 1, "pay_timeout_ms", 1000, "starts_at_ms", 0, "ends_at_ms", now - 1000})
	if r, _ := lua.Buy(ctx, rdb, "later", "n1", newBatch(), []string{"u"}, nil); r.SaleCode != lua.BuyNotStarted {
		t.Fatalf("not started: %+v", r)
	}
	if r, _ := lua.Buy(ctx, rdb, "over", "n1", newBatch(), []string{"u"}, nil); r.SaleCode != lua.BuyEnded {
		t.Fatalf("ended: %+v", r)
	}
	if b := books(t, rdb, "later"); b["remaining"] != "5" {
		t.Fatalf("refused buy changed the books: %v", b)
	}
}

func TestSettle(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	newSale(t, rdb, "s", 10, 1, time.Second)
	r, _ := lua.Buy(ctx, rdb, "s", "n1", newBatch(), []string{"a", "b", "c", "d"}, nil)
	a, b, c, d := r.Results[0], r.Results[1], r.Results[2], r.Results[3]

	code := func(action string, n int64) int64 {
		t.Helper()
		_, res, err := lua.Settle(ctx, rdb, "s", action, []int64{n})
		if err != nil {
			t.Fatal(err)
		}
		return res[0].Code
	}
	if got := code(lua.Expire, a); got != lua.SettleNotDue {
		t.Fatalf("expire before deadline = %d, want not due", got)
	}
	if code(lua.Pay, a) != lua.SettleDone || code(lua.Pay, a) != lua.SettleRepeat {
		t.Fatal("pay, pay again")
	}
	if code(lua.Cancel, a) != lua.SettleConflict {
		t.Fatal("cancel a paid order must conflict")
	}
	if code(lua.Cancel, b) != lua.SettleDone || code(lua.Cancel, b) != lua.SettleRepeat || code(lua.Pay, b) != lua.SettleConflict {
		t.Fatal("cancel, cancel again, pay a cancelled order")
	}
	if code(lua.Abort, c) != lua.SettleDone {
		t.Fatal("abort")
	}
	if code(lua.Pay, 999) != lua.SettleNotFound {
		t.Fatal("unknown order")
	}
	time.Sleep(1100 * time.Millisecond)
	if code(lua.Expire, d) != lua.SettleDone || code(lua.Expire, d) != lua.SettleRepeat {
		t.Fatal("expire after deadline, then again (double release)")
	}
	if code(lua.Pay, d) != lua.SettleExpired {
		t.Fatal("pay after expiry")
	}
	m := books(t, rdb, "s")
	// a paid; b cancelled, c aborted, d expired: 3 units back.
	if m["remaining"] != "9" || m["pending"] != "0" || m["paid"] != "1" || m["cancelled"] != "1" ||
		m["aborted"] != "1" || m["expired"] != "1" {
		t.Fatalf("books = %v", m)
	}
	held, _ := rdb.HGetAll(ctx, lua.KeysFor("s").Users).Result()
	if len(held) != 1 || held["a"] != fmt.Sprint(a) {
		t.Fatalf("only the payer keeps a slot: %v", held)
	}
	// The batch's one index entry covers all four orders, with their deadline;
	// settling leaves it for the sweeper.
	idx, _ := rdb.ZRangeWithScores(ctx, lua.KeysFor("s").Deadlines, 0, -1).Result()
	want := fmt.Sprintf("%d-%d", a, d)
	if len(idx) != 1 || idx[0].Member != want || int64(idx[0].Score) != r.DeadlineMs {
		t.Fatalf("deadline index = %v, want one range %s at %d", idx, want, r.DeadlineMs)
	}
}

func TestParseDeadlineRange(t *testing.T) {
	for _, c := range []struct {
		in          string
		first, last int64
		ok          bool
	}{
		{"1-4", 1, 4, true}, {"7-7", 7, 7, true}, {"12", 12, 12, true},
		{"", 0, 0, false}, {"4-1", 0, 0, false}, {"0-3", 0, 0, false}, {"a-b", 0, 0, false},
		{"1-", 0, 0, false}, {"-3", 0, 0, false}, {"1-2-3", 0, 0, false},
	} {
		first, last, err := lua.ParseDeadlineRange(c.in)
		if (err == nil) != c.ok || first != c.first || last != c.last {
			t.Errorf("ParseDeadlineRange(%q) = %d, %d, %v", c.in, first, last, err)
		}
	}
}

// Pay racing expiry at the deadline: exactly one wins, the unit moves once.
func TestPayRacesExpiry(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	for round := 0; round < 5; round++ {
		id := "race" + string(rune('a'+round))
		newSale(t, rdb, id, 1, 1, time.Second)
		r, _ := lua.Buy(ctx, rdb, id, "n1", newBatch(), []string{"u"}, nil)
		n := r.Results[0]
		time.Sleep(time.Until(time.UnixMilli(r.DeadlineMs)))
		var wg sync.WaitGroup
		var pay, exp int64
		wg.Add(2)
		go func() { defer wg.Done(); _, res, _ := lua.Settle(ctx, rdb, id, lua.Pay, []int64{n}); pay = res[0].Code }()
		go func() {
			defer wg.Done()
			for {
				_, res, _ := lua.Settle(ctx, rdb, id, lua.Expire, []int64{n})
				if exp = res[0].Code; exp != lua.SettleNotDue {
					return
				}
			}
		}()
		wg.Wait()
		m := books(t, rdb, id)
		paid, expired := m["paid"] == "1", m["expired"] == "1"
		if paid == expired || m["pending"] != "0" {
			t.Fatalf("round %d: pay=%d expire=%d books=%v: want exactly one winner", round, pay, exp, m)
		}
		if paid && m["remaining"] != "0" || expired && m["remaining"] != "1" {
			t.Fatalf("round %d: unit moved wrongly: %v", round, m)
		}
	}
}

func TestParseRecord(t *testing.T) {
	r, err := lua.ParseRecord("p|123|100|node-1|user|with|bars")
	if err != nil || r.Status != 'p' || r.DeadlineMs != 123 || r.Node != "node-1" || r.User != "user|with|bars" {
		t.Fatalf("%+v %v", r, err)
	}
	for _, bad := range []string{"", "p|x|1|n|u", "pp|1|1|n|u", "p|1|1|n"} {
		if _, err := lua.ParseRecord(bad); err == nil {
			t.Errorf("ParseRecord(%q) accepted", bad)
		}
	}
}

var batchSeq atomic.Int64

func newBatch() string { return fmt.Sprint("test-", batchSeq.Add(1)) }

// A batch whose reply was lost is settled either way: written off before it
// ran (and then it never runs), or undone after it ran.
func TestResolveBatch(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	newSale(t, rdb, "rb", 10, 1, time.Minute)

	// Ran, reply lost: its orders are undone, units and slots come back.
	if _, err := lua.Buy(ctx, rdb, "rb", "n1", "ran", []string{"a", "b"}, nil); err != nil {
		t.Fatal(err)
	}
	orders, kept, err := lua.ResolveBatch(ctx, rdb, "rb", "ran")
	if err != nil || len(orders) != 2 || len(kept) != 0 {
		t.Fatalf("resolve a batch that ran: %v %v %v", orders, kept, err)
	}
	if again, _, err := lua.ResolveBatch(ctx, rdb, "rb", "ran"); err != nil || len(again) != 2 {
		t.Fatalf("resolving twice: %v %v", again, err)
	}
	if b := books(t, rdb, "rb"); b["remaining"] != "10" || b["aborted"] != "2" || b["pending"] != "0" {
		t.Fatalf("books after undoing a batch: %v", b)
	}

	// Ran, reply lost, and the sweeper expired the orders before the node
	// could resolve: resolving relabels them aborted, the units move once.
	if _, err := lua.Buy(ctx, rdb, "rb", "n1", "swept", []string{"d"}, nil); err != nil {
		t.Fatal(err)
	}
	rdb.HSet(ctx, lua.KeysFor("rb").Orders, 3, "p|1|1|n1|d") // deadline long past
	if _, res, err := lua.Settle(ctx, rdb, "rb", lua.Expire, []int64{3}); err != nil || res[0].Code != lua.SettleDone {
		t.Fatalf("sweeper expire: %v %v", res, err)
	}
	if orders, _, err := lua.ResolveBatch(ctx, rdb, "rb", "swept"); err != nil || len(orders) != 1 {
		t.Fatalf("resolve a swept batch: %v %v", orders, err)
	}
	if b := books(t, rdb, "rb"); b["remaining"] != "10" || b["aborted"] != "3" || b["expired"] != "0" {
		t.Fatalf("books after resolving a swept batch: %v", b)
	}

	// Never ran: written off, and the late script does nothing.
	if orders, _, err := lua.ResolveBatch(ctx, rdb, "rb", "late"); err != nil || len(orders) != 0 {
		t.Fatalf("resolve a batch that never ran: %v %v", orders, err)
	}
	r, err := lua.Buy(ctx, rdb, "rb", "n1", "late", []string{"c"}, nil)
	if err != nil || r.SaleCode != lua.BuyVoid {
		t.Fatalf("a written-off batch ran: %+v %v", r, err)
	}
	if b := books(t, rdb, "rb"); b["remaining"] != "10" || b["seq"] != "3" {
		t.Fatalf("books after a late written-off batch: %v", b)
	}
}

// Invariant: resolving a lost batch keeps the order a repeat of its
// Idempotency-Key was told of (claimed), and in the same step leaves that
// order's creation in the outbox, since the batch never reached Kafka; the
// batch's other orders are undone and get no creation entry. A plain Abort
// keeps a claimed order too but writes no creation entry (its event is out).
func TestResolveBatchKeepsClaimedOrderWithItsCreation(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	newSale(t, rdb, "rk", 10, 1, time.Minute)
	batch := newBatch()
	r, err := lua.BuyKeyed(ctx, rdb, "rk", "n1", batch, []string{"a", "b"}, []string{"key-a", "key-b"}, nil)
	if err != nil || r.Results[0] != 1 || r.Results[1] != 2 {
		t.Fatalf("buy: %+v %v", r, err)
	}
	if _, res, err := lua.Settle(ctx, rdb, "rk", lua.Claim, []int64{1}); err != nil || res[0].Code != lua.SettleDone {
		t.Fatalf("claim: %+v %v", res, err)
	}
	undone, kept, err := lua.ResolveBatch(ctx, rdb, "rk", batch)
	if err != nil || len(undone) != 1 || undone[0] != 2 || len(kept) != 1 || kept[0] != 1 {
		t.Fatalf("resolve: undone %v kept %v %v, want 2 undone and 1 kept", undone, kept, err)
	}
	if b := books(t, rdb, "rk"); b["pending"] != "1" || b["aborted"] != "1" || b["remaining"] != "9" {
		t.Fatalf("books %v", b)
	}
	box, err := rdb.HGetAll(ctx, lua.KeysFor("rk").Outbox).Result()
	if err != nil {
		t.Fatal(err)
	}
	created, ok := box[lua.OutboxField(1, lua.StatusPending)]
	if !ok || len(box) != 2 { // the kept order's creation and the other's order.aborted
		t.Fatalf("outbox %v: want order 1's creation and order 2's abort", box)
	}
	e, err := lua.ParseOutboxEntry(lua.OutboxField(1, lua.StatusPending), created)
	if err != nil || e.Record.User != "a" || e.Record.Node != "n1" || e.Record.Status != lua.StatusPending {
		t.Fatalf("creation entry %+v %v", e, err)
	}

	// A plain abort of a claimed order keeps it and writes nothing.
	r, err = lua.BuyKeyed(ctx, rdb, "rk", "n1", newBatch(), []string{"c"}, []string{"key-c"}, nil)
	if err != nil || r.Results[0] != 3 {
		t.Fatalf("buy c: %+v %v", r, err)
	}
	if _, res, err := lua.Settle(ctx, rdb, "rk", lua.Claim, []int64{3}); err != nil || res[0].Code != lua.SettleDone {
		t.Fatalf("claim c: %+v %v", res, err)
	}
	if _, res, err := lua.Settle(ctx, rdb, "rk", lua.Abort, []int64{3}); err != nil || res[0].Code != lua.SettleClaimed {
		t.Fatalf("abort of claimed c: %+v %v", res, err)
	}
	if n, err := rdb.HLen(ctx, lua.KeysFor("rk").Outbox).Result(); err != nil || n != 2 {
		t.Fatalf("outbox has %d entries (%v) after a plain abort of a claimed order, want the 2 of before", n, err)
	}
}

// Invariant: a paid transition is in the sale's outbox with its payment
// id, in the same step as the payment; a sold-out sale whose paid order an
// Idempotency-Key still names (inside its pay window) is not archived —
// a retry must still get the order — and is once the window passed.
func TestPayOutboxAndArchiveWaitsForKeys(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	newSale(t, rdb, "ak", 1, 1, 1500*time.Millisecond)
	r, err := lua.BuyKeyed(ctx, rdb, "ak", "n1", newBatch(), []string{"u"}, []string{"key-1"}, nil)
	if err != nil || r.Results[0] != 1 {
		t.Fatalf("buy: %+v %v", r, err)
	}
	if _, code, _, err := lua.PayOrder(ctx, rdb, "ak", 1, "psp-1", 100); err != nil || code != lua.SettleDone {
		t.Fatalf("pay: %d %v", code, err)
	}
	box, err := rdb.HGetAll(ctx, lua.KeysFor("ak").Outbox).Result()
	if err != nil || len(box) != 1 {
		t.Fatalf("outbox %v (%v): want the paid transition", box, err)
	}
	for f, v := range box {
		e, err := lua.ParseOutboxEntry(f, v)
		if err != nil || e.Order != 1 || e.Record.Status != lua.StatusPaid || e.Payment != "psp-1" {
			t.Fatalf("outbox entry %+v (%v)", e, err)
		}
	}
	rdb.Del(ctx, lua.KeysFor("ak").Outbox) // as once published
	if ok, err := lua.ArchiveSale(ctx, rdb, "ak", 1, time.Now().UnixMilli()); err != nil || ok {
		t.Fatalf("archived inside the key's pay window (%v, %v)", ok, err)
	}
	time.Sleep(1600 * time.Millisecond)
	if ok, err := lua.ArchiveSale(ctx, rdb, "ak", 1, time.Now().UnixMilli()); err != nil || !ok {
		t.Fatalf("not archived after the pay window (%v, %v)", ok, err)
	}
	k := lua.KeysFor("ak")
	if n, _ := rdb.Exists(ctx, k.Orders, k.Users, k.Idem, k.IdemExp, lua.PaymentsKey("ak")).Result(); n != 0 {
		t.Fatalf("%d per-order keys left after archival", n)
	}
}
