package store_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/store"
	dto "github.com/prometheus/client_model/go"
	kafkago "github.com/segmentio/kafka-go"
)

// TestStoreThroughput measures the events per second one store consumer
// writes into a durable PostgreSQL (fsync on): FLASHSALE_STORE_EVENTS
// order events (order.created for every order, order.paid for every other
// one) are put on the broker first, then one consumer drains them and the
// test reports events/s. make bench-store runs it with 200,000 events;
// make test runs it with 5,000 as a smoke test.
func TestStoreThroughput(t *testing.T) {
	t.Parallel() // nothing here is timed against another test
	events := 5000
	if v := os.Getenv("FLASHSALE_STORE_EVENTS"); v != "" {
		events, _ = strconv.Atoi(v)
	}
	// FLASHSALE_STORE_PAID=0: order.created only, like the selling path.
	withPaid := os.Getenv("FLASHSALE_STORE_PAID") != "0"
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{Durable: true})
	k := testenv.StartKafka(t, "flashsale.orders", "flashsale.envelopes")
	pub := kafka.NewPublisher(kafka.PublisherConfig{Brokers: []string{k.Addr}, Topic: "flashsale.orders", WriteTimeout: 10 * time.Second})
	defer pub.Close()
	// Sales of 10,000 orders each, published in batches of 250 like the
	// buy path's coalesced batches.
	ctx := context.Background()
	now := time.Now().UnixMilli()
	sent := 0
	for n := int64(1); sent < events; n += 250 {
		sale := "tp" + strconv.FormatInt((n-1)/10000, 10)
		var rs []order.Reservation
		var msgs []kafkago.Message
		for i := n; i < n+250 && sent+len(rs)+len(msgs) < events; i++ {
			r := order.Reservation{SaleID: sale, UserID: fmt.Sprintf("u%d", i), Node: "n1", Order: i, CreatedMs: now, DeadlineMs: now + 300000}
			rs = append(rs, r)
			if withPaid && i%2 == 0 && sent+len(rs)+len(msgs) < events {
				msgs = append(msgs, kafkago.Message{Key: []byte(sale), Value: order.AppendTransition(nil, sale, i,
					lua.Record{Status: lua.StatusPaid, User: r.UserID, Node: r.Node, CreatedMs: now, DeadlineMs: r.DeadlineMs}, now+1, "psp-"+strconv.FormatInt(i, 10))})
			}
		}
		created := make([]kafkago.Message, len(rs))
		for j, r := range rs {
			created[j] = kafkago.Message{Key: []byte(sale), Value: kafka.AppendOrderCreated(nil, kafka.OrderCreated{SaleID: r.SaleID,
				UserID: r.UserID, Node: r.Node, Order: r.Order, CreatedMs: r.CreatedMs, DeadlineMs: r.DeadlineMs})}
		}
		errs := make([]error, len(rs))
		pub.Publish(ctx, created, errs)
		perrs := make([]error, len(msgs))
		pub.Publish(ctx, msgs, perrs)
		for _, err := range append(errs, perrs...) {
			if err != nil {
				t.Fatal(err)
			}
		}
		sent += len(rs) + len(msgs)
	}
	s := openStore(t, pg.DSN)
	c := store.NewConsumer(store.ConsumerConfig{Brokers: []string{k.Addr}, OrderTopic: "flashsale.orders",
		EnvelopeTopic: "flashsale.envelopes", Group: "tp", BatchMax: 4096, Linger: 20 * time.Millisecond}, s, nil, slog.Default())
	// Timed from the first batch's commit to the last's, so the consumer
	// group's join is not counted.
	var first, last time.Time
	var firstN, applied int
	c.BeforeCommit = func(n int) {
		if first.IsZero() {
			first, firstN = time.Now(), n
		}
		last, applied = time.Now(), applied+n
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- c.Run(runCtx) }()
	waitFor(t, 5*time.Minute, "the consumer to drain the topic", func() bool {
		lag, err := c.MeasureLag(ctx)
		return err == nil && lag == 0
	})
	took := time.Since(start)
	stop()
	<-done
	var rows, paid int
	if err := s.Pool.QueryRow(ctx, "SELECT count(*), count(*) FILTER (WHERE status = 'paid') FROM orders").Scan(&rows, &paid); err != nil {
		t.Fatal(err)
	}
	if rows+paid != events {
		t.Fatalf("%d rows (%d paid) for %d events", rows, paid, events)
	}
	rate := float64(applied-firstN) / last.Sub(first).Seconds()
	var m dto.Metric
	_ = c.WriteTime().Write(&m)
	t.Logf("store transactions: %d, %.2f s in total", m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum())
	t.Logf("one store consumer: %d events (%d orders, %d paid); %.0f events/s into a durable PostgreSQL, first commit to last (%v with the group join)",
		events, rows, paid, rate, took.Round(time.Millisecond))
}
