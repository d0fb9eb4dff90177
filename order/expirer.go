package order

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
)

// ExpirerConfig configures the expiry consumers.
type ExpirerConfig struct {
	Brokers      []string
	Topic        string
	Group        string
	Workers      int           // goroutines running release scripts
	QueueSize    int           // release jobs waiting for a worker
	MaxHeld      int           // orders held until their deadline; when full, fetching pauses
	BatchMax     int           // orders of one sale released by one script call
	RedisTimeout time.Duration // bound of one release call
	RetryDelay   time.Duration // wait before retrying after a Redis error
}

// Expirer consumes order.created events, holds each order until its pay
// deadline and then releases it if it is still unpaid: the settle script
// marks it expired, returns the unit to stock and frees the user's slot.
//
// Exactly once: the script releases only a pending order, so a redelivered
// event (after a crash or a rebalance) releases nothing twice. Offsets are
// committed only up to the first order not yet settled in each partition, so
// a crash never skips an order. Everything is bounded: at most MaxHeld orders
// are held (fetching waits when full), Workers goroutines, QueueSize jobs.
type Expirer struct {
	cfg ExpirerConfig
	rdb redis.UniversalClient
	log *slog.Logger

	mu      sync.Mutex
	pending deadlineHeap
	wake    chan struct{}
	slots   chan struct{} // one per held order
	jobs    chan []*held
	parts   map[int]*partition

	reader *kafka.Reader

	released  prometheus.Counter
	settled   prometheus.Counter
	heldGauge prometheus.GaugeFunc
	lag       prometheus.Gauge
	badEvents prometheus.Counter
}

// held is one order waiting for its deadline.
type held struct {
	dueLocal  time.Time // when to try, on this node's clock
	sale      string
	order     int64
	mark      *offsetMark
	partition int
	index     int
}

type offsetMark struct {
	offset int64
	done   bool
}

// partition tracks fetched offsets in order so commits never pass an
// unsettled order.
type partition struct {
	marks []*offsetMark
}

// NewExpirer returns an Expirer; Run starts it.
func NewExpirer(cfg ExpirerConfig, rdb redis.UniversalClient, log *slog.Logger) *Expirer {
	cfg.Workers = max(cfg.Workers, 1)
	cfg.QueueSize = max(cfg.QueueSize, 1)
	cfg.MaxHeld = max(cfg.MaxHeld, 1)
	cfg.BatchMax = max(cfg.BatchMax, 1)
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = time.Second
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	e := &Expirer{
		cfg: cfg, rdb: rdb, log: log,
		wake:  make(chan struct{}, 1),
		slots: make(chan struct{}, cfg.MaxHeld),
		jobs:  make(chan []*held, cfg.QueueSize),
		parts: map[int]*partition{},
		released: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_expiry_released_total",
			Help: "Unpaid orders this node expired, returning their unit to stock."}),
		settled: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_expiry_settled_total",
			Help: "Order events whose order needed nothing at its deadline (paid, cancelled, already expired)."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "flashsale_kafka_consumer_lag_messages",
			Help: "Messages behind the end of the partition, as kafka-go last saw it."}),
		badEvents: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_expiry_bad_events_total",
			Help: "Events that could not be decoded and were skipped."}),
	}
	e.heldGauge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flashsale_expiry_held_orders",
		Help: "Orders held until their pay deadline."}, func() float64 { return float64(len(e.slots)) })
	return e
}

// Run consumes until ctx ends, then stops its goroutines and closes the
// reader. Orders still held are not lost: their offsets were not committed,
// so another consumer (or this one, restarted) gets them again.
func (e *Expirer) Run(ctx context.Context) error {
	e.reader = kafka.NewReader(kafka.ReaderConfig{
		Brokers:        e.cfg.Brokers,
		GroupID:        e.cfg.Group,
		Topic:          e.cfg.Topic,
		MinBytes:       1,
		MaxBytes:       8 << 20,
		MaxWait:        250 * time.Millisecond,
		CommitInterval: 500 * time.Millisecond,
		StartOffset:    kafka.FirstOffset,
		// Short group timeouts: a killed node's partitions move to the
		// survivors within seconds, and a leaving consumer is not held up
		// by a dead member for kafka-go's default 30 s and 60 s.
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  6 * time.Second,
		HeartbeatInterval: time.Second,
		ErrorLogger:       kafka.LoggerFunc(func(f string, a ...any) { e.log.Debug("kafka reader: " + fmt.Sprintf(f, a...)) }),
	})
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	wg.Add(2 + e.cfg.Workers)
	go func() { defer wg.Done(); e.schedule(runCtx) }()
	go func() { defer wg.Done(); e.watchLag(runCtx) }()
	for i := 0; i < e.cfg.Workers; i++ {
		go func() { defer wg.Done(); e.work(runCtx) }()
	}
	err := e.fetch(runCtx)
	cancel()
	wg.Wait()
	if cerr := e.reader.Close(); cerr != nil {
		e.log.Warn("close kafka reader", "err", cerr)
	}
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return nil
	}
	return err
}

