package stock

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// InDoubt resolves batches whose script reply was lost (a timeout, a
// connection cut, Redis killed): the batch may have created orders (or
// envelope opens) that no one was told about. Each is either written off
// before it can run or, if it ran, undone, so a 503 is always the truth and
// everything in Redis was announced. It retries until Redis answers; the
// queue is bounded, and a batch that does not fit is left to the sweepers
// (an order expires at its deadline; an open is repaired at refund).
// InDoubt is safe for concurrent use.
type InDoubt struct {
	resolve  ResolveFunc
	timeout  time.Duration
	log      *slog.Logger
	queue    chan doubtBatch
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	resolved prometheus.Counter
	undone   prometheus.Counter
	dropped  prometheus.Counter
	waiting  prometheus.GaugeFunc
	// unsettled counts the batches added and not yet settled: queued,
	// being resolved, or waiting to be retried (Redis down). The queue's
	// length alone would read 0 while every batch waits for a retry.
	unsettled atomic.Int64
}

// ResolveFunc settles one batch of item (a sale, an envelope): it writes the
// batch off or undoes what it did, and reports how many results it undid.
// It must be safe to repeat.
type ResolveFunc func(ctx context.Context, item, batch string) (undone int, err error)

type doubtBatch struct{ sale, batch string }

// NewInDoubt starts a resolver for batches of one product, holding at most
// size batches; its metrics are flashsale_<subsystem>_indoubt_*.
func NewInDoubt(subsystem string, resolve ResolveFunc, timeout time.Duration, size int, log *slog.Logger) *InDoubt {
	d := &InDoubt{resolve: resolve, timeout: timeout, log: log, queue: make(chan doubtBatch, size),
		stop: make(chan struct{}), done: make(chan struct{}),
		resolved: metric.Counter(subsystem, "indoubt_resolved_total",
			"Batches whose reply was lost, resolved (written off or undone).", nil),
		undone: metric.Counter(subsystem, "indoubt_undone_total",
			"Results (orders, opens, wins) undone because their batch's reply was lost.", nil),
		dropped: metric.Counter(subsystem, "indoubt_dropped_total",
			"In-doubt batches that did not fit the queue (left to the sweepers).", nil),
	}
	d.waiting = metric.GaugeFunc(subsystem, "indoubt_batches", "Batches waiting to be resolved (queued or retrying).", nil,
		func() float64 { return float64(d.unsettled.Load()) })
	go d.run()
	return d
}

// NewBatchID returns an id no earlier batch of any node can have had.
func NewBatchID(node string) string {
	return node + "-" + strconv.FormatUint(rand.Uint64(), 36)
}

// Definite reports whether err proves a script finished (or never started):
// a reply from Redis itself, rather than silence.
func Definite(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// Add queues a batch whose reply was lost; it never blocks. At most size
// batches are held, queued and waiting for a retry together: the resolver
// moves a batch it could not settle out of the queue into its retry list,
// so during a long Redis outage the queue alone would bound nothing.
func (d *InDoubt) Add(sale, batch string) {
	if d.unsettled.Add(1) <= int64(cap(d.queue)) {
		select {
		case d.queue <- doubtBatch{sale, batch}:
			return
		default:
		}
	}
	d.unsettled.Add(-1)
	d.dropped.Inc()
	d.log.Error("in-doubt queue full; the sweeper will release this batch's orders after their deadline", "sale", sale, "batch", batch)
}

func (d *InDoubt) run() {
	defer close(d.done)
	var retry []doubtBatch
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case b := <-d.queue:
			if !d.settle(b) {
				retry = append(retry, b)
			}
		case <-tick.C:
			kept := retry[:0]
			for _, b := range retry {
				if !d.settle(b) {
					kept = append(kept, b)
				}
			}
			retry = kept
		case <-d.stop:
			// One last try for each; what is left is the sweeper's.
			for len(d.queue) > 0 {
				retry = append(retry, <-d.queue)
			}
			for _, b := range retry {
				if !d.settle(b) {
					d.log.Warn("in-doubt batch unresolved at shutdown; the sweeper will release its orders", "sale", b.sale, "batch", b.batch)
				}
			}
			return
		}
	}
}

func (d *InDoubt) settle(b doubtBatch) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	n, err := d.resolve(ctx, b.sale, b.batch)
	if err != nil {
		return false
	}
	d.unsettled.Add(-1)
	d.resolved.Inc()
	if n > 0 {
		d.undone.Add(float64(n))
		// batch is a batch id, or a product's own job (Frame.Retry: an
		// order abort that failed the first time).
		d.log.Info("undid in-doubt results (a batch whose reply was lost, or a retried abort)", "item", b.sale, "batch", b.batch, "undone", n)
	}
	return true
}

// Close tries once more to settle what is queued, then stops.
func (d *InDoubt) Close() {
	d.once.Do(func() { close(d.stop); <-d.done })
}

// Describe implements prometheus.Collector.
func (d *InDoubt) Describe(ch chan<- *prometheus.Desc) { d.collectors().Describe(ch) }

// Collect implements prometheus.Collector.
func (d *InDoubt) Collect(ch chan<- prometheus.Metric) { d.collectors().Collect(ch) }

func (d *InDoubt) collectors() metric.Set {
	return metric.Set{d.resolved, d.undone, d.dropped, d.waiting}
}
