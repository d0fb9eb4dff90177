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
}

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
		for {
			nums, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: lua.KeysFor(id).Deadlines,
				Start: "-inf", Stop: cutoff, ByScore: true, Count: int64(s.batch)}).Result()
			if err != nil {
				return total, fmt.Errorf("overdue orders of sale %q: %w", id, err)
			}
			if len(nums) == 0 {
				break
			}
			orders := make([]int64, 0, len(nums))
			for _, n := range nums {
				if v, err := strconv.ParseInt(n, 10, 64); err == nil {
					orders = append(orders, v)
				}
			}
			_, res, err := lua.Settle(ctx, s.rdb, id, lua.Expire, orders)
			if err != nil {
				return total, err
			}
			done := 0
			for _, r := range res {
				if r.Code == lua.SettleDone {
					done++
					s.released.Inc()
				}
			}
			total += done
			// A short page is the last; a page with nothing released means
			// Redis's clock is behind ours, so the rest waits for the next tick.
			if len(nums) < s.batch || done == 0 {
				break
			}
		}
	}
	return total, nil
}

// Describe implements prometheus.Collector.
func (s *Sweeper) Describe(ch chan<- *prometheus.Desc) { s.released.Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Sweeper) Collect(ch chan<- prometheus.Metric) { s.released.Collect(ch) }
