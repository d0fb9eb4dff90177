// Package kafka is flashsale's Kafka adapter: the publisher every product
// makes its events durable with, the delay consumer that holds events until
// their deadline (order expiry, envelope refund), and the codecs of every
// event on the wire. segmentio/kafka-go is imported as kafkago here so this
// package's own name can say what it adapts.
package kafka

import (
	"encoding/json"
	"fmt"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/jsonw"
)

// TypeOrderCreated is the type of the event published for every sold unit.
const TypeOrderCreated = "order.created"

// Types of the events that end a pending order (or relabel an expired one
// aborted), one per settle transition. They carry the whole order, so a
// consumer can record the order from any one of them, in any order.
const (
	TypeOrderPaid      = "order.paid"
	TypeOrderCancelled = "order.cancelled"
	TypeOrderExpired   = "order.expired"
	TypeOrderAborted   = "order.aborted"
)

// OrderStatusOfType returns the order status an event type announces
// (order.created: pending), and false for any other type.
func OrderStatusOfType(typ string) (flashsale.OrderStatus, bool) {
	switch typ {
	case TypeOrderCreated:
		return flashsale.OrderPending, true
	case TypeOrderPaid:
		return flashsale.OrderPaid, true
	case TypeOrderCancelled:
		return flashsale.OrderCancelled, true
	case TypeOrderExpired:
		return flashsale.OrderExpired, true
	case TypeOrderAborted:
		return flashsale.OrderAborted, true
	}
	return "", false
}

// OrderEvent is an order event on Kafka, keyed by sale id so one sale's events
// keep their order within a partition.
type OrderEvent struct {
	Type       string `json:"type"`
	OrderID    string `json:"order_id"`
	SaleID     string `json:"sale_id"`
	UserID     string `json:"user_id"`
	Node       string `json:"node"`
	CreatedMs  int64  `json:"created_ms"`
	DeadlineMs int64  `json:"deadline_ms"`
	SettledMs  int64  `json:"settled_ms,omitempty"` // the transition's time (Redis clock); 0 on order.created
	PaymentID  string `json:"payment_id,omitempty"` // order.paid: the payment provider's id of the payment
}

// OrderTransition is what an event ending a pending order tells (Type
// one of TypeOrderPaid, TypeOrderCancelled, TypeOrderExpired,
// TypeOrderAborted): the whole order, and when (SettledMs, Redis clock) and
// by which payment (PaymentID, order.paid only) it moved.
type OrderTransition struct {
	Type       string
	SaleID     string
	Order      int64
	UserID     string
	Node       string
	CreatedMs  int64
	DeadlineMs int64
	SettledMs  int64
	PaymentID  string // "" leaves the field out
}

// AppendOrderTransition appends the event of t, encoded as JSON.
func AppendOrderTransition(b []byte, t OrderTransition) []byte {
	b = append(b, '{')
	b = jsonw.StrField(b, "type", t.Type)
	b = jsonw.Field(b, "order_id")
	b = append(b, '"')
	b = flashsale.AppendOrderID(b, t.SaleID, t.Order)
	b = append(b, '"')
	b = jsonw.StrField(b, "sale_id", t.SaleID)
	b = jsonw.StrField(b, "user_id", t.UserID)
	b = jsonw.StrField(b, "node", t.Node)
	b = jsonw.IntField(b, "created_ms", t.CreatedMs)
	b = jsonw.IntField(b, "deadline_ms", t.DeadlineMs)
	b = jsonw.IntField(b, "settled_ms", t.SettledMs)
	if t.PaymentID != "" {
		b = jsonw.StrField(b, "payment_id", t.PaymentID)
	}
	return append(b, '}')
}

// OrderCreated is what an order.created event tells: a unit of SaleID
// reserved for UserID as order number Order, by Node, at CreatedMs, to be paid
// by DeadlineMs (both on Redis's clock).
type OrderCreated struct {
	SaleID     string
	UserID     string
	Node       string
	Order      int64
	CreatedMs  int64
	DeadlineMs int64
}

// AppendOrderCreated appends the order.created event of r, encoded as JSON.
func AppendOrderCreated(b []byte, r OrderCreated) []byte {
	b = append(b, '{')
	b = jsonw.StrField(b, "type", TypeOrderCreated)
	b = jsonw.Field(b, "order_id")
	b = append(b, '"')
	b = flashsale.AppendOrderID(b, r.SaleID, r.Order)
	b = append(b, '"')
	b = jsonw.StrField(b, "sale_id", r.SaleID)
	b = jsonw.StrField(b, "user_id", r.UserID)
	b = jsonw.StrField(b, "node", r.Node)
	b = jsonw.IntField(b, "created_ms", r.CreatedMs)
	b = jsonw.IntField(b, "deadline_ms", r.DeadlineMs)
	return append(b, '}')
}

// ParseOrderEvent decodes an order event and checks the fields a consumer relies on.
func ParseOrderEvent(b []byte) (OrderEvent, error) {
	e, ok := parseCreatedFast(b)
	if !ok {
		e = OrderEvent{}
		if err := json.Unmarshal(b, &e); err != nil {
			return OrderEvent{}, fmt.Errorf("order event: %w", err)
		}
	}
	if e.Type == "" {
		return OrderEvent{}, fmt.Errorf("order event: no type")
	}
	if _, known := OrderStatusOfType(e.Type); known {
		sale, _, err := flashsale.ParseOrderID(e.OrderID)
		if err != nil || sale != e.SaleID || e.DeadlineMs <= 0 {
			return OrderEvent{}, fmt.Errorf("order event: bad order id %q for sale %q or deadline %d", e.OrderID, e.SaleID, e.DeadlineMs)
		}
	}
	return e, nil
}

