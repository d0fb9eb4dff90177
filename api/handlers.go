package api

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/client"
	"github.com/flashsale/flashsale/internal/jsonw"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/statlog"
	"github.com/flashsale/flashsale/waitroom"
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
	if err := order.CreateSale(c.Request.Context(), s.Redis, sale); err != nil {
		s.writeError(c, err)
		return
	}
	s.log.Info("sale created", "sale", sale.ID, "stock", sale.Stock, "per_user_limit", sale.PerUserLimit, "pay_timeout", sale.PayTimeout)
	s.respondSale(c, http.StatusCreated, sale.ID)
}

func (s *Server) getSale(c *gin.Context) { s.respondSale(c, http.StatusOK, c.Param("id")) }

// SaleView is the JSON of a sale with its books: the SDK's type, so the
// server and its clients cannot drift.
type SaleView = client.Sale

// RoomView is a sale's waiting-room settings: the SDK's type.
type RoomView = client.Room

func (s *Server) respondSale(c *gin.Context, status int, id string) {
	if !flashsale.ValidID(id) {
		s.writeError(c, fieldErr("sale id"))
		return
	}
	sale, b, err := order.LoadSale(c.Request.Context(), s.Redis, id)
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
	if w := sale.WaitingRoom; w.Enabled {
		v.WaitingRoom = &RoomView{Enabled: true, AdmitPerSec: w.AdmitPerSec, PreQueue: w.PreQueue.String()}
	}
	c.JSON(status, v)
}

// soldOut answers a buy of a sale this node already knows is sold out
// (order.Seller.SoldOut: no Redis) before the rate limits, the token and
// the body are read: a sold-out crowd keeps asking, and its answer is
// public anyway (GET /v1/sales/{id} shows remaining 0), so spending a token
// check on it buys nothing. The outcome is logged like any buy's, with no
// user (none was identified). A buy carrying an Idempotency-Key goes the
// whole way: it may be the retry of a buy that won (see BuyTicketed).
//
// It runs ahead of the route's observe and counts the answer in the route's
// metrics m itself: the result then needs no slot in gin's key map, which
// costs an allocation per request.
func (s *Server) soldOut(m *routeMetrics) gin.HandlerFunc {
	return func(c *gin.Context) {
		if s.Seller == nil || hasIdempotencyKey(c.Request) || !s.Seller.SoldOut(c.Param("id")) {
			c.Next()
			return
		}
		start := time.Now()
		rec := statlog.Record{Time: start, Node: s.cfg.NodeID, Kind: "buy", Sale: c.Param("id"), Result: flashsale.ESOLDOUT}
		s.writeStat(&rec, start)
		s.writeError(c, order.ErrSoldOut)
		s.perSale.record(rec.Sale, start, rec.Result)
		m.record(start, rec.Result)
	}
}

// hasIdempotencyKey reports whether a buy names a key at all, however
// spelled (idempotencyKey parses and checks it).
func hasIdempotencyKey(r *http.Request) bool {
	if r.Method == http.MethodGet {
		return strings.Contains(r.URL.RawQuery, "idempotency_key")
	}
	return len(r.Header[IdempotencyHeader]) > 0
}

// buy is the hot path: the person is the token's (a user_id still sent
// must be theirs), sell, log the outcome, answer.
func (s *Server) buy(c *gin.Context) {
	start := time.Now()
	saleID := c.Param("id")
	// The request deadline runs from here, or from when the proxy sent the
	// request if that was earlier (a frozen node reads requests that waited
	// in its socket for seconds); it travels with the buyer into the batch
	// (see order.Seller.BuyKeyed).
	deadline := s.requestStart(c, start).Add(s.cfg.RequestDeadline)
	user := subject(c)
	err := s.namedUser(c)
	var key string
	if err == nil {
		key, err = idempotencyKey(c)
	}
	if err == nil && !flashsale.ValidID(saleID) {
		err = fieldErr("sale id")
	}
	if err != nil {
		// Bad input changes nothing and is not a buy outcome: no stat.log line.
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}

	var permit waitroom.Permit
	if s.Rooms != nil {
		if permit, err = s.Rooms.Admit(c.Request.Context(), saleID, user, c.GetHeader(QueueTicketHeader)); err != nil {
			// Refused by the waiting room before anything was held: like bad
			// input, no buy outcome and no stat.log line.
			setResult(c, flashsale.ErrorCode(err))
			s.writeError(c, err)
			return
		}
	}
	// The permit's ticket rides in the buy batch: the script refuses a
	// ticket that already bought and marks it used when it sells, in the
	// same call, so a refused buy has nothing to give back.
	r, err := s.Seller.BuyTicketed(c.Request.Context(), saleID, user, key, permit.Ticket(), deadline)
	if err == nil && c.Request.Context().Err() != nil {
		// The client (or the proxy) left while the batch was settled: a
		// "yes" now would be heard by nobody, so it is undone like a lost
		// reply. A repeat is not undone: its order belongs to an earlier
		// attempt, and the key finds it again.
		if !r.Repeat {
			s.Seller.Undo(r)
		}
		err = order.ErrDeadline
	}
	rec := statlog.Record{Time: start, Node: s.cfg.NodeID, Kind: "buy", Sale: saleID, User: user, Result: "ok"}
	if r.Repeat && err == nil {
		rec.Result = statlog.ResultRepeat
	}
	var idBuf, pubBuf [96]byte
	var public []byte
	if r.Order > 0 {
		// stat.log, like Redis and Kafka, keeps the record id; only the
		// buyer is given the tagged id.
		rec.Order = string(flashsale.AppendOrderID(idBuf[:0], saleID, r.Order))
		public = s.id.OrderIDs.Append(pubBuf[:0], saleID, r.Order)
	}
	if err != nil {
		rec.Result = flashsale.ErrorCode(err)
	}
	s.logOutcome(c, &rec, start)
	defer s.perSale.record(saleID, start, rec.Result)
	if err != nil {
		s.writeError(c, err)
		return
	}
	b := make([]byte, 0, 192)
	b = append(b, '{')
	b = jsonw.Field(b, "order_id")
	b = append(append(append(b, '"'), public...), '"')
	b = jsonw.StrField(b, "sale_id", saleID)
	b = jsonw.StrField(b, "user_id", user)
	b = jsonw.Field(b, "expires_at")
	b = append(b, '"')
	b = time.UnixMilli(r.DeadlineMs).UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"', '}')
	writeJSON(c, http.StatusCreated, b)
}

