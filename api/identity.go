package api

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/internal/jsonw"
	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/limit"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/wallet"
	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"
)

// Identity is who may do what (issue 11): how buyer tokens are checked,
// how order ids are spelled, the payment provider's key, and the abuse
// limits. Auth and OrderIDs are required; a nil limit is off.
type Identity struct {
	Auth          *auth.Verifier
	OrderIDs      *auth.OrderIDs
	PaymentSecret []byte // empty: every payment callback is 401
	// Per user (the token's sub) and per client IP, on buy, open and shake.
	UserLimit, IPLimit *limit.Keyed
	// Failed payment callbacks per client IP.
	CallbackLimit *limit.Keyed
	// TrustedProxies are the peers whose X-Forwarded-For is believed.
	TrustedProxies []netip.Prefix
}

// ParseProxies parses IPs and CIDRs (http.trusted_proxies).
func ParseProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, flashsale.Errorf(flashsale.EINVALID, "trusted proxy %q is neither an IP nor a CIDR", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

const subjectKey = "fs.sub"

var (
	// wwwAuthenticate goes with every 401 of a per-person route (RFC 6750).
	wwwAuthenticate = []string{`Bearer realm="flashsale"`}
	errForbidden    = &flashsale.Error{Code: flashsale.EFORBIDDEN, Message: "the request names another user than the bearer token"}
	errRateLimited  = &flashsale.Error{Code: flashsale.ERATELIMITED, Message: "too many requests; retry after the Retry-After seconds"}
	errOrderUnknown = &flashsale.Error{Code: flashsale.ENOTFOUND, Message: "no such order"}
	errBadSignature = &flashsale.Error{Code: flashsale.EUNAUTHORIZED, Message: "missing or bad Flashsale-Signature"}
)

func init() {
	PreRender(auth.ErrUnauthorized, errForbidden, errRateLimited, errOrderUnknown, errBadSignature)
}

// identify is the middleware of every per-person route: the person is the
// bearer token's subject, left in the context for subject; no token or a
// bad one is 401 with WWW-Authenticate.
func (s *Server) identify(c *gin.Context) {
	var tok string
	ok := false
	if h := c.Request.Header["Authorization"]; len(h) == 1 {
		tok, ok = auth.BearerToken(h[0])
	}
	if ok {
		if sub, err := s.id.Auth.Verify(tok); err == nil {
			c.Set(subjectKey, sub)
			c.Next()
			return
		}
	}
	c.Writer.Header()["Www-Authenticate"] = wwwAuthenticate
	setResult(c, flashsale.EUNAUTHORIZED)
	s.writeError(c, auth.ErrUnauthorized)
}

// subject is the person identify found.
func subject(c *gin.Context) string { return c.GetString(subjectKey) }

// limitIP refuses a client IP over its rate (before the token is even
// checked: a flood of bad tokens from one host is throttled too).
func (s *Server) limitIP(c *gin.Context) {
	if s.id.IPLimit != nil && !s.id.IPLimit.Allow(s.clientIP(c.Request)) {
		s.refuseRate(c, s.id.IPLimit)
		return
	}
	c.Next()
}

// limitUser refuses a person over their rate; it runs after identify.
func (s *Server) limitUser(c *gin.Context) {
	if s.id.UserLimit != nil && !s.id.UserLimit.Allow(subject(c)) {
		s.refuseRate(c, s.id.UserLimit)
		return
	}
	c.Next()
}

func (s *Server) refuseRate(c *gin.Context, l *limit.Keyed) {
	s.metrics.limited.Inc()
	c.Writer.Header()["Retry-After"] = l.RetryAfter
	setResult(c, flashsale.ERATELIMITED)
	s.writeError(c, errRateLimited)
}

// clientIP is the peer's address, or — when the peer is a trusted proxy —
// the rightmost X-Forwarded-For address that is not itself a trusted proxy
// (everything left of it could have been written by the client).
func (s *Server) clientIP(r *http.Request) string {
	host := r.RemoteAddr
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if len(s.id.TrustedProxies) == 0 || !s.trusted(host) {
		return host
	}
	xff := r.Header["X-Forwarded-For"]
	for i := len(xff) - 1; i >= 0; i-- {
		list := xff[i]
		for list != "" {
			var hop string
			if k := strings.LastIndexByte(list, ','); k >= 0 {
				hop, list = strings.TrimSpace(list[k+1:]), list[:k]
			} else {
				hop, list = strings.TrimSpace(list), ""
			}
			if _, err := netip.ParseAddr(hop); err != nil {
				return host // a hop we cannot read: stop at the last one we trust
			}
			if !s.trusted(hop) {
				return hop
			}
			host = hop
		}
	}
	return host
}

func (s *Server) trusted(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.id.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// sameUser checks a user id the request still names (body or query)
// against the token's: absent or equal is fine, another is 403.
func sameUser(c *gin.Context, named string) error {
	if named != "" && named != subject(c) {
		return errForbidden
	}
	return nil
}

// publicOrder parses a public order id: any other spelling is no order.
func (s *Server) publicOrder(id string) (sale string, seq int64, err error) {
	sale, seq, ok := s.id.OrderIDs.Parse(id)
	if !ok {
		return "", 0, errOrderUnknown
	}
	return sale, seq, nil
}

// ownOrder returns the caller's order; another person's order answers
// exactly like an order that does not exist. An order of an archived sale
// (no longer in Redis) comes from the order store, with archived true.
func (s *Server) ownOrder(c *gin.Context) (o flashsale.Order, archived bool, err error) {
	sale, seq, err := s.publicOrder(c.Param("id"))
	if err != nil {
		return flashsale.Order{}, false, err
	}
	o, err = s.Orders.Get(c.Request.Context(), flashsale.OrderID(sale, seq))
	if flashsale.ErrorCode(err) == flashsale.ENOTFOUND {
		if row, ok := s.archivedOrder(c.Request.Context(), sale, seq); ok {
			o, err, archived = row.Order, nil, true
		}
	}
	if err == nil && o.UserID != subject(c) {
		return flashsale.Order{}, false, errOrderUnknown
	}
	return o, archived, err
}

// paymentMetrics count callbacks by result, and double charges apart.
type paymentMetrics struct {
	results      *prometheus.CounterVec
	doubleCharge prometheus.Counter
}

func newPaymentMetrics() *paymentMetrics {
	return &paymentMetrics{
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: metric.Name("payments", "callbacks_total"),
			Help: "Payment callbacks by result (ok or an error code)."}, []string{"result"}),
		doubleCharge: metric.Counter("payments", "double_charged_total",
			"Callbacks of another payment for an order already paid: a buyer charged twice, to refund.", nil),
	}
}

