package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/store"
	"github.com/gin-gonic/gin"
)

// OrderHistory serves a buyer's orders from the order store (issue 15);
// store.Runner implements it.
type OrderHistory interface {
	UserOrders(ctx context.Context, q store.OrderQuery) ([]store.Order, string, error)
	// GetOrder answers for orders no longer in Redis (their sale was archived).
	GetOrder(ctx context.Context, id string) (store.Order, bool, error)
}

// archived answers GET, pay and cancel of an order Redis no longer holds
// because its sale was archived: every such order is final, so the store's
// row is the answer. want is the status pay or cancel asks for ("" for
// GET): asking for the status the order has is the idempotent repeat (200),
// any other is the conflict settle would have answered. It reports false
// when the store has no such order either (or there is no store), so the
// caller answers with its own error.
func (s *Server) archived(c *gin.Context, id string, want flashsale.OrderStatus) bool {
	if s.History == nil {
		return false
	}
	// Only an archived sale's orders are looked up in the database, so
	// made-up order ids cost one Redis read, not a query.
	sale, _, err := flashsale.ParseOrderID(id)
	if err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RedisTimeout)
	archived, err := lua.SaleArchived(ctx, s.Redis, sale)
	cancel()
	if err != nil || !archived {
		return false
	}
	o, ok, err := s.History.GetOrder(c.Request.Context(), id)
	if err != nil || !ok {
		return false
	}
	switch {
	case want == "" || o.Status == want:
		c.JSON(http.StatusOK, view(o.Order))
	case o.Status == flashsale.OrderExpired:
		s.writeError(c, errExpiredArchived)
	default:
		s.writeError(c, flashsale.Errorf(flashsale.ECONFLICT, "the order is %s", o.Status))
	}
	return true
}

var errExpiredArchived = flashsale.Errorf(flashsale.EEXPIRED, "the order's pay deadline has passed; its unit went back to stock")

// HistoryView is one order of GET /v1/users/me/orders.
type HistoryView struct {
	OrderView
	PriceCents *int64     `json:"price_cents"`
	SettledAt  *time.Time `json:"settled_at,omitempty"`
}

// HistoryPage is the body of GET /v1/users/me/orders; NextCursor is absent
// after the last page.
type HistoryPage struct {
	Orders     []HistoryView `json:"orders"`
	NextCursor string        `json:"next_cursor,omitempty"`
}

// me returns the buyer a per-person request speaks for. Until buyer tokens
// exist (issue 11) that is the user_id query parameter, as on the buy path;
// this is the one place to change.
func (s *Server) me(c *gin.Context) (string, error) {
	return queryUser(c.Request.URL.RawQuery)
}

var historyParams = map[string]bool{"user_id": true, "sale": true, "status": true, "limit": true, "cursor": true}

// parseHistoryQuery validates GET /v1/users/me/orders's query: every
// parameter at most once, none unknown.
func parseHistoryQuery(raw, user string) (store.OrderQuery, error) {
	q := store.OrderQuery{UserID: user, Limit: 20}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, flashsale.Errorf(flashsale.EINVALID, "malformed query string")
	}
	for k, v := range vals {
		if !historyParams[k] {
			return q, flashsale.Errorf(flashsale.EINVALID, "unknown query parameter %q", k)
		}
		if len(v) > 1 {
			return q, flashsale.Errorf(flashsale.EINVALID, "%s given more than once", k)
		}
	}
	if v := vals.Get("sale"); v != "" {
		if !flashsale.ValidID(v) {
			return q, fieldErr("sale")
		}
		q.SaleID = v
	}
	if v := vals.Get("status"); v != "" {
		switch st := flashsale.OrderStatus(v); st {
		case flashsale.OrderPending, flashsale.OrderPaid, flashsale.OrderCancelled, flashsale.OrderExpired, flashsale.OrderAborted:
			q.Status = st
		default:
			return q, flashsale.Errorf(flashsale.EINVALID, "status must be pending, paid, cancelled, expired or aborted")
		}
	}
	if v := vals.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxPage {
			return q, flashsale.Errorf(flashsale.EINVALID, "limit must be between 1 and %d", store.MaxPage)
		}
		q.Limit = n
	}
	q.Cursor = vals.Get("cursor")
	return q, nil
}

var errNoHistory = flashsale.Errorf(flashsale.EUNAVAILABLE, "order history unavailable; retry shortly")

func (s *Server) listMyOrders(c *gin.Context) {
	user, err := s.me(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	q, err := parseHistoryQuery(c.Request.URL.RawQuery, user)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if s.History == nil {
		s.writeError(c, errNoHistory)
		return
	}
	orders, next, err := s.History.UserOrders(c.Request.Context(), q)
	if err != nil {
		if flashsale.ErrorCode(err) == flashsale.EINTERNAL {
			s.log.Warn("read order history", "err", err)
			err = errNoHistory
		}
		s.writeError(c, err)
		return
	}
	page := HistoryPage{Orders: make([]HistoryView, len(orders)), NextCursor: next}
	for i, o := range orders {
		page.Orders[i] = HistoryView{OrderView: view(o.Order), PriceCents: o.PriceCents, SettledAt: o.SettledAt}
	}
	c.JSON(http.StatusOK, page)
}
