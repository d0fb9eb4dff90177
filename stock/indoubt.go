package stock

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// inDoubt resolves buy batches whose script reply was lost (a timeout, a
// connection cut, Redis killed): the batch may have created orders that no
// buyer was told about. Each is either written off before it can run or,
// if it ran, undone, so a 503 answered to a buyer is always the truth and
// every order in Redis has its "you got it". It retries until Redis answers;
// the queue is bounded, and a batch that does not fit is left to the
// expiry sweeper, which releases its orders after their deadline.
type inDoubt struct {
	rdb      redis.UniversalClient
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
}

type doubtBatch struct{ sale, batch string }

func newInDoubt(rdb redis.UniversalClient, timeout time.Duration, size int, log *slog.Logger) *inDoubt {
	d := &inDoubt{rdb: rdb, timeout: timeout, log: log, queue: make(chan doubtBatch, size),
		stop: make(chan struct{}), done: make(chan struct{}),
		resolved: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_stock_indoubt_resolved_total",
			Help: "Buy batches whose reply was lost, resolved (written off or undone)."}),
		undone: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_stock_indoubt_orders_undone_total",
			Help: "Orders undone because their batch's reply was lost."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_stock_indoubt_dropped_total",
			Help: "In-doubt batches that did not fit the queue (the sweeper releases their orders)."}),
	}
	d.waiting = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flashsale_stock_indoubt_batches",
		Help: "Buy batches waiting to be resolved."}, func() float64 { return float64(len(d.queue)) })
	go d.run()
	return d
}

// newBatchID returns an id no earlier batch of any node can have had.
func newBatchID(node string) string {
	return node + "-" + strconv.FormatUint(rand.Uint64(), 36)
}

// definite reports whether err proves the script finished (or never
// started): a reply from Redis itself, rather than silence.
func definite(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

func (d *inDoubt) add(sale, batch string) {
	select {
	case d.queue <- doubtBatch{sale, batch}:
	default:
		d.dropped.Inc()
		d.log.Error("in-doubt queue full; the sweeper will release this batch's orders after their deadline", "sale", sale, "batch", batch)
	}
}

func (d *inDoubt) run() {
	defer close(d.done)
	var retry []doubtBatch
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case b := <-d.queue:
			if !d.resolve(b) {
				retry = append(retry, b)
			}
		case <-tick.C:
			kept := retry[:0]
			for _, b := range retry {
				if !d.resolve(b) {
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
				if !d.resolve(b) {
					d.log.Warn("in-doubt batch unresolved at shutdown; the sweeper will release its orders", "sale", b.sale, "batch", b.batch)
				}
			}
			return
		}
	}
}

func (d *inDoubt) resolve(b doubtBatch) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d.timeout)
	defer cancel()
	orders, err := lua.ResolveBatch(ctx, d.rdb, b.sale, b.batch)
	if err != nil {
		return false
	}
	d.resolved.Inc()
	if len(orders) > 0 {
		d.undone.Add(float64(len(orders)))
		d.log.Info("undid orders of a batch whose reply was lost", "sale", b.sale, "batch", b.batch, "orders", len(orders))
	}
	return true
}

func (d *inDoubt) close() {
	d.once.Do(func() { close(d.stop); <-d.done })
}

func (d *inDoubt) collectors() []prometheus.Collector {
	return []prometheus.Collector{d.resolved, d.undone, d.dropped, d.waiting}
}
