// Package order holds what happens to an order after the unit is reserved:
// the order.created event on Kafka (which is what makes a sale durable), pay
// and cancel, and the consumers that give unpaid orders' units back to stock
// at their deadline, exactly once.
package order

import (
	"encoding/json"
	"fmt"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/jsonw"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
)

// TypeCreated is the type of the event published for every sold unit.
const TypeCreated = "order.created"

// Types of the events that end a pending order (or relabel an expired one
// aborted), one per settle transition. They carry the whole order, so a
// consumer can record the order from any one of them, in any order.
const (
	TypePaid      = "order.paid"
	TypeCancelled = "order.cancelled"
	TypeExpired   = "order.expired"
	TypeAborted   = "order.aborted"
)

// TypeOfStatus returns the event type of a move to record status st, or "".
func TypeOfStatus(st byte) string {
	switch st {
	case lua.StatusPaid:
		return TypePaid
	case lua.StatusCancelled:
		return TypeCancelled
	case lua.StatusExpired:
		return TypeExpired
	case lua.StatusAborted:
		return TypeAborted
	}
	return ""
}

// StatusOfType returns the order status an event type announces
// (order.created: pending), and false for any other type.
func StatusOfType(typ string) (flashsale.OrderStatus, bool) {
	switch typ {
	case TypeCreated:
		return flashsale.OrderPending, true
	case TypePaid:
		return flashsale.OrderPaid, true
	case TypeCancelled:
		return flashsale.OrderCancelled, true
	case TypeExpired:
		return flashsale.OrderExpired, true
	case TypeAborted:
		return flashsale.OrderAborted, true
	}
	return "", false
}

// Event is an order event on Kafka, keyed by sale id so one sale's events
// keep their order within a partition.
type Event struct {
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

// AppendTransition appends the event of order n of sale moving to
// rec.Status at settledMs (Redis clock), encoded as JSON; payment is the
// payment id of an order.paid ("" leaves the field out).
func AppendTransition(b []byte, sale string, n int64, rec lua.Record, settledMs int64, payment string) []byte {
	b = append(b, '{')
	b = jsonw.StrField(b, "type", TypeOfStatus(rec.Status))
	b = jsonw.Field(b, "order_id")
	b = append(b, '"')
	b = flashsale.AppendOrderID(b, sale, n)
	b = append(b, '"')
	b = jsonw.StrField(b, "sale_id", sale)
	b = jsonw.StrField(b, "user_id", rec.User)
	b = jsonw.StrField(b, "node", rec.Node)
	b = jsonw.IntField(b, "created_ms", rec.CreatedMs)
	b = jsonw.IntField(b, "deadline_ms", rec.DeadlineMs)
	b = jsonw.IntField(b, "settled_ms", settledMs)
	if payment != "" {
		b = jsonw.StrField(b, "payment_id", payment)
	}
	return append(b, '}')
}

// AppendCreated appends the order.created event of r, encoded as JSON.
func AppendCreated(b []byte, r stock.Reservation) []byte {
	b = append(b, '{')
	b = jsonw.StrField(b, "type", TypeCreated)
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

// ParseEvent decodes an order event and checks the fields a consumer relies on.
func ParseEvent(b []byte) (Event, error) {
	e, ok := parseCreatedFast(b)
	if !ok {
		e = Event{}
		if err := json.Unmarshal(b, &e); err != nil {
			return Event{}, fmt.Errorf("order event: %w", err)
		}
	}
	if e.Type == "" {
		return Event{}, fmt.Errorf("order event: no type")
	}
	if _, known := StatusOfType(e.Type); known {
		sale, _, err := flashsale.ParseOrderID(e.OrderID)
		if err != nil || sale != e.SaleID || e.DeadlineMs <= 0 {
			return Event{}, fmt.Errorf("order event: bad order id %q for sale %q or deadline %d", e.OrderID, e.SaleID, e.DeadlineMs)
		}
	}
	return e, nil
}

// parseCreatedFast decodes the exact bytes AppendCreated (or
// AppendTransition) writes (fields in
// that order, strings without escapes) without reflection; anything else —
// another producer's spacing, escapes, another event type — reports false
// and goes to encoding/json. Every node consumes every order event, so this
// is on the selling path's budget.
func parseCreatedFast(b []byte) (Event, bool) {
	var e Event
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
// AppendCreated — sale, order number, deadline — allocating only the sale
// id. Anything else reports false and goes through ParseEvent.
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
