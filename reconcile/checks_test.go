package reconcile

import (
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/statlog"
)

// Each check is judged here on evidence built by hand: true books pass it,
// and the one corruption it exists for fails it (the end-to-end test in
// reconcile_test.go reads the same kinds of evidence from a real run).

const t0 = 1_700_000_000_000 // a Redis clock, ms

// trueBooks is a sale of 3 units: s.1 pending (u1, node a), s.2 paid (u2,
// node a), s.3 undone (u3, node b), one left; every line, slot and event
// as a correct run leaves them.
func trueBooks() *evidence {
	rec := func(st byte, node, user string) orderRec {
		return orderRec{rec: lua.Record{Status: st, CreatedMs: t0, DeadlineMs: t0 + 60_000, Node: node, User: user}}
	}
	ev := &evidence{sale: "s", limit: 1, seq: 3,
		books: flashsale.Books{Stock: 3, Remaining: 1, Pending: 1, Paid: 1, Aborted: 1},
		orders: map[string]orderRec{
			"s.1": rec(lua.StatusPending, "a", "u1"),
			"s.2": rec(lua.StatusPaid, "a", "u2"),
			"s.3": rec(lua.StatusAborted, "b", "u3"),
		},
		held: map[string]string{"u1": "1", "u2": "2"},
		events: &EventLog{Created: map[string][]kafka.OrderEvent{
			"s.1": {{Type: "order.created", OrderID: "s.1", SaleID: "s", UserID: "u1", Node: "a"}},
			"s.2": {{Type: "order.created", OrderID: "s.2", SaleID: "s", UserID: "u2", Node: "a"}},
		}, Messages: 2},
		nodes: map[string]*NodeSummary{
			"a": {Node: "a", Results: map[string]int{"ok": 2}, Lines: 2, OK: 2},
			"b": {Node: "b", Results: map[string]int{"unavailable": 1}, Lines: 1},
		},
		ok: map[string][]statlog.Record{
			"s.1": {{Node: "a", Kind: "buy", Sale: "s", User: "u1", Result: "ok", Order: "s.1"}},
			"s.2": {{Node: "a", Kind: "buy", Sale: "s", User: "u2", Result: "ok", Order: "s.2"}},
		},
		repeat: map[string][]statlog.Record{},
		undone: map[string]statlog.Record{"s.3": {Node: "b", Kind: "buy", Sale: "s", User: "u3", Result: "unavailable", Order: "s.3"}},
		killed: map[string]bool{},
	}
	return ev
}

func TestChecksPassTrueBooks(t *testing.T) {
	ev := trueBooks()
	ev.expectSellout = false
	ev.client = []ClientAnswer{{Sale: "s", User: "u1", Status: 201, Order: "s.1.tag", Got: time.UnixMilli(t0 + 10)}}
	rep := judge(ev)
	if !rep.OK || len(rep.Checks) != 11 {
		t.Fatalf("true books: %+v", rep.Checks)
	}
	if rep.PerUserMax != 1 || rep.Orders["pending"] != 1 || rep.Orders["aborted"] != 1 || rep.Events != 2 {
		t.Fatalf("report: %+v", rep)
	}
}

// judged runs one check on the evidence after corrupt changed it.
func judged(t *testing.T, c check, corrupt func(*evidence)) (Check, *Report) {
	t.Helper()
	ev := trueBooks()
	rep := &Report{UnloggedBy: map[string]int{}}
	if ok := c(ev, rep); !ok.OK {
		t.Fatalf("%s fails true books: %s %v", ok.Name, ok.Detail, ok.Sample)
	}
	ev = trueBooks()
	corrupt(ev)
	rep = &Report{UnloggedBy: map[string]int{}}
	return c(ev, rep), rep
}

func mustFail(t *testing.T, c check, corrupt func(*evidence), sample string) {
	t.Helper()
	v, _ := judged(t, c, corrupt)
	if v.OK {
		t.Fatalf("%s passes corrupt books: %s", v.Name, v.Detail)
	}
	if sample != "" && (len(v.Sample) == 0 || !strings.Contains(strings.Join(v.Sample, ";"), sample)) {
		t.Fatalf("%s sample %v, want one naming %q", v.Name, v.Sample, sample)
	}
}

