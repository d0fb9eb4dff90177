package kafka

import (
	"encoding/json"
	"fmt"
	"testing"
)

// The fast path and encoding/json must agree on everything the fast path
// accepts, and the fast path must never accept what encoding/json rejects.
func FuzzParseEvent(f *testing.F) {
	f.Add(AppendOrderCreated(nil, OrderCreated{SaleID: "s1", UserID: "u1", Node: "n1", Order: 7, CreatedMs: 1, DeadlineMs: 2}))
	f.Add([]byte(`{"type":"kafka.created","order_id":"s1.7","sale_id":"s1","user_id":"u\\u0031","node":"n","created_ms":1,"deadline_ms":2}`))
	f.Add([]byte(`{"type": "kafka.created"}`))
	f.Add([]byte(`{"type":"kafka.created","order_id":"s1.7","sale_id":"s1","user_id":"u1","node":"n1","created_ms":-1,"deadline_ms":99999999999999999999}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fast, ok := parseCreatedFast(b)
		if !ok {
			return
		}
		var slow OrderEvent
		if err := json.Unmarshal(b, &slow); err != nil {
			t.Fatalf("fast path accepted %q that encoding/json rejects: %v", b, err)
		}
		if fast != slow {
			t.Fatalf("fast %+v != encoding/json %+v for %q", fast, slow, b)
		}
	})
}

// parseDue must agree with ParseOrderEvent on every event it accepts.
func FuzzParseDue(f *testing.F) {
	f.Add(AppendOrderCreated(nil, OrderCreated{SaleID: "s1", UserID: "u1", Node: "n1", Order: 7, CreatedMs: 1, DeadlineMs: 2}))
	f.Add([]byte(`{"type":"kafka.created","order_id":"s2.7","sale_id":"s1","user_id":"u","node":"n","created_ms":1,"deadline_ms":2}`))
	f.Add([]byte(`{"type":"kafka.created","order_id":"s1.0","sale_id":"s1","user_id":"u","node":"n","created_ms":1,"deadline_ms":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sale, n, deadline, ok := parseDue(b)
		if !ok {
			return
		}
		ev, err := ParseOrderEvent(b)
		if err != nil {
			t.Fatalf("parseDue accepted %q that ParseOrderEvent rejects: %v", b, err)
		}
		if ev.SaleID != sale || ev.DeadlineMs != deadline || ev.OrderID != fmt.Sprintf("%s.%d", sale, n) {
			t.Fatalf("parseDue %q %d %d vs ParseOrderEvent %+v", sale, n, deadline, ev)
		}
	})
}

func TestParseEventRoundTrip(t *testing.T) {
	r := OrderCreated{SaleID: "sale-1", UserID: "user@x", Node: "node-2", Order: 42, CreatedMs: 1700000000000, DeadlineMs: 1700000300000}
	e, err := ParseOrderEvent(AppendOrderCreated(nil, r))
	if err != nil || e.OrderID != "sale-1.42" || e.UserID != "user@x" || e.DeadlineMs != r.DeadlineMs || e.Type != TypeOrderCreated {
		t.Fatalf("%+v %v", e, err)
	}
	if _, ok := parseCreatedFast(AppendOrderCreated(nil, r)); !ok {
		t.Fatal("our own encoding missed the fast path")
	}
}
