package order_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/stock"
)

// Publishing order events per event, by batch size, to a broker on
// loopback with acks from all replicas.
func BenchmarkPublish(b *testing.B) {
	k := testenv.StartKafka(b, topic)
	p := order.NewPublisher(order.PublisherConfig{Brokers: []string{k.Addr}, Topic: topic, WriteTimeout: 5 * time.Second})
	defer p.Close()
	for _, batch := range []int{1, 32, 256} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			rs := make([]stock.Reservation, batch)
			for i := range rs {
				rs[i] = stock.Reservation{SaleID: "s1", UserID: fmt.Sprint("u", i), Node: "n1", Order: int64(i + 1), CreatedMs: 1, DeadlineMs: 2}
			}
			errs := make([]error, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				p.Confirm(context.Background(), rs, errs)
				if errs[0] != nil {
					b.Fatal(errs[0])
				}
			}
		})
	}
}

func BenchmarkParseEvent(b *testing.B) {
	ev := order.AppendCreated(nil, stock.Reservation{SaleID: "s1", UserID: "u1", Node: "n1", Order: 7, CreatedMs: 1, DeadlineMs: 2})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := order.ParseEvent(ev); err != nil {
			b.Fatal(err)
		}
	}
}
