package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/store"
	"github.com/gin-gonic/gin"
)

// OrderHistory serves a buyer's orders from the order store (issue 15);
// store.Runner implements it.
type OrderHistory interface {
	UserOrders(ctx context.Context, q store.OrderQuery) ([]store.Order, string, error)
}

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
