package stock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

// Limits on sale settings; anything outside is a 400 that changes nothing.
const (
	MaxStock        = 100_000_000
	MaxPerUserLimit = 1_000
	MaxPriceCents   = 1_000_000_000_00
	MinPayTimeout   = time.Second
	MaxPayTimeout   = 24 * time.Hour
	MaxAdmitPerSec  = 1_000_000
	MaxPreQueue     = 24 * time.Hour
)

// ValidateSale checks a sale's settings before it is stored.
func ValidateSale(s flashsale.Sale) error {
	switch {
	case !flashsale.ValidID(s.ID):
		return flashsale.Errorf(flashsale.EINVALID, "id must be 1-64 characters of [A-Za-z0-9_-:@]")
	case len(s.Name) > 200:
		return flashsale.Errorf(flashsale.EINVALID, "name must be at most 200 bytes")
	case s.Stock < 1 || s.Stock > MaxStock:
		return flashsale.Errorf(flashsale.EINVALID, "stock must be between 1 and %d", MaxStock)
	case s.PriceCents < 0 || s.PriceCents > MaxPriceCents:
		return flashsale.Errorf(flashsale.EINVALID, "price_cents must be between 0 and %d", int64(MaxPriceCents))
	case s.PerUserLimit < 1 || s.PerUserLimit > MaxPerUserLimit:
		return flashsale.Errorf(flashsale.EINVALID, "per_user_limit must be between 1 and %d", MaxPerUserLimit)
	case s.PayTimeout < MinPayTimeout || s.PayTimeout > MaxPayTimeout:
		return flashsale.Errorf(flashsale.EINVALID, "pay_timeout must be between %v and %v", MinPayTimeout, MaxPayTimeout)
	case !s.StartsAt.IsZero() && !s.EndsAt.IsZero() && !s.EndsAt.After(s.StartsAt):
		return flashsale.Errorf(flashsale.EINVALID, "ends_at must be after starts_at")
	case s.WaitingRoom.Enabled && (s.WaitingRoom.AdmitPerSec < 1 || s.WaitingRoom.AdmitPerSec > MaxAdmitPerSec):
		return flashsale.Errorf(flashsale.EINVALID, "waiting_room.admit_per_sec must be between 1 and %d", MaxAdmitPerSec)
	case s.WaitingRoom.Enabled && (s.WaitingRoom.PreQueue < 0 || s.WaitingRoom.PreQueue > MaxPreQueue):
		return flashsale.Errorf(flashsale.EINVALID, "waiting_room.pre_queue must be between 0 and %v", MaxPreQueue)
	case s.WaitingRoom.PreQueue > 0 && s.StartsAt.IsZero():
		return flashsale.Errorf(flashsale.EINVALID, "waiting_room.pre_queue needs starts_at")
	}
	return nil
}

// roomRate is the stored admit rate: 0 means no waiting room.
func roomRate(w flashsale.WaitingRoom) int64 {
	if !w.Enabled {
		return 0
	}
	return w.AdmitPerSec
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// CreateSale validates and stores a new sale. An existing id is a conflict,
// never a reset of a live sale.
func CreateSale(ctx context.Context, rdb redis.UniversalClient, s flashsale.Sale) error {
	if err := ValidateSale(s); err != nil {
		return err
	}
	created, err := lua.CreateSale(ctx, rdb, s.ID, []any{
		"name", s.Name, "stock", s.Stock, "price_cents", s.PriceCents,
		"per_user_limit", s.PerUserLimit, "pay_timeout_ms", s.PayTimeout.Milliseconds(),
		"starts_at_ms", unixMs(s.StartsAt), "ends_at_ms", unixMs(s.EndsAt),
		lua.FieldRoomAdmitPerSec, roomRate(s.WaitingRoom), lua.FieldRoomPreQueueMs, s.WaitingRoom.PreQueue.Milliseconds(),
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRedis, err)
	}
	if !created {
		return flashsale.Errorf(flashsale.ECONFLICT, "sale %q already exists", s.ID)
	}
	// The index lives outside the sale's hash tag, so it is its own command;
	// a sale missing from it is only invisible to the sweeper until re-added.
	if err := rdb.SAdd(ctx, lua.SalesIndexKey, s.ID).Err(); err != nil {
		return fmt.Errorf("index sale %q: %w: %w", s.ID, ErrRedis, err)
	}
	return nil
}

// LoadSale reads a sale's settings and books from Redis.
func LoadSale(ctx context.Context, rdb redis.UniversalClient, id string) (flashsale.Sale, flashsale.Books, error) {
	if !flashsale.ValidID(id) {
		return flashsale.Sale{}, flashsale.Books{}, ErrNoSale
	}
	m, err := rdb.HGetAll(ctx, lua.KeysFor(id).Meta).Result()
	if err != nil {
		return flashsale.Sale{}, flashsale.Books{}, fmt.Errorf("load sale %q: %w: %w", id, ErrRedis, err)
	}
	if len(m) == 0 {
		return flashsale.Sale{}, flashsale.Books{}, ErrNoSale
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	t := func(k string) time.Time {
		if v := n(k); v > 0 {
			return time.UnixMilli(v).UTC()
		}
		return time.Time{}
	}
	s := flashsale.Sale{ID: id, Name: m["name"], Stock: n("stock"), PriceCents: n("price_cents"),
		PerUserLimit: n("per_user_limit"), PayTimeout: time.Duration(n("pay_timeout_ms")) * time.Millisecond,
		StartsAt: t("starts_at_ms"), EndsAt: t("ends_at_ms")}
	if rate := n(lua.FieldRoomAdmitPerSec); rate > 0 {
		s.WaitingRoom = flashsale.WaitingRoom{Enabled: true, AdmitPerSec: rate,
			PreQueue: time.Duration(n(lua.FieldRoomPreQueueMs)) * time.Millisecond}
	}
	b := flashsale.Books{Stock: n("stock"), Remaining: n("remaining"), Pending: n("pending"), Paid: n("paid"),
		Expired: n("expired"), Cancelled: n("cancelled"), Aborted: n("aborted")}
	return s, b, nil
}

// ListSales returns the ids of every sale in the index.
func ListSales(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	ids, err := rdb.SMembers(ctx, lua.SalesIndexKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list sales: %w", err)
	}
	return ids, nil
}
