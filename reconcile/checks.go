package reconcile

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
)

// A check judges the evidence and returns its verdict; it may add notes and
// warnings to rep (what it could not judge, or explained), never read
// anything.
type check func(ev *evidence, rep *Report) Check

// verdict builds a Check, keeping at most five sample ids.
func verdict(name string, ok bool, detail string, sample []string) Check {
	if len(sample) > 5 {
		sample = sample[:5]
	}
	return Check{Name: name, OK: ok, Detail: detail, Sample: sample}
}

// judge runs every check that applies to ev, in the report's order.
func judge(ev *evidence) *Report {
	rep := &Report{Sale: ev.sale, Books: ev.books, Orders: map[string]int{}, SaleLimit: ev.limit,
		UnloggedBy: map[string]int{}, Nodes: ev.nodeList(), Warnings: append([]string(nil), ev.warnings...),
		Archived: ev.archived}
	for _, o := range ev.orders {
		rep.Orders[string(order.StatusOf(o.rec.Status))]++
	}
	statlogNotes(ev, rep)
	run := []check{noOversell, conservation, countersMatchOrders, expiredReleasedOnce, perUserLimit,
		userSlotsMatchOrders, successesHaveOrders, ordersHaveSuccesses}
	if ev.events != nil {
		rep.Events = len(ev.events.Created)
		run = append(run, ordersHaveOneEvent)
	}
	if ev.store {
		run = append(run, storeMatches)
	}
	if len(ev.client) > 0 {
		run = append(run, clientSuccessesAreOrders, clientToldNoHoldsNothing)
	}
	if ev.expectSellout {
		run = append(run, noUndersell)
	}
	rep.OK = true
	for _, c := range run {
		v := c(ev, rep)
		rep.Checks = append(rep.Checks, v)
		rep.OK = rep.OK && v.OK
	}
	if ev.events == nil {
		rep.Warnings = append(rep.Warnings, "Kafka not read (no brokers given): event checks skipped")
	}
	if !ev.store {
		rep.Warnings = append(rep.Warnings, "order store not read (no --postgres-dsn): store checks skipped")
	}
	return rep
}

