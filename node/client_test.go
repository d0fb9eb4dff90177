package node_test

import (
	"context"
	"testing"
	"time"

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

	if _, err := admin.CreateSale(ctx, client.CreateSale{ID: "sdk", Name: "SDK", Stock: 2, PriceCents: 100, PayTimeout: "1m"}); err != nil {
		t.Fatal(err)
	}
	b, err := c.Buy(ctx, "sdk", "u1")
	if err != nil || b.SaleID != "sdk" || b.UserID != "u1" || b.OrderID == "" || b.ExpiresAt.Before(time.Now()) {
		t.Fatalf("buy: %+v %v", b, err)
	}
	if _, err := c.Buy(ctx, "sdk", "u1"); !client.IsCode(err, "limit_reached") {
		t.Fatalf("second buy of u1: %v", err)
	}
	if o, err := c.Pay(ctx, b.OrderID); err != nil || o.Status != "paid" || o.Node != "c1" {
		t.Fatalf("pay: %+v %v", o, err)
	}
	b2, err := c.Buy(ctx, "sdk", "u2")
	if err != nil {
		t.Fatal(err)
	}
	if o, err := c.Cancel(ctx, b2.OrderID); err != nil || o.Status != "cancelled" {
		t.Fatalf("cancel: %+v %v", o, err)
	}
	if o, err := c.Order(ctx, b2.OrderID); err != nil || o.UserID != "u2" {
		t.Fatalf("order: %+v %v", o, err)
	}
	if s, err := c.Sale(ctx, "sdk"); err != nil || s.Stock != 2 || s.Paid != 1 || s.Cancelled != 1 || s.Remaining != 1 || s.Created() != 2 {
		t.Fatalf("sale: %+v %v", s, err)
	}
	if _, err := c.Sale(ctx, "nope"); !client.IsNotFound(err) {
		t.Fatalf("unknown sale: %v", err)
	}

	sent, err := c.SendEnvelope(ctx, client.SendEnvelope{SenderID: "boss", TotalCents: 300, Count: 3})
	if err != nil || sent.TotalCents != 300 || sent.Count != 3 {
		t.Fatalf("send: %+v %v", sent, err)
	}
	op, err := c.OpenEnvelope(ctx, sent.EnvelopeID, "u1")
	if err != nil || op.AmountCents < 1 {
		t.Fatalf("open: %+v %v", op, err)
	}
	env, err := c.Envelope(ctx, sent.EnvelopeID)
	if err != nil || env.Opened != 1 || env.OpenedCents != op.AmountCents || len(env.Opens) != 1 || env.Opens[0].UserID != "u1" {
		t.Fatalf("envelope: %+v %v", env, err)
	}
	if w, err := c.Wallet(ctx, "u1"); err != nil || w.BalanceCents != op.AmountCents || len(w.Recent) != 1 {
		t.Fatalf("wallet: %+v %v", w, err)
	}

	start := time.Now().Add(-time.Second)
	if _, err := admin.CreateShake(ctx, client.CreateShake{ID: "sdk", TotalEnvelopes: 5, BudgetCents: 500, RatePerSec: 100, StartsAt: &start}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		if _, err := c.Shake(ctx, "sdk", "shaker"); err != nil {
			t.Fatal(err)
		}
	}
	if s, err := c.Campaign(ctx, "sdk"); err != nil || s.TotalEnvelopes != 5 || s.Taken > s.Released {
		t.Fatalf("campaign: %+v %v", s, err)
	}
}
