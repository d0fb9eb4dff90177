package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/kafka"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
)

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	Brokers       []string
	OrderTopic    string        // order.* events
	EnvelopeTopic string        // envelope.* events ("" to skip them)
	Group         string        // the store's consumer group (apart from expiry's and refund's)
	BatchMax      int           // events written by one transaction
	Linger        time.Duration // how long a batch waits to fill once it has its first event
	RetryDelay    time.Duration // first wait after a failed transaction (doubles up to 5 s)
	LagInterval   time.Duration // how often flashsale_store_lag_events is measured
}

// Consumer writes every order and envelope event into the store. One
// consumer group: partitions are shared among the store consumers of every
// node (or of `flashsale store`), and each event is applied by one of them.
//
// It fetches up to BatchMax events, writes them in one transaction, and
// commits their offsets only after the transaction committed. If the
// database is down it keeps retrying the same batch — it does not fetch
// more, so nothing piles up in memory — while the sale goes on untouched:
// the events wait in Kafka, flashsale_store_lag_events grows, and the
// consumer catches up when the database is back. A crash between the
// database commit and the offset commit redelivers the batch, which applies
// nothing twice (see Apply).
type Consumer struct {
	cfg    ConsumerConfig
	store  *Store
	lookup SaleLookup
	log    *slog.Logger
	reader *kafkago.Reader
	client *kafkago.Client

	// BeforeCommit, when set (tests only), runs after a batch's transaction
	// committed and before its offsets are: a crash there is the redelivery
	// case.
	BeforeCommit func(events int)

	applied   prometheus.Counter
	batches   prometheus.Histogram
	failures  prometheus.Counter
	writeTime prometheus.Histogram
	badEvents prometheus.Counter
	lag       prometheus.Gauge

	mu      sync.Mutex
	lastLag int64
}

// NewConsumer returns a Consumer; Run starts it.
func NewConsumer(cfg ConsumerConfig, s *Store, lookup SaleLookup, log *slog.Logger) *Consumer {
	if log == nil {
		log = slog.Default()
	}
	cfg.BatchMax = max(cfg.BatchMax, 1)
	if cfg.Linger <= 0 {
		cfg.Linger = 20 * time.Millisecond
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 200 * time.Millisecond
	}
	if cfg.LagInterval <= 0 {
		cfg.LagInterval = time.Second
	}
	return &Consumer{cfg: cfg, store: s, lookup: lookup, log: log,
		client: &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Timeout: 5 * time.Second},
		applied: metric.Counter("store", "applied_events_total",
			"Events written into the order store (a redelivered event counts again but changes nothing).", nil),
		batches: metric.Histogram("store", "batch_events",
			"Events written by one store transaction.", nil, prometheus.ExponentialBuckets(1, 4, 8)),
		writeTime: metric.Histogram("store", "write_seconds",
			"Time of one store transaction (one batch of events).", nil, prometheus.ExponentialBuckets(0.001, 2, 14)),
		failures: metric.Counter("store", "write_errors_total",
			"Store transactions that failed (retried; the events wait in Kafka).", nil),
		badEvents: metric.Counter("store", "bad_events_total",
			"Events that could not be decoded and were skipped.", nil),
		lag: metric.Gauge("store", "lag_events",
			"Events on Kafka not yet committed by the store's consumer group (end offsets minus committed offsets).", nil),
	}
}

func (c *Consumer) topics() []string {
	t := []string{c.cfg.OrderTopic}
	if c.cfg.EnvelopeTopic != "" {
		t = append(t, c.cfg.EnvelopeTopic)
	}
	return t
}

// Run consumes until ctx ends, then closes its reader. A batch being
// written when ctx ends is not committed: it is redelivered to whoever
// reads the partitions next.
func (c *Consumer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	runCtx, cancel := context.WithCancel(ctx)
	wg.Add(1)
	go func() { defer wg.Done(); c.watchLag(runCtx) }()
	err := c.consume(runCtx)
	cancel()
	wg.Wait()
	if errors.Is(err, context.Canceled) || ctx.Err() != nil {
		return nil
	}
	return err
}

// consume reads and writes until ctx ends, without the lag watcher. A
// reader that stalls (see errStalled) is closed and a new one joins the
// group.
func (c *Consumer) consume(ctx context.Context) error {
	for {
		err := c.consumeOnce(ctx)
		if !errors.Is(err, errStalled) {
			return err
		}
		c.log.Warn("store: no event read for a while although the group lags; joining the group again",
			"stalled_for", stallAfter, "lag", c.Lag())
	}
}