func TestNoOversell(t *testing.T) {
	mustFail(t, noOversell, func(ev *evidence) { ev.books.Pending += 2; ev.books.Remaining-- }, "")
}

func TestConservation(t *testing.T) {
	mustFail(t, conservation, func(ev *evidence) { ev.books.Remaining++ }, "")
}

func TestCountersMatchOrders(t *testing.T) {
	mustFail(t, countersMatchOrders, func(ev *evidence) { ev.seq = 4 }, "")
	mustFail(t, countersMatchOrders, func(ev *evidence) { ev.books.Paid, ev.books.Pending = 2, 0 }, "")
}

func TestExpiredReleasedOnce(t *testing.T) {
	// An expired order whose unit came back twice: remaining one too many.
	mustFail(t, expiredReleasedOnce, func(ev *evidence) {
		o := ev.orders["s.1"]
		o.rec.Status = lua.StatusExpired
		ev.orders["s.1"] = o
		ev.books.Pending, ev.books.Expired, ev.books.Remaining = 0, 1, 3
	}, "")
}

func TestPerUserLimit(t *testing.T) {
	mustFail(t, perUserLimit, func(ev *evidence) {
		ev.orders["s.4"] = orderRec{rec: lua.Record{Status: lua.StatusPending, Node: "a", User: "u1"}}
	}, "u1 holds 2")
}

func TestUserSlotsMatchOrders(t *testing.T) {
	mustFail(t, userSlotsMatchOrders, func(ev *evidence) { ev.held["u3"] = "3" }, "u3: slots 3, no active order")
	mustFail(t, userSlotsMatchOrders, func(ev *evidence) { delete(ev.held, "u1") }, "u1: slots 0, active orders 1")
}

func TestSuccessesHaveOrders(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(*evidence)
		sample  string
	}{
		{"an ok for no order", func(ev *evidence) {
			ev.ok["s.9"] = []statlog.Record{{User: "x", Result: "ok", Order: "s.9"}}
		}, "s.9: no order in Redis"},
		{"two ok lines", func(ev *evidence) { ev.ok["s.1"] = append(ev.ok["s.1"], ev.ok["s.1"][0]) }, "s.1: 2 ok lines"},
		{"an ok for an undone order", func(ev *evidence) {
			ev.ok["s.3"] = []statlog.Record{{User: "u3", Result: "ok", Order: "s.3"}}
		}, "s.3: answered ok but undone"},
		{"an ok to another user", func(ev *evidence) { ev.ok["s.1"][0].User = "u9" }, "s.1: user u9 vs u1"},
		{"a repeat of an undone order", func(ev *evidence) {
			ev.repeat["s.3"] = []statlog.Record{{User: "u3", Result: statlog.ResultRepeat, Order: "s.3"}}
		}, "s.3: repeat answered but undone"},
	} {
		t.Run(tc.name, func(t *testing.T) { mustFail(t, successesHaveOrders, tc.corrupt, tc.sample) })
	}
}

func TestOrdersHaveSuccesses(t *testing.T) {
	ghost := func(ev *evidence) {
		ev.orders["s.4"] = orderRec{rec: lua.Record{Status: lua.StatusPending, Node: "a", User: "u4"}}
	}
	mustFail(t, ordersHaveSuccesses, ghost, "s.4 (node a)")

	// The same order is explained when its node was killed, when its node
	// stated a lost line, or when a repeat told the buyer.
	for _, tc := range []struct {
		name string
		also func(*evidence)
		note string
	}{
		{"killed node", func(ev *evidence) { ev.killed["a"] = true }, ""},
		{"a stated lost line", func(ev *evidence) { ev.nodes["a"].Lost = 1 }, "orders_without_line_explained_by_lost_lines"},
		{"a repeat told the buyer", func(ev *evidence) {
			ev.repeat["s.4"] = []statlog.Record{{User: "u4", Result: statlog.ResultRepeat, Order: "s.4"}}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, rep := judged(t, ordersHaveSuccesses, func(ev *evidence) { ghost(ev); tc.also(ev) })
			if !v.OK {
				t.Fatalf("%s: %s %v", tc.name, v.Detail, v.Sample)
			}
			if tc.note != "" && (len(rep.Notes) != 1 || rep.Notes[0].Name != tc.note) {
				t.Fatalf("notes %+v, want %s", rep.Notes, tc.note)
			}
		})
	}
	// A crashed Redis explains an unpaid order with no line and no event.
	v, rep := judged(t, ordersHaveSuccesses, func(ev *evidence) { ghost(ev); ev.crashed = true })
	if !v.OK || len(rep.Warnings) != 1 {
		t.Fatalf("an unanswered order after a Redis crash: %s, warnings %v", v.Detail, rep.Warnings)
	}
}