func (e *Expirer) fetch(ctx context.Context) error {
	for {
		select {
		case e.slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		m, err := e.reader.FetchMessage(ctx)
		if err != nil {
			<-e.slots
			if ctx.Err() != nil {
				return ctx.Err()
			}
			e.log.Warn("fetch order event", "err", err)
			select {
			case <-time.After(e.cfg.RetryDelay):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mark := e.track(m)
		ev, err := ParseEvent(m.Value)
		if err != nil || ev.Type != TypeCreated {
			if err != nil {
				e.badEvents.Inc()
				e.log.Warn("skipping undecodable order event", "partition", m.Partition, "offset", m.Offset, "err", err)
			}
			e.done(m.Partition, mark)
			<-e.slots
			continue
		}
		_, n, _ := flashsale.ParseOrderID(ev.OrderID)
		// Deadlines are on Redis's clock; the release script checks again
		// with that clock and tells how long to wait if this one runs ahead.
		h := &held{dueLocal: time.UnixMilli(ev.DeadlineMs), sale: ev.SaleID, order: n, mark: mark}
		h.partition = m.Partition
		e.push(h)
	}
}

// track records a fetched offset. An offset at or below one already tracked
// means the group was rebalanced and the partition is being read again: the
// old marks are dropped (their orders are still released; the redelivered
// events then find them settled).
func (e *Expirer) track(m kafka.Message) *offsetMark {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.parts[m.Partition]
	if p == nil {
		p = &partition{}
		e.parts[m.Partition] = p
	}
	if n := len(p.marks); n > 0 && p.marks[n-1].offset >= m.Offset {
		p.marks = p.marks[:0]
	}
	mark := &offsetMark{offset: m.Offset}
	p.marks = append(p.marks, mark)
	return mark
}

// done marks an offset settled and commits the settled prefix.
func (e *Expirer) done(part int, mark *offsetMark) {
	e.mu.Lock()
	mark.done = true
	p := e.parts[part]
	var commit int64 = -1
	i := 0
	for ; p != nil && i < len(p.marks) && p.marks[i].done; i++ {
		commit = p.marks[i].offset
	}
	if i > 0 {
		p.marks = append(p.marks[:0], p.marks[i:]...)
	}
	e.mu.Unlock()
	if commit >= 0 {
		// With a CommitInterval this only queues the commit, so it is cheap.
		if err := e.reader.CommitMessages(context.Background(),
			kafka.Message{Topic: e.cfg.Topic, Partition: part, Offset: commit}); err != nil {
			e.log.Warn("commit offset", "partition", part, "offset", commit, "err", err)
		}
	}
}

func (e *Expirer) push(h *held) {
	e.mu.Lock()
	heap.Push(&e.pending, h)
	first := e.pending[0] == h
	e.mu.Unlock()
	if first {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// schedule hands due orders to the workers, grouped by sale.
func (e *Expirer) schedule(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var due []*held
		e.mu.Lock()
		for len(e.pending) > 0 && !e.pending[0].dueLocal.After(now) {
			due = append(due, heap.Pop(&e.pending).(*held))
		}
		next := time.Hour
		if len(e.pending) > 0 {
			next = e.pending[0].dueLocal.Sub(now)
		}
		e.mu.Unlock()
		for len(due) > 0 {
			var job []*held
			job, due = e.takeSale(due)
			select {
			case e.jobs <- job:
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-e.wake:
		case <-ctx.Done():
			return
		}
	}
}

// takeSale splits off up to BatchMax orders of the first order's sale.
func (e *Expirer) takeSale(due []*held) (job, rest []*held) {
	sale := due[0].sale
	for _, h := range due {
		if h.sale == sale && len(job) < e.cfg.BatchMax {
			job = append(job, h)
		} else {
			rest = append(rest, h)
		}
	}
	return job, rest
}

func (e *Expirer) work(ctx context.Context) {
	for {
		select {
		case job := <-e.jobs:
			e.release(ctx, job)
		case <-ctx.Done():
			return
		}
	}
}

func (e *Expirer) release(ctx context.Context, job []*held) {
	nums := make([]int64, len(job))
	for i, h := range job {
		nums[i] = h.order
	}
	rctx, cancel := context.WithTimeout(ctx, e.cfg.RedisTimeout)
	nowMs, res, err := lua.Settle(rctx, e.rdb, job[0].sale, lua.Expire, nums)
	cancel()
	if err != nil {
		e.log.Warn("release unpaid orders", "sale", job[0].sale, "orders", len(job), "err", err)
		for _, h := range job {
			h.dueLocal = time.Now().Add(e.cfg.RetryDelay)
			e.push(h)
		}
		return
	}
	for i, h := range job {
		switch res[i].Code {
		case lua.SettleNotDue:
			// This node's clock runs ahead of Redis's: wait the difference.
			h.dueLocal = time.Now().Add(time.Duration(res[i].Record.DeadlineMs-nowMs) * time.Millisecond)
			e.push(h)
			continue
		case lua.SettleDone:
			e.released.Inc()
		default:
			e.settled.Inc()
		}
		e.done(h.partition, h.mark)
		<-e.slots
	}
}

func (e *Expirer) watchLag(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			e.lag.Set(float64(e.reader.Stats().Lag))
		case <-ctx.Done():
			return
		}
	}
}

// Describe implements prometheus.Collector.
func (e *Expirer) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range e.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (e *Expirer) Collect(ch chan<- prometheus.Metric) {
	for _, c := range e.collectors() {
		c.Collect(ch)
	}
}

func (e *Expirer) collectors() []prometheus.Collector {
	return []prometheus.Collector{e.released, e.settled, e.heldGauge, e.lag, e.badEvents}
}

// deadlineHeap orders held orders by when they are due.
type deadlineHeap []*held

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].dueLocal.Before(h[j].dueLocal) }
func (h deadlineHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *deadlineHeap) Push(x any)        { x.(*held).index = len(*h); *h = append(*h, x.(*held)) }
func (h *deadlineHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}