// stallAfter is how long a reader may go without an event while the group
// has events unread before it is replaced. Longer than a rebalance after a
// member dies (session timeout + rebalance timeout, 6 s each), so a healthy
// rebalance is never cut short.
const stallAfter = 15 * time.Second

// errStalled ends one reader's loop: no event for stallAfter while the
// group's lag is above zero. Seen with the dev broker when a member was
// SIGKILLed while the group was forming: the others' readers waited for
// ever, silently, and the store stopped taking events.
var errStalled = errors.New("store consumer stalled")

func (c *Consumer) consumeOnce(ctx context.Context) error {
	c.reader = kafkago.NewReader(kafkago.ReaderConfig{
		Brokers:     c.cfg.Brokers,
		GroupID:     c.cfg.Group,
		GroupTopics: c.topics(),
		MinBytes:    1,
		MaxBytes:    8 << 20,
		MaxWait:     100 * time.Millisecond,
		// Offsets are committed synchronously, after each transaction: the
		// commit is what makes a batch done.
		CommitInterval:    0,
		StartOffset:       kafkago.FirstOffset,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  6 * time.Second,
		HeartbeatInterval: time.Second,
		ErrorLogger:       kafkago.LoggerFunc(func(f string, a ...any) { c.log.Debug("store kafka reader: " + fmt.Sprintf(f, a...)) }),
	})
	err := c.loop(ctx)
	if cerr := c.reader.Close(); cerr != nil {
		c.log.Warn("close store kafka reader", "err", cerr)
	}
	return err
}

func (c *Consumer) loop(ctx context.Context) error {
	msgs := make([]kafkago.Message, 0, c.cfg.BatchMax)
	for {
		msgs = msgs[:0]
		fctx, fcancel := context.WithTimeout(ctx, stallAfter)
		m, err := c.reader.FetchMessage(fctx)
		fcancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, context.DeadlineExceeded) {
				if c.Lag() > 0 {
					return errStalled
				}
				continue // idle: nothing to read
			}
			c.log.Warn("store: fetch event", "err", err)
			if !sleep(ctx, c.cfg.RetryDelay) {
				return ctx.Err()
			}
			continue
		}
		msgs = append(msgs, m)
		fill, cancel := context.WithTimeout(ctx, c.cfg.Linger)
		for len(msgs) < c.cfg.BatchMax {
			m, err := c.reader.FetchMessage(fill)
			if err != nil {
				break
			}
			msgs = append(msgs, m)
		}
		cancel()
		if err := c.write(ctx, msgs); err != nil {
			return err
		}
	}
}

// write applies msgs, retrying until the database takes them, then commits
// their offsets.
func (c *Consumer) write(ctx context.Context, msgs []kafkago.Message) error {
	// One transaction per partition, run side by side: an order's (and an
	// envelope's) events all hash to one partition, so the transactions
	// never touch the same row, and the database's cores work in parallel.
	// The offsets are committed once every one of them has.
	parts := map[[2]any][]kafkago.Message{}
	for _, m := range msgs {
		k := [2]any{m.Topic, m.Partition}
		parts[k] = append(parts[k], m)
	}
	batches := make([]*Batch, 0, len(parts))
	for _, pm := range parts {
		batches = append(batches, c.decode(pm))
	}
	b := &Batch{}
	for _, pb := range batches {
		b.Events += pb.Events
	}
	delay := c.cfg.RetryDelay
	for len(batches) > 0 {
		t0 := time.Now()
		errs := make([]error, len(batches))
		var wg sync.WaitGroup
		for i, pb := range batches {
			wg.Go(func() { errs[i] = c.store.Apply(ctx, pb, c.lookup) })
		}
		wg.Wait()
		c.writeTime.Observe(time.Since(t0).Seconds())
		failed := batches[:0]
		var err error
		for i, e := range errs {
			if e != nil {
				failed, err = append(failed, batches[i]), e
			}
		}
		if batches = failed; len(batches) == 0 {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.failures.Inc()
		c.log.Warn("store: write failed; retrying (the events wait in Kafka)", "transactions", len(batches), "retry_in", delay, "err", err)
		if !sleep(ctx, delay) {
			return ctx.Err()
		}
		delay = min(2*delay, 5*time.Second)
	}
	c.applied.Add(float64(b.Events))
	c.batches.Observe(float64(b.Events))
	if c.BeforeCommit != nil {
		c.BeforeCommit(b.Events)
	}
	// A few tries, then go on reading: an offset commit is cumulative per
	// partition, so the next batch's commit covers this one, and a batch
	// never committed is redelivered after a rebalance and applied again,
	// which is harmless (Apply is idempotent). Retrying for ever instead
	// would stop this member from reading while a rebalance (a member
	// killed) waits on it, and the store would stop taking events.
	for try := 1; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := c.reader.CommitMessages(cctx, msgs...)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if try == commitTries {
			c.log.Warn("store: offsets not committed; reading on (a later commit covers them, or the batch is applied again)",
				"tries", try, "err", err)
			return nil
		}
		c.log.Warn("store: commit offsets", "try", try, "err", err)
		if !sleep(ctx, c.cfg.RetryDelay) {
			return ctx.Err()
		}
	}
}

