package order

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/stock"
	kafkago "github.com/segmentio/kafka-go"
)

type publishAll struct{}

func (publishAll) Publish(context.Context, []kafkago.Message, []error) {}

// The selling path below the HTTP layer: concurrent buyers of one sale
// through the local share, the batch frame and buy.lua on a real Redis
// (events accepted at once), per bought unit.
func BenchmarkSellerBuy(b *testing.B) {
	rdb := testenv.StartRedis(b, false).Client(b)
	ctx := context.Background()
	if err := CreateSale(ctx, rdb, flashsale.Sale{ID: "bench", Stock: MaxStock, PerUserLimit: 1, PayTimeout: time.Hour}); err != nil {
		b.Fatal(err)
	}
	s := NewSeller(SellerConfig{Node: "n1", Coalescer: stock.CoalescerConfig{MaxBatch: 64, Flushers: 2, QueueSize: 4096,
		Linger: 200 * time.Microsecond}}, rdb, publishAll{}, nil, nil)
	defer s.Close()
	var users atomic.Int64
	b.SetParallelism(64)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Buy(ctx, "bench", "u"+strconv.FormatInt(users.Add(1), 10)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
