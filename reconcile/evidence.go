package reconcile

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/statlog"
	"github.com/flashsale/flashsale/store"
)

// orderRec is one order record of the sale in Redis, by its record id.
type orderRec struct {
	id  string
	rec lua.Record
}

// evidence is everything the checks judge, read once by collect: the sale
// and its orders in Redis, the order events on Kafka, every node's stat.log
// lines, and what the caller knows about the run. Nothing in it is judged.
type evidence struct {
	sale   string
	limit  int64 // the sale's per_user_limit
	books  flashsale.Books
	seq    int64               // orders the sale ever numbered
	orders map[string]orderRec // by record id
	held   map[string]string   // user -> the limit slots Redis keeps (lua.HeldCount)
	events *EventLog           // nil: Kafka not read

	nodes   map[string]*NodeSummary
	ok      map[string][]statlog.Record // "ok" buy lines, by order id
	repeat  map[string][]statlog.Record // answers to a repeated Idempotency-Key, by order id
	undone  map[string]statlog.Record   // failed buys that name an (undone) order
	killed  map[string]bool
	crashed bool // Input.RedisCrashed
	// warnings are what reading met on the way (an unreadable stat.log).
	warnings []string

	expectSellout bool
	client        []ClientAnswer
	clientInDoubt time.Duration

	// The third record (Input.Store): whether it was read, whether the sale
	// was archived (then orders and held are the store's), the live sale's
	// payment ids by order id, and the store's rows as last read.
	store     bool
	archived  bool
	payments  map[string]string
	storeRows map[int64]store.Order // by order number
}

// collect reads the evidence of in.Sale.
func collect(ctx context.Context, in Input) (*evidence, error) {
	sale, books, err := order.LoadSale(ctx, in.Redis, in.Sale)
	if err != nil {
		return nil, fmt.Errorf("sale %q: %w", in.Sale, err)
	}
	ev := &evidence{sale: in.Sale, limit: sale.PerUserLimit, books: books, killed: map[string]bool{},
		crashed: in.RedisCrashed, expectSellout: in.ExpectSellout, client: in.Client, clientInDoubt: in.ClientInDoubt}
	for _, k := range in.Killed {
		ev.killed[k] = true
	}
	recs, held, seq, err := lua.SaleOrders(ctx, in.Redis, in.Sale)
	if err != nil {
		return nil, err
	}
	ev.held, ev.seq = held, seq
	ev.orders = make(map[string]orderRec, len(recs))
	for n, r := range recs {
		id := flashsale.OrderID(in.Sale, n)
		ev.orders[id] = orderRec{id: id, rec: r}
	}
	if ev.archived, err = lua.SaleArchived(ctx, in.Redis, in.Sale); err != nil {
		return nil, err
	}
	if ev.archived && in.Store == nil {
		return nil, fmt.Errorf("sale %q is archived: its orders are in the order store; give --postgres-dsn", in.Sale)
	}
	if ev.archived {
		if ev.orders, err = storeOrders(ctx, in.Store, in.Sale); err != nil {
			return nil, err
		}
		ev.held = heldOf(ev.orders)
	}
	if len(in.Brokers) > 0 {
		if ev.events, err = ReadEvents(ctx, in.Brokers, in.Topic); err != nil {
			return nil, err
		}
	}
	if err := ev.readStatLogs(in.StatLogs); err != nil {
		return nil, err
	}
	if in.Store != nil {
		if err := ev.readStore(ctx, in); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// heldOf rebuilds the user slots of an archived sale, which left Redis
// with the records: what the store says is active is what they were
// ("n1,n2" order numbers, as lua.HeldCount reads them).
func heldOf(orders map[string]orderRec) map[string]string {
	held := map[string]string{}
	for id, o := range orders {
		if o.rec.Status == lua.StatusPending || o.rec.Status == lua.StatusPaid {
			_, num, _ := flashsale.ParseOrderID(id)
			if h := held[o.rec.User]; h != "" {
				held[o.rec.User] = h + "," + strconv.FormatInt(num, 10)
			} else {
				held[o.rec.User] = strconv.FormatInt(num, 10)
			}
		}
	}
	return held
}

// readStore reads the store's rows of the sale (and, for a live sale, its
// payment ids from Redis). The store's consumer may lag the run, so it
// reads again every 200 ms, up to in.StoreWait, until the rows agree with
// the rest of the evidence (storeMatches); the last read is the evidence.
func (ev *evidence) readStore(ctx context.Context, in Input) error {
	ev.store = true
	if !ev.archived {
		var err error
		if ev.payments, err = salePayments(ctx, in); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(in.StoreWait)
	for {
		rows, err := in.Store.SaleOrders(ctx, in.Sale)
		if err != nil {
			return err
		}
		ev.storeRows = rows
		if storeMatches(ev, &Report{}).OK || !time.Now().Before(deadline) {
			return nil
		}
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// readStatLogs reads every node's stat.log: the sale's buy lines by order
// id, and what every node answered, lost or could not write.
func (ev *evidence) readStatLogs(paths []string) error {
	ev.nodes = map[string]*NodeSummary{}
	ev.ok = map[string][]statlog.Record{}
	ev.repeat = map[string][]statlog.Record{}
	ev.undone = map[string]statlog.Record{}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("stat.log: %w", err)
		}
		var fileNode *NodeSummary
		st, err := statlog.Read(f, func(r statlog.Record) error {
			ns := ev.nodes[r.Node]
			if ns == nil {
				ns = &NodeSummary{Node: r.Node, Results: map[string]int{}, Killed: ev.killed[r.Node]}
				ev.nodes[r.Node] = ns
			}
			if fileNode != ns {
				if fileNode == nil {
					ns.Files = append(ns.Files, path)
				}
				fileNode = ns
			}
			if r.Kind == statlog.KindGap {
				ns.Lost += r.Lost
				return nil
			}
			if r.Kind != "buy" || r.Sale != ev.sale {
				return nil
			}
			ns.Lines++
			ns.Results[r.Result]++
			switch r.Result {
			case "ok":
				ns.OK++
				ev.ok[r.Order] = append(ev.ok[r.Order], r)
			case statlog.ResultRepeat:
				ev.repeat[r.Order] = append(ev.repeat[r.Order], r)
			case flashsale.ESOLDOUT:
				ns.SoldOut++
			default:
				if r.Order != "" {
					ev.undone[r.Order] = r
				}
			}
			return nil
		})
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		if fileNode != nil {
			fileNode.Malformed += st.Malformed
			fileNode.Truncated = fileNode.Truncated || st.Truncated
		} else if st.Truncated || st.Malformed > 0 {
			ev.warnings = append(ev.warnings, fmt.Sprintf("%s: no readable line (truncated=%v, malformed=%d)", path, st.Truncated, st.Malformed))
		}
	}
	return nil
}

// nodeList is the nodes in id order.
func (ev *evidence) nodeList() []*NodeSummary {
	out := make([]*NodeSummary, 0, len(ev.nodes))
	for _, ns := range ev.nodes {
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out
}

// statusCounts counts the order records by status.
func (ev *evidence) statusCounts() map[byte]int64 {
	count := map[byte]int64{}
	for _, o := range ev.orders {
		count[o.rec.Status]++
	}
	return count
}

// active counts each user's live (pending or paid) orders.
func (ev *evidence) active() map[string]int64 {
	active := map[string]int64{}
	for _, o := range ev.orders {
		if o.rec.Status == lua.StatusPending || o.rec.Status == lua.StatusPaid {
			active[o.rec.User]++
		}
	}
	return active
}
