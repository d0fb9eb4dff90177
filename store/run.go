package store

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/order"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	Store           Config
	Consumer        ConsumerConfig
	ArchiveInterval time.Duration // how often finished sales are looked for
	ArchiveQuiet    time.Duration // how long a sale must look finished first (at least lua.BatchTTL)
	RedisTimeout    time.Duration
}

// Runner is the store side of a node (or of `flashsale store`): it opens
// the database — retrying in the background while it is down, so a node
// starts and sells without it — then runs the Consumer and the Archiver
// until its context ends. It is safe for concurrent use.
type Runner struct {
	cfg RunnerConfig
	rdb redis.UniversalClient
	log *slog.Logger

	store    atomic.Pointer[Store]
	Consumer *Consumer
	Archiver *Archiver
	ready    chan struct{}
}

// NewRunner returns a Runner; Run starts it.
func NewRunner(cfg RunnerConfig, rdb redis.UniversalClient, log *slog.Logger) *Runner {
	if log == nil {
		log = slog.Default()
	}
	if cfg.ArchiveInterval <= 0 {
		cfg.ArchiveInterval = 5 * time.Second
	}
	r := &Runner{cfg: cfg, rdb: rdb, log: log, ready: make(chan struct{})}
	// Both exist from the start (the lag is measured while the database is
	// still unreachable); they get the store when it opens.
	r.Consumer = NewConsumer(cfg.Consumer, nil, r.Lookup, log)
	r.Archiver = NewArchiver(rdb, nil, cfg.ArchiveInterval, cfg.ArchiveQuiet, cfg.RedisTimeout, log)
	return r
}

// Store returns the open store, or nil while the database has not been
// reached yet.
func (r *Runner) Store() *Store { return r.store.Load() }

// Ready is closed once the store is open and its consumer is running.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// Lookup reads a sale's settings from Redis, for the consumer.
func (r *Runner) Lookup(ctx context.Context, id string) (flashsale.Sale, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RedisTimeout)
	defer cancel()
	s, _, err := order.LoadSale(ctx, r.rdb, id)
	if flashsale.ErrorCode(err) == flashsale.ENOTFOUND {
		return flashsale.Sale{}, false, nil
	} else if err != nil {
		return flashsale.Sale{}, false, err
	}
	return s, true, nil
}

// Run opens the store (retrying every few seconds) and runs the consumer
// and the archiver until ctx ends; then it closes the store. The lag is
// measured from the start, so a database down at start shows as lag too.
func (r *Runner) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); r.Consumer.watchLag(ctx) }()
	var s *Store
	delay := 500 * time.Millisecond
	for {
		octx, ocancel := context.WithTimeout(ctx, max(r.cfg.Store.Timeout, time.Second)*2)
		var err error
		s, err = Open(octx, r.cfg.Store)
		ocancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("order store unreachable; sales go on, events wait in Kafka", "retry_in", delay, "err", err)
		if !sleep(ctx, delay) {
			return nil
		}
		delay = min(2*delay, 5*time.Second)
	}
	defer s.Close()
	r.Consumer.store = s
	r.Archiver.store = s
	r.store.Store(s)
	close(r.ready)
	r.log.Info("order store open; consuming events", "group", r.cfg.Consumer.Group)

	wg.Add(1)
	go func() { defer wg.Done(); r.Archiver.Run(ctx) }()
	err := r.Consumer.consume(ctx)
	cancel()
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return nil
	}
	return err
}

var openDesc = metric.Desc("store", "up", "1 when the order store is open (the database was reached), else 0.", nil)

// Describe implements prometheus.Collector: the consumer's and archiver's
// metrics (flashsale_store_lag_events among them) and flashsale_store_up.
func (r *Runner) Describe(ch chan<- *prometheus.Desc) {
	ch <- openDesc
	r.Consumer.Describe(ch)
	r.Archiver.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Runner) Collect(ch chan<- prometheus.Metric) {
	up := 0.0
	if r.Store() != nil {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(openDesc, prometheus.GaugeValue, up)
	r.Consumer.Collect(ch)
	r.Archiver.Collect(ch)
}

var errNotOpen = flashsale.Errorf(flashsale.EUNAVAILABLE, "order history unavailable; retry shortly")

// UserOrders serves one page of a buyer's orders from the store; while the
// database has not been reached it answers EUNAVAILABLE.
func (r *Runner) UserOrders(ctx context.Context, q OrderQuery) ([]Order, string, error) {
	s := r.Store()
	if s == nil {
		return nil, "", errNotOpen
	}
	return s.UserOrders(ctx, q)
}

// GetOrder returns one order from the store (EUNAVAILABLE while the
// database has not been reached).
func (r *Runner) GetOrder(ctx context.Context, id string) (Order, bool, error) {
	s := r.Store()
	if s == nil {
		return Order{}, false, errNotOpen
	}
	return s.GetOrder(ctx, id)
}
