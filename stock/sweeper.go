package stock

import (
	"context"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
)

// SweepFunc settles what is still open although its deadline passed before
// cutoffMs (Redis's clock, grace included) and reports how many it settled.
// It must be idempotent: every node sweeps, and a sweep may repeat what an
// expiry consumer did a moment ago.
type SweepFunc func(ctx context.Context, cutoffMs int64) (settled int, err error)

// SweeperConfig tunes a Sweeper.
type SweeperConfig struct {
	Subsystem string        // metric subsystem: flashsale_<subsystem>_swept_total
	Noun      string        // what is settled, for the log ("orders", "envelopes")
	Interval  time.Duration // between sweeps
	Grace     time.Duration // how long past its deadline an item is left to the consumers
	Timeout   time.Duration // bound of one sweep beyond Interval
}

// Sweeper is the one sweeper shape, "deadline passed, settle what is still
// open": the backstop of every product for an event that never reached
// Kafka or that the broker lost. Each product supplies only what settling
// means (expire an order, refund an envelope).
type Sweeper struct {
	cfg   SweeperConfig
	sweep SweepFunc
	log   *slog.Logger
	swept prometheus.Counter
}

// NewSweeper returns a Sweeper; Run starts it.
func NewSweeper(cfg SweeperConfig, sweep SweepFunc, log *slog.Logger) *Sweeper {
	if log == nil {
		log = slog.Default()
	}
	cfg.Interval = Or(cfg.Interval, time.Second)
	cfg.Timeout = Or(cfg.Timeout, time.Second)
	return &Sweeper{cfg: cfg, sweep: sweep, log: log,
		swept: metric.Counter(cfg.Subsystem, "swept_total",
			"Items settled by the sweeper after their deadline (their event was lost or late).", nil)}
}

// Run sweeps every Interval until ctx ends.
func (s *Sweeper) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if n, err := s.Sweep(ctx); err != nil {
				s.log.Warn("sweep", "subsystem", s.cfg.Subsystem, "err", err)
			} else if n > 0 {
				s.log.Info("sweeper settled overdue "+s.cfg.Noun, "subsystem", s.cfg.Subsystem, "settled", n)
			}
		case <-ctx.Done():
			return
		}
	}
}

// Sweep runs one sweep now, bounded by Interval + Timeout, and returns how
// many items it settled.
func (s *Sweeper) Sweep(ctx context.Context) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Interval+s.cfg.Timeout)
	defer cancel()
	n, err := s.sweep(ctx, time.Now().Add(-s.cfg.Grace).UnixMilli())
	s.swept.Add(float64(n))
	return n, err
}

// Describe implements prometheus.Collector.
func (s *Sweeper) Describe(ch chan<- *prometheus.Desc) { s.swept.Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Sweeper) Collect(ch chan<- prometheus.Metric) { s.swept.Collect(ch) }
