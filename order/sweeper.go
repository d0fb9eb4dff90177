package order

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Sweeper is the backstop for lost order events: periodically it releases
// pending orders whose deadline passed more than Grace ago, found through
// each sale's Redis index of deadlines. With Kafka healthy the Expirer has
// released them long before; the Sweeper only matters when an event never
// reached Kafka (e.g. its abort failed because Redis was down too) or the
// broker lost it. Running it on every node is safe: release is idempotent.
type Sweeper struct {
	rdb      redis.UniversalClient
	interval time.Duration
	grace    time.Duration
	batch    int
	timeout  time.Duration
	log      *slog.Logger
	released prometheus.Counter
	events   *Outbox
}

// PublishTo makes the sweeper announce what it expires through o, and
// drain every sale's outbox on each sweep (publishing the transitions whose
// event was lost). Without it the sweeper only releases.
func (s *Sweeper) PublishTo(o *Outbox) { s.events = o }

// NewSweeper returns a Sweeper; Run starts it.
func NewSweeper(rdb redis.UniversalClient, interval, grace time.Duration, batch int, timeout time.Duration, log *slog.Logger) *Sweeper {
	if log == nil {
		log = slog.Default()
	}
	return &Sweeper{rdb: rdb, interval: interval, grace: grace, batch: max(batch, 1), timeout: timeout, log: log,
		released: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_sweeper_released_total",
			Help: "Unpaid orders released by the sweeper (their expiry event was lost or late)."})}
}

// Run sweeps every interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if n, err := s.Sweep(ctx); err != nil {
				s.log.Warn("sweep", "err", err)
			} else if n > 0 {
				s.log.Info("sweeper released overdue orders", "orders", n)
			}
		case <-ctx.Done():
			return
		}
	}
}

// Sweep releases every pending order overdue by more than the grace period
// and returns how many it released.
//
// The index holds one "first-last" range per buy batch (see buy.lua), so a
// page of s.batch entries may stand for many orders: they are settled
// s.batch at a time, and a range leaves the index only once none of its
// orders is still pending (removal after release: a crash in between leaves
// the range to the next sweep, and releasing again is a no-op).
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.interval+s.timeout)
	defer cancel()
	ids, err := stock.ListSales(ctx, s.rdb)
	if err != nil {
		return 0, err
	}
	total := 0
	cutoff := strconv.FormatInt(time.Now().Add(-s.grace).UnixMilli(), 10)
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

func (s *Sweeper) sweepSale(ctx context.Context, id, cutoff string) (int, error) {
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
func (s *Sweeper) expireRange(ctx context.Context, id string, first, last int64) (released int, due bool, err error) {
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
				s.released.Inc()
			case lua.SettleNotDue:
				return released, false, nil
			}
		}
	}
	return released, true, nil
}

func (s *Sweeper) forget(ctx context.Context, key string, members []any) error {
	if len(members) == 0 {
		return nil
	}
	if err := s.rdb.ZRem(ctx, key, members...).Err(); err != nil {
		return fmt.Errorf("drop swept deadline ranges: %w", err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (s *Sweeper) Describe(ch chan<- *prometheus.Desc) { s.released.Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Sweeper) Collect(ch chan<- prometheus.Metric) { s.released.Collect(ch) }
