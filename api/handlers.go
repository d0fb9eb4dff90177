package api

import (
	"io"
	"net/http"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/jsonw"
	"github.com/flashsale/flashsale/statlog"
	"github.com/flashsale/flashsale/stock"
	"github.com/gin-gonic/gin"
)

// readBody reads the (already capped) request body.
func readBody(c *gin.Context) ([]byte, error) {
	b, err := io.ReadAll(c.Request.Body)
	if err != nil {
		return nil, bodyError(err)
	}
	return b, nil
}

func (s *Server) createSale(c *gin.Context) {
	body, err := readBody(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	sale, err := ParseCreateSale(body, s.cfg.DefaultPayTimeout)
	if err != nil {
		s.writeError(c, err)
		return
	}
	if err := stock.CreateSale(c.Request.Context(), s.Redis, sale); err != nil {
		s.writeError(c, err)
		return
	}
	s.log.Info("sale created", "sale", sale.ID, "stock", sale.Stock, "per_user_limit", sale.PerUserLimit, "pay_timeout", sale.PayTimeout)
	s.respondSale(c, http.StatusCreated, sale.ID)
}

func (s *Server) getSale(c *gin.Context) { s.respondSale(c, http.StatusOK, c.Param("id")) }

// SaleView is the JSON of a sale with its books.
type SaleView struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Stock        int64      `json:"stock"`
	PriceCents   int64      `json:"price_cents"`
	PerUserLimit int64      `json:"per_user_limit"`
	PayTimeout   string     `json:"pay_timeout"`
	StartsAt     *time.Time `json:"starts_at,omitempty"`
	EndsAt       *time.Time `json:"ends_at,omitempty"`
	Remaining    int64      `json:"remaining"`
	Pending      int64      `json:"pending"`
	Paid         int64      `json:"paid"`
	Expired      int64      `json:"expired"`
	Cancelled    int64      `json:"cancelled"`
	Aborted      int64      `json:"aborted"`
}

func (s *Server) respondSale(c *gin.Context, status int, id string) {
	if !flashsale.ValidID(id) {
		s.writeError(c, fieldErr("sale id"))
		return
	}
	sale, b, err := stock.LoadSale(c.Request.Context(), s.Redis, id)
	if err != nil {
		s.writeError(c, err)
		return
	}
	v := SaleView{ID: sale.ID, Name: sale.Name, Stock: sale.Stock, PriceCents: sale.PriceCents,
		PerUserLimit: sale.PerUserLimit, PayTimeout: sale.PayTimeout.String(),
		Remaining: b.Remaining, Pending: b.Pending, Paid: b.Paid, Expired: b.Expired, Cancelled: b.Cancelled, Aborted: b.Aborted}
	if !sale.StartsAt.IsZero() {
		v.StartsAt = &sale.StartsAt
	}
	if !sale.EndsAt.IsZero() {
		v.EndsAt = &sale.EndsAt
	}
	c.JSON(status, v)
}

// buy is the hot path: validate, sell, log the outcome, answer.
func (s *Server) buy(c *gin.Context) {
	start := time.Now()
	saleID := c.Param("id")
	var user string
	var err error
	if c.Request.Method == http.MethodGet {
		user, err = queryUser(c.Request.URL.RawQuery)
	} else {
		var body []byte
		if body, err = readBody(c); err == nil {
			var r BuyRequest
			r, err = ParseBuy(body)
			user = r.UserID
		}
	}
	if err == nil && !flashsale.ValidID(saleID) {
		err = fieldErr("sale id")
	}
	if err != nil {
		// Bad input changes nothing and is not a buy outcome: no stat.log line.
		s.writeError(c, err)
		s.buyObs.record(start, flashsale.ErrorCode(err))
		return
	}

	r, err := s.Seller.Buy(c.Request.Context(), saleID, user)
	rec := statlog.Record{Time: start, Node: s.cfg.NodeID, Kind: "buy", Sale: saleID, User: user, Result: "ok"}
	var idBuf [96]byte
	if r.Order > 0 {
		rec.Order = string(flashsale.AppendOrderID(idBuf[:0], saleID, r.Order))
	}
	if err != nil {
		rec.Result = flashsale.ErrorCode(err)
	}
	rec.LatencyUs = time.Since(start).Microseconds()
	if s.StatLog != nil {
		s.StatLog.Write(&rec)
	}
	defer s.perSale.record(saleID, start, rec.Result)
	defer s.buyObs.record(start, rec.Result)
	if err != nil {
		s.writeError(c, err)
		return
	}
	b := make([]byte, 0, 160)
	b = append(b, '{')
	b = jsonw.StrField(b, "order_id", rec.Order)
	b = jsonw.StrField(b, "sale_id", saleID)
	b = jsonw.StrField(b, "user_id", user)
	b = jsonw.Field(b, "expires_at")
	b = append(b, '"')
	b = time.UnixMilli(r.DeadlineMs).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"', '}')
	writeJSON(c, http.StatusCreated, b)
}

// OrderView is the JSON of an order.
type OrderView struct {
	OrderID   string    `json:"order_id"`
	SaleID    string    `json:"sale_id"`
	UserID    string    `json:"user_id"`
	Node      string    `json:"node"`
	Status    string    `json:"status"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func view(o flashsale.Order) OrderView {
	return OrderView{OrderID: o.ID, SaleID: o.SaleID, UserID: o.UserID, Node: o.Node, Status: string(o.Status),
		CreatedAt: o.CreatedAt, ExpiresAt: o.ExpiresAt}
}

func (s *Server) getOrder(c *gin.Context) {
	o, err := s.Orders.Get(c.Request.Context(), c.Param("id"))
	if flashsale.ErrorCode(err) == flashsale.ENOTFOUND && s.archived(c, c.Param("id"), "") {
		return
	}
	s.respondOrder(c, o, err)
}

func (s *Server) pay(c *gin.Context) {
	o, err := s.Orders.Pay(c.Request.Context(), c.Param("id"))
	if flashsale.ErrorCode(err) == flashsale.ENOTFOUND && s.archived(c, c.Param("id"), flashsale.OrderPaid) {
		return
	}
	s.respondOrder(c, o, err)
}

func (s *Server) cancel(c *gin.Context) {
	o, err := s.Orders.Cancel(c.Request.Context(), c.Param("id"))
	if flashsale.ErrorCode(err) == flashsale.ENOTFOUND && s.archived(c, c.Param("id"), flashsale.OrderCancelled) {
		return
	}
	s.respondOrder(c, o, err)
}

func (s *Server) respondOrder(c *gin.Context, o flashsale.Order, err error) {
	if err != nil {
		c.Set(resultKey, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, view(o))
}
