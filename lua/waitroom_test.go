package lua_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
)

// Invariant: a waiting-room ticket buys at most one order that stands —
// across batches and inside one batch — a refusal (used ticket, sold out,
// limit) marks nothing and takes nothing, and only an aborted order (its
// buyer was told no) frees its ticket again.
func TestTicketBuysOnce(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	newSale(t, rdb, "tk", 3, 5, time.Minute)
	buy := func(users []string, keys []string, tickets []int64) []int64 {
		t.Helper()
		r, err := lua.BuyTicketed(ctx, rdb, "tk", "n1", newBatch(), users, keys, tickets, nil)
		if err != nil || r.SaleCode != 0 {
			t.Fatalf("buy: %+v %v", r, err)
		}
		return r.Results
	}
	// One batch: ticket 7 twice (the second is refused), ticket 8 once, a
	// buyer without a ticket (tickets are per buyer).
	if got, want := buy([]string{"a", "a", "b", "c"}, nil, []int64{7, 7, 8, 0}), []int64{1, lua.BuyTicketUsed, 2, 3}; !slices.Equal(got, want) {
		t.Fatalf("first batch %v, want %v", got, want)
	}
	b := books(t, rdb, "tk")
	if b["remaining"] != "0" || b["pending"] != "3" {
		t.Fatalf("books %v", b)
	}
	// A later batch: ticket 7 is used (refused before the stock: the
	// answer is about the ticket), ticket 9 is fresh but the sale is out.
	if got, want := buy([]string{"a", "d"}, nil, []int64{7, 9}), []int64{lua.BuyTicketUsed, lua.BuySoldOut}; !slices.Equal(got, want) {
		t.Fatalf("second batch %v, want %v", got, want)
	}
	used, err := rdb.HGetAll(ctx, lua.RoomKeysFor("tk").Used).Result()
	if err != nil || len(used) != 2 || used["7"] != "1" || used["8"] != "2" {
		t.Fatalf("used tickets %v (%v), want 7->1 8->2 only", used, err)
	}
	if b2 := books(t, rdb, "tk"); b2["remaining"] != "0" || b2["pending"] != "3" || b2["seq"] != "3" {
		t.Fatalf("refusals changed the books: %v", b2)
	}
	// Order 2 (ticket 8) is aborted: its buyer heard no, so the ticket
	// may buy again. Order 1 (ticket 7) is cancelled: the buyer had it and
	// gave it up, so the ticket stays used and the unit goes to the line.
	if _, res, err := lua.Settle(ctx, rdb, "tk", lua.Abort, []int64{2}); err != nil || res[0].Code != lua.SettleDone {
		t.Fatalf("abort: %+v %v", res, err)
	}
	if _, res, err := lua.Settle(ctx, rdb, "tk", lua.Cancel, []int64{1}); err != nil || res[0].Code != lua.SettleDone {
		t.Fatalf("cancel: %+v %v", res, err)
	}
	if got, want := buy([]string{"a", "b"}, nil, []int64{7, 8}), []int64{lua.BuyTicketUsed, 4}; !slices.Equal(got, want) {
		t.Fatalf("after abort and cancel %v, want %v", got, want)
	}
	// A repeat of an Idempotency-Key is answered with its order even though
	// the ticket is now used: a retry never buys twice and never hears no.
	if got := buy([]string{"e"}, []string{"k1"}, []int64{10}); got[0] != 5 {
		t.Fatalf("keyed buy %v", got)
	}
	r, err := lua.BuyTicketed(ctx, rdb, "tk", "n1", newBatch(), []string{"e"}, []string{"k1"}, []int64{10}, nil)
	if err != nil || len(r.Repeats) != 1 || r.Results[0] != 5 {
		t.Fatalf("repeat: %+v %v", r, err)
	}
}
