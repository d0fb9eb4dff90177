package lua

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed pay.lua
	paySrc    string
	payScript = redis.NewScript(paySrc)
)

// PaymentsKey is the hash of a sale's paid orders: order number -> the
// payment id that paid it (under the sale's hash tag, beside SaleKeys).
func PaymentsKey(sale string) string { return "fs:{sale:" + sale + "}:payments" }

// Codes of PayOrder beyond the settle codes it shares (SettleDone,
// SettleRepeat, SettleNotFound, SettleExpired, SettleConflict).
const (
	PayOtherPayment = -10 // paid before by another payment id: a double charge
	PayWrongAmount  = -11 // the amount is not the sale's price
)

// PayOrder records payment id paying order n of sale for amount cents, as
// pay.lua says: the only path to "paid". It returns the Redis clock of the
// call, the code and the order's record (zero for SettleNotFound). A paid
// transition is also in the sale's outbox (see order.Outbox).
func PayOrder(ctx context.Context, rdb redis.Scripter, sale string, n int64, payment string, amount int64) (nowMs, code int64, rec Record, err error) {
	k := KeysFor(sale)
	v, err := payScript.Run(ctx, rdb, []string{k.Meta, k.Orders, PaymentsKey(sale), k.Outbox}, n, payment, amount).Slice()
	if err != nil {
		return 0, 0, Record{}, fmt.Errorf("pay order %d of sale %q: %w", n, sale, err)
	}
	if len(v) != 3 {
		return 0, 0, Record{}, fmt.Errorf("pay order %d of sale %q: reply %v", n, sale, v)
	}
	nowMs, _ = v[0].(int64)
	code, _ = v[1].(int64)
	if s, _ := v[2].(string); s != "" {
		if rec, err = ParseRecord(s); err != nil {
			return 0, 0, Record{}, fmt.Errorf("pay order %d of sale %q: %w", n, sale, err)
		}
	}
	return nowMs, code, rec, nil
}
