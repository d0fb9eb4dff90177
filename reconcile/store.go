package reconcile

import (
	"context"
	"fmt"
	"sort"
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
func storeDiff(ctx context.Context, in Input, orders map[string]orderRec, events *EventLog) (bad []string, unpublished int, err error) {
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

// checkStore adds the third record's check: Redis (or, archived, the
// store's final books), Kafka and PostgreSQL agree order by order. It waits
// up to in.StoreWait for the store to catch up first (its consumer may lag).
func checkStore(ctx context.Context, in Input, orders map[string]orderRec, events *EventLog, archived bool,
	add func(string, bool, string, []string)) error {
	deadline := time.Now().Add(in.StoreWait)
	for {
		bad, unpublished, err := storeDiff(ctx, in, orders, events)
		if err != nil {
			return err
		}
		if len(bad) == 0 || !time.Now().Before(deadline) {
			detail := fmt.Sprintf("%d orders, %d differ between Redis, Kafka and the store", len(orders), len(bad))
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
