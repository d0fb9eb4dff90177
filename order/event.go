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
	"github.com/flashsale/flashsale/stock"
)

// TypeCreated is the type of the event published for every sold unit.
const TypeCreated = "order.created"

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
	var e Event
	if err := json.Unmarshal(b, &e); err != nil {
		return Event{}, fmt.Errorf("order event: %w", err)
	}
	if e.Type == "" {
		return Event{}, fmt.Errorf("order event: no type")
	}
	if e.Type == TypeCreated {
		sale, _, err := flashsale.ParseOrderID(e.OrderID)
		if err != nil || sale != e.SaleID || e.DeadlineMs <= 0 {
			return Event{}, fmt.Errorf("order event: bad order id %q for sale %q or deadline %d", e.OrderID, e.SaleID, e.DeadlineMs)
		}
	}
	return e, nil
}
