package store_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/reconcile"
	"github.com/flashsale/flashsale/store"
	"github.com/redis/go-redis/v9"
)

func fastSweep(c *configs.Config) { c.Expiry.SweepInterval = 300 * time.Millisecond }

// reconcileWithStore runs the books check with the store as third record.
func reconcileWithStore(t *testing.T, e *e2e.Env, s *store.Store, sale string, statlogs ...string) *reconcile.Report {
	t.Helper()
	time.Sleep(100 * time.Millisecond) // stat.log flushes every 20 ms
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := reconcile.Run(ctx, reconcile.Input{Sale: sale, Redis: e.Redis.Client(t), Brokers: []string{e.Kafka.Addr},
		Topic: "flashsale.orders", StatLogs: statlogs, Store: s, StoreWait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		var b strings.Builder
		rep.WriteText(&b)
		t.Fatalf("reconcile failed:\n%s", b.String())
	}
	return rep
}

// Invariant: with PostgreSQL down for 10 s mid-sale, every buy is answered
// as fast and as truly as before (no 503), the store's lag shows the
// backlog, and once the database is back the store catches up and the
// three records agree.
func TestDatabaseDownMidSale(t *testing.T) {
	e := e2e.NewEnv(t)
	pg := e.WithStore(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"dd","name":"G7","stock":1500,"price_cents":990}`)
	s := openStore(t, pg.DSN)
	select {
	case <-n.Store.Ready():
	case <-time.After(30 * time.Second):
		t.Fatal("the node's store never opened")
	}

	// Buyers arrive in waves for ~12 s; the database is down from ~1 s to ~11 s.
	type wave struct {
		at   time.Duration
		took time.Duration
		rs   []e2e.Reply
	}
	start := time.Now()
	var waves []wave
	downAt, upAt := time.Second, 11*time.Second
	stopped, restarted := false, false
	var lagSeen int64
	for i := 0; time.Since(start) < 12*time.Second; i++ {
		if !stopped && time.Since(start) >= downAt {
			pg.Stop()
			stopped = true
		}
		if stopped && !restarted && time.Since(start) >= upAt {
			lagSeen = n.Store.Consumer.Lag()
			pg.Start()
			restarted = true
		}
		t0 := time.Now()
		rs := e2e.Hammer(t, []string{n.URL}, "dd", e2e.Users(fmt.Sprintf("dd-w%d-", i), 20), 20)
		waves = append(waves, wave{at: t0.Sub(start), took: time.Since(t0), rs: rs})
		time.Sleep(100 * time.Millisecond)
	}
	var during, outside []time.Duration
	total := map[string]int{}
	for _, w := range waves {
		for k, v := range e2e.Count(w.rs) {
			total[k] += v
		}
		if w.at > downAt && w.at+w.took < upAt {
			during = append(during, w.took)
		} else {
			outside = append(outside, w.took)
		}
	}
	if total["unavailable"] > 0 || total["ok"] == 0 {
		t.Fatalf("outcomes %v: the database being down must not refuse buys", total)
	}
	med := func(d []time.Duration) time.Duration {
		sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
		return d[len(d)/2]
	}
	if len(during) == 0 || med(during) > max(3*med(outside), 200*time.Millisecond) {
		t.Fatalf("waves of 20 buys took %v (median) with the database down, %v otherwise", med(during), med(outside))
	}
	if lagSeen <= 0 {
		t.Fatalf("flashsale_store_lag_events was %d with the database down for 10 s mid-sale", lagSeen)
	}
	t.Logf("outcomes %v; median wave %v with the database down, %v up; store lag at restart %d events",
		total, med(during), med(outside), lagSeen)
	rep := reconcileWithStore(t, e, s, "dd", n.StatLog)
	if rep.Orders["pending"] != total["ok"] {
		t.Fatalf("%d pending orders, %d ok answers", rep.Orders["pending"], total["ok"])
	}
}

// Invariant: an order.paid whose publish failed (the transition is in
// Redis, the event is not on Kafka) is published from the outbox by the
// sweeper, and the store converges to paid.
func TestPaidPublishFailureRepaired(t *testing.T) {
	t.Parallel() // nothing here is timed against another test
	e := e2e.NewEnv(t)
	pg := e.WithStore(t)
	n := e.StartNode(t, "n1", fastSweep)
	e2e.CreateSale(t, n.URL, `{"id":"pf","name":"G8","stock":5,"price_cents":700}`)
	r := e2e.Do(t, "POST", n.URL+"/v1/sales/pf/buy", "", e2e.As(t, "alice")...)
	if r.Status != 201 {
		t.Fatalf("buy: %d %s", r.Status, r.Raw)
	}
	_, seq, err := flashsale.ParseOrderID(e2e.RecordID(r.Body["order_id"].(string)))
	if err != nil {
		t.Fatal(err)
	}
	rdb := e.Redis.Client(t)

	// A payment service whose Kafka is unreachable: the settle succeeds,
	// the publish fails.
	dead := kafka.NewPublisher(kafka.PublisherConfig{Brokers: []string{fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))},
		Topic: "flashsale.orders", WriteTimeout: 500 * time.Millisecond})
	broken := order.NewService(rdb, time.Second)
	broken.PublishTo(order.NewOutbox(rdb, dead, time.Second, time.Second, nil))
	// The sweeper must not drain it before this test looks: pay after a
	// sweep, then look at once.
	if o, err := broken.Pay(context.Background(), "pf", seq, "psp-pf-1", 700); err != nil || o.Status != "paid" {
		t.Fatalf("pay: %+v %v", o, err)
	}
	left, err := rdb.HLen(context.Background(), lua.KeysFor("pf").Outbox).Result()
	if err != nil || left != 1 {
		t.Fatalf("outbox holds %d entries (%v) after a failed publish, want 1", left, err)
	}
	s := openStore(t, pg.DSN)
	waitFor(t, 30*time.Second, "the sweeper to publish order.paid and the store to say paid", func() bool {
		c, err := s.SaleCounts(context.Background(), "pf")
		return err == nil && c.Paid == 1 && c.Orders == 1
	})
	if left, _ := rdb.HLen(context.Background(), lua.KeysFor("pf").Outbox).Result(); left != 0 {
		t.Fatalf("outbox still holds %d entries after the repair", left)
	}
	// The repaired event carried the payment id to the store.
	if o, ok, err := s.GetOrder(context.Background(), flashsale.OrderID("pf", seq)); err != nil || !ok || o.PaymentID != "psp-pf-1" {
		t.Fatalf("store row %+v (found %v, %v), want payment_id psp-pf-1", o, ok, err)
	}
	reconcileWithStore(t, e, s, "pf", n.StatLog)
}

// saleFootprint sums MEMORY USAGE over every Redis key of sale, apart
// from its batch records (which expire on their own within lua.BatchTTL).
func saleFootprint(t *testing.T, rdb *redis.Client, sale string) (bytes, batchBytes int64, batches int, maxTTL time.Duration) {
	t.Helper()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, "fs:{sale:"+sale+"}:*", 1000).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		n, err := rdb.MemoryUsage(ctx, k, 0).Result() // SAMPLES 0: every field, exact
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(k, ":batch:") {
			batchBytes += n
			batches++
			maxTTL = max(maxTTL, rdb.TTL(ctx, k).Val())
			continue
		}
		bytes += n
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return
}

// Invariant: a finished sale whose orders are all in the store leaves
// Redis but for its settings and counters (< 1 KB) and fs:sales; it still
// answers GET /v1/sales/{id}, sells nothing more, its orders are readable
// from the store page by page, and reconcile passes against the store.
func TestArchiveFinishedSale(t *testing.T) {
	t.Parallel() // nothing here is timed against another test
	e := e2e.NewEnv(t)
	pg := e.WithStore(t)
	n := e.StartNode(t, "n1", fastSweep)
	// make bench-store sets a bigger sale to measure bytes per live order.
	units := int64(400)
	if v, _ := strconv.Atoi(os.Getenv("FLASHSALE_ARCHIVE_UNITS")); v > 0 {
		units = int64(v - v%4)
	}
	rdb := e.Redis.Client(t)
	usedMemory := func() int64 {
		info, err := rdb.InfoMap(context.Background(), "memory").Result()
		if err != nil {
			t.Fatal(err)
		}
		v, _ := strconv.ParseInt(info["Memory"]["used_memory"], 10, 64)
		return v
	}
	used0 := usedMemory()
	e2e.CreateSale(t, n.URL, fmt.Sprintf(`{"id":"ar","name":"G9","stock":%d,"price_cents":1250,"per_user_limit":4}`, units))
	users := e2e.Users("ar-u", int(units/4))
	var ids []string
	owner := map[string]string{}
	for round := 0; round < 4; round++ {
		for i, r := range e2e.Hammer(t, []string{n.URL}, "ar", users, 32) {
			if r.Status != 201 {
				t.Fatalf("buy: %d %s", r.Status, r.Raw)
			}
			id := r.Body["order_id"].(string)
			ids = append(ids, id)
			owner[id] = users[i]
		}
	}
	used1 := usedMemory()
	live, batchBytes, batches, ttl := saleFootprint(t, rdb, "ar")
	if ttl > lua.BatchTTL {
		t.Fatalf("a batch record lives %v, longer than BatchTTL %v", ttl, lua.BatchTTL)
	}
	perOrder := float64(live+batchBytes) / float64(units)
	for _, id := range ids {
		if r := e2e.Pay(t, n.URL, id, paymentID(id), 1250); r.Status != 200 {
			t.Fatalf("pay %s: %d %s", id, r.Status, r.Raw)
		}
	}
	s := openStore(t, pg.DSN)
	waitFor(t, 30*time.Second, "every order paid in the store", func() bool {
		c, err := s.SaleCounts(context.Background(), "ar")
		return err == nil && c.Paid == units
	})
	before, _, _, _ := saleFootprint(t, rdb, "ar")

	a := store.NewArchiver(rdb, s, time.Hour, 300*time.Millisecond, time.Second, nil)
	if ok, err := a.Archive(context.Background(), "ar"); err != nil || ok {
		t.Fatalf("archived on first sight (%v, %v): it must look finished for the quiet period first", ok, err)
	}
	time.Sleep(400 * time.Millisecond)
	if ok, err := a.Archive(context.Background(), "ar"); err != nil || !ok {
		t.Fatalf("not archived after the quiet period: %v %v", ok, err)
	}
	after, leftBatchBytes, leftBatches, leftTTL := saleFootprint(t, rdb, "ar")
	t.Logf("Redis per live order: %.0f B by MEMORY USAGE (records, slots, deadline index, meta: %d B; %d batch records: %d B, TTL <= %v); %.0f B by used_memory growth",
		perOrder, live, batches, batchBytes, lua.BatchTTL, float64(used1-used0)/float64(units))
	t.Logf("finished sale of %d orders: %d B before archival, %d B after (+ %d batch records, %d B, expiring within %v)",
		units, before, after, leftBatches, leftBatchBytes, leftTTL)
	if after >= 1024 {
		t.Fatalf("archived sale keeps %d bytes in Redis, want < 1 KB", after)
	}
	if in, _ := rdb.SIsMember(context.Background(), lua.SalesIndexKey, "ar").Result(); in {
		t.Fatal("archived sale still in fs:sales")
	}
	if b := e2e.GetBooks(t, n.URL, "ar"); b.Paid != units || b.Remaining != 0 || b.Pending != 0 {
		t.Fatalf("archived sale's books: %+v", b)
	}
	if r := e2e.Do(t, "POST", n.URL+"/v1/sales/ar/buy", "", e2e.As(t, "late")...); r.Status != 409 {
		t.Fatalf("buy from an archived sale: %d %s", r.Status, r.Raw)
	}
	// Its orders still answer by id, from the store, to their owner only;
	// the provider's retried callback is the idempotent 200 (the store has
	// the payment id), another payment the double charge, cancelling a
	// paid one the usual conflict.
	id0, who := ids[0], e2e.As(t, owner[ids[0]])
	if r := e2e.Do(t, "GET", n.URL+"/v1/orders/"+id0, "", who...); r.Status != 200 || r.Body["status"] != "paid" || r.Body["order_id"] != id0 {
		t.Fatalf("GET archived order: %d %s", r.Status, r.Raw)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/orders/"+id0, "", e2e.As(t, "someone-else")...); r.Status != 404 {
		t.Fatalf("GET another's archived order: %d %s, want 404", r.Status, r.Raw)
	}
	if r := e2e.Pay(t, n.URL, id0, paymentID(id0), 1250); r.Status != 200 || r.Body["status"] != "paid" {
		t.Fatalf("retried callback of an archived paid order: %d %s", r.Status, r.Raw)
	}
	if r := e2e.Pay(t, n.URL, id0, "psp-other", 1250); r.Status != 409 {
		t.Fatalf("another payment of an archived paid order: %d %s, want 409 (double charge)", r.Status, r.Raw)
	}
	if r := e2e.Pay(t, n.URL, id0, paymentID(id0), 1); r.Status != 400 {
		t.Fatalf("callback with the wrong amount: %d %s, want 400", r.Status, r.Raw)
	}
	if r := e2e.Do(t, "POST", n.URL+"/v1/orders/"+id0+"/cancel", "", who...); r.Status != 409 {
		t.Fatalf("cancel an archived paid order: %d %s", r.Status, r.Raw)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/orders/ar.999999.0000000000000000", "", who...); r.Status != 404 {
		t.Fatalf("GET an order that never was: %d %s", r.Status, r.Raw)
	}
	if o, ok, err := s.GetOrder(context.Background(), e2e.RecordID(id0)); err != nil || !ok || o.PaymentID != paymentID(id0) {
		t.Fatalf("store row %+v (%v, %v), want payment_id %s", o, ok, err, paymentID(id0))
	}
	if ok, b, err := s.SaleArchived(context.Background(), "ar"); err != nil || !ok || b.Paid != units {
		t.Fatalf("store's sale row: archived %v, books %+v, %v", ok, b, err)
	}

	// The buyer's history, three orders a page, from the store.
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		q := n.URL + "/v1/users/me/orders?sale=ar&limit=3"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		r := e2e.Do(t, "GET", q, "", e2e.As(t, users[0])...)
		if r.Status != 200 {
			t.Fatalf("history: %d %s", r.Status, r.Raw)
		}
		for _, o := range r.Body["orders"].([]any) {
			m := o.(map[string]any)
			if m["status"] != "paid" || m["price_cents"] != float64(1250) || m["user_id"] != users[0] {
				t.Fatalf("history entry %v", m)
			}
			seen = append(seen, m["order_id"].(string))
		}
		next, _ := r.Body["next_cursor"].(string)
		if next == "" {
			break
		}
		if page > 3 {
			t.Fatal("pagination does not end")
		}
		cursor = next
	}
	if len(seen) != 4 || seen[0] == seen[1] {
		t.Fatalf("history of %s: %v, want its 4 orders once each", users[0], seen)
	}
	for _, bad := range []string{"status=sold", "limit=0", "limit=101", "cursor=zzz", "sale=a%7Cb", "user_id=" + users[0] + "&x=1"} {
		q := n.URL + "/v1/users/me/orders?" + bad
		if !strings.Contains(bad, "user_id") {
			q += "&user_id=" + users[0]
		}
		if r := e2e.Do(t, "GET", q, "", e2e.As(t, users[0])...); r.Status != 400 || r.Code() != "invalid" {
			t.Fatalf("GET %s: %d %s, want 400 invalid", q, r.Status, r.Raw)
		}
	}
	rep := reconcileWithStore(t, e, s, "ar", n.StatLog)
	if !rep.Archived {
		t.Fatal("reconcile did not see the sale archived")
	}
}

// Invariant: GET /v1/users/me/orders is one answer from two places: the
// named sale's live orders from Redis and every other order from the
// store, each order once, newest first, paged by cursor without a gap or a
// repeat; with the database down it still answers the sale's live orders
// (marked partial), and without a sale it says the history is unavailable.
func TestMyOrdersLiveAndHistory(t *testing.T) {
	t.Parallel() // nothing here is timed against another test
	e := e2e.NewEnv(t)
	pg := e.WithStore(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"h1","name":"G10","stock":10,"price_cents":300,"per_user_limit":4}`)
	e2e.CreateSale(t, n.URL, `{"id":"h2","name":"G11","stock":10,"price_cents":400}`)
	me := e2e.As(t, "hana")
	buy := func(sale string) string {
		t.Helper()
		r := e2e.Do(t, "POST", n.URL+"/v1/sales/"+sale+"/buy", "", me...)
		if r.Status != 201 {
			t.Fatalf("buy %s: %d %s", sale, r.Status, r.Raw)
		}
		time.Sleep(2 * time.Millisecond) // distinct created_at, so the order below is by time
		return r.Body["order_id"].(string)
	}
	paid, cancelled, pending1, other, pending2 := buy("h1"), buy("h1"), buy("h1"), buy("h2"), buy("h1")
	if r := e2e.Pay(t, n.URL, paid, paymentID(paid), 300); r.Status != 200 {
		t.Fatalf("pay: %d %s", r.Status, r.Raw)
	}
	if r := e2e.Do(t, "POST", n.URL+"/v1/orders/"+cancelled+"/cancel", "", me...); r.Status != 200 {
		t.Fatalf("cancel: %d %s", r.Status, r.Raw)
	}
	want := map[string]string{paid: "paid", cancelled: "cancelled", pending1: "pending", other: "pending", pending2: "pending"}
	s := openStore(t, pg.DSN)
	waitFor(t, 30*time.Second, "the store to hold the five orders", func() bool {
		c1, err1 := s.SaleCounts(context.Background(), "h1")
		c2, err2 := s.SaleCounts(context.Background(), "h2")
		return err1 == nil && err2 == nil && c1.Orders == 4 && c1.Paid == 1 && c1.Cancelled == 1 && c2.Orders == 1
	})

	// pages walks every page of query, two orders a page.
	pages := func(query string) ([]string, map[string]any) {
		t.Helper()
		var ids []string
		var last map[string]any
		cursor := ""
		for page := 0; page < 10; page++ {
			q := n.URL + "/v1/users/me/orders?limit=2" + query
			if cursor != "" {
				q += "&cursor=" + url.QueryEscape(cursor)
			}
			r := e2e.Do(t, "GET", q, "", me...)
			if r.Status != 200 {
				t.Fatalf("GET %s: %d %s", q, r.Status, r.Raw)
			}
			for _, o := range r.Body["orders"].([]any) {
				m := o.(map[string]any)
				id := m["order_id"].(string)
				if m["status"] != want[id] {
					t.Fatalf("order %s: %v, want status %s", id, m, want[id])
				}
				ids = append(ids, id)
			}
			last = r.Body
			next, _ := r.Body["next_cursor"].(string)
			if next == "" {
				return ids, last
			}
			cursor = next
		}
		t.Fatalf("pagination of %q does not end", query)
		return nil, nil
	}
	// One sale: Redis's live three and the store's cancelled one, newest first.
	if got, _ := pages("&sale=h1"); strings.Join(got, " ") != strings.Join([]string{pending2, pending1, cancelled, paid}, " ") {
		t.Fatalf("h1's orders by page: %v, want %v", got, []string{pending2, pending1, cancelled, paid})
	}
	// Every sale, from the store (pending rows checked against Redis).
	if got, _ := pages(""); strings.Join(got, " ") != strings.Join([]string{pending2, other, pending1, cancelled, paid}, " ") {
		t.Fatalf("all orders by page: %v", got)
	}
	if got, _ := pages("&sale=h1&status=pending"); len(got) != 2 || got[0] != pending2 || got[1] != pending1 {
		t.Fatalf("h1's pending orders: %v", got)
	}
	if o, ok, err := s.GetOrder(context.Background(), e2e.RecordID(paid)); err != nil || !ok || o.PaymentID != paymentID(paid) {
		t.Fatalf("store row of the paid order: %+v %v %v, want its payment id", o, ok, err)
	}

	// Database down: the sale's live orders still answer, marked partial;
	// the cross-sale history is unavailable.
	pg.Stop()
	got, body := pages("&sale=h1")
	if body["partial"] != true || len(got) != 3 || got[0] != pending2 || got[2] != paid {
		t.Fatalf("h1 with the store down: %v %v, want its 3 live orders, partial", got, body)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders", "", me...); r.Status != 503 || r.Code() != "unavailable" {
		t.Fatalf("all orders with the store down: %d %s, want 503", r.Status, r.Raw)
	}
	pg.Start()
	if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=h1&user_id=someone", "", me...); r.Status != 403 {
		t.Fatalf("naming another user: %d %s, want 403", r.Status, r.Raw)
	}
}
