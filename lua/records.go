package lua

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// This file reads and writes the records the scripts keep (a sale's,
// an envelope's, a campaign's meta hash) as typed values, so no other
// package spells a Redis field name: the schema is in this room only.

// intField reads field f of a hash read whole (0 when missing or not a
// number).
func intField(m map[string]string, f string) int64 {
	v, _ := strconv.ParseInt(m[f], 10, 64)
	return v
}

// SaleRecord is a sale's meta hash (SaleKeys.Meta): its settings (times in
// unix ms, 0 when unset; RoomAdmitPerSec 0: no waiting room) and its books.
type SaleRecord struct {
	Name                                   string
	Stock, PriceCents, PerUserLimit        int64
	PayTimeoutMs, StartsMs, EndsMs         int64
	RoomAdmitPerSec, RoomPreQueueMs        int64
	Remaining, Pending, Paid               int64
	Expired, Cancelled, Aborted, OrdersSeq int64
}

// CreateSaleRecord stores a new sale with r's settings (the books start
// from r.Stock in the script). It reports false when the sale exists.
func CreateSaleRecord(ctx context.Context, rdb redis.Scripter, id string, r SaleRecord) (bool, error) {
	return CreateSale(ctx, rdb, id, []any{
		"name", r.Name, "stock", r.Stock, "price_cents", r.PriceCents,
		"per_user_limit", r.PerUserLimit, "pay_timeout_ms", r.PayTimeoutMs,
		"starts_at_ms", r.StartsMs, "ends_at_ms", r.EndsMs,
		FieldRoomAdmitPerSec, r.RoomAdmitPerSec, FieldRoomPreQueueMs, r.RoomPreQueueMs,
	})
}

// ReadSale reads sale id's record; found is false when there is no such
// sale.
func ReadSale(ctx context.Context, rdb redis.Cmdable, id string) (r SaleRecord, found bool, err error) {
	m, err := rdb.HGetAll(ctx, KeysFor(id).Meta).Result()
	if err != nil {
		return SaleRecord{}, false, fmt.Errorf("read sale %q: %w", id, err)
	}
	if len(m) == 0 {
		return SaleRecord{}, false, nil
	}
	n := func(f string) int64 { return intField(m, f) }
	return SaleRecord{Name: m["name"], Stock: n("stock"), PriceCents: n("price_cents"), PerUserLimit: n("per_user_limit"),
		PayTimeoutMs: n("pay_timeout_ms"), StartsMs: n("starts_at_ms"), EndsMs: n("ends_at_ms"),
		RoomAdmitPerSec: n(FieldRoomAdmitPerSec), RoomPreQueueMs: n(FieldRoomPreQueueMs),
		Remaining: n("remaining"), Pending: n("pending"), Paid: n("paid"), Expired: n("expired"),
		Cancelled: n("cancelled"), Aborted: n("aborted"), OrdersSeq: n("seq")}, true, nil
}

// Envelope states (EnvRecord.State).
const (
	EnvStateOpen     = "open"
	EnvStateRefunded = "refunded"
)

// EnvRecord is an envelope's meta hash (EnvelopeKeys.Meta): who sent what,
// its clock (unix ms) and its books.
type EnvRecord struct {
	Sender                               string
	TotalCents, Count                    int64
	State                                string // EnvOpen or EnvRefunded
	CreatedMs, ExpiresMs, RefundedMs     int64
	Opened, OpenedCents, Left, LeftCents int64
	RefundedCents, Undone                int64
	RefundPublished                      bool // envelope.refunded is on Kafka
}

func parseEnvRecord(m map[string]string) EnvRecord {
	n := func(f string) int64 { return intField(m, f) }
	_, published := m["refund_published"]
	return EnvRecord{Sender: m["sender"], TotalCents: n("total"), Count: n("count"), State: m["state"],
		CreatedMs: n("created_ms"), ExpiresMs: n("expires_at_ms"), RefundedMs: n("refunded_ms"),
		Opened: n("opened"), OpenedCents: n("opened_cents"), Left: n("left"), LeftCents: n("left_cents"),
		RefundedCents: n("refunded_cents"), Undone: n("undone"), RefundPublished: published}
}

// EnvelopeRead is an envelope read whole in one round trip: its record, its
// opens (user id -> open record "amount|opened_ms|node|seq") and, when
// asked, its unopened shares in cents as stored.
type EnvelopeRead struct {
	EnvRecord
	Opens  map[string]string
	Shares []string
}

