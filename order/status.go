package order

import (
	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
)

// statuses is the one table of an order's states as each layer spells
// them: the record's letter in Redis, the API's status and the event a move
// into that state publishes ("" for pending: an order is created, never
// moved back to pending). Every mapping below reads it, so a new state is
// one row here, not four switch statements that can drift apart.
var statuses = [...]struct {
	letter     byte
	status     flashsale.OrderStatus
	transition string
}{
	{lua.StatusPending, flashsale.OrderPending, ""},
	{lua.StatusPaid, flashsale.OrderPaid, kafka.TypeOrderPaid},
	{lua.StatusCancelled, flashsale.OrderCancelled, kafka.TypeOrderCancelled},
	{lua.StatusExpired, flashsale.OrderExpired, kafka.TypeOrderExpired},
	{lua.StatusAborted, flashsale.OrderAborted, kafka.TypeOrderAborted},
}

// StatusOf maps a record status letter to an OrderStatus ("unknown" for a
// letter no script writes).
func StatusOf(b byte) flashsale.OrderStatus {
	for _, s := range statuses {
		if s.letter == b {
			return s.status
		}
	}
	return flashsale.OrderStatus("unknown")
}

// StatusLetter maps an OrderStatus back to its record letter, '?' for a
// status no record holds.
func StatusLetter(st flashsale.OrderStatus) byte {
	for _, s := range statuses {
		if s.status == st {
			return s.letter
		}
	}
	return '?'
}

// TypeOfStatus returns the event type of a move to record status st, or ""
// (pending, or a letter no script writes).
func TypeOfStatus(st byte) string {
	for _, s := range statuses {
		if s.letter == st {
			return s.transition
		}
	}
	return ""
}
