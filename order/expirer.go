package order

import (
	"context"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
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
	Events       *Outbox       // announces order.expired; nil leaves it to the sweeper's drain
}

// Expirer consumes order.created events, holds each order until its pay
// deadline and then releases it if it is still unpaid: the settle script
// marks it expired, returns the unit to stock and frees the user's slot.
//
// It is a kafka.DelayConsumer (see there for exactly-once and bounds): the settle
// script releases only a pending order, so a redelivered event releases
// nothing twice.
type Expirer struct {
	*kafka.DelayConsumer[int64]
}

// NewExpirer returns an Expirer; Run starts it.
func NewExpirer(cfg ExpirerConfig, rdb redis.UniversalClient, log *slog.Logger) *Expirer {
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = time.Second
	}
	return &Expirer{kafka.NewDelayConsumer[int64](kafka.DelayConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, Group: cfg.Group, Workers: cfg.Workers, QueueSize: cfg.QueueSize,
		MaxHeld: cfg.MaxHeld, BatchMax: cfg.BatchMax, RetryDelay: cfg.RetryDelay, Subsystem: "expiry", Noun: "orders",
	}, expiryHandler{rdb: rdb, timeout: cfg.RedisTimeout, events: cfg.Events}, log)}
}

// expiryHandler releases unpaid orders: items are order numbers keyed by sale.
type expiryHandler struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	events  *Outbox
}

func (h expiryHandler) Decode(m kafkago.Message) (kafka.Due[int64], bool, error) {
	sale, n, deadline, ok, err := kafka.ParseOrderDue(m.Value)
	return kafka.Due[int64]{Key: sale, Item: n, DeadlineMs: deadline}, ok, err
}

func (h expiryHandler) Release(ctx context.Context, sale string, orders []int64, out []kafka.Outcome) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	nowMs, res, err := lua.Settle(ctx, h.rdb, sale, lua.Expire, orders)
	if err != nil {
		return err
	}
	h.events.Announce(ctx, sale, nowMs, orders, res)
	for i, r := range res {
		switch r.Code {
		case lua.SettleNotDue:
			out[i].Wait = max(time.Duration(r.Record.DeadlineMs-nowMs)*time.Millisecond, time.Millisecond)
		case lua.SettleDone:
			out[i].Released = true
		}
	}
	return nil
}
