package reconcile

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/store"
)

// storeOrders returns the sale's orders as the store holds them, keyed and
// shaped like Redis's records, for an archived sale (whose records left
// Redis).
func storeOrders(ctx context.Context, s *store.Store, sale string) (map[string]orderRec, error) {
	rows, err := s.SaleOrders(ctx, sale)
	if err != nil {
		return nil, err
	}
	out := make(map[string]orderRec, len(rows))
	for n, o := range rows {
		id := flashsale.OrderID(sale, n)
		out[id] = orderRec{id: id, rec: lua.Record{Status: order.StatusLetter(o.Status), User: o.UserID, Node: o.Node,
			CreatedMs: o.CreatedAt.UnixMilli(), DeadlineMs: o.ExpiresAt.UnixMilli()}}
	}
	return out, nil
}

// lastStatus folds an order's events into the status they announce: the
// furthest one along store.Forward.
func lastStatus(created []kafka.OrderEvent, transitions []kafka.OrderEvent) (flashsale.OrderStatus, bool) {
	var st flashsale.OrderStatus
	seen := false
	if len(created) > 0 {
		st, seen = flashsale.OrderPending, true
	}
	for _, e := range transitions {
		to, _ := kafka.OrderStatusOfType(e.Type)
		if !seen || store.Forward(st, to) {
			st, seen = to, true
		}
	}
	return st, seen
}

// storeMatches: the third record — the sale's orders (Redis's, or the
// store's own for an archived sale), the events on Kafka and the store's
// rows agree order by order (status, user, node, and the payment id of a
// paid order: Redis's while the sale is live, else its order.paid
// event's). A pending order no event was ever published for (reserved by a
// killed node) has no row yet, and is only counted.
func storeMatches(ev *evidence, _ *Report) Check {
	byID := make(map[string]store.Order, len(ev.storeRows))
	for _, o := range ev.storeRows {
		byID[o.ID] = o
	}
	var bad []string
	unpublished := 0
	events := ev.events
	for id, o := range ev.orders {
		row, ok := byID[id]
		var evStatus flashsale.OrderStatus
		var hasEv bool
		if events != nil {
			evStatus, hasEv = lastStatus(events.Created[id], events.Transitions[id])
		}
		switch {
		case !ok && events != nil && !hasEv && o.rec.Status == lua.StatusPending:
			unpublished++ // nothing to record yet: no event was ever published for it
		case !ok:
			bad = append(bad, id+": no row in the store")
		case row.Status != order.StatusOf(o.rec.Status):
			bad = append(bad, fmt.Sprintf("%s: %s in Redis, %s in the store", id, order.StatusOf(o.rec.Status), row.Status))
		case row.UserID != o.rec.User || row.Node != o.rec.Node:
			bad = append(bad, id+": user or node differ from Redis")
		case events != nil && hasEv && evStatus != row.Status:
			bad = append(bad, fmt.Sprintf("%s: events say %s, the store %s", id, evStatus, row.Status))
		case events != nil && !hasEv:
			bad = append(bad, id+": in the store without any event on Kafka")
		case row.Status == flashsale.OrderPaid && row.PaymentID != paidBy(id, ev.payments, events):
			bad = append(bad, fmt.Sprintf("%s: paid by %q, the store says %q", id, paidBy(id, ev.payments, events), row.PaymentID))
		}
	}
	for id := range byID {
		if _, ok := ev.orders[id]; !ok {
			bad = append(bad, id+": row in the store without an order in Redis")
		}
	}
	sort.Strings(bad)
	detail := fmt.Sprintf("%d orders, %d differ between Redis, Kafka and the store (status, user, node, payment id)", len(ev.orders), len(bad))
	if ev.archived {
		detail = fmt.Sprintf("archived sale: %d orders in the store, %d differ from the events on Kafka", len(ev.orders), len(bad))
	}
	if unpublished > 0 {
		detail += fmt.Sprintf("; %d pending orders have no event and no row (reserved, never confirmed)", unpublished)
	}
	return verdict("store_matches", len(bad) == 0, detail, bad)
}

// paidBy is the payment id that paid order id: payments' (read from Redis)
// when it has one, else the order.paid event's.
func paidBy(id string, payments map[string]string, events *EventLog) string {
	if p := payments[id]; p != "" {
		return p
	}
	if events != nil {
		for _, e := range events.Transitions[id] {
			if e.Type == kafka.TypeOrderPaid && e.PaymentID != "" {
				return e.PaymentID
			}
		}
	}
	return ""
}

// salePayments reads the live sale's payment ids from Redis, by order id.
func salePayments(ctx context.Context, in Input) (map[string]string, error) {
	raw, err := in.Redis.HGetAll(ctx, lua.PaymentsKey(in.Sale)).Result()
	if err != nil {
		return nil, fmt.Errorf("read payments of sale %q: %w", in.Sale, err)
	}
	out := make(map[string]string, len(raw))
	for n, p := range raw {
		num, err := strconv.ParseInt(n, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("payments of sale %q: bad order number %q", in.Sale, n)
		}
		out[flashsale.OrderID(in.Sale, num)] = p
	}
	return out, nil
}
