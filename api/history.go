package api

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/store"
	"github.com/gin-gonic/gin"
)

// OrderHistory is the order store (issue 15) as the API reads it;
// store.Runner implements it.
type OrderHistory interface {
	UserOrders(ctx context.Context, q store.OrderQuery) ([]store.Order, string, error)
	// GetOrder answers for orders no longer in Redis (their sale was archived).
	GetOrder(ctx context.Context, id string) (store.Order, bool, error)
}

// archivedOrder returns order seq of sale from the store when the sale was
// archived out of Redis (every such order is final, and the store's row is
// its record). ok is false when the sale is not archived, the store has no
// such order, or there is no store: the caller answers with its own error.
// Only an archived sale's orders are looked up in the database, so made-up
// order ids cost one Redis read, not a query.
func (s *Server) archivedOrder(ctx context.Context, sale string, seq int64) (store.Order, bool) {
	if s.History == nil {
		return store.Order{}, false
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	archived, err := lua.SaleArchived(rctx, s.Redis, sale)
	cancel()
	if err != nil || !archived {
		return store.Order{}, false
	}
	o, ok, err := s.History.GetOrder(ctx, flashsale.OrderID(sale, seq))
	if err != nil || !ok {
		return store.Order{}, false
	}
	return o, true
}

var (
	errExpiredArchived = flashsale.Errorf(flashsale.EEXPIRED, "the order's pay deadline has passed; its unit went back to stock")
	errPaidArchived    = flashsale.Errorf(flashsale.ECONFLICT, "the order is paid; it cannot be cancelled")
	errAmountArchived  = flashsale.Errorf(flashsale.EINVALID, "amount_cents is not the sale's price")
)

// archivedSettle is the answer settle would give for asking a final order
// o to move to want: the same status is the idempotent repeat (nil), any
// other the error the live path answers.
func archivedSettle(o flashsale.Order, want flashsale.OrderStatus) error {
	switch {
	case o.Status == want:
		return nil
	case o.Status == flashsale.OrderExpired:
		return errExpiredArchived
	case o.Status == flashsale.OrderPaid:
		return errPaidArchived
	}
	return flashsale.Errorf(flashsale.ECONFLICT, "the order is %s", o.Status)
}

// archivedPay answers a payment callback for an archived sale's order as
// pay.lua would have: the payment that paid it is the repeat (nil);
// another is the double charge to refund.
func archivedPay(o store.Order, payment string, amount int64) error {
	if o.PriceCents != nil && *o.PriceCents != amount {
		return errAmountArchived
	}
	if o.Status != flashsale.OrderPaid {
		return archivedSettle(o.Order, flashsale.OrderPaid)
	}
	if o.PaymentID == payment {
		return nil
	}
	return order.ErrDoubleCharge
}

// MyOrderView is one order of GET /v1/users/me/orders. The price and the
// settle time are known once the order store has the order.
type MyOrderView struct {
	OrderView
	PriceCents *int64     `json:"price_cents,omitempty"`
	SettledAt  *time.Time `json:"settled_at,omitempty"`
	rid        string     // the record id ("<sale>.<seq>"): the merge's key and order
}

// MyOrdersView is the body of GET /v1/users/me/orders. NextCursor is absent
// after the last page. Partial is true when the order store could not be
// read: the list then holds the sale's live orders (from Redis) only.
type MyOrdersView struct {
	Orders     []MyOrderView `json:"orders"`
	NextCursor string        `json:"next_cursor,omitempty"`
	Partial    bool          `json:"partial,omitempty"`
}

var historyParams = map[string]bool{"user_id": true, "sale": true, "status": true, "limit": true, "cursor": true}

// parseHistoryQuery validates GET /v1/users/me/orders's query: every
// parameter at most once, none unknown.
func parseHistoryQuery(raw string) (store.OrderQuery, error) {
	q := store.OrderQuery{Limit: 20}
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
	if v, ok := vals["sale"]; ok {
		if !flashsale.ValidID(v[0]) {
			return q, fieldErr("sale")
		}
		q.SaleID = v[0]
	}
	if v := vals.Get("status"); v != "" {
		switch st := flashsale.OrderStatus(v); st {
		case flashsale.OrderPending, flashsale.OrderPaid, flashsale.OrderCancelled, flashsale.OrderExpired, flashsale.OrderAborted:
			q.Status = st
		default:
			return q, flashsale.Errorf(flashsale.EINVALID, "status must be pending, paid, cancelled, expired or aborted")
		}
	}
	if v, ok := vals["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > store.MaxPage {
			return q, flashsale.Errorf(flashsale.EINVALID, "limit must be between 1 and %d", store.MaxPage)
		}
		q.Limit = n
	}
	if v, ok := vals["cursor"]; ok {
		if _, _, err := store.ParseCursor(v[0]); err != nil {
			return q, err
		}
		q.Cursor = v[0]
	}
	return q, nil
}

var (
	errSaleRequired = flashsale.Errorf(flashsale.EINVALID, "sale is required: this node keeps no order history")
	errNoHistory    = flashsale.Errorf(flashsale.EUNAVAILABLE, "order history unavailable; retry shortly")
)

