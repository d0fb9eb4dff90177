// Package reconcile proves a sale's books: it reads every node's stat.log,
// the sale's state in Redis and the order events on Kafka, and checks the
// invariants of MISSION.md — no oversell, conservation, per-user limit, every
// success real (one order in Redis, one order.created on Kafka, and nothing
// else), expiry exactly once and, when asked, no undersell.
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
	"github.com/flashsale/flashsale/stock"
	"github.com/flashsale/flashsale/store"
	"github.com/redis/go-redis/v9"
)

// Input says where the evidence is.
type Input struct {
	Sale          string
	Redis         redis.UniversalClient
	Brokers       []string
	Topic         string
	StatLogs      []string // every node's stat.log
	Killed        []string // nodes known to have been killed (their unflushed lines may be missing)
	ExpectSellout bool     // demand exceeded supply: every unit must be paid or pending
	// RedisCrashed says Redis was killed mid-sale. A buy script it ran but
	// never answered leaves an order nobody was told of: no ok line, no
	// order.created event (the node answered 503 without an order id).
	// Such orders pass, counted, while unpaid: expiry returns their units.
	RedisCrashed bool
	// Store, when set, adds the third record: every order in Redis (or,
	// for an archived sale, the store's own) and every order.* event match
	// one row in PostgreSQL with the same final status. StoreWait bounds
	// how long the check waits for the store's consumer to catch up.
	Store     *store.Store
	StoreWait time.Duration
	// Client is what clients were told (a client log, see ReadClientLog);
	// when given, the client view is checked too. ClientInDoubt widens the
	// window after a failed answer in which an order of that buyer still
	// counts against it.
	Client        []ClientAnswer
	ClientInDoubt time.Duration
}

// Check is one invariant's verdict.
type Check struct {
	Name   string   `json:"name"`
	OK     bool     `json:"ok"`
	Detail string   `json:"detail"`
	Sample []string `json:"sample,omitempty"` // a few offending ids
}

// NodeSummary is what one node's stat.log says it answered.
type NodeSummary struct {
	Node      string         `json:"node"`
	Files     []string       `json:"files"`
	Lines     int            `json:"lines"`
	OK        int            `json:"ok"`
	SoldOut   int            `json:"sold_out"`
	Results   map[string]int `json:"results"`
	Malformed int            `json:"malformed"`
	Truncated bool           `json:"truncated"`
	Killed    bool           `json:"killed"`
	// Lost is the lines the node said (in gap records) it could not write:
	// its buffer was full or the disk refused them.
	Lost int64 `json:"lost_lines"`
}

// Note is a named finding that is not a failure: evidence known to be
// missing or damaged, with counts, so it is not mistaken for a discrepancy.
type Note struct {
	Name   string `json:"name"`
	Count  int64  `json:"count"`
	Detail string `json:"detail"`
}

// Report is the outcome of a reconciliation.
type Report struct {
	Sale       string          `json:"sale"`
	Books      flashsale.Books `json:"books"`
	Orders     map[string]int  `json:"orders_by_status"`
	Nodes      []*NodeSummary  `json:"nodes"`
	Events     int             `json:"order_created_events"`
	Checks     []Check         `json:"checks"`
	Warnings   []string        `json:"warnings,omitempty"`
	Notes      []Note          `json:"notes,omitempty"`
	OK         bool            `json:"ok"`
	UnloggedBy map[string]int  `json:"orders_without_statlog_line_by_node,omitempty"`
	PerUserMax int64           `json:"per_user_max_active"`
	Archived   bool            `json:"archived"` // the sale's records left Redis: orders are the store's
	SaleLimit  int64           `json:"per_user_limit"`
}

type orderRec struct {
	id  string
	rec lua.Record
}

