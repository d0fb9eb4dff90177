package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/admit"
	"github.com/flashsale/flashsale/api"
	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/stock"
)

// discard is a ResponseWriter that keeps nothing and reuses its header map,
// so the allocations counted are the handler's, not the recorder's.
type discard struct {
	h      http.Header
	status int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(s int)           { d.status = s }

type confirmAll struct{}

func (confirmAll) Confirm(context.Context, []stock.Reservation, []error) {}

// The sold-out answer is what a flash sale sends most: routing, middlewares,
// the token check, the local share's check, the stat.log-free refusal and
// the pre-rendered body allocate only what identity costs — the subject
// string, its boxing into gin's per-request key map and that map (two
// allocations) — and nothing else (net/http's own per-request allocations
// are outside this count).
func TestSoldOutAllocatesOnlyIdentity(t *testing.T) {
	if testenv.RaceEnabled {
		t.Skip("the race detector allocates on its own; `go test ./api` (no -race) checks this")
	}
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	if err := stock.CreateSale(ctx, rdb, flashsale.Sale{ID: "gone", Stock: 1, PerUserLimit: 1, PayTimeout: time.Minute}); err != nil {
		t.Fatal(err)
	}
	seller := stock.NewSeller(stock.SellerConfig{Node: "n1", RefreshInterval: time.Hour,
		Coalescer: stock.CoalescerConfig{MaxBatch: 8, Flushers: 1, QueueSize: 64}}, rdb, confirmAll{}, nil, nil)
	defer seller.Close()
	secret := []byte("alloc-test-secret-0123456789abcdef")
	v, err := auth.NewVerifier(secret, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := api.New(api.Config{NodeID: "n1", MaxBodyBytes: 1 << 10, Admission: admit.Config{Slots: 8, MaxWaiting: 8},
		Identity: api.Identity{Auth: v, OrderIDs: auth.NewOrderIDs(secret)}}, api.Deps{Redis: rdb, Seller: seller})
	defer srv.Close()
	h := srv.Handler()
	as := func(user string) *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/v1/sales/gone/buy", nil)
		tok, _ := auth.Mint(secret, user, time.Hour)
		r.Header.Set("Authorization", "Bearer "+tok)
		return r
	}

	serve := func(user string) int {
		w := &discard{h: http.Header{}}
		h.ServeHTTP(w, as(user))
		return w.status
	}
	if st := serve("first"); st != http.StatusCreated {
		t.Fatalf("first buyer got %d", st)
	}
	if st := serve("second"); st != http.StatusConflict {
		t.Fatalf("sold out answered %d", st)
	}

	req := as("third")
	w := &discard{h: http.Header{}}
	n := testing.AllocsPerRun(1000, func() {
		clear(w.h)
		h.ServeHTTP(w, req)
	})
	if w.status != http.StatusConflict {
		t.Fatalf("status %d", w.status)
	}
	if n > 4 {
		t.Fatalf("sold-out answer allocates %.1f times per request, want at most 4", n)
	}
}

// The overload refusal is what a node sends most when it is past capacity:
// admission's refusal, the middleware and the pre-rendered 503 with
// Retry-After must not allocate either.
func TestShedAllocatesNothing(t *testing.T) {
	if testenv.RaceEnabled {
		t.Skip("the race detector allocates on its own; `go test ./api` (no -race) checks this")
	}
	// One slot, no line: with the slot held every request is refused at once.
	srv := api.New(api.Config{NodeID: "n1", MaxBodyBytes: 1 << 10, Admission: admit.Config{Slots: 1, MaxWaiting: 0}}, api.Deps{})
	defer srv.Close()
	if !srv.Admission().Acquire(context.Background()) {
		t.Fatal("free slot refused")
	}
	defer srv.Admission().Release()
	h := srv.Handler()
	req := httptest.NewRequest(http.MethodGet, "/v1/sales/any/buy?user_id=u1", nil)
	w := &discard{h: http.Header{}}
	n := testing.AllocsPerRun(1000, func() {
		clear(w.h)
		h.ServeHTTP(w, req)
	})
	if w.status != http.StatusServiceUnavailable || w.h.Get("Retry-After") != "1" {
		t.Fatalf("status %d, Retry-After %q", w.status, w.h.Get("Retry-After"))
	}
	if n != 0 {
		t.Fatalf("overload refusal allocates %.1f times per request, want 0", n)
	}
}
