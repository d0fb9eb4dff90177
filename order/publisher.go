package order

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flashsale/flashsale/stock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/segmentio/kafka-go"
)

// PublisherConfig configures the Kafka producer.
type PublisherConfig struct {
	Brokers      []string
	Topic        string
	BatchTimeout time.Duration // how long the writer waits to fill a batch; kafka-go's default of 1 s is a trap
	BatchSize    int
	WriteTimeout time.Duration
	MaxAttempts  int
}

// Publisher publishes order.created events with acks from all in-sync
// replicas. It implements stock.Confirmer: a reservation is durable once its
// event is acknowledged. It is safe for concurrent use; Close flushes.
type Publisher struct {
	w         *kafka.Writer
	published prometheus.Counter
	failed    prometheus.Counter
	latency   prometheus.Histogram
}

// NewPublisher returns a Publisher writing to cfg.Topic. Its metrics carry
// the topic as a label, so one registry can hold a publisher per topic.
func NewPublisher(cfg PublisherConfig) *Publisher {
	topic := prometheus.Labels{"topic": cfg.Topic}
	return &Publisher{
		w: &kafka.Writer{
			Addr:                   kafka.TCP(cfg.Brokers...),
			Topic:                  cfg.Topic,
			Balancer:               &kafka.Hash{},
			RequiredAcks:           kafka.RequireAll,
			BatchTimeout:           cfg.BatchTimeout,
			BatchSize:              max(cfg.BatchSize, 1),
			BatchBytes:             16 << 20,
			WriteTimeout:           cfg.WriteTimeout,
			ReadTimeout:            cfg.WriteTimeout,
			MaxAttempts:            max(cfg.MaxAttempts, 1),
			WriteBackoffMin:        10 * time.Millisecond,
			WriteBackoffMax:        200 * time.Millisecond,
			AllowAutoTopicCreation: true,
		},
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_kafka_published_total",
			Help: "Events acknowledged by Kafka.", ConstLabels: topic}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_kafka_publish_errors_total",
			Help: "Events Kafka did not acknowledge (what they confirmed was undone).", ConstLabels: topic}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashsale_kafka_publish_seconds",
			Help: "Time to publish one batch of events.", ConstLabels: topic, Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
}

// Confirm implements stock.Confirmer: it publishes one event per reservation
// in a single WriteMessages call and reports each one Kafka did not take.
func (p *Publisher) Confirm(ctx context.Context, rs []stock.Reservation, errs []error) {
	msgs := make([]kafka.Message, len(rs))
	for i, r := range rs {
		msgs[i] = kafka.Message{Key: []byte(r.SaleID), Value: AppendCreated(make([]byte, 0, 192), r)}
	}
	p.Publish(ctx, msgs, errs)
}

// Publish writes msgs (to the publisher's topic) in one WriteMessages call
// and sets errs[i] for every message Kafka did not acknowledge. It bounds
// itself by ctx and the writer's WriteTimeout.
func (p *Publisher) Publish(ctx context.Context, msgs []kafka.Message, errs []error) {
	start := time.Now()
	err := p.w.WriteMessages(ctx, msgs...)
	p.latency.Observe(time.Since(start).Seconds())
	if err == nil {
		p.published.Add(float64(len(msgs)))
		return
	}
	var werrs kafka.WriteErrors
	if errors.As(err, &werrs) && len(werrs) == len(msgs) {
		for i, e := range werrs {
			if e != nil {
				errs[i] = fmt.Errorf("publish event: %w", e)
				p.failed.Inc()
			} else {
				p.published.Inc()
			}
		}
		return
	}
	for i := range errs {
		errs[i] = fmt.Errorf("publish events: %w", err)
	}
	p.failed.Add(float64(len(msgs)))
}

// Close flushes pending writes and closes the writer.
func (p *Publisher) Close() error {
	if err := p.w.Close(); err != nil {
		return fmt.Errorf("close kafka writer: %w", err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (p *Publisher) Describe(ch chan<- *prometheus.Desc) {
	p.published.Describe(ch)
	p.failed.Describe(ch)
	p.latency.Describe(ch)
}

// Collect implements prometheus.Collector.
func (p *Publisher) Collect(ch chan<- prometheus.Metric) {
	p.published.Collect(ch)
	p.failed.Collect(ch)
	p.latency.Collect(ch)
}