// commitTries bounds the attempts to commit one batch's offsets.
const commitTries = 3

func (c *Consumer) decode(msgs []kafkago.Message) *Batch {
	b := NewBatch()
	for _, m := range msgs {
		var err error
		switch m.Topic {
		case c.cfg.EnvelopeTopic:
			var e kafka.EnvelopeEvent
			if e, err = kafka.ParseEnvelopeEvent(m.Value); err == nil {
				b.AddEnvelope(e)
			}
		default:
			var e kafka.OrderEvent
			if e, err = kafka.ParseOrderEvent(m.Value); err == nil {
				err = b.AddOrder(e)
			}
		}
		if err != nil {
			c.badEvents.Inc()
			c.log.Warn("store: skipping undecodable event", "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
		}
	}
	return b
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Lag returns the last measured lag: events on Kafka the group has not
// committed.
func (c *Consumer) Lag() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastLag
}

// MeasureLag asks the broker for the end offsets of the store's topics and
// the group's committed offsets, and returns their difference.
func (c *Consumer) MeasureLag(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	md, err := c.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: c.topics()})
	if err != nil {
		return 0, fmt.Errorf("store lag: metadata: %w", err)
	}
	ends := map[string][]kafkago.OffsetRequest{}
	parts := map[string][]int{}
	for _, t := range md.Topics {
		for _, p := range t.Partitions {
			ends[t.Name] = append(ends[t.Name], kafkago.LastOffsetOf(p.ID))
			parts[t.Name] = append(parts[t.Name], p.ID)
		}
	}
	lo, err := c.client.ListOffsets(ctx, &kafkago.ListOffsetsRequest{Topics: ends})
	if err != nil {
		return 0, fmt.Errorf("store lag: end offsets: %w", err)
	}
	of, err := c.client.OffsetFetch(ctx, &kafkago.OffsetFetchRequest{GroupID: c.cfg.Group, Topics: parts})
	if err != nil {
		return 0, fmt.Errorf("store lag: committed offsets: %w", err)
	}
	committed := map[string]map[int]int64{}
	for t, ps := range of.Topics {
		committed[t] = map[int]int64{}
		for _, p := range ps {
			committed[t][p.Partition] = p.CommittedOffset
		}
	}
	var lag int64
	for t, ps := range lo.Topics {
		for _, p := range ps {
			c := committed[t][p.Partition]
			if c < 0 {
				c = p.FirstOffset
			}
			if d := p.LastOffset - max(c, 0); d > 0 {
				lag += d
			}
		}
	}
	return lag, nil
}

func (c *Consumer) watchLag(ctx context.Context) {
	t := time.NewTicker(c.cfg.LagInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			lag, err := c.MeasureLag(ctx)
			if err != nil {
				c.log.Debug("store lag", "err", err)
				continue
			}
			c.mu.Lock()
			c.lastLag = lag
			c.mu.Unlock()
			c.lag.Set(float64(lag))
		case <-ctx.Done():
			return
		}
	}
}

// Describe implements prometheus.Collector.
func (c *Consumer) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.collectors() {
		m.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (c *Consumer) Collect(ch chan<- prometheus.Metric) {
	for _, m := range c.collectors() {
		m.Collect(ch)
	}
}

func (c *Consumer) collectors() []prometheus.Collector {
	return []prometheus.Collector{c.applied, c.batches, c.failures, c.writeTime, c.badEvents, c.lag}
}

// WriteTime is the histogram of store transaction times
// (flashsale_store_write_seconds).
func (c *Consumer) WriteTime() prometheus.Histogram { return c.writeTime }