// statlogNotes names the stat.log lines the nodes lost (their gap records)
// or that are damaged, so missing lines are not taken for discrepancies.
func statlogNotes(ev *evidence, rep *Report) {
	var lost, corrupt int64
	for _, ns := range ev.nodes {
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
}

// noOversell: never more units held than exist.
func noOversell(ev *evidence, _ *Report) Check {
	b := ev.books
	return verdict("no_oversell", b.Pending+b.Paid <= b.Stock && b.Remaining >= 0,
		fmt.Sprintf("pending %d + paid %d <= stock %d, remaining %d >= 0", b.Pending, b.Paid, b.Stock, b.Remaining), nil)
}

// conservation: every unit is remaining, pending or paid.
func conservation(ev *evidence, _ *Report) Check {
	b := ev.books
	return verdict("conservation", b.Balanced(),
		fmt.Sprintf("remaining %d + pending %d + paid %d = %d (stock %d)", b.Remaining, b.Pending, b.Paid, b.Remaining+b.Pending+b.Paid, b.Stock), nil)
}

// countersMatchOrders: the sale's counters are its order records, counted.
func countersMatchOrders(ev *evidence, _ *Report) Check {
	b, count := ev.books, ev.statusCounts()
	ok := count[lua.StatusPending] == b.Pending && count[lua.StatusPaid] == b.Paid &&
		count[lua.StatusExpired] == b.Expired && count[lua.StatusCancelled] == b.Cancelled &&
		count[lua.StatusAborted] == b.Aborted && int64(len(ev.orders)) == ev.seq
	return verdict("counters_match_orders", ok, fmt.Sprintf("records: %d pending, %d paid, %d expired, %d cancelled, %d aborted of %d (seq %d)",
		count[lua.StatusPending], count[lua.StatusPaid], count[lua.StatusExpired], count[lua.StatusCancelled], count[lua.StatusAborted], len(ev.orders), ev.seq), nil)
}

// expiredReleasedOnce: each expired order returned its unit exactly once.
func expiredReleasedOnce(ev *evidence, _ *Report) Check {
	b, expired := ev.books, ev.statusCounts()[lua.StatusExpired]
	return verdict("expired_released_once", expired == b.Expired && b.Balanced(),
		fmt.Sprintf("%d expired orders, counter %d, each unit returned once (conservation holds: %v)", expired, b.Expired, b.Balanced()), nil)
}

// perUserLimit: nobody holds more live orders than the sale allows.
func perUserLimit(ev *evidence, rep *Report) Check {
	active := ev.active()
	var over []string
	for u, n := range active {
		rep.PerUserMax = max(rep.PerUserMax, n)
		if n > ev.limit {
			over = append(over, fmt.Sprintf("%s holds %d", u, n))
		}
	}
	sort.Strings(over)
	return verdict("per_user_limit", len(over) == 0, fmt.Sprintf("%d users with active orders, most held by one %d, limit %d",
		len(active), rep.PerUserMax, ev.limit), over)
}

// userSlotsMatchOrders: the limit slots Redis keeps per user are exactly
// the user's live orders.
func userSlotsMatchOrders(ev *evidence, _ *Report) Check {
	active := ev.active()
	var bad []string
	for u, n := range active {
		if h := lua.HeldCount(ev.held[u]); h != n {
			bad = append(bad, fmt.Sprintf("%s: slots %d, active orders %d", u, h, n))
		}
	}
	for u, h := range ev.held {
		if active[u] == 0 {
			bad = append(bad, fmt.Sprintf("%s: slots %s, no active order", u, h))
		}
	}
	sort.Strings(bad)
	return verdict("user_slots_match_orders", len(bad) == 0, fmt.Sprintf("%d mismatches between limit slots and active orders", len(bad)), bad)
}

// successesHaveOrders: every ok line is exactly one order of that buyer,
// not undone; every repeat answer names such an order too (a claim keeps
// it).
func successesHaveOrders(ev *evidence, _ *Report) Check {
	var bad []string
	for id, lines := range ev.ok {
		o, found := ev.orders[id]
		switch {
		case len(lines) > 1:
			bad = append(bad, id+": "+strconv.Itoa(len(lines))+" ok lines")
		case !found:
			bad = append(bad, id+": no order in Redis")
		case o.rec.Status == lua.StatusAborted:
			bad = append(bad, id+": answered ok but undone")
		case o.rec.User != lines[0].User:
			bad = append(bad, id+": user "+lines[0].User+" vs "+o.rec.User)
		}
	}
	for id, lines := range ev.repeat {
		o, found := ev.orders[id]
		switch {
		case !found:
			bad = append(bad, id+": repeat answered with no order in Redis")
		case o.rec.Status == lua.StatusAborted:
			bad = append(bad, id+": repeat answered but undone")
		case o.rec.User != lines[0].User:
			bad = append(bad, id+": repeat for user "+lines[0].User+" vs "+o.rec.User)
		}
	}
	sort.Strings(bad)
	return verdict("successes_have_orders", len(bad) == 0, fmt.Sprintf("%d ok lines, %d without exactly one matching order", len(ev.ok), len(bad)), bad)
}

// unanswered reports whether order o is one Redis made but never answered
// for (Input.RedisCrashed): unpaid, with no ok line and no event.
func (ev *evidence) unanswered(id string, o orderRec) bool {
	return ev.crashed && ev.events != nil && o.rec.Status != lua.StatusPaid && len(ev.events.Created[id]) == 0 && len(ev.ok[id]) == 0
}

// ordersHaveSuccesses: and nothing else — every order not undone has its ok
// (or repeat) line, unless its node was killed before flushing, its node
// stated or damaged at least as many lines, its 503 named it and it
// expired, or Redis crashed before answering it.
func ordersHaveSuccesses(ev *evidence, rep *Report) Check {
	var unlogged []string
	unloggedOf := map[string][]int{} // node -> indexes into unlogged
	lostWithKilled, unansweredN, aborted := 0, 0, 0
	for id, o := range ev.orders {
		if o.rec.Status == lua.StatusAborted {
			aborted++
			continue
		}
		if _, ok := ev.ok[id]; ok {
			continue
		}
		if _, ok := ev.repeat[id]; ok {
			// Its first attempt was answered too late (and undone, but a
			// repeat claimed it first): the repeat told the buyer.
			continue
		}
		if ev.killed[o.rec.Node] {
			lostWithKilled++
			rep.UnloggedBy[o.rec.Node]++
			continue
		}
		if _, ok := ev.undone[id]; ok && o.rec.Status == lua.StatusExpired {
			// Answered 503 and its abort failed; the sweeper expired it.
			continue
		}
		if ev.unanswered(id, o) {
			unansweredN++
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
		ns := ev.nodes[node]
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
	detail := fmt.Sprintf("%d orders not undone, %d without an ok line", len(ev.orders)-aborted, len(unlogged))
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
	return verdict("orders_have_successes", len(unlogged) == 0, detail, unlogged)
}

// ordersHaveOneEvent: every order has exactly one matching order.created
// event, and every event of the sale an order; an undone order at most one,
// an unpaid order of a killed node or a crashed Redis may have none.
func ordersHaveOneEvent(ev *evidence, _ *Report) Check {
	var bad []string
	inFlight := 0
	for id, o := range ev.orders {
		evs := ev.events.Created[id]
		switch {
		case o.rec.Status == lua.StatusAborted:
			// An undone order may or may not have reached Kafka (a timed-out
			// produce can still land); its consumer then finds it settled.
			if len(evs) > 1 {
				bad = append(bad, id+": undone order published twice")
			}
		case len(evs) == 0 && o.rec.Status != lua.StatusPaid && (ev.killed[o.rec.Node] || ev.crashed && len(ev.ok[id]) == 0):
			// Reserved in Redis by a node killed before Kafka acknowledged
			// its event, or by a buy Redis crashed before answering: a
			// buyer hears "you got it" only after that ack, so nobody was
			// told, and the sweeper returns the unit at the deadline. Paid
			// would mean someone used an order never confirmed, which
			// stays a failure.
			inFlight++
		case len(evs) != 1:
			bad = append(bad, fmt.Sprintf("%s: %d order.created events", id, len(evs)))
		case evs[0].UserID != o.rec.User || evs[0].Node != o.rec.Node:
			bad = append(bad, id+": event does not match the order")
		}
	}
	for id, evs := range ev.events.Created {
		if evs[0].SaleID != ev.sale {
			continue
		}
		if _, ok := ev.orders[id]; !ok {
			bad = append(bad, id+": event without an order in Redis")
		}
	}
	sort.Strings(bad)
	detail := fmt.Sprintf("%d order.created events read (%d messages, %d undecodable)", len(ev.events.Created), ev.events.Messages, ev.events.Undecoded)
	if inFlight > 0 {
		detail += fmt.Sprintf("; %d unpaid orders have none: reserved, never confirmed (their node was killed, or Redis crashed, before the answer)", inFlight)
	}
	return verdict("orders_have_one_event", len(bad) == 0, detail, bad)
}

// noUndersell (when demand exceeded supply): every unit is paid or pending.
func noUndersell(ev *evidence, _ *Report) Check {
	b := ev.books
	return verdict("no_undersell", b.Remaining == 0 && b.Pending+b.Paid == b.Stock,
		fmt.Sprintf("remaining %d: every unit is paid or pending", b.Remaining), nil)
}
