package order

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
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
		return flashsale.Order{}, fmt.Errorf("get order %q: %w: %w", id, ErrRedis, err)
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

// ErrDoubleCharge is a payment callback for an order another payment id
// already paid: the buyer was charged twice and the provider must refund one.
var ErrDoubleCharge = flashsale.Errorf(flashsale.ECONFLICT, "the order was already paid by another payment; refund this one")

var errWrongAmount = flashsale.Errorf(flashsale.EINVALID, "amount_cents is not the sale's price")

// Pay records the payment provider's (already authenticated) confirmation
// that payment paid order n of sale for amount cents. The same payment id
// again returns the same order (a retried callback counts once); another
// payment id for a paid order is ErrDoubleCharge; after the deadline it is
// EEXPIRED (the expiry consumer gives the unit back); a wrong amount is
// EINVALID. Only the first changes anything.
func (s *Service) Pay(ctx context.Context, sale string, n int64, payment string, amount int64) (flashsale.Order, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	nowMs, code, rec, err := lua.PayOrder(ctx, s.rdb, sale, n, payment, amount)
	if err != nil {
		return flashsale.Order{}, fmt.Errorf("pay order %d of sale %q: %w: %w", n, sale, ErrRedis, err)
	}
	if code == lua.SettleDone {
		s.events.AnnouncePaid(ctx, sale, nowMs, n, rec, payment)
	}
	switch code {
	case lua.SettleDone, lua.SettleRepeat:
		return toOrder(sale, n, rec), nil
	case lua.SettleNotFound:
		return flashsale.Order{}, errNoOrder
	case lua.SettleExpired:
		return toOrder(sale, n, rec), errExpired
	case lua.SettleConflict:
		return toOrder(sale, n, rec), errNotOpen
	case lua.PayOtherPayment:
		return toOrder(sale, n, rec), ErrDoubleCharge
	case lua.PayWrongAmount:
		return toOrder(sale, n, rec), errWrongAmount
	}
	return flashsale.Order{}, fmt.Errorf("pay order %d of sale %q: code %d: %w", n, sale, code, errInternal)
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
	if ctx.Err() != nil {
		// The request deadline passed (or the client left) before the
		// script was sent: nothing is changed, and the answer says so.
		return flashsale.Order{}, ErrDeadline
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	nowMs, res, err := lua.Settle(ctx, s.rdb, sale, action, []int64{n})
	if err != nil {
		return flashsale.Order{}, fmt.Errorf("%s order %q: %w: %w", action, id, ErrRedis, err)
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

// OfUser returns user's live (pending or paid) orders of sale, oldest
// first, from Redis; none is an empty list. Finished orders are not listed
// (the PostgreSQL store keeps their history).
func (s *Service) OfUser(ctx context.Context, sale, user string) ([]flashsale.Order, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	nums, recs, err := lua.UserOrders(ctx, s.rdb, sale, user)
	if err != nil {
		return nil, fmt.Errorf("orders of user in sale %q: %w: %w", sale, ErrRedis, err)
	}
	out := make([]flashsale.Order, 0, len(nums))
	for i, n := range nums {
		if recs[i].Status != lua.StatusPending && recs[i].Status != lua.StatusPaid {
			continue // a list is trimmed in the same script that ends an order; this is belt and braces
		}
		out = append(out, toOrder(sale, n, recs[i]))
	}
	return out, nil
}

func toOrder(sale string, n int64, r lua.Record) flashsale.Order {
	return flashsale.Order{ID: flashsale.OrderID(sale, n), SaleID: sale, UserID: r.User, Node: r.Node,
		Status: StatusOf(r.Status), CreatedAt: time.UnixMilli(r.CreatedMs).UTC(), ExpiresAt: time.UnixMilli(r.DeadlineMs).UTC()}
}
