package kafka

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/flashsale/flashsale/internal/metric"
	"github.com/prometheus/client_golang/prometheus"
	kafkago "github.com/segmentio/kafka-go"
)

// PublisherConfig configures the Kafka producer.
type PublisherConfig struct {
	Brokers      []string
	Topic        string
	WriteTimeout time.Duration // bound of one publish, retries included
	MaxAttempts  int           // tries of a batch the broker refused outright
}

// Publisher publishes events with acks from all in-sync replicas: what an
// event announces (an order, an open) is durable once it is acknowledged.
// It is safe for concurrent use.
//
// It sends each batch as one produce request at once (kafka-go's Client),
// rather than through kafka-go's Writer: the coalescer upstream already
// formed the batch, and the Writer would hold every partial batch for its
// BatchTimeout. A batch that may have reached the broker (a timeout, a cut
// connection) is never retried, so an event is never written twice; only a
// refusal the broker is sure of (no leader yet, connection refused) is tried
// again.
type Publisher struct {
	client   *kafkago.Client
	topic    string
	attempts int
	timeout  time.Duration

	mu         sync.Mutex
	partitions []int
	fetched    time.Time

	published prometheus.Counter
	failed    prometheus.Counter
	latency   prometheus.Histogram
}

// NewPublisher returns a Publisher writing to cfg.Topic. Its metrics carry
// the topic as a label, so one registry can hold a publisher per topic.
func NewPublisher(cfg PublisherConfig) *Publisher {
	topic := prometheus.Labels{"topic": cfg.Topic}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 3 * time.Second
	}
	return &Publisher{
		client: &kafkago.Client{Addr: kafkago.TCP(cfg.Brokers...), Timeout: cfg.WriteTimeout,
			Transport: &kafkago.Transport{DialTimeout: time.Second, IdleTimeout: time.Minute, MetadataTTL: 10 * time.Second}},
		topic:     cfg.Topic,
		attempts:  max(cfg.MaxAttempts, 1),
		timeout:   cfg.WriteTimeout,
		published: metric.Counter("kafka", "published_total", "Events acknowledged by Kafka.", topic),
		failed: metric.Counter("kafka", "publish_errors_total",
			"Events Kafka did not acknowledge (what they confirmed was undone).", topic),
		latency: metric.Histogram("kafka", "publish_seconds", "Time to publish one batch of events.", topic,
			prometheus.ExponentialBuckets(0.0005, 2, 14)),
	}
}

// Publish writes msgs to the publisher's topic, one produce request per
// partition (messages go to the partition their key hashes to, so one key's
// events keep their order), and sets errs[i] for every message Kafka did not
// acknowledge. It bounds itself by ctx and WriteTimeout.
func (p *Publisher) Publish(ctx context.Context, msgs []kafkago.Message, errs []error) {
	start := time.Now()
	defer func() { p.latency.Observe(time.Since(start).Seconds()) }()
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	parts, err := p.partitionList(ctx)
	if err != nil {
		p.fail(msgs, errs, nil, err)
		return
	}
	byPart := map[int][]int{}
	var hash kafkago.Hash
	for i := range msgs {
		part := hash.Balance(msgs[i], parts...)
		byPart[part] = append(byPart[part], i)
	}
	for part, idx := range byPart {
		err := p.produce(ctx, part, msgs, idx)
		if err != nil {
			p.fail(msgs, errs, idx, err)
			continue
		}
		p.published.Add(float64(len(idx)))
	}
}

func (p *Publisher) fail(msgs []kafkago.Message, errs []error, idx []int, err error) {
	err = fmt.Errorf("publish to %s: %w", p.topic, err)
	if idx == nil {
		for i := range msgs {
			errs[i] = err
		}
		p.failed.Add(float64(len(msgs)))
		return
	}
	for _, i := range idx {
		errs[i] = err
	}
	p.failed.Add(float64(len(idx)))
}

// produce sends the messages idx of msgs to one partition and waits for the
// acks of all in-sync replicas.
func (p *Publisher) produce(ctx context.Context, part int, msgs []kafkago.Message, idx []int) error {
	records := make([]kafkago.Record, len(idx))
	now := time.Now()
	for j, i := range idx {
		records[j] = kafkago.Record{Time: now, Key: kafkago.NewBytes(msgs[i].Key), Value: kafkago.NewBytes(msgs[i].Value)}
	}
	var err error
	for attempt := 0; attempt < p.attempts; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(time.Duration(attempt) * 20 * time.Millisecond):
			case <-ctx.Done():
				return errors.Join(err, ctx.Err())
			}
		}
		var resp *kafkago.ProduceResponse
		resp, err = p.client.Produce(ctx, &kafkago.ProduceRequest{Topic: p.topic, Partition: part,
			RequiredAcks: kafkago.RequireAll, Records: kafkago.NewRecordReader(records...)})
		if err == nil && resp.Error == nil && len(resp.RecordErrors) == 0 {
			return nil
		}
		if err == nil {
			err = resp.Error
			if err == nil {
				err = fmt.Errorf("%d records refused", len(resp.RecordErrors))
			}
		}
		if !surelyNotWritten(err) {
			return err
		}
		p.forgetPartitions() // leadership may have moved
	}
	return err
}

// surelyNotWritten reports whether err proves the broker did not write the
// batch, so sending it again cannot duplicate an event.
func surelyNotWritten(err error) bool {
	var kerr kafkago.Error
	if errors.As(err, &kerr) {
		switch kerr {
		case kafkago.NotLeaderForPartition, kafkago.LeaderNotAvailable, kafkago.UnknownTopicOrPartition,
			kafkago.NotEnoughReplicas, kafkago.BrokerNotAvailable:
			return true
		}
		return false
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// partitionList returns the topic's partitions, asking the broker at most
// every 30 seconds (or again after a leadership error).
func (p *Publisher) partitionList(ctx context.Context) ([]int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.partitions) > 0 && time.Since(p.fetched) < 30*time.Second {
		return p.partitions, nil
	}
	md, err := p.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{p.topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	for _, t := range md.Topics {
		if t.Name != p.topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("metadata of %s: %w", p.topic, t.Error)
		}
		parts := make([]int, 0, len(t.Partitions))
		for _, pt := range t.Partitions {
			parts = append(parts, pt.ID)
		}
		if len(parts) == 0 {
			break
		}
		p.partitions, p.fetched = parts, time.Now()
		return parts, nil
	}
	return nil, fmt.Errorf("topic %s has no partitions (does it exist?)", p.topic)
}

func (p *Publisher) forgetPartitions() {
	p.mu.Lock()
	p.partitions = nil
	p.mu.Unlock()
}

// Close releases the publisher's connections. Every Publish has returned
// by then (publishes are synchronous), so there is nothing to flush.
func (p *Publisher) Close() error {
	if t, ok := p.client.Transport.(*kafkago.Transport); ok {
		t.CloseIdleConnections()
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