// parseCreatedFast decodes the exact bytes AppendOrderCreated (or
// AppendOrderTransition) writes (fields in
// that order, strings without escapes) without reflection; anything else —
// another producer's spacing, escapes, another event type — reports false
// and goes to encoding/json. Every node consumes every order event, so this
// is on the selling path's budget.
func parseCreatedFast(b []byte) (OrderEvent, bool) {
	var e OrderEvent
	p := parser{b: b}
	ok := p.lit(`{"type":"`) && p.str(&e.Type) &&
		p.lit(`,"order_id":"`) && p.str(&e.OrderID) &&
		p.lit(`,"sale_id":"`) && p.str(&e.SaleID) &&
		p.lit(`,"user_id":"`) && p.str(&e.UserID) &&
		p.lit(`,"node":"`) && p.str(&e.Node) &&
		p.lit(`,"created_ms":`) && p.num(&e.CreatedMs) &&
		p.lit(`,"deadline_ms":`) && p.num(&e.DeadlineMs) &&
		(p.lit(`}`) || p.lit(`,"settled_ms":`) && p.num(&e.SettledMs) &&
			(p.lit(`}`) || p.lit(`,"payment_id":"`) && p.str(&e.PaymentID) && p.lit(`}`))) && p.i == len(b)
	return e, ok
}

type parser struct {
	b []byte
	i int
}

func (p *parser) lit(s string) bool {
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// str reads up to the closing quote; a backslash or control byte defers to
// the full decoder.
func (p *parser) str(out *string) bool {
	for j := p.i; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			*out = string(p.b[p.i:j])
			p.i = j + 1
			return true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return false
		}
	}
	return false
}

func (p *parser) num(out *int64) bool {
	j, neg := p.i, false
	if j < len(p.b) && p.b[j] == '-' {
		neg, j = true, j+1
	}
	start := j
	var n int64
	for ; j < len(p.b) && p.b[j] >= '0' && p.b[j] <= '9'; j++ {
		if j-start >= 18 {
			return false
		}
		n = n*10 + int64(p.b[j]-'0')
	}
	if j == start {
		return false
	}
	if neg {
		n = -n
	}
	*out, p.i = n, j
	return true
}

// parseDue extracts what expiry needs from an order.created event written by
// AppendOrderCreated — sale, order number, deadline — allocating only the sale
// id. Anything else reports false and goes through ParseOrderEvent.
func parseDue(b []byte) (sale string, n int64, deadlineMs int64, ok bool) {
	p := parser{b: b}
	var order, saleB []byte
	var created int64
	ok = p.lit(`{"type":"order.created","order_id":"`) && p.raw(&order) &&
		p.lit(`,"sale_id":"`) && p.raw(&saleB) &&
		p.lit(`,"user_id":"`) && p.raw(nil) &&
		p.lit(`,"node":"`) && p.raw(nil) &&
		p.lit(`,"created_ms":`) && p.num(&created) &&
		p.lit(`,"deadline_ms":`) && p.num(&deadlineMs) &&
		p.lit(`}`) && p.i == len(b)
	if !ok || deadlineMs <= 0 {
		return "", 0, 0, false
	}
	// The order id is "<sale>.<n>": check it names this sale.
	dot := len(order) - 1
	for dot >= 0 && order[dot] != '.' {
		dot--
	}
	if dot <= 0 || string(order[:dot]) != string(saleB) {
		return "", 0, 0, false
	}
	for _, c := range order[dot+1:] {
		if c < '0' || c > '9' || n > (1<<62)/10 {
			return "", 0, 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if n <= 0 {
		return "", 0, 0, false
	}
	return string(saleB), n, deadlineMs, true
}

// raw reads a string value without escapes into out (nil: skip it).
func (p *parser) raw(out *[]byte) bool {
	for j := p.i; j < len(p.b); j++ {
		switch c := p.b[j]; {
		case c == '"':
			if out != nil {
				*out = p.b[p.i:j]
			}
			p.i = j + 1
			return true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return false
		}
	}
	return false
}

// ParseOrderDue returns what expiry needs from an order event: its sale,
// order number and pay deadline. ok false skips an event of another type; an
// error is an event that cannot be decoded. The exact bytes
// AppendOrderCreated writes take a path without allocation.
func ParseOrderDue(b []byte) (sale string, n, deadlineMs int64, ok bool, err error) {
	if sale, n, deadlineMs, ok := parseDue(b); ok {
		return sale, n, deadlineMs, true, nil
	}
	ev, err := ParseOrderEvent(b)
	if err != nil {
		return "", 0, 0, false, err
	}
	if ev.Type != TypeOrderCreated {
		return "", 0, 0, false, nil
	}
	_, n, _ = flashsale.ParseOrderID(ev.OrderID)
	return ev.SaleID, n, ev.DeadlineMs, true, nil
}