// ReadEnvelope reads envelope id (with its unopened shares when shares is
// true); found is false when there is no such envelope.
func ReadEnvelope(ctx context.Context, rdb redis.Cmdable, id string, shares bool) (e EnvelopeRead, found bool, err error) {
	k := EnvelopeKeysFor(id)
	pipe := rdb.Pipeline()
	meta := pipe.HGetAll(ctx, k.Meta)
	opened := pipe.HGetAll(ctx, k.Opened)
	var list *redis.StringSliceCmd
	if shares {
		list = pipe.LRange(ctx, k.Shares, 0, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return EnvelopeRead{}, false, fmt.Errorf("read envelope %q: %w", id, err)
	}
	if len(meta.Val()) == 0 {
		return EnvelopeRead{}, false, nil
	}
	e = EnvelopeRead{EnvRecord: parseEnvRecord(meta.Val()), Opens: opened.Val()}
	if list != nil {
		e.Shares = list.Val()
	}
	return e, true, nil
}

// ReadEnvRecord reads envelope id's record alone; found is false when there
// is no such envelope.
func ReadEnvRecord(ctx context.Context, rdb redis.Cmdable, id string) (r EnvRecord, found bool, err error) {
	m, err := rdb.HGetAll(ctx, EnvelopeKeysFor(id).Meta).Result()
	if err != nil {
		return EnvRecord{}, false, fmt.Errorf("read envelope %q: %w", id, err)
	}
	if len(m) == 0 {
		return EnvRecord{}, false, nil
	}
	return parseEnvRecord(m), true, nil
}

// RefundPublished reports whether envelope id's envelope.refunded event is
// marked published.
func RefundPublished(ctx context.Context, rdb redis.Cmdable, id string) (bool, error) {
	ok, err := rdb.HExists(ctx, EnvelopeKeysFor(id).Meta, "refund_published").Result()
	if err != nil {
		return false, fmt.Errorf("read refund mark of envelope %q: %w", id, err)
	}
	return ok, nil
}

// MarkRefundPublished marks envelope id's envelope.refunded event published.
func MarkRefundPublished(ctx context.Context, rdb redis.Cmdable, id string) error {
	if err := rdb.HSet(ctx, EnvelopeKeysFor(id).Meta, "refund_published", 1).Err(); err != nil {
		return fmt.Errorf("mark refund of envelope %q published: %w", id, err)
	}
	return nil
}

// ShakeRecord is a campaign's meta hash (ShakeKeys.Meta): its settings
// (BudgetCents in split mode, MinCents/MaxCents in range mode; MaxWins 0:
// no cap) and its books. HasSeq is false for a campaign from before win
// numbers were counted apart (then Seq is Taken + Undone).
type ShakeRecord struct {
	Mode                                string
	Total, RatePerSec, StartsMs         int64
	BudgetCents, MinCents, MaxCents     int64
	MaxWins                             int64
	Taken, Undone, PaidCents, LeftCents int64
	Seq                                 int64
	HasSeq                              bool
}

// ShakeRead is a campaign read in one round trip: its record, each user's
// win count (as stored), and Redis's clock at the read.
type ShakeRead struct {
	ShakeRecord
	Users map[string]string
	Now   time.Time
}

// ReadShake reads campaign id; found is false when there is no such
// campaign.
func ReadShake(ctx context.Context, rdb redis.Cmdable, id string) (r ShakeRead, found bool, err error) {
	k := ShakeKeysFor(id)
	pipe := rdb.Pipeline()
	meta := pipe.HGetAll(ctx, k.Meta)
	users := pipe.HGetAll(ctx, k.Users)
	now := pipe.Time(ctx)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return ShakeRead{}, false, fmt.Errorf("read shake %q: %w", id, err)
	}
	m := meta.Val()
	if len(m) == 0 {
		return ShakeRead{}, false, nil
	}
	n := func(f string) int64 { return intField(m, f) }
	rec := ShakeRecord{Mode: m["mode"], Total: n("total"), RatePerSec: n("rate"), StartsMs: n("starts_at_ms"),
		BudgetCents: n("budget"), MinCents: n("min"), MaxCents: n("max"), MaxWins: n("max_wins"),
		Taken: n("taken"), Undone: n("undone"), PaidCents: n("paid_cents"), LeftCents: n("left_cents")}
	if _, rec.HasSeq = m["seq"]; rec.HasSeq {
		rec.Seq = n("seq")
	} else {
		rec.Seq = rec.Taken + rec.Undone
	}
	return ShakeRead{ShakeRecord: rec, Users: users.Val(), Now: now.Val()}, true, nil
}

// WalletBalance queues the read of user's balance and entry count on pipe;
// the returned function gives them after pipe.Exec (zero for a wallet never
// used).
func WalletBalance(ctx context.Context, pipe redis.Pipeliner, user string) func() (balance, entries int64) {
	cmd := pipe.HMGet(ctx, WalletKeysFor(user).Meta, "balance", "entries")
	return func() (int64, int64) {
		v := cmd.Val()
		if len(v) != 2 {
			return 0, 0
		}
		return ToInt(v[0]), ToInt(v[1])
	}
}