// namedUser checks the user a per-person request may still name — in the
// GET form's query or the POST form's {"user_id"} body, both optional —
// against the token's: another user is 403.
func (s *Server) namedUser(c *gin.Context) error {
	var named string
	var err error
	if c.Request.Method == http.MethodGet {
		named, err = queryUser(c.Request.URL.RawQuery)
	} else if c.Request.ContentLength != 0 {
		var body []byte
		if body, err = readBody(c); err == nil && len(body) > 0 {
			var r BuyRequest
			r, err = ParseBuy(body)
			named = r.UserID
		}
	}
	if err != nil {
		return err
	}
	return sameUser(c, named)
}

// OrderView is the JSON of an order: the SDK's type.
type OrderView = client.Order

// view renders an order with its public (tagged) id.
func (s *Server) view(o flashsale.Order) OrderView {
	id := o.ID
	if sale, seq, err := flashsale.ParseOrderID(o.ID); err == nil {
		id = s.id.OrderIDs.Format(sale, seq)
	}
	return OrderView{OrderID: id, SaleID: o.SaleID, UserID: o.UserID, Node: o.Node, Status: string(o.Status),
		CreatedAt: o.CreatedAt, ExpiresAt: o.ExpiresAt}
}

func (s *Server) getOrder(c *gin.Context) {
	o, _, err := s.ownOrder(c)
	s.respondOrder(c, o, err)
}

// cancel gives the caller's pending order back. The owner is checked first
// (one more read): an order's user never changes, so the check cannot go
// stale before the cancel runs.
func (s *Server) cancel(c *gin.Context) {
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RequestDeadline)
	defer cancel()
	o, archived, err := s.ownOrder(c)
	switch {
	case err == nil && archived:
		// Its sale is archived: the order is final, and the store's row
		// says how, so the answer is the one settle would give.
		err = archivedSettle(o, flashsale.OrderCancelled)
	case err == nil:
		o, err = s.Orders.Cancel(ctx, o.ID)
	}
	s.respondOrder(c, o, err)
}

// requestStart returns when the request started: start, or the proxy's
// X-Request-Start ("t=<unix seconds>[.fraction]", nginx's ${msec}) when
// http.request_start_header is set and the header is earlier. It can only
// shorten a deadline, never extend it, so a client sending the header
// itself harms nobody but its own request; a header older than a minute is
// taken as clock trouble and ignored.
func (s *Server) requestStart(c *gin.Context, start time.Time) time.Time {
	if s.cfg.RequestStartHeader == "" {
		return start
	}
	h := c.Request.Header[s.cfg.RequestStartHeader]
	if len(h) != 1 {
		return start
	}
	t, ok := ParseRequestStart(h[0])
	if !ok || !t.Before(start) || start.Sub(t) > time.Minute {
		return start
	}
	return t
}

// ParseRequestStart parses an X-Request-Start value: "t=" (optional)
// followed by unix seconds with up to 6 fraction digits.
func ParseRequestStart(v string) (time.Time, bool) {
	v = strings.TrimPrefix(v, "t=")
	secs, frac, _ := strings.Cut(v, ".")
	if len(secs) == 0 || len(secs) > 11 || len(frac) > 6 {
		return time.Time{}, false
	}
	if strings.Trim(secs, "0123456789") != "" { // ParseInt would take a sign
		return time.Time{}, false
	}
	sec, err := strconv.ParseInt(secs, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	var us int64
	for i := 0; i < 6; i++ {
		us *= 10
		if i < len(frac) {
			if frac[i] < '0' || frac[i] > '9' {
				return time.Time{}, false
			}
			us += int64(frac[i] - '0')
		}
	}
	return time.Unix(sec, us*1000), true
}

// idempotencyKey returns the buy attempt's Idempotency-Key ("" if none):
// the idempotency_key query parameter of the GET form, the header of the
// POST form; given twice it is invalid. Keys are scoped to the token's
// subject (buy.lua keys them per user), so one person's key never finds
// another's order.
func idempotencyKey(c *gin.Context) (string, error) {
	if c.Request.Method == http.MethodGet {
		v, ok, err := queryParam(c.Request.URL.RawQuery, "idempotency_key")
		if err != nil {
			return "", err
		}
		return ParseIdempotencyKey(v, ok)
	}
	h := c.Request.Header[IdempotencyHeader]
	if len(h) > 1 {
		return "", errBadKey
	}
	if len(h) == 1 {
		return ParseIdempotencyKey(h[0], true)
	}
	return "", nil
}

func (s *Server) respondOrder(c *gin.Context, o flashsale.Order, err error) {
	if err != nil {
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	c.JSON(http.StatusOK, s.view(o))
}
