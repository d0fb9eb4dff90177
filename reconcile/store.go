package reconcile

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
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
		out[id] = orderRec{id: id, rec: lua.Record{Status: statusLetter(o.Status), User: o.UserID, Node: o.Node,
			CreatedMs: o.CreatedAt.UnixMilli(), DeadlineMs: o.ExpiresAt.UnixMilli()}}
	}
	return out, nil
}

func statusLetter(s flashsale.OrderStatus) byte {
	switch s {
	case flashsale.OrderPending:
		return lua.StatusPending
	case flashsale.OrderPaid:
		return lua.StatusPaid
	case flashsale.OrderCancelled:
		return lua.StatusCancelled
	case flashsale.OrderExpired:
		return lua.StatusExpired
	case flashsale.OrderAborted:
		return lua.StatusAborted
	}
	return '?'
}

// lastStatus folds an order's events into the status they announce: the
// furthest one along store.Forward.
func lastStatus(created []order.Event, transitions []order.Event) (flashsale.OrderStatus, bool) {
	var st flashsale.OrderStatus
	seen := false
	if len(created) > 0 {
		st, seen = flashsale.OrderPending, true
	}
	for _, e := range transitions {
		to, _ := order.StatusOfType(e.Type)
		if !seen || store.Forward(st, to) {
			st, seen = to, true
		}
	}
	return st, seen
}

// storeDiff compares the sale's orders (Redis's, or the store's own for an
// archived sale) and the events on Kafka with the store's rows. It returns
// the mismatches, and how many orders have no row because no event was
// ever published for them (reserved by a killed node, still pending).
//
// A paid order's row must carry the payment id that paid it: Redis's
// (payments, the record pay.lua keeps) while the sale is live, else the one
// its order.paid event carried.
func storeDiff(ctx context.Context, in Input, orders map[string]orderRec, payments map[string]string, events *EventLog) (bad []string, unpublished int, err error) {
	rows, err := in.Store.SaleOrders(ctx, in.Sale)
	if err != nil {
		return nil, 0, err
	}
	byID := make(map[string]store.Order, len(rows))
	for _, o := range rows {
		byID[o.ID] = o
	}
	for id, o := range orders {
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
		case row.Status == flashsale.OrderPaid && row.PaymentID != paidBy(id, payments, events):
			bad = append(bad, fmt.Sprintf("%s: paid by %q, the store says %q", id, paidBy(id, payments, events), row.PaymentID))
		}
	}
	for id := range byID {
		if _, ok := orders[id]; !ok {
			bad = append(bad, id+": row in the store without an order in Redis")
		}
	}
	sort.Strings(bad)
	return bad, unpublished, nil
}

// paidBy is the payment id that paid order id: payments' (read from Redis)
// when it has one, else the order.paid event's.
func paidBy(id string, payments map[string]string, events *EventLog) string {
	if p := payments[id]; p != "" {
		return p
	}
	if events != nil {
		for _, e := range events.Transitions[id] {
			if e.Type == order.TypePaid && e.PaymentID != "" {
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

// checkStore adds the third record's check: Redis (or, archived, the
// store's final books), Kafka and PostgreSQL agree order by order. It waits
// up to in.StoreWait for the store to catch up first (its consumer may lag).
func checkStore(ctx context.Context, in Input, orders map[string]orderRec, events *EventLog, archived bool,
	add func(string, bool, string, []string)) error {
	deadline := time.Now().Add(in.StoreWait)
	var payments map[string]string
	if !archived {
		var err error
		if payments, err = salePayments(ctx, in); err != nil {
			return err
		}
	}
	for {
		bad, unpublished, err := storeDiff(ctx, in, orders, payments, events)
		if err != nil {
			return err
		}
		if len(bad) == 0 || !time.Now().Before(deadline) {
			detail := fmt.Sprintf("%d orders, %d differ between Redis, Kafka and the store (status, user, node, payment id)", len(orders), len(bad))
			if archived {
				detail = fmt.Sprintf("archived sale: %d orders in the store, %d differ from the events on Kafka", len(orders), len(bad))
			}
			if unpublished > 0 {
				detail += fmt.Sprintf("; %d pending orders have no event and no row (reserved, never confirmed)", unpublished)
			}
			add("store_matches", len(bad) == 0, detail, bad)
			return nil
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
