package order

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/redis/go-redis/v9"
)

// Service reads orders and moves them to paid or cancelled. Both run the
// same settle script as expiry, so a payment racing expiry has one winner.
type Service struct {
	rdb     redis.UniversalClient
	timeout time.Duration
	events  *Outbox
}

// NewService returns a Service whose Redis calls are bounded by timeout.
func NewService(rdb redis.UniversalClient, timeout time.Duration) *Service {
	return &Service{rdb: rdb, timeout: timeout}
}

// PublishTo makes the Service announce its transitions (order.paid,
// order.cancelled, order.expired) through o. Without it they wait in the
// Redis outbox for the sweeper.
func (s *Service) PublishTo(o *Outbox) { s.events = o }

// Get returns an order.
func (s *Service) Get(ctx context.Context, id string) (flashsale.Order, error) {
	sale, n, err := flashsale.ParseOrderID(id)
	if err != nil {
		return flashsale.Order{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rec, err := s.rdb.HGet(ctx, lua.KeysFor(sale).Orders, fmt.Sprint(n)).Result()
	if errors.Is(err, redis.Nil) {
		return flashsale.Order{}, errNoOrder
	} else if err != nil {
		return flashsale.Order{}, fmt.Errorf("get order %q: %w: %w", id, stock.ErrRedis, err)
	}
	r, err := lua.ParseRecord(rec)
	if err != nil {
		return flashsale.Order{}, err
	}
	return toOrder(sale, n, r), nil
}

var (
	errNoOrder  = flashsale.Errorf(flashsale.ENOTFOUND, "no such order")
	errExpired  = flashsale.Errorf(flashsale.EEXPIRED, "the order's pay deadline has passed; its unit went back to stock")
	errPaid     = flashsale.Errorf(flashsale.ECONFLICT, "the order is paid and cannot be cancelled")
	errNotOpen  = flashsale.Errorf(flashsale.ECONFLICT, "the order was cancelled or undone and cannot be paid")
	errInternal = errors.New("unexpected settle reply")
)

// Pay marks a pending order paid. Paying a paid order again returns it
// unchanged (idempotent, so a client may retry a lost response); paying after
// the deadline is EEXPIRED, and the unit goes back to stock if it had not yet.
func (s *Service) Pay(ctx context.Context, id string) (flashsale.Order, error) {
	return s.settle(ctx, id, lua.Pay)
}

// Cancel gives a pending order's unit back to stock at once. Cancelling twice
// is idempotent; cancelling a paid order is a conflict.
func (s *Service) Cancel(ctx context.Context, id string) (flashsale.Order, error) {
	return s.settle(ctx, id, lua.Cancel)
}

func (s *Service) settle(ctx context.Context, id, action string) (flashsale.Order, error) {
	sale, n, err := flashsale.ParseOrderID(id)
	if err != nil {
		return flashsale.Order{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	nowMs, res, err := lua.Settle(ctx, s.rdb, sale, action, []int64{n})
	if err != nil {
		return flashsale.Order{}, fmt.Errorf("%s order %q: %w: %w", action, id, stock.ErrRedis, err)
	}
	s.events.Announce(ctx, sale, nowMs, []int64{n}, res)
	r := res[0]
	switch r.Code {
	case lua.SettleDone, lua.SettleRepeat:
		return toOrder(sale, n, r.Record), nil
	case lua.SettleNotFound:
		return flashsale.Order{}, errNoOrder
	case lua.SettleExpired:
		return toOrder(sale, n, r.Record), errExpired
	case lua.SettleConflict:
		if action == lua.Cancel {
			return toOrder(sale, n, r.Record), errPaid
		}
		return toOrder(sale, n, r.Record), errNotOpen
	}
	return flashsale.Order{}, fmt.Errorf("%s order %q: code %d: %w", action, id, r.Code, errInternal)
}

// StatusOf maps a record status letter to an OrderStatus.
func StatusOf(b byte) flashsale.OrderStatus {
	switch b {
	case lua.StatusPending:
		return flashsale.OrderPending
	case lua.StatusPaid:
		return flashsale.OrderPaid
	case lua.StatusCancelled:
		return flashsale.OrderCancelled
	case lua.StatusExpired:
		return flashsale.OrderExpired
	case lua.StatusAborted:
		return flashsale.OrderAborted
	}
	return flashsale.OrderStatus("unknown")
}

func toOrder(sale string, n int64, r lua.Record) flashsale.Order {
	return flashsale.Order{ID: flashsale.OrderID(sale, n), SaleID: sale, UserID: r.User, Node: r.Node,
		Status: StatusOf(r.Status), CreatedAt: time.UnixMilli(r.CreatedMs).UTC(), ExpiresAt: time.UnixMilli(r.DeadlineMs).UTC()}
}
