package node_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/client"
	"github.com/flashsale/flashsale/internal/e2e"
)

// The SDK's types are the API's: every route it wraps answers a real node
// with JSON that decodes strictly (no field the SDK does not know), and the
// values are the books' own.
func TestClientSpeaksTheAPI(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "c1", nil)
	ctx := context.Background()
	admin := &client.Client{Base: n.URL, Token: e2e.AdminToken, Strict: true}
	c := &client.Client{Base: n.URL, Strict: true}
	u1, u2 := c.As(e2e.Token(t, "u1")), c.As(e2e.Token(t, "u2"))

	if _, err := admin.CreateSale(ctx, client.CreateSale{ID: "sdk", Name: "SDK", Stock: 2, PriceCents: 100, PayTimeout: "1m"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Buy(ctx, "sdk", ""); !client.IsCode(err, "unauthorized") {
		t.Fatalf("buy without a token: %v", err)
	}
	b, err := u1.Buy(ctx, "sdk", "k1")
	if err != nil || b.SaleID != "sdk" || b.UserID != "u1" || b.OrderID == "" || b.ExpiresAt.Before(time.Now()) {
		t.Fatalf("buy: %+v %v", b, err)
	}
	if again, err := u1.Buy(ctx, "sdk", "k1"); err != nil || again.OrderID != b.OrderID {
		t.Fatalf("buy again with the same key: %+v %v, want order %s", again, err, b.OrderID)
	}
	if _, err := u1.Buy(ctx, "sdk", ""); !client.IsCode(err, "limit_reached") {
		t.Fatalf("second buy of u1: %v", err)
	}
	if mine, err := u1.MyOrders(ctx, "sdk"); err != nil || len(mine.Orders) != 1 || mine.Orders[0].OrderID != b.OrderID {
		t.Fatalf("my orders: %+v %v", mine, err)
	}
	body, _ := json.Marshal(client.PaymentCallback{OrderID: b.OrderID, PaymentID: "p1", AmountCents: 100})
	if o, err := c.PaymentCallback(ctx, body, auth.SignPayload([]byte(e2e.PaymentSecret), time.Now(), body)); err != nil || o.Status != "paid" || o.Node != "c1" {
		t.Fatalf("pay: %+v %v", o, err)
	}
	b2, err := u2.Buy(ctx, "sdk", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u1.Order(ctx, b2.OrderID); !client.IsNotFound(err) {
		t.Fatalf("another buyer's order: %v, want 404", err)
	}
	if o, err := u2.Cancel(ctx, b2.OrderID); err != nil || o.Status != "cancelled" {
		t.Fatalf("cancel: %+v %v", o, err)
	}
	if o, err := u2.Order(ctx, b2.OrderID); err != nil || o.UserID != "u2" {
		t.Fatalf("order: %+v %v", o, err)
	}
	if s, err := c.Sale(ctx, "sdk"); err != nil || s.Stock != 2 || s.Paid != 1 || s.Cancelled != 1 || s.Remaining != 1 || s.Created() != 2 {
		t.Fatalf("sale: %+v %v", s, err)
	}
	if _, err := c.Sale(ctx, "nope"); !client.IsNotFound(err) {
		t.Fatalf("unknown sale: %v", err)
	}

	if cr, err := admin.Credit(ctx, "boss", client.Credit{Cents: 300, Reference: "sdk"}); err != nil || !cr.Applied || cr.BalanceCents != 300 {
		t.Fatalf("credit: %+v %v", cr, err)
	}
	sent, err := c.As(e2e.Token(t, "boss")).SendEnvelope(ctx, client.SendEnvelope{TotalCents: 300, Count: 3})
	if err != nil || sent.TotalCents != 300 || sent.Count != 3 {
		t.Fatalf("send: %+v %v", sent, err)
	}
	op, err := u1.OpenEnvelope(ctx, sent.EnvelopeID)
	if err != nil || op.AmountCents < 1 {
		t.Fatalf("open: %+v %v", op, err)
	}
	env, err := c.Envelope(ctx, sent.EnvelopeID)
	if err != nil || env.Opened != 1 || env.OpenedCents != op.AmountCents || len(env.Opens) != 1 || env.Opens[0].UserID != "u1" {
		t.Fatalf("envelope: %+v %v", env, err)
	}
	if w, err := u1.Wallet(ctx, "u1"); err != nil || w.BalanceCents != op.AmountCents || len(w.Recent) != 1 {
		t.Fatalf("wallet: %+v %v", w, err)
	}

	start := time.Now().Add(-time.Second)
	if _, err := admin.CreateShake(ctx, client.CreateShake{ID: "sdk", TotalEnvelopes: 5, BudgetCents: 500, RatePerSec: 100, StartsAt: &start}); err != nil {
		t.Fatal(err)
	}
	shaker := c.As(e2e.Token(t, "shaker"))
	for i := 0; i < 50; i++ {
		if _, err := shaker.Shake(ctx, "sdk"); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := c.Campaign(ctx, "sdk"); err != nil || s.TotalEnvelopes != 5 || s.Taken > s.Released {
		t.Fatalf("campaign: %+v %v", s, err)
	}
}