// myOrders is GET /v1/users/me/orders: the token's person's orders, newest
// first, one page of at most limit, in one answer from two places.
//
//   - Live orders (pending or paid) of the sale named by ?sale= come from
//     Redis, the truth while the sale runs: the way to learn what happened
//     after a lost answer (issue 13), even while the store lags or is down.
//   - Every other order (finished ones, other sales, archived sales) comes
//     from the order store, keyset-paged on (created_at, id).
//
// Both are read under the same cursor bound and merged in that order, an
// order both hold listed once with Redis's status (the store may lag by the
// consumer's delay); a store row still pending is checked against Redis,
// so a status shown is never older than Redis's. Without a store, sale is
// required and only live orders are listed (no cursor).
func (s *Server) myOrders(c *gin.Context) {
	q, err := parseHistoryQuery(c.Request.URL.RawQuery)
	if err == nil && q.SaleID == "" && s.History == nil {
		err = errSaleRequired
	}
	if err == nil {
		// The token's subject; a user_id still named must be it (403).
		q.UserID, err = s.buyer(c)
	}
	if err != nil {
		s.writeError(c, err)
		return
	}
	ctx := c.Request.Context()
	fail := func(err error) {
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
	}
	var live []flashsale.Order
	if q.SaleID != "" {
		if live, err = s.Orders.OfUser(ctx, q.SaleID, q.UserID); err != nil {
			fail(err)
			return
		}
	}
	var rows []store.Order
	next, partial := "", false
	if s.History != nil {
		rows, next, err = s.History.UserOrders(ctx, q)
		switch {
		case err != nil && flashsale.ErrorCode(err) == flashsale.EINVALID:
			fail(err) // a cursor the store rejects
			return
		case err != nil && q.SaleID == "":
			s.log.Warn("read order history", "err", err)
			fail(errNoHistory)
			return
		case err != nil:
			// The sale's live orders are still the truth: answer them, and
			// say the finished ones are missing.
			s.log.Warn("read order history; answering live orders only", "err", err)
			rows, next, partial = nil, "", true
		}
	}
	page, err := s.mergeOrders(ctx, q, live, rows, next)
	if err != nil {
		fail(err)
		return
	}
	page.Partial = partial
	c.JSON(http.StatusOK, page)
}

// mergeOrders merges one page: live (all of the buyer's live orders of
// q.SaleID) and rows (the store's page under q's bound, more after it when
// next is set).
func (s *Server) mergeOrders(ctx context.Context, q store.OrderQuery, live []flashsale.Order, rows []store.Order, next string) (MyOrdersView, error) {
	var bound func(time.Time, string) bool
	if q.Cursor != "" {
		at, id, _ := store.ParseCursor(q.Cursor) // checked by parseHistoryQuery
		bound = func(t time.Time, oid string) bool { return before(t, oid, at, id) }
	}
	byID := make(map[string]int, len(live)+len(rows))
	items := make([]MyOrderView, 0, len(live)+len(rows))
	for _, o := range live {
		if (bound != nil && !bound(o.CreatedAt, o.ID)) || (q.Status != "" && o.Status != q.Status) {
			continue
		}
		byID[o.ID] = len(items)
		items = append(items, MyOrderView{OrderView: s.view(o), rid: o.ID})
	}
	for _, r := range rows {
		if i, dup := byID[r.ID]; dup {
			// Redis's status; the store adds what it knows more.
			items[i].PriceCents = r.PriceCents
			if items[i].Status == string(r.Status) {
				items[i].SettledAt = r.SettledAt
			}
			continue
		}
		if r.Status == flashsale.OrderPending {
			// Pending in the store but not live in Redis's list (or no
			// sale named): Redis may already know the final status.
			cur, err := s.Orders.Get(ctx, r.ID)
			switch {
			case err == nil && cur.Status != r.Status:
				r.Status, r.SettledAt = cur.Status, nil
				if q.Status != "" && r.Status != q.Status {
					continue
				}
			case err != nil && flashsale.ErrorCode(err) != flashsale.ENOTFOUND:
				return MyOrdersView{}, err
			}
		}
		byID[r.ID] = len(items)
		items = append(items, MyOrderView{OrderView: s.view(r.Order), PriceCents: r.PriceCents, SettledAt: r.SettledAt, rid: r.ID})
	}
	slices.SortFunc(items, func(a, b MyOrderView) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.rid, a.rid)
	})
	page := MyOrdersView{Orders: items}
	if len(items) > q.Limit || next != "" {
		if len(items) > q.Limit {
			page.Orders = items[:q.Limit]
		}
		if len(page.Orders) > 0 {
			last := page.Orders[len(page.Orders)-1]
			page.NextCursor = store.MakeCursor(last.CreatedAt, last.rid)
		} else {
			page.NextCursor = next
		}
	}
	return page, nil
}

// before reports whether (t, id) sorts after the cursor's (at, cid) in the
// newest-first order: created earlier, or at the same time with a smaller
// id (bytewise, as the store's "C" collation compares).
func before(t time.Time, id string, at time.Time, cid string) bool {
	if !t.Equal(at) {
		return t.Before(at)
	}
	return id < cid
}
