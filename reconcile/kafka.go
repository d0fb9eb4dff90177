package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flashsale/flashsale/kafka"
	kafkago "github.com/segmentio/kafka-go"
)

// EventLog is what reconcile read from the order topic.
type EventLog struct {
	Created     map[string][]kafka.OrderEvent // order id -> its order.created events (more than one is a defect)
	Transitions map[string][]kafka.OrderEvent // order id -> its order.paid/cancelled/expired/aborted events (repeats are harmless)
	Messages    int
	Undecoded   int
}

// ReadEvents reads every message of topic, partition by partition, from the
// first offset to the end as it was when the call began. It uses no consumer
// group, so it moves no one's offsets.
func ReadEvents(ctx context.Context, brokers []string, topic string) (*EventLog, error) {
	log := &EventLog{Created: map[string][]kafka.OrderEvent{}, Transitions: map[string][]kafka.OrderEvent{}}
	var conn *kafkago.Conn
	var err error
	for _, b := range brokers {
		if conn, err = kafkago.DialContext(ctx, "tcp", b); err == nil {
			break
		}
	}
	if conn == nil {
		return nil, fmt.Errorf("dial kafka %v: %w", brokers, err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		return nil, fmt.Errorf("partitions of %s: %w", topic, err)
	}
	for _, p := range parts {
		if err := readPartition(ctx, brokers, topic, p.ID, log); err != nil {
			return nil, err
		}
	}
	return log, nil
}

func readPartition(ctx context.Context, brokers []string, topic string, part int, log *EventLog) error {
	var leader *kafkago.Conn
	var err error
	for _, b := range brokers {
		if leader, err = kafkago.DialLeader(ctx, "tcp", b, topic, part); err == nil {
			break
		}
	}
	if leader == nil {
		return fmt.Errorf("leader of %s/%d: %w", topic, part, err)
	}
	first, last, err := leader.ReadOffsets()
	leader.Close()
	if err != nil {
		return fmt.Errorf("offsets of %s/%d: %w", topic, part, err)
	}
	if last <= first {
		return nil
	}
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: part, MinBytes: 1,
		MaxBytes: 8 << 20, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return fmt.Errorf("seek %s/%d: %w", topic, part, err)
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read %s/%d at %d of %d: %w", topic, part, r.Offset(), last, err)
		}
		log.Messages++
		if ev, err := kafka.ParseOrderEvent(m.Value); err != nil {
			log.Undecoded++
		} else if ev.Type == kafka.TypeOrderCreated {
			log.Created[ev.OrderID] = append(log.Created[ev.OrderID], ev)
		} else if _, ok := kafka.OrderStatusOfType(ev.Type); ok {
			log.Transitions[ev.OrderID] = append(log.Transitions[ev.OrderID], ev)
		}
		if m.Offset >= last-1 {
			return nil
		}
	}
}