// PaymentCallback is the body of POST /v1/payments/callback.
type PaymentCallback struct {
	OrderID     string `json:"order_id"`
	PaymentID   string `json:"payment_id"`
	AmountCents *int64 `json:"amount_cents"`
}

// ParsePaymentCallback parses and validates a callback body (strictly:
// exact field names, no duplicates, nothing unknown, all three present).
func ParsePaymentCallback(body []byte) (PaymentCallback, error) {
	var r PaymentCallback
	if err := decodeStrict(body, &r); err != nil {
		return PaymentCallback{}, err
	}
	if r.OrderID == "" || r.AmountCents == nil || !flashsale.ValidID(r.PaymentID) {
		return PaymentCallback{}, flashsale.Errorf(flashsale.EINVALID,
			"order_id, payment_id (1-64 characters of [A-Za-z0-9_-:@]) and amount_cents are required")
	}
	return r, nil
}

// paymentCallback is the payment provider telling us an order was paid:
// the only way an order becomes paid. The signature covers the raw body.
func (s *Server) paymentCallback(c *gin.Context) {
	ip := s.clientIP(c.Request)
	if s.id.CallbackLimit.Exhausted(ip) {
		s.refuseRate(c, s.id.CallbackLimit)
		return
	}
	fail := func(err error) {
		s.id.CallbackLimit.Allow(ip) // charge the failure
		s.payments.results.WithLabelValues(flashsale.ErrorCode(err)).Inc()
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
	}
	body, err := readBody(c)
	if err != nil {
		fail(err)
		return
	}
	if len(s.id.PaymentSecret) == 0 ||
		auth.VerifyPayload(s.id.PaymentSecret, c.GetHeader(auth.SignatureHeader), body, time.Now()) != nil {
		fail(errBadSignature)
		return
	}
	cb, err := ParsePaymentCallback(body)
	if err != nil {
		fail(err)
		return
	}
	sale, seq, err := s.publicOrder(cb.OrderID)
	if err != nil {
		fail(err)
		return
	}
	// Under the request deadline too (issue 13): a callback whose deadline
	// passed before the script is sent changes nothing; the provider retries.
	ctx, cancel := context.WithTimeout(c.Request.Context(), s.cfg.RequestDeadline)
	defer cancel()
	o, err := s.Orders.Pay(ctx, sale, seq, cb.PaymentID, *cb.AmountCents)
	if flashsale.ErrorCode(err) == flashsale.ENOTFOUND {
		// A retried callback for an order whose sale was archived out of
		// Redis: the store's row (with its payment id) gives the answer.
		if row, ok := s.archivedOrder(ctx, sale, seq); ok {
			o, err = row.Order, archivedPay(row, cb.PaymentID, *cb.AmountCents)
		}
	}
	if err == order.ErrDoubleCharge {
		s.payments.doubleCharge.Inc()
		s.log.Warn("double charge: order already paid by another payment", "order", cb.OrderID, "payment", cb.PaymentID)
	}
	if err != nil {
		// Not a signature failure: the provider is who it says; do not
		// throttle it for an order's state.
		s.payments.results.WithLabelValues(flashsale.ErrorCode(err)).Inc()
		setResult(c, flashsale.ErrorCode(err))
		s.writeError(c, err)
		return
	}
	s.payments.results.WithLabelValues("ok").Inc()
	c.JSON(http.StatusOK, s.view(o))
}

