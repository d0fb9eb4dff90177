package node_test

import (
	"strings"
	"testing"

	"github.com/flashsale/flashsale/internal/e2e"
)

// Invariant: a retry with the same Idempotency-Key (header on POST, query
// parameter on GET) returns the first order with 201, never a second order
// nor limit_reached, and a key is the token's person's only; GET
// /v1/users/me/orders lists the token's person's live orders;
// a malformed key is a 400 that changes nothing.
func TestIdempotencyKeyAndMyOrders(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"ik","name":"x","stock":5,"price_cents":100}`)

	buy := func(key string) e2e.Reply {
		return e2e.Do(t, "POST", n.URL+"/v1/sales/ik/buy", `{"user_id":"u1"}`, append(e2e.As(t, "u1"), "Idempotency-Key", key)...)
	}
	first := buy(`"a1b2c3"`) // an RFC 8941 string, as the draft shows it
	if first.Status != 201 {
		t.Fatalf("first buy: %d %s", first.Status, first.Raw)
	}
	id := first.Body["order_id"].(string)
	for _, r := range []e2e.Reply{
		buy("a1b2c3"),
		e2e.Do(t, "GET", n.URL+"/v1/sales/ik/buy?user_id=u1&idempotency_key=a1b2c3", "", e2e.As(t, "u1")...),
		e2e.Do(t, "GET", n.URL+"/v1/sales/ik/buy?idempotency_key=a1b2c3", "", e2e.As(t, "u1")...),
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
	if r := e2e.Do(t, "GET", n.URL+"/v1/sales/ik/buy?idempotency_key=a&idempotency_key=b", "", e2e.As(t, "u2")...); r.Status != 400 {
		t.Fatalf("key given twice: %d %s", r.Status, r.Raw)
	}
	// Keys are per person: u2's same key is u2's own first attempt.
	other := e2e.Do(t, "POST", n.URL+"/v1/sales/ik/buy", "", append(e2e.As(t, "u2"), "Idempotency-Key", "a1b2c3")...)
	if other.Status != 201 || other.Body["order_id"] == id || other.Body["user_id"] != "u2" {
		t.Fatalf("u2 with u1's key: %d %s, want a new order of u2", other.Status, other.Raw)
	}
	// A token of u1 naming u2 is 403 and changes nothing.
	if r := e2e.Do(t, "POST", n.URL+"/v1/sales/ik/buy", `{"user_id":"u2"}`, append(e2e.As(t, "u1"), "Idempotency-Key", "zz")...); r.Status != 403 {
		t.Fatalf("u1 naming u2: %d %s, want 403", r.Status, r.Raw)
	}
	if b := e2e.GetBooks(t, n.URL, "ik"); b.Pending != 2 || b.Remaining != 3 {
		t.Fatalf("books %+v: want exactly one order", b)
	}

	mine := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik", "", e2e.As(t, "u1")...)
	list, _ := mine.Body["orders"].([]any)
	if mine.Status != 200 || len(list) != 1 || list[0].(map[string]any)["order_id"] != id ||
		list[0].(map[string]any)["status"] != "pending" {
		t.Fatalf("my orders: %d %s", mine.Status, mine.Raw)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik", ""); r.Status != 401 {
		t.Fatalf("my orders without a token: %d %s, want 401", r.Status, r.Raw)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik&user_id=u2", "", e2e.As(t, "u1")...); r.Status != 403 {
		t.Fatalf("u1 asking for u2's orders: %d %s, want 403", r.Status, r.Raw)
	}
	if r := e2e.Pay(t, n.URL, id, "pay-ik-1", 100); r.Status != 200 {
		t.Fatalf("pay: %d %s", r.Status, r.Raw)
	}
	// A paid order is still the key's first result.
	if r := buy("a1b2c3"); r.Status != 201 || r.Body["order_id"] != id {
		t.Fatalf("retry after pay: %d %s", r.Status, r.Raw)
	}
	mine = e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik", "", e2e.As(t, "u1")...)
	if !strings.Contains(mine.Raw, `"status":"paid"`) {
		t.Fatalf("my orders after pay: %s", mine.Raw)
	}
	if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?sale=ik", "", e2e.As(t, "nobody")...); r.Status != 200 || r.Raw != `{"orders":[]}` {
		t.Fatalf("no orders: %d %s, want an empty list", r.Status, r.Raw)
	}
	for _, q := range []string{"", "user_id=u1", "sale=i%7Bk"} {
		if r := e2e.Do(t, "GET", n.URL+"/v1/users/me/orders?"+q, "", e2e.As(t, "u1")...); r.Status != 400 {
			t.Fatalf("my orders ?%s: %d %s, want 400", q, r.Status, r.Raw)
		}
	}
	n.Stop()
	if lines := e2e.ReadStatLog(t, n.StatLog); lines["ok"] != 2 || lines["repeat"] != 4 {
		t.Fatalf("stat.log outcomes %v: want 2 ok and 4 repeats", lines)
	}
}

// Invariant: once a sale is sold out, a retry with the Idempotency-Key of a
// buy that won still gets that order (201, the same order id), while a buy
// without a key — even one with a bad token — hears 409 sold_out at once and
// a new key hears sold_out or limit_reached; nothing is sold twice.
func TestKeyedRetryAfterSellOutFindsItsOrder(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "n1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"ko","name":"x","stock":1,"price_cents":100}`)
	buy := func(user, key string) e2e.Reply {
		hdr := e2e.As(t, user)
		if key != "" {
			hdr = append(hdr, "Idempotency-Key", key)
		}
		return e2e.Do(t, "POST", n.URL+"/v1/sales/ko/buy", "", hdr...)
	}
	first := buy("u1", "k1")
	if first.Status != 201 {
		t.Fatalf("first buy: %d %s", first.Status, first.Raw)
	}
	id := first.Body["order_id"].(string)
	if r := buy("u2", ""); r.Status != 409 || r.Code() != "sold_out" {
		t.Fatalf("u2 after the last unit: %d %s, want 409 sold_out", r.Status, r.Raw)
	}
	// The node now knows the sale is sold out and answers without the token.
	if r := e2e.Do(t, "POST", n.URL+"/v1/sales/ko/buy", "", "Authorization", "Bearer forged"); r.Status != 409 || r.Code() != "sold_out" {
		t.Fatalf("a forged token on a sold-out sale: %d %s, want 409 sold_out", r.Status, r.Raw)
	}
	for _, r := range []e2e.Reply{
		buy("u1", "k1"),
		e2e.Do(t, "GET", n.URL+"/v1/sales/ko/buy?idempotency_key=k1", "", e2e.As(t, "u1")...),
	} {
		if r.Status != 201 || r.Body["order_id"] != id {
			t.Fatalf("keyed retry after sell-out: %d %s, want 201 with order %s", r.Status, r.Raw, id)
		}
	}
	if r := buy("u1", "k2"); r.Status != 409 || (r.Code() != "sold_out" && r.Code() != "limit_reached") {
		t.Fatalf("u1 with a new key after sell-out: %d %s, want 409", r.Status, r.Raw)
	}
	if r := buy("u3", "k1"); r.Status != 409 || r.Code() != "sold_out" {
		t.Fatalf("u3 with u1's key after sell-out: %d %s, want 409 sold_out", r.Status, r.Raw)
	}
	if b := e2e.GetBooks(t, n.URL, "ko"); b.Pending != 1 || b.Remaining != 0 {
		t.Fatalf("books %+v: want exactly one order", b)
	}
}