// Run gathers the evidence and checks the books.
func Run(ctx context.Context, in Input) (*Report, error) {
	sale, books, err := stock.LoadSale(ctx, in.Redis, in.Sale)
	if err != nil {
		return nil, fmt.Errorf("sale %q: %w", in.Sale, err)
	}
	keys := lua.KeysFor(in.Sale)
	raw, err := in.Redis.HGetAll(ctx, keys.Orders).Result()
	if err != nil {
		return nil, fmt.Errorf("orders of %q: %w", in.Sale, err)
	}
	held, err := in.Redis.HGetAll(ctx, keys.Users).Result()
	if err != nil {
		return nil, fmt.Errorf("users of %q: %w", in.Sale, err)
	}
	seq, _ := in.Redis.HGet(ctx, keys.Meta, "seq").Int64()
	archived := in.Redis.HExists(ctx, keys.Meta, "archived_at_ms").Val()
	if archived && in.Store == nil {
		return nil, fmt.Errorf("sale %q is archived: its orders are in the order store; give --postgres-dsn", in.Sale)
	}
	orders := map[string]orderRec{}
	for n, s := range raw {
		num, _ := strconv.ParseInt(n, 10, 64)
		r, err := lua.ParseRecord(s)
		if err != nil {
			return nil, err
		}
		id := flashsale.OrderID(in.Sale, num)
		orders[id] = orderRec{id: id, rec: r}
	}
	if archived {
		if orders, err = storeOrders(ctx, in.Store, in.Sale); err != nil {
			return nil, err
		}
		// The user slots left Redis with the records: what the store says
		// is active is what they were (users hash: "n1,n2" order numbers).
		held = map[string]string{}
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
	}
	var events *EventLog
	if len(in.Brokers) > 0 {
		if events, err = ReadEvents(ctx, in.Brokers, in.Topic); err != nil {
			return nil, err
		}
	}

	rep := &Report{Sale: in.Sale, Books: books, Orders: map[string]int{}, SaleLimit: sale.PerUserLimit,
		UnloggedBy: map[string]int{}, Archived: archived}
	killed := map[string]bool{}
	for _, k := range in.Killed {
		killed[k] = true
	}
	// stat.log: ok lines by order id, and what every node answered.
	okLines := map[string][]statlog.Record{}
	repeatLines := map[string][]statlog.Record{} // answers to a repeated Idempotency-Key
	undoneLines := map[string]statlog.Record{}
	nodes := map[string]*NodeSummary{}
	for _, path := range in.StatLogs {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("stat.log: %w", err)
		}
		var fileNode *NodeSummary
		st, err := statlog.Read(f, func(r statlog.Record) error {
			ns := nodes[r.Node]
			if ns == nil {
				ns = &NodeSummary{Node: r.Node, Results: map[string]int{}, Killed: killed[r.Node]}
				nodes[r.Node] = ns
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
			if r.Kind != "buy" || r.Sale != in.Sale {
				return nil
			}
			ns.Lines++
			ns.Results[r.Result]++
			switch r.Result {
			case "ok":
				ns.OK++
				okLines[r.Order] = append(okLines[r.Order], r)
			case statlog.ResultRepeat:
				repeatLines[r.Order] = append(repeatLines[r.Order], r)
			case flashsale.ESOLDOUT:
				ns.SoldOut++
			default:
				if r.Order != "" {
					undoneLines[r.Order] = r
				}
			}
			return nil
		})
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if fileNode != nil {
			fileNode.Malformed += st.Malformed
			fileNode.Truncated = fileNode.Truncated || st.Truncated
		} else if st.Truncated || st.Malformed > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: no readable line (truncated=%v, malformed=%d)", path, st.Truncated, st.Malformed))
		}
	}
	var lost, corrupt int64
	for _, ns := range nodes {
		rep.Nodes = append(rep.Nodes, ns)
		lost += ns.Lost
		corrupt += int64(ns.Malformed)
		if ns.Truncated {
			corrupt++
		}
	}
	if lost > 0 {
		rep.Notes = append(rep.Notes, Note{Name: "statlog_lines_lost", Count: lost,
			Detail: "lines the nodes could not write (buffer full or disk full), as their gap records state; orders of those nodes without a line are counted against them"})
	}
	if corrupt > 0 {
		rep.Notes = append(rep.Notes, Note{Name: "statlog_corrupt_lines", Count: corrupt,
			Detail: "stat.log lines that are not a record (malformed, or a last line cut off); orders of those nodes without a line are counted against them"})
	}
	sort.Slice(rep.Nodes, func(i, j int) bool { return rep.Nodes[i].Node < rep.Nodes[j].Node })

	// Recount Redis from the order records.
	count := map[byte]int64{}
	active := map[string]int64{}
	for _, o := range orders {
		count[o.rec.Status]++
		rep.Orders[string(order.StatusOf(o.rec.Status))]++
		if o.rec.Status == lua.StatusPending || o.rec.Status == lua.StatusPaid {
			active[o.rec.User]++
		}
	}
	add := func(name string, ok bool, detail string, sample []string) {
		if len(sample) > 5 {
			sample = sample[:5]
		}
		rep.Checks = append(rep.Checks, Check{Name: name, OK: ok, Detail: detail, Sample: sample})
	}
	b := books
	add("no_oversell", b.Pending+b.Paid <= b.Stock && b.Remaining >= 0,
		fmt.Sprintf("pending %d + paid %d <= stock %d, remaining %d >= 0", b.Pending, b.Paid, b.Stock, b.Remaining), nil)
	add("conservation", b.Balanced(),
		fmt.Sprintf("remaining %d + pending %d + paid %d = %d (stock %d)", b.Remaining, b.Pending, b.Paid, b.Remaining+b.Pending+b.Paid, b.Stock), nil)
	countersOK := count[lua.StatusPending] == b.Pending && count[lua.StatusPaid] == b.Paid &&
		count[lua.StatusExpired] == b.Expired && count[lua.StatusCancelled] == b.Cancelled &&
		count[lua.StatusAborted] == b.Aborted && int64(len(orders)) == seq
	add("counters_match_orders", countersOK, fmt.Sprintf("records: %d pending, %d paid, %d expired, %d cancelled, %d aborted of %d (seq %d)",
		count[lua.StatusPending], count[lua.StatusPaid], count[lua.StatusExpired], count[lua.StatusCancelled], count[lua.StatusAborted], len(orders), seq), nil)
	add("expired_released_once", count[lua.StatusExpired] == b.Expired && b.Balanced(),
		fmt.Sprintf("%d expired orders, counter %d, each unit returned once (conservation holds: %v)", count[lua.StatusExpired], b.Expired, b.Balanced()), nil)

	var overLimit []string
	var heldMismatch []string
	for u, n := range active {
		rep.PerUserMax = max(rep.PerUserMax, n)
		if n > sale.PerUserLimit {
			overLimit = append(overLimit, fmt.Sprintf("%s holds %d", u, n))
		}
		if h := lua.HeldCount(held[u]); h != n {
			heldMismatch = append(heldMismatch, fmt.Sprintf("%s: slots %d, active orders %d", u, h, n))
		}
	}
	for u, h := range held {
		if active[u] == 0 {
			heldMismatch = append(heldMismatch, fmt.Sprintf("%s: slots %s, no active order", u, h))
		}
	}
	sort.Strings(overLimit)
	sort.Strings(heldMismatch)
	add("per_user_limit", len(overLimit) == 0, fmt.Sprintf("%d users with active orders, most held by one %d, limit %d",
		len(active), rep.PerUserMax, sale.PerUserLimit), overLimit)
	add("user_slots_match_orders", len(heldMismatch) == 0, fmt.Sprintf("%d mismatches between limit slots and active orders", len(heldMismatch)), heldMismatch)

	// Every success is real: exactly one order (not undone) per ok line.
	var badOK []string
	for id, lines := range okLines {
		o, found := orders[id]
		switch {
		case len(lines) > 1:
			badOK = append(badOK, id+": "+strconv.Itoa(len(lines))+" ok lines")
		case !found:
			badOK = append(badOK, id+": no order in Redis")
		case o.rec.Status == lua.StatusAborted:
			badOK = append(badOK, id+": answered ok but undone")
		case o.rec.User != lines[0].User:
			badOK = append(badOK, id+": user "+lines[0].User+" vs "+o.rec.User)
		}
	}
	// A repeat answered with an order its key made earlier: the order must
	// exist, be the same buyer's, and not be undone (a claim keeps it).
	for id, lines := range repeatLines {
		o, found := orders[id]
		switch {
		case !found:
			badOK = append(badOK, id+": repeat answered with no order in Redis")
		case o.rec.Status == lua.StatusAborted:
			badOK = append(badOK, id+": repeat answered but undone")
		case o.rec.User != lines[0].User:
			badOK = append(badOK, id+": repeat for user "+lines[0].User+" vs "+o.rec.User)
		}
	}
	sort.Strings(badOK)
	add("successes_have_orders", len(badOK) == 0, fmt.Sprintf("%d ok lines, %d without exactly one matching order", len(okLines), len(badOK)), badOK)

	// unanswered reports an order Redis made but never answered for (see
	// Input.RedisCrashed), and counts it.
	unansweredN := 0
	unanswered := func(id string, o orderRec) bool {
		if !in.RedisCrashed || events == nil || o.rec.Status == lua.StatusPaid || len(events.Created[id]) > 0 || len(okLines[id]) > 0 {
			return false
		}
		unansweredN++
		return true
	}

	// And nothing else: every order that was not undone has its ok line,
	// unless it was sold by a killed node whose last lines were not flushed.
	var unlogged []string
	unloggedOf := map[string][]int{} // node -> indexes into unlogged
	lostWithKilled := 0
	for id, o := range orders {
		if o.rec.Status == lua.StatusAborted {
			continue
		}
		if _, ok := okLines[id]; ok {
			continue
		}
		if _, ok := repeatLines[id]; ok {
			// Its first attempt was answered too late (and undone, but a
			// repeat claimed it first): the repeat told the buyer.
			continue
		}
		if killed[o.rec.Node] {
			lostWithKilled++
			rep.UnloggedBy[o.rec.Node]++
			continue
		}
		if _, ok := undoneLines[id]; ok && o.rec.Status == lua.StatusExpired {
			// Answered 503 and its abort failed; the sweeper expired it.
			continue
		}
		if unanswered(id, o) {
			continue
		}
		unlogged = append(unlogged, id+" (node "+o.rec.Node+")")
		unloggedOf[o.rec.Node] = append(unloggedOf[o.rec.Node], len(unlogged)-1)
	}
	// Orders of a node that lost or damaged at least as many lines as it
	// has orders without one are explained by that loss, not a discrepancy.
	explained := 0
	drop := map[int]bool{}
	for node, at := range unloggedOf {
		ns := nodes[node]
		if ns == nil {
			continue
		}
		budget := ns.Lost + int64(ns.Malformed)
		if ns.Truncated {
			budget++
		}
		if int64(len(at)) <= budget {
			explained += len(at)
			for _, i := range at {
				drop[i] = true
			}
		}
	}
	if explained > 0 {
		kept := unlogged[:0]
		for i, u := range unlogged {
			if !drop[i] {
				kept = append(kept, u)
			}
		}
		unlogged = kept
		rep.Notes = append(rep.Notes, Note{Name: "orders_without_line_explained_by_lost_lines", Count: int64(explained),
			Detail: "orders with no stat.log line, on nodes whose lost and corrupt lines cover them"})
	}
	sort.Strings(unlogged)
	detail := fmt.Sprintf("%d orders not undone, %d without an ok line", len(orders)-int(count[lua.StatusAborted]), len(unlogged))
	if lostWithKilled > 0 {
		detail += fmt.Sprintf("; %d sold by killed nodes had no stat.log line (lost with the unflushed buffer at SIGKILL)", lostWithKilled)
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d orders of killed nodes have no stat.log line (unflushed at SIGKILL, or never answered); their orders are in Redis", lostWithKilled))
	}
	if explained > 0 {
		detail += fmt.Sprintf("; %d more have no line but their nodes lost or damaged at least that many lines (see notes)", explained)
	}
	if unansweredN > 0 {
		detail += fmt.Sprintf("; %d unpaid orders with no ok line and no event: Redis ran their buy but crashed before answering", unansweredN)
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%d orders were made by a buy Redis never answered (it crashed): no buyer was told, and expiry returns their units", unansweredN))
	}
	add("orders_have_successes", len(unlogged) == 0, detail, unlogged)

	if events != nil {
		rep.Events = len(events.Created)
		var badEv []string
		inFlight := 0
		for id, o := range orders {
			evs := events.Created[id]
			switch {
			case o.rec.Status == lua.StatusAborted:
				// An undone order may or may not have reached Kafka (a timed-out
				// produce can still land); its consumer then finds it settled.
				if len(evs) > 1 {
					badEv = append(badEv, id+": undone order published twice")
				}
			case len(evs) == 0 && o.rec.Status != lua.StatusPaid && (killed[o.rec.Node] || in.RedisCrashed && len(okLines[id]) == 0):
				// Reserved in Redis by a node killed before Kafka acknowledged
				// its event, or by a buy Redis crashed before answering: a
				// buyer hears "you got it" only after that ack, so nobody was
				// told, and the sweeper returns the unit at the deadline. Paid
				// would mean someone used an order never confirmed, which
				// stays a failure.
				inFlight++
			case len(evs) != 1:
				badEv = append(badEv, fmt.Sprintf("%s: %d order.created events", id, len(evs)))
			case evs[0].UserID != o.rec.User || evs[0].Node != o.rec.Node:
				badEv = append(badEv, id+": event does not match the order")
			}
		}
		for id, evs := range events.Created {
			if evs[0].SaleID != in.Sale {
				continue
			}
			if _, ok := orders[id]; !ok {
				badEv = append(badEv, id+": event without an order in Redis")
			}
		}
		sort.Strings(badEv)
		detail := fmt.Sprintf("%d order.created events read (%d messages, %d undecodable)", len(events.Created), events.Messages, events.Undecoded)
		if inFlight > 0 {
			detail += fmt.Sprintf("; %d unpaid orders have none: reserved, never confirmed (their node was killed, or Redis crashed, before the answer)", inFlight)
		}
		add("orders_have_one_event", len(badEv) == 0, detail, badEv)
	} else {
		rep.Warnings = append(rep.Warnings, "Kafka not read (no brokers given): event checks skipped")
	}
	if in.Store != nil {
		if err := checkStore(ctx, in, orders, events, archived, add); err != nil {
			return nil, err
		}
	} else {
		rep.Warnings = append(rep.Warnings, "order store not read (no --postgres-dsn): store checks skipped")
	}
	if len(in.Client) > 0 {
		clientChecks(in, orders, add)
	}
	if in.ExpectSellout {
		add("no_undersell", b.Remaining == 0 && b.Pending+b.Paid == b.Stock,
			fmt.Sprintf("remaining %d: every unit is paid or pending", b.Remaining), nil)
	}
	rep.OK = true
	for _, c := range rep.Checks {
		rep.OK = rep.OK && c.OK
	}
	return rep, nil
}
