package kafka

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flashsale/flashsale/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
)

// DelayConfig configures a DelayConsumer.
type DelayConfig struct {
	Brokers    []string
	Topic      string
	Group      string
	Workers    int           // goroutines running Release
	QueueSize  int           // release jobs waiting for a worker
	MaxHeld    int           // items held until their deadline; when full, fetching pauses
	BatchMax   int           // items of one key released by one Release call
	RetryDelay time.Duration // wait before retrying after a Release error or a fetch error

	// A fetch returns once FetchMinBytes are there or FetchMaxWait passed
	// (defaults 64 KiB and 250 ms). Deadlines are seconds to minutes away, so
	// a quarter second late in hand costs nothing, while a fetch per produce
	// (MinBytes 1) woke the broker and this node for every sold batch.
	FetchMinBytes int
	FetchMaxWait  time.Duration

	// Subsystem names the metrics (flashsale_<subsystem>_released_total,
	// _settled_total, _bad_events_total, _held_items) and the consumer label
	// of flashsale_kafka_consumer_lag_messages: "expiry", "refund". Noun is
	// what is held ("orders"), for the metrics' help.
	Subsystem, Noun string
}

// Due is what one event asks for: Item, of the group Key (a sale, an
// envelope), to be released at DeadlineMs on the authority's clock.
type Due[T any] struct {
	Key        string
	Item       T
	DeadlineMs int64
}

// Outcome is what Release did with one item.
type Outcome struct {
	Released bool          // the deadline changed something now (else it was already settled)
	Wait     time.Duration // > 0: not due yet on the authority's clock; hold it this much longer
}

// DelayHandler is what a DelayConsumer delegates to: decoding events and
// settling due items. Release must be idempotent — redelivered events (after
// a crash or rebalance) call it again for items it settled before.
type DelayHandler[T any] interface {
	// Decode returns the item an event asks to release. ok false skips an
	// event of another type; an error counts it as undecodable and skips it.
	Decode(m kafkago.Message) (d Due[T], ok bool, err error)
	// Release settles items of one key in one call, filling out[i] for
	// items[i], or returns an error to retry them all after RetryDelay.
	Release(ctx context.Context, key string, items []T, out []Outcome) error
}

// DelayConsumer consumes events that each carry a deadline, holds each item
// until it is due and then has the handler release it: the order expirer
// (unpaid orders back to stock) and the envelope refunder (the unopened rest
// back to the sender) are both one.
//
// Exactly once: Release is idempotent, so a redelivered event releases
// nothing twice. Offsets are committed only up to the first item not yet
// settled in each partition, so a crash never skips one. Everything is
// bounded: at most MaxHeld items are held (fetching waits when full),
// Workers goroutines, QueueSize jobs.
type DelayConsumer[T any] struct {
	cfg     DelayConfig
	handler DelayHandler[T]
	log     *slog.Logger

	mu      sync.Mutex
	pending dueHeap[T]
	wake    chan struct{}
	slots   chan struct{} // one per held item
	jobs    chan []*held[T]
	parts   map[int]*partition

	reader *kafkago.Reader

	released  prometheus.Counter
	settled   prometheus.Counter
	heldGauge prometheus.GaugeFunc
	lag       prometheus.Gauge
	badEvents prometheus.Counter
}

// held is one item waiting for its deadline.
type held[T any] struct {
	dueLocal  time.Time // when to try, on this node's clock
	key       string
	item      T
	mark      *offsetMark
	partition int
	index     int
}

type offsetMark struct {
	offset int64
	done   bool
}

// partition tracks fetched offsets in order so commits never pass an
// unsettled item.
type partition struct {
	marks []*offsetMark
}

