package node_test

import (
	"strings"
	"testing"

	"github.com/flashsale/flashsale/internal/e2e"
)

// Invariant: a retry with the same Idempotency-Key (header on POST, query
// parameter on GET) returns the first order with 201, never a second order
// nor limit_reached; GET /v1/users/me/orders lists the buyer's live orders;
// a malformed key is a 400 that changes nothing.
func TestIdempotencyKeyAndMyOrders(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"ik","name":"x","stock":5,"price_cents":100}`)

	buy := func(key string) e2e.Reply {
		return e2e.Do(t, "POST", n.URL+"/v1/sales/ik/buy", `{"user_id":"u1"}`, "Idempotency-Key", key)
	}
	first := buy(`"a1b2c3"`) // an RFC 8941 string, as the draft shows it
	if first.Status != 201 {
		t.Fatalf("first buy: %d %s", first.Status, first.Raw)
	}
	id := first.Body["order_id"].(string)
	for _, r := range []e2e.Reply{
		buy("a1b2c3"),
		e2e.Do(t, "GET", n.URL+"/v1/sales/ik/buy?user_id=u1&idempotency_key=a1b2c3", ""),
	} {
		if r.Status != 201 || r.Body["order_id"] != id || r.Body["expires_at"] != first.Body["expires_at"] {
			t.Fatalf("retry: %d %s, want 201 with order %s", r.Status, r.Raw, id)
		}
	}
	if r := buy("other-key"); r.Status != 409 || r.Code() != "limit_reached" {
		t.Fatalf("a new key at the limit: %d %s", r.Status, r.Raw)
	}
	for _, bad := range []string{"", "a,b", "a|b", strings.Repeat("k", 65), "ü"} {
		if r := buy(bad); r.Status != 400 || r.Code() != "invalid" {
			t.Fatalf("key %q: %d %s, want 400 invalid", bad, r.Status, r.Raw)
		}
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/sales/ik/buy?user_id=u2&idempotency_key=a&idempotency_key=b", ""); r.Status != 400 {
		t.Fatalf("key given twice: %d %s", r.Status, r.Raw)
	}
	if b := e2e.GetBooks(t, n.URL, "ik"); b.Pending != 1 || b.Remaining != 4 {
		t.Fatalf("books %+v: want exactly one order", b)
	}

	mine := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik&user_id=u1", "")
	list, _ := mine.Body["orders"].([]any)
	if mine.Status != 200 || len(list) != 1 || list[0].(map[string]any)["order_id"] != id ||
		list[0].(map[string]any)["status"] != "pending" {
		t.Fatalf("my orders: %d %s", mine.Status, mine.Raw)
	}
	if r := e2e.Do(t, "POST", n.URL+"/v1/orders/"+id+"/pay", ""); r.Status != 200 {
		t.Fatalf("pay: %d %s", r.Status, r.Raw)
	}
	// A paid order is still the key's first result.
	if r := buy("a1b2c3"); r.Status != 201 || r.Body["order_id"] != id {
		t.Fatalf("retry after pay: %d %s", r.Status, r.Raw)
	}
	mine = e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik&user_id=u1", "")
	if !strings.Contains(mine.Raw, `"status":"paid"`) {
		t.Fatalf("my orders after pay: %s", mine.Raw)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik&user_id=nobody", ""); r.Status != 200 || r.Raw != `{"orders":[]}` {
		t.Fatalf("no orders: %d %s, want an empty list", r.Status, r.Raw)
	}
	for _, q := range []string{"user_id=u1", "sale=ik", "sale=i%7Bk&user_id=u1"} {
		if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?"+q, ""); r.Status != 400 {
			t.Fatalf("my orders ?%s: %d %s, want 400", q, r.Status, r.Raw)
		}
	}
	n.Stop()
	if lines := e2e.ReadStatLog(t, n.StatLog); lines["ok"] != 1 || lines["repeat"] != 3 {
		t.Fatalf("stat.log outcomes %v: want 1 ok and 3 repeats", lines)
	}
}
