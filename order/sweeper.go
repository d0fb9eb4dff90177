package order

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/redis/go-redis/v9"
)

// Sweeper is the backstop for lost order events, on the engine's sweeper
// shape: every interval it releases pending orders whose deadline passed
// more than grace ago, found through each sale's Redis index of deadlines.
// With Kafka healthy the Expirer has released them long before; the
// sweeper only matters when an event never reached Kafka (e.g. its abort
// failed because Redis was down too) or the broker lost it. Running it on
// every node is safe: release is idempotent.
type Sweeper struct {
	*stock.Sweeper
	s *sweeper
}

// PublishTo makes the sweeper announce what it expires through o, and
// drain every sale's outbox on each sweep (publishing the transitions whose
// event was lost). Without it the sweeper only releases. Call it before Run.
func (s *Sweeper) PublishTo(o *Outbox) { s.s.events = o }

// NewSweeper returns a Sweeper; Run starts it.
func NewSweeper(rdb redis.UniversalClient, interval, grace time.Duration, batch int, timeout time.Duration, log *slog.Logger) *Sweeper {
	if log == nil {
		log = slog.Default()
	}
	s := &sweeper{rdb: rdb, batch: max(batch, 1), log: log}
	return &Sweeper{Sweeper: stock.NewSweeper(stock.SweeperConfig{Subsystem: "order", Noun: "orders", Interval: interval,
		Grace: grace, Timeout: timeout}, s.sweep, log), s: s}
}

// sweeper is what sweeping means for orders.
type sweeper struct {
	rdb    redis.UniversalClient
	batch  int
	log    *slog.Logger
	events *Outbox // nil: release only
}

// sweep releases every pending order due before cutoffMs and returns how
// many it released.
//
// The index holds one "first-last" range per buy batch (see buy.lua), so a
// page of s.batch entries may stand for many orders: they are settled
// s.batch at a time, and a range leaves the index only once none of its
// orders is still pending (removal after release: a crash in between leaves
// the range to the next sweep, and releasing again is a no-op).
func (s *sweeper) sweep(ctx context.Context, cutoffMs int64) (int, error) {
	ids, err := ListSales(ctx, s.rdb)
	if err != nil {
		return 0, err
	}
	total := 0
	cutoff := strconv.FormatInt(cutoffMs, 10)
	for _, id := range ids {
		n, err := s.sweepSale(ctx, id, cutoff)
		total += n
		if err != nil {
			return total, err
		}
		if s.events != nil {
			if n, err := s.events.Drain(ctx, id); err != nil {
				s.log.Warn("drain order outbox", "sale", id, "err", err)
			} else if n > 0 {
				s.log.Info("published order events from the outbox", "sale", id, "events", n)
			}
		}
	}
	return total, nil
}

func (s *sweeper) sweepSale(ctx context.Context, id, cutoff string) (int, error) {
	key := lua.KeysFor(id).Deadlines
	total := 0
	for {
		members, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key,
			Start: "-inf", Stop: cutoff, ByScore: true, Count: int64(s.batch)}).Result()
		if err != nil {
			return total, fmt.Errorf("overdue orders of sale %q: %w", id, err)
		}
		if len(members) == 0 {
			return total, nil
		}
		var done []any // ranges with nothing left pending
		for _, m := range members {
			first, last, err := lua.ParseDeadlineRange(m)
			if err != nil {
				s.log.Warn("sweep: dropping a bad deadline index entry", "sale", id, "err", err)
				done = append(done, m)
				continue
			}
			released, due, err := s.expireRange(ctx, id, first, last)
			total += released
			if err != nil {
				return total, err
			}
			if !due {
				// Redis's clock is behind ours: the rest waits for the next tick.
				return total, s.forget(ctx, key, done)
			}
			done = append(done, m)
		}
		if err := s.forget(ctx, key, done); err != nil {
			return total, err
		}
		if len(members) < s.batch {
			return total, nil
		}
	}
}

// expireRange expires the orders first..last that are still pending; due is
// false when Redis says some are not due yet.
func (s *sweeper) expireRange(ctx context.Context, id string, first, last int64) (released int, due bool, err error) {
	orders := make([]int64, 0, min(last-first+1, int64(s.batch)))
	for lo := first; lo <= last; lo += int64(s.batch) {
		orders = orders[:0]
		for n := lo; n <= last && n < lo+int64(s.batch); n++ {
			orders = append(orders, n)
		}
		nowMs, res, err := lua.Settle(ctx, s.rdb, id, lua.Expire, orders)
		if err != nil {
			return released, false, err
		}
		s.events.Announce(ctx, id, nowMs, orders, res)
		for _, r := range res {
			switch r.Code {
			case lua.SettleDone:
				released++
			case lua.SettleNotDue:
				return released, false, nil
			}
		}
	}
	return released, true, nil
}

func (s *sweeper) forget(ctx context.Context, key string, members []any) error {
	if len(members) == 0 {
		return nil
	}
	if err := s.rdb.ZRem(ctx, key, members...).Err(); err != nil {
		return fmt.Errorf("drop swept deadline ranges: %w", err)
	}
	return nil
}