// NewDelayConsumer returns a DelayConsumer; Run starts it.
func NewDelayConsumer[T any](cfg DelayConfig, h DelayHandler[T], log *slog.Logger) *DelayConsumer[T] {
	cfg.Workers = max(cfg.Workers, 1)
	cfg.QueueSize = max(cfg.QueueSize, 1)
	cfg.MaxHeld = max(cfg.MaxHeld, 1)
	cfg.BatchMax = max(cfg.BatchMax, 1)
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	if cfg.FetchMinBytes <= 0 {
		cfg.FetchMinBytes = 64 << 10
	}
	if cfg.FetchMaxWait <= 0 {
		cfg.FetchMaxWait = 250 * time.Millisecond
	}
	if log == nil {
		log = slog.Default()
	}
	d := &DelayConsumer[T]{
		cfg: cfg, handler: h, log: log,
		wake:  make(chan struct{}, 1),
		slots: make(chan struct{}, cfg.MaxHeld),
		jobs:  make(chan []*held[T], cfg.QueueSize),
		parts: map[int]*partition{},
		released: metric.Counter(cfg.Subsystem, "released_total",
			"Held "+cfg.Noun+" whose deadline changed something when this node released them.", nil),
		settled: metric.Counter(cfg.Subsystem, "settled_total",
			"Held "+cfg.Noun+" that needed nothing at their deadline (already settled).", nil),
		lag: metric.Gauge("kafka", "consumer_lag_messages", "Messages behind the end of the partition, as kafka-go last saw it.",
			prometheus.Labels{"consumer": cfg.Subsystem}),
		badEvents: metric.Counter(cfg.Subsystem, "bad_events_total", "Events that could not be decoded and were skipped.", nil),
	}
	d.heldGauge = metric.GaugeFunc(cfg.Subsystem, "held_items", "Held "+cfg.Noun+" waiting for their deadline.", nil,
		func() float64 { return float64(len(d.slots)) })
	return d
}

// Run consumes until ctx ends, then stops its goroutines and closes the
// reader. Items still held are not lost: their offsets were not committed,
// so another consumer (or this one, restarted) gets them again.
func (d *DelayConsumer[T]) Run(ctx context.Context) error {
	d.reader = kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:        d.cfg.Brokers,
		GroupID:        d.cfg.Group,
		Topic:          d.cfg.Topic,
		MinBytes:       d.cfg.FetchMinBytes,
		MaxBytes:       max(8<<20, d.cfg.FetchMinBytes),
		MaxWait:        d.cfg.FetchMaxWait,
		CommitInterval: 500 * time.Millisecond,
		StartOffset:    kafkago.FirstOffset,
		// Short group timeouts: a killed node's partitions move to the
		// survivors within seconds, and a leaving consumer is not held up
		// by a dead member for kafka-go's default 30 s and 60 s.
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  6 * time.Second,
		HeartbeatInterval: time.Second,
		ErrorLogger:       kafkago.LoggerFunc(func(f string, a ...any) { d.log.Debug("kafka reader: " + fmt.Sprintf(f, a...)) }),
	})
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	wg.Add(2 + d.cfg.Workers)
	go func() { defer wg.Done(); d.schedule(runCtx) }()
	go func() { defer wg.Done(); d.watchLag(runCtx) }()
	for i := 0; i < d.cfg.Workers; i++ {
		go func() { defer wg.Done(); d.work(runCtx) }()
	}
	err := d.fetch(runCtx)
	cancel()
	wg.Wait()
	if cerr := d.reader.Close(); cerr != nil {
		d.log.Warn("close kafka reader", "err", cerr)
	}
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return nil
	}
	return err
}

