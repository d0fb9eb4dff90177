package kafka_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/kafka"
)

// Publishing order events per event, by batch size, to a broker on
// loopback with acks from all replicas.
func BenchmarkPublish(b *testing.B) {
	k := testenv.StartKafka(b, "flashsale.orders")
	p := kafka.NewPublisher(kafka.PublisherConfig{Brokers: []string{k.Addr}, Topic: "flashsale.orders", WriteTimeout: 5 * time.Second})
	defer p.Close()
	for _, batch := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			rs := make([]kafka.OrderCreated, batch)
			for i := range rs {
				rs[i] = kafka.OrderCreated{SaleID: "s1", UserID: fmt.Sprint("u", i), Node: "n1", Order: int64(i + 1), CreatedMs: 1, DeadlineMs: 2}
			}
			errs := make([]error, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				msgs := make([]kafkago.Message, len(rs))
				buf := make([]byte, 0, 192*len(rs))
				for j, r := range rs {
					start := len(buf)
					buf = kafka.AppendOrderCreated(buf, r)
					msgs[j] = kafkago.Message{Key: []byte(r.SaleID), Value: buf[start:len(buf):len(buf)]}
				}
				p.Publish(context.Background(), msgs, errs)
				if errs[0] != nil {
					b.Fatal(errs[0])
				}
			}
		})
	}
}

func BenchmarkParseEvent(b *testing.B) {
	ev := kafka.AppendOrderCreated(nil, kafka.OrderCreated{SaleID: "s1", UserID: "u1", Node: "n1", Order: 7, CreatedMs: 1, DeadlineMs: 2})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := kafka.ParseOrderEvent(ev); err != nil {
			b.Fatal(err)
		}
	}
}