// CreditRequest is the body of POST /v1/users/{id}/wallet/credit.
type CreditRequest struct {
	Cents     *int64 `json:"cents"`
	Reference string `json:"reference"`
}

// MaxCreditCents caps one credit (10,000,000.00): a typo is not a fortune.
const MaxCreditCents = 1_000_000_000

// ParseCredit parses and validates a credit body.
func ParseCredit(body []byte) (CreditRequest, error) {
	var r CreditRequest
	if err := decodeStrict(body, &r); err != nil {
		return CreditRequest{}, err
	}
	if r.Cents == nil || *r.Cents < 1 || *r.Cents > MaxCreditCents || !flashsale.ValidID(r.Reference) {
		return CreditRequest{}, flashsale.Errorf(flashsale.EINVALID,
			"cents (1-%d) and reference (1-64 characters of [A-Za-z0-9_-:@]) are required", int64(MaxCreditCents))
	}
	return r, nil
}

// credit is money entering a wallet (admin only), once per reference.
func (s *Server) credit(c *gin.Context) {
	user := c.Param("id")
	if !flashsale.ValidID(user) {
		s.writeError(c, fieldErr("user id"))
		return
	}
	body, err := readBody(c)
	if err != nil {
		s.writeError(c, err)
		return
	}
	r, err := ParseCredit(body)
	if err != nil {
		s.writeError(c, err)
		return
	}
	applied, balance, err := wallet.AddFunds(c.Request.Context(), s.Redis, user, r.Reference, *r.Cents, s.cfg.WalletRecent)
	if err != nil {
		s.writeError(c, err)
		return
	}
	s.log.Info("wallet credited", "user", user, "reference", r.Reference, "cents", *r.Cents, "new", applied)
	b := append([]byte(nil), '{')
	b = jsonw.StrField(b, "user_id", user)
	b = jsonw.StrField(b, "reference", r.Reference)
	b = jsonw.IntField(b, "cents", *r.Cents)
	b = jsonw.IntField(b, "balance_cents", balance)
	b = jsonw.Field(b, "applied")
	if applied {
		b = append(b, "true}"...)
	} else {
		b = append(b, "false}"...)
	}
	writeJSON(c, http.StatusOK, b)
}