func (d *DelayConsumer[T]) fetch(ctx context.Context) error {
	for {
		select {
		case d.slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		m, err := d.reader.FetchMessage(ctx)
		if err != nil {
			<-d.slots
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.log.Warn("fetch event", "consumer", d.cfg.Subsystem, "err", err)
			select {
			case <-time.After(d.cfg.RetryDelay):
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		mark := d.track(m)
		due, ok, err := d.handler.Decode(m)
		if err != nil || !ok {
			if err != nil {
				d.badEvents.Inc()
				d.log.Warn("skipping undecodable event", "consumer", d.cfg.Subsystem, "partition", m.Partition, "offset", m.Offset, "err", err)
			}
			d.done(m.Partition, mark)
			<-d.slots
			continue
		}
		// Deadlines are on Redis's clock; Release checks again with that
		// clock and tells how long to wait if this one runs ahead.
		d.push(&held[T]{dueLocal: time.UnixMilli(due.DeadlineMs), key: due.Key, item: due.Item, mark: mark, partition: m.Partition})
	}
}

// track records a fetched offset. An offset at or below one already tracked
// means the group was rebalanced and the partition is being read again: the
// old marks are dropped (their items are still released; the redelivered
// events then find them settled).
func (d *DelayConsumer[T]) track(m kafkago.Message) *offsetMark {
	d.mu.Lock()
	defer d.mu.Unlock()
	p := d.parts[m.Partition]
	if p == nil {
		p = &partition{}
		d.parts[m.Partition] = p
	}
	if n := len(p.marks); n > 0 && p.marks[n-1].offset >= m.Offset {
		p.marks = p.marks[:0]
	}
	mark := &offsetMark{offset: m.Offset}
	p.marks = append(p.marks, mark)
	return mark
}

// done marks an offset settled and commits the settled prefix.
func (d *DelayConsumer[T]) done(part int, mark *offsetMark) {
	d.mu.Lock()
	mark.done = true
	p := d.parts[part]
	var commit int64 = -1
	i := 0
	for ; p != nil && i < len(p.marks) && p.marks[i].done; i++ {
		commit = p.marks[i].offset
	}
	if i > 0 {
		p.marks = append(p.marks[:0], p.marks[i:]...)
	}
	d.mu.Unlock()
	if commit >= 0 {
		// With a CommitInterval this only queues the commit, so it is cheap.
		if err := d.reader.CommitMessages(context.Background(),
			kafkago.Message{Topic: d.cfg.Topic, Partition: part, Offset: commit}); err != nil {
			d.log.Warn("commit offset", "consumer", d.cfg.Subsystem, "partition", part, "offset", commit, "err", err)
		}
	}
}

func (d *DelayConsumer[T]) push(h *held[T]) {
	d.mu.Lock()
	heap.Push(&d.pending, h)
	first := d.pending[0] == h
	d.mu.Unlock()
	if first {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// schedule hands due items to the workers, grouped by key.
func (d *DelayConsumer[T]) schedule(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		var due []*held[T]
		d.mu.Lock()
		for len(d.pending) > 0 && !d.pending[0].dueLocal.After(now) {
			due = append(due, heap.Pop(&d.pending).(*held[T]))
		}
		next := time.Hour
		if len(d.pending) > 0 {
			next = d.pending[0].dueLocal.Sub(now)
		}
		d.mu.Unlock()
		for len(due) > 0 {
			var job []*held[T]
			job, due = d.takeKey(due)
			select {
			case d.jobs <- job:
			case <-ctx.Done():
				return
			}
		}
		timer.Reset(next)
		select {
		case <-timer.C:
		case <-d.wake:
		case <-ctx.Done():
			return
		}
	}
}

// takeKey splits off up to BatchMax items of the first item's key.
func (d *DelayConsumer[T]) takeKey(due []*held[T]) (job, rest []*held[T]) {
	key := due[0].key
	for _, h := range due {
		if h.key == key && len(job) < d.cfg.BatchMax {
			job = append(job, h)
		} else {
			rest = append(rest, h)
		}
	}
	return job, rest
}

func (d *DelayConsumer[T]) work(ctx context.Context) {
	for {
		select {
		case job := <-d.jobs:
			d.release(ctx, job)
		case <-ctx.Done():
			return
		}
	}
}

func (d *DelayConsumer[T]) release(ctx context.Context, job []*held[T]) {
	items := make([]T, len(job))
	for i, h := range job {
		items[i] = h.item
	}
	out := make([]Outcome, len(job))
	if err := d.handler.Release(ctx, job[0].key, items, out); err != nil {
		d.log.Warn("release due items", "consumer", d.cfg.Subsystem, "key", job[0].key, "items", len(job), "err", err)
		for _, h := range job {
			h.dueLocal = time.Now().Add(d.cfg.RetryDelay)
			d.push(h)
		}
		return
	}
	for i, h := range job {
		switch {
		case out[i].Wait > 0:
			// This node's clock runs ahead of Redis's: wait the difference.
			h.dueLocal = time.Now().Add(out[i].Wait)
			d.push(h)
			continue
		case out[i].Released:
			d.released.Inc()
		default:
			d.settled.Inc()
		}
		d.done(h.partition, h.mark)
		<-d.slots
	}
}

func (d *DelayConsumer[T]) watchLag(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.lag.Set(float64(d.reader.Stats().Lag))
		case <-ctx.Done():
			return
		}
	}
}

// Describe implements prometheus.Collector.
func (d *DelayConsumer[T]) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range d.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (d *DelayConsumer[T]) Collect(ch chan<- prometheus.Metric) {
	for _, c := range d.collectors() {
		c.Collect(ch)
	}
}

func (d *DelayConsumer[T]) collectors() []prometheus.Collector {
	return []prometheus.Collector{d.released, d.settled, d.heldGauge, d.lag, d.badEvents}
}

// dueHeap orders held items by when they are due.
type dueHeap[T any] []*held[T]

func (h dueHeap[T]) Len() int           { return len(h) }
func (h dueHeap[T]) Less(i, j int) bool { return h[i].dueLocal.Before(h[j].dueLocal) }
func (h dueHeap[T]) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *dueHeap[T]) Push(x any)        { x.(*held[T]).index = len(*h); *h = append(*h, x.(*held[T])) }
func (h *dueHeap[T]) Pop() any {
	old := *h
	x := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return x
}