func TestOrdersHaveOneEvent(t *testing.T) {
	mustFail(t, ordersHaveOneEvent, func(ev *evidence) { delete(ev.events.Created, "s.2") }, "s.2: 0 order.created events")
	mustFail(t, ordersHaveOneEvent, func(ev *evidence) {
		ev.events.Created["s.1"] = append(ev.events.Created["s.1"], ev.events.Created["s.1"][0])
	}, "s.1: 2 order.created events")
	mustFail(t, ordersHaveOneEvent, func(ev *evidence) { ev.events.Created["s.1"][0].UserID = "u9" }, "s.1: event does not match")
	mustFail(t, ordersHaveOneEvent, func(ev *evidence) {
		ev.events.Created["s.7"] = []kafka.OrderEvent{{SaleID: "s", UserID: "u7"}}
	}, "s.7: event without an order")
	// An unpaid order of a killed node may have none; a paid one may not.
	if v, _ := judged(t, ordersHaveOneEvent, func(ev *evidence) { delete(ev.events.Created, "s.1"); ev.killed["a"] = true }); !v.OK {
		t.Fatalf("an unpublished pending order of a killed node: %s", v.Detail)
	}
	mustFail(t, ordersHaveOneEvent, func(ev *evidence) { delete(ev.events.Created, "s.2"); ev.killed["a"] = true }, "s.2")
}

func TestNoUndersell(t *testing.T) {
	ev := trueBooks()
	if v := noUndersell(ev, &Report{}); v.OK {
		t.Fatal("one unit left passes no_undersell")
	}
	ev.books.Remaining, ev.books.Pending = 0, 2
	if v := noUndersell(ev, &Report{}); !v.OK {
		t.Fatalf("a sold-out sale: %s", v.Detail)
	}
}

func TestClientSuccessesAreOrders(t *testing.T) {
	told := func(order, user string, got int64) func(*evidence) {
		return func(ev *evidence) {
			ev.client = append(ev.client, ClientAnswer{Sale: "s", User: user, Status: 201, Order: order, Got: time.UnixMilli(got)})
		}
	}
	if v, _ := judged(t, clientSuccessesAreOrders, told("s.1.tag", "u1", t0+10)); !v.OK {
		t.Fatalf("a true 201: %s %v", v.Detail, v.Sample)
	}
	mustFail(t, clientSuccessesAreOrders, told("s.9.tag", "u1", t0), "s.9: 201 to u1, no such order")
	mustFail(t, clientSuccessesAreOrders, told("s.1.tag", "u2", t0), "order of u1")
	mustFail(t, clientSuccessesAreOrders, told("s.3.tag", "u3", t0), "undone")
	mustFail(t, clientSuccessesAreOrders, told("s.1.tag", "u1", t0+60_000), "after its pay deadline")
}

func TestClientToldNoHoldsNothing(t *testing.T) {
	told503 := func(user string, sent int64) func(*evidence) {
		return func(ev *evidence) {
			ev.client = append(ev.client, ClientAnswer{Sale: "s", User: user, Status: 503,
				Sent: time.UnixMilli(sent), Got: time.UnixMilli(sent + 5)})
		}
	}
	mustFail(t, clientToldNoHoldsNothing, told503("u1", t0-1), "s.1: u1 was told 503 but holds it")
	// A 503 for a later request, or one of the undone order, holds nothing.
	if v, _ := judged(t, clientToldNoHoldsNothing, told503("u1", t0+1)); !v.OK {
		t.Fatalf("a 503 after the order was made: %s", v.Detail)
	}
	if v, _ := judged(t, clientToldNoHoldsNothing, told503("u3", t0-1)); !v.OK {
		t.Fatalf("a 503 whose order was undone: %s", v.Detail)
	}
}
