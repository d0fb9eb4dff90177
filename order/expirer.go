package order

import (
	"context"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
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
// It is a DelayConsumer (see there for exactly-once and bounds): the settle
// script releases only a pending order, so a redelivered event releases
// nothing twice.
type Expirer struct {
	*DelayConsumer[int64]
}

// NewExpirer returns an Expirer; Run starts it.
func NewExpirer(cfg ExpirerConfig, rdb redis.UniversalClient, log *slog.Logger) *Expirer {
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = time.Second
	}
	return &Expirer{NewDelayConsumer[int64](DelayConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, Group: cfg.Group, Workers: cfg.Workers, QueueSize: cfg.QueueSize,
		MaxHeld: cfg.MaxHeld, BatchMax: cfg.BatchMax, RetryDelay: cfg.RetryDelay, Name: "expiry", Noun: "orders",
	}, expiryHandler{rdb: rdb, timeout: cfg.RedisTimeout, events: cfg.Events}, log)}
}

// expiryHandler releases unpaid orders: items are order numbers keyed by sale.
type expiryHandler struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	events  *Outbox
}

func (h expiryHandler) Decode(m kafka.Message) (Due[int64], bool, error) {
	if sale, n, deadline, ok := parseDue(m.Value); ok {
		return Due[int64]{Key: sale, Item: n, DeadlineMs: deadline}, true, nil
	}
	ev, err := ParseEvent(m.Value)
	if err != nil {
		return Due[int64]{}, false, err
	}
	if ev.Type != TypeCreated {
		return Due[int64]{}, false, nil
	}
	_, n, _ := flashsale.ParseOrderID(ev.OrderID)
	return Due[int64]{Key: ev.SaleID, Item: n, DeadlineMs: ev.DeadlineMs}, true, nil
}

func (h expiryHandler) Release(ctx context.Context, sale string, orders []int64, out []Outcome) error {
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
