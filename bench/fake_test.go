package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/auth"
)

// fakeNode is an in-memory flashsale node speaking the API's JSON: sales
// with stock and a per-user limit, orders, pay, envelopes and shakes. It is
// the smallest honest server the generator can be tested against; the real
// node lives in api/.
type fakeNode struct {
	mu        sync.Mutex
	sales     map[string]*fakeSale
	orders    map[string]*fakeOrder
	envelopes map[string]*fakeEnvelope
	seq       int
	shakes    int                    // shake requests seen
	taken     int64                  // shake shares won
	hits      map[string][]time.Time // user → receive times of buy/open/shake
	requests  int
	// forget, when set, makes GET /v1/orders/{id} answer 404 for that id:
	// a corrupted book.
	forget string
	// hideOne, when set, makes GET /v1/sales/{id} show one pending order
	// as remaining stock: a book with one success fewer than the clients saw.
	hideOne bool
}

type fakeSale struct {
	SaleSpec
	remaining, pending, paid int64
	held                     map[string]int64
}

type fakeOrder struct {
	id, sale, user, status string
}

type fakeEnvelope struct {
	id, sender          string
	total, count        int64
	opened, openedCents int64
	users               map[string]bool
}

func newFakeNode(t *testing.T) (*fakeNode, *httptest.Server) {
	f := &fakeNode{sales: map[string]*fakeSale{}, orders: map[string]*fakeOrder{},
		envelopes: map[string]*fakeEnvelope{}, hits: map[string][]time.Time{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/sales", f.createSale)
	mux.HandleFunc("GET /v1/sales/{id}", f.getSale)
	mux.HandleFunc("POST /v1/sales/{id}/buy", f.buy)
	mux.HandleFunc("GET /v1/sales/{id}/buy", f.buy)
	mux.HandleFunc("POST /v1/payments/callback", f.pay)
	mux.HandleFunc("GET /v1/orders/{id}", f.getOrder)
	mux.HandleFunc("POST /v1/envelopes", f.send)
	mux.HandleFunc("GET /v1/envelopes/{id}", f.getEnvelope)
	mux.HandleFunc("POST /v1/envelopes/{id}/open", f.open)
	mux.HandleFunc("POST /v1/shakes/{id}/shake", f.shake)
	mux.HandleFunc("GET /v1/shakes/{id}", f.getShake)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Flashsale-Node", "n1")
		f.mu.Lock()
		f.requests++
		f.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return f, srv
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, status int, code string) {
	writeJSON(w, status, map[string]any{"error": map[string]string{"code": code, "message": code}})
}

// The fake's secrets: its tokens are checked with the real verifier and
// its payment callbacks with the real signature check.
var (
	fakeAuthSecret    = []byte("fake-node-auth-secret-0123456789abcdef")
	fakePaymentSecret = []byte("fake-node-payment-secret-0123456789")
	fakeVerifier, _   = auth.NewVerifier(fakeAuthSecret, nil)
)

// userOf is the bearer token's subject, "" without a valid one.
func userOf(r *http.Request) string {
	tok, ok := auth.BearerToken(r.Header.Get("Authorization"))
	if !ok {
		return ""
	}
	sub, err := fakeVerifier.Verify(tok)
	if err != nil {
		return ""
	}
	return sub
}

func (f *fakeNode) createSale(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer admin" {
		writeErr(w, 401, "unauthorized")
		return
	}
	var s SaleSpec
	if err := json.NewDecoder(r.Body).Decode(&s); err != nil || s.ID == "" || s.Stock <= 0 {
		writeErr(w, 400, "invalid")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.sales[s.ID]; ok {
		writeErr(w, 409, "conflict")
		return
	}
	f.sales[s.ID] = &fakeSale{SaleSpec: s, remaining: s.Stock, held: map[string]int64{}}
	writeJSON(w, 201, s)
}

func (f *fakeNode) saleView(s *fakeSale) SaleView {
	v := SaleView{ID: s.ID, Stock: s.Stock, PerUserLimit: s.PerUserLimit,
		Remaining: s.remaining, Pending: s.pending, Paid: s.paid}
	if f.hideOne && v.Pending > 0 {
		v.Pending--
		v.Remaining++
	}
	return v
}

func (f *fakeNode) getSale(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sales[r.PathValue("id")]
	if !ok {
		writeErr(w, 404, "not_found")
		return
	}
	writeJSON(w, 200, f.saleView(s))
}

func (f *fakeNode) buy(w http.ResponseWriter, r *http.Request) {
	user := userOf(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hits[user] = append(f.hits[user], time.Now())
	s, ok := f.sales[r.PathValue("id")]
	switch {
	case !ok:
		writeErr(w, 404, "not_found")
	case user == "":
		writeErr(w, 401, "unauthorized")
	case s.remaining == 0:
		writeErr(w, 409, "sold_out")
	case s.PerUserLimit > 0 && s.held[user] >= s.PerUserLimit:
		writeErr(w, 409, "limit_reached")
	default:
		s.remaining--
		s.pending++
		s.held[user]++
		f.seq++
		o := &fakeOrder{id: fmt.Sprintf("%s.%d", s.ID, f.seq), sale: s.ID, user: user, status: "pending"}
		f.orders[o.id] = o
		writeJSON(w, 201, map[string]string{"order_id": o.id, "sale_id": s.ID, "user_id": user,
			"expires_at": time.Now().Add(5 * time.Minute).Format(time.RFC3339Nano)})
	}
}

func (f *fakeNode) pay(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if auth.VerifyPayload(fakePaymentSecret, r.Header.Get(auth.SignatureHeader), body, time.Now()) != nil {
		writeErr(w, 401, "unauthorized")
		return
	}
	var cb struct {
		OrderID string `json:"order_id"`
	}
	_ = json.Unmarshal(body, &cb)
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[cb.OrderID]
	if !ok {
		writeErr(w, 404, "not_found")
		return
	}
	if o.status == "pending" {
		o.status = "paid"
		s := f.sales[o.sale]
		s.pending--
		s.paid++
	}
	writeJSON(w, 200, map[string]string{"order_id": o.id, "user_id": o.user, "status": o.status})
}

func (f *fakeNode) getOrder(w http.ResponseWriter, r *http.Request) {
	user := userOf(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[r.PathValue("id")]
	if !ok || o.id == f.forget || o.user != user {
		writeErr(w, 404, "not_found")
		return
	}
	writeJSON(w, 200, map[string]string{"order_id": o.id, "sale_id": o.sale, "user_id": o.user, "status": o.status})
}

func (f *fakeNode) send(w http.ResponseWriter, r *http.Request) {
	var b struct {
		TotalCents int64 `json:"total_cents"`
		Count      int64 `json:"count"`
	}
	sender := userOf(r)
	if err := json.NewDecoder(r.Body).Decode(&b); err != nil || sender == "" || b.Count <= 0 || b.TotalCents < b.Count {
		writeErr(w, 400, "invalid")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	e := &fakeEnvelope{id: fmt.Sprintf("e%d", f.seq), sender: sender, total: b.TotalCents, count: b.Count, users: map[string]bool{}}
	f.envelopes[e.id] = e
	writeJSON(w, 201, map[string]string{"envelope_id": e.id, "expires_at": time.Now().Add(time.Hour).Format(time.RFC3339)})
}

// addEnvelope creates an envelope directly, for open tests.
func (f *fakeNode) addEnvelope(id string, total, count int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.envelopes[id] = &fakeEnvelope{id: id, sender: "boss", total: total, count: count, users: map[string]bool{}}
}

func (f *fakeNode) getEnvelope(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.envelopes[r.PathValue("id")]
	if !ok {
		writeErr(w, 404, "not_found")
		return
	}
	writeJSON(w, 200, map[string]any{"envelope_id": e.id, "sender_id": e.sender, "total_cents": e.total,
		"count": e.count, "opened": e.opened, "opened_cents": e.openedCents})
}

// open hands out shares deterministically: equal shares, the last one takes
// the rest, so totals balance to the cent.
func (f *fakeNode) open(w http.ResponseWriter, r *http.Request) {
	user := userOf(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.envelopes[r.PathValue("id")]
	switch {
	case !ok:
		writeErr(w, 404, "not_found")
	case e.users[user]:
		writeErr(w, 409, "already_opened")
	case e.opened == e.count:
		writeErr(w, 409, "empty")
	default:
		amount := e.total / e.count
		if e.opened == e.count-1 {
			amount = e.total - e.openedCents
		}
		e.opened++
		e.openedCents += amount
		e.users[user] = true
		writeJSON(w, 200, map[string]int64{"amount_cents": amount})
	}
}

// shake makes every third shake a win of 7 cents while the pool of 20
// shares lasts.
func (f *fakeNode) shake(w http.ResponseWriter, r *http.Request) {
	user := userOf(r)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hits[user] = append(f.hits[user], time.Now())
	f.shakes++
	if f.shakes%3 != 0 || f.taken == 20 {
		writeJSON(w, 200, map[string]bool{"won": false})
		return
	}
	f.taken++
	writeJSON(w, 200, map[string]any{"won": true, "amount_cents": 7, "envelope_id": fmt.Sprintf("sh.%d", f.taken)})
}

func (f *fakeNode) getShake(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	writeJSON(w, 200, map[string]int64{"total_cents": 140, "count": 20, "taken": f.taken, "taken_cents": 7 * f.taken})
}

// silence is a Progress writer for tests that do not read progress.
type silence struct{}

func (silence) Write(p []byte) (int, error) { return len(p), nil }

func quietOptions(srvURL string) Options {
	return Options{Config: Config{Targets: []string{srvURL}, Progress: silence{}, AuthSecret: fakeAuthSecret,
		PaymentSecret: fakePaymentSecret}, AdminToken: "admin"}
}

func strip(s string) string { return strings.TrimPrefix(s, "http://") }
