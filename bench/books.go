package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/flashsale/flashsale/auth"
)

// This file talks to the API off the hot path — creating the sale before a
// run and reading the books after it — so it uses net/http and encoding/json
// for clarity rather than the raw client.

// SaleSpec is the body of POST /v1/sales.
type SaleSpec struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Stock        int64  `json:"stock"`
	PriceCents   int64  `json:"price_cents"`
	PerUserLimit int64  `json:"per_user_limit"`
	PayTimeout   string `json:"pay_timeout,omitempty"`
	StartsAt     string `json:"starts_at,omitempty"`
	EndsAt       string `json:"ends_at,omitempty"`
	WaitingRoom  *Room  `json:"waiting_room,omitempty"`
}

// Room is a sale's waiting-room settings as POST /v1/sales takes them.
type Room struct {
	Enabled     bool   `json:"enabled"`
	AdmitPerSec int64  `json:"admit_per_sec"`
	PreQueue    string `json:"pre_queue,omitempty"`
}

// SaleView is the part of GET /v1/sales/{id} the books need.
type SaleView struct {
	ID           string `json:"id"`
	Stock        int64  `json:"stock"`
	PerUserLimit int64  `json:"per_user_limit"`
	PriceCents   int64  `json:"price_cents"`
	Remaining    int64  `json:"remaining"`
	Pending      int64  `json:"pending"`
	Paid         int64  `json:"paid"`
	Expired      int64  `json:"expired"`
	Cancelled    int64  `json:"cancelled"`
	Aborted      int64  `json:"aborted"`
}

// Created is the number of orders the sale ever created that stood: in any
// status but aborted. An aborted order was undone before its buyer heard of
// it (the buy was answered with an error), so no client counts it as a win.
func (v SaleView) Created() int64 {
	return v.Pending + v.Paid + v.Expired + v.Cancelled
}

// Released is the number of orders whose unit went back to stock (expired
// or cancelled), so it could be sold again.
func (v SaleView) Released() int64 { return v.Expired + v.Cancelled }

// PoolView is the part of GET /v1/envelopes/{id} or GET /v1/shakes/{id} the
// books need. The red-envelope API is not final; the alternative names are
// accepted so either spelling the server settles on works.
type PoolView struct {
	TotalCents  int64 `json:"total_cents"`
	Count       int64 `json:"count"`
	Opened      int64 `json:"opened"`
	OpenedCount int64 `json:"opened_count"`
	OpenedCents int64 `json:"opened_cents"`
	Taken       int64 `json:"taken"`
	TakenCents  int64 `json:"taken_cents"`
	PaidCents   int64 `json:"paid_cents"` // a shake campaign's paid-out cents
}

func (v PoolView) issued() (n, cents int64) {
	return max(v.Opened, v.OpenedCount, v.Taken), max(v.OpenedCents, v.TakenCents, v.PaidCents)
}

type apiError struct {
	Status int
	Code   string
	Msg    string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Msg)
}

// API is a small client for the setup and books calls. It is safe for
// concurrent use.
type API struct {
	Base  string // one node's base URL
	Token string // admin bearer token, for creating sales and crediting wallets
	// AuthSecret mints the buyer tokens an order is read with: an order
	// answers only its owner.
	AuthSecret []byte
	HTTP       *http.Client
}

// NewAPI returns an API for base with a 10 s per-call timeout.
func NewAPI(base, token string) *API {
	return &API{Base: base, Token: token, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

func (a *API) do(ctx context.Context, method, path string, in, out any) error {
	return a.doAs(ctx, a.Token, method, path, in, out)
}

// doAs is do with another bearer token (a buyer's).
func (a *API) doAs(ctx context.Context, token, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.Base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := a.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return &apiError{Status: resp.StatusCode, Code: e.Error.Code, Msg: e.Error.Message}
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
	}
	return nil
}

// CreateSale creates the sale; an existing id is an error (409 conflict),
// because a run against a half-sold sale would not mean what it says.
func (a *API) CreateSale(ctx context.Context, s SaleSpec) error {
	if err := a.do(ctx, http.MethodPost, "/v1/sales", s, nil); err != nil {
		return fmt.Errorf("create sale %s: %w", s.ID, err)
	}
	return nil
}

// Sale reads a sale's view.
func (a *API) Sale(ctx context.Context, id string) (SaleView, error) {
	var v SaleView
	err := a.do(ctx, http.MethodGet, "/v1/sales/"+url.PathEscape(id), nil, &v)
	return v, err
}

// Pool reads an envelope (kind "envelopes") or shake campaign ("shakes").
func (a *API) Pool(ctx context.Context, kind, id string) (PoolView, error) {
	var v PoolView
	err := a.do(ctx, http.MethodGet, "/v1/"+kind+"/"+url.PathEscape(id), nil, &v)
	return v, err
}

// Order reads one order as user, who the client says won it; an order the
// server does not know — or does not give to user, which it answers the
// same way — is returned with Found == false and no error.
func (a *API) Order(ctx context.Context, id, user string) (BookOrder, error) {
	var v struct {
		UserID string `json:"user_id"`
		Status string `json:"status"`
	}
	tok, err := auth.Mint(a.AuthSecret, user, time.Minute)
	if err != nil {
		return BookOrder{}, err
	}
	err = a.doAs(ctx, tok, http.MethodGet, "/v1/orders/"+url.PathEscape(id), nil, &v)
	if e, ok := err.(*apiError); ok && e.Status == http.StatusNotFound {
		return BookOrder{}, nil
	}
	if err != nil {
		return BookOrder{}, err
	}
	return BookOrder{Found: true, User: v.UserID, Status: v.Status}, nil
}

// Credit puts cents into user's wallet (admin), once per reference.
func (a *API) Credit(ctx context.Context, user string, cents int64, reference string) error {
	in := map[string]any{"cents": cents, "reference": reference}
	if err := a.do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(user)+"/wallet/credit", in, nil); err != nil {
		return fmt.Errorf("credit %s: %w", user, err)
	}
	return nil
}

// Envelope reads one envelope as a BookOrder (its sender as User), for send.
func (a *API) Envelope(ctx context.Context, id string) (BookOrder, error) {
	var v struct {
		SenderID string `json:"sender_id"`
	}
	err := a.do(ctx, http.MethodGet, "/v1/envelopes/"+url.PathEscape(id), nil, &v)
	if e, ok := err.(*apiError); ok && e.Status == http.StatusNotFound {
		return BookOrder{}, nil
	}
	if err != nil {
		return BookOrder{}, err
	}
	return BookOrder{Found: true, User: v.SenderID}, nil
}

// maxProbes is how many won ids the check looks up one by one; above it a
// uniform sample of that size is taken.
const maxProbes = 10_000

// Baseline is what the books said before the run, so Books can be deltas.
type Baseline struct {
	Created, Released   int64
	IssuedN, IssuedCent int64
}

// ReadBaseline reads the counters Books subtracts, before a run.
func (a *API) ReadBaseline(ctx context.Context, cfg *Config) (Baseline, error) {
	switch cfg.Scenario {
	case ScenarioBuy:
		v, err := a.Sale(ctx, cfg.Sale)
		return Baseline{Created: v.Created(), Released: v.Released()}, err
	case ScenarioOpen, ScenarioShake:
		v, err := a.Pool(ctx, poolKind(cfg), poolID(cfg))
		n, c := v.issued()
		return Baseline{IssuedN: n, IssuedCent: c}, err
	}
	return Baseline{}, nil
}

func poolKind(cfg *Config) string {
	if cfg.Scenario == ScenarioShake {
		return "shakes"
	}
	return "envelopes"
}

func poolID(cfg *Config) string {
	if cfg.Scenario == ScenarioShake {
		return cfg.Campaign
	}
	return cfg.Envelope
}

// ReadBooks reads the server's books for the run after it ended: the sale or
// pool counters (less the baseline) and, for buy and send, each won id (a
// sample of maxProbes when there are more), 16 lookups at a time.
func (a *API) ReadBooks(ctx context.Context, cfg *Config, t Tally, base Baseline) (Books, error) {
	var b Books
	switch cfg.Scenario {
	case ScenarioBuy:
		v, settled, err := a.settledSale(ctx, cfg.Sale)
		if err != nil {
			return b, err
		}
		b.Stock, b.PerUserLimit = v.Stock, v.PerUserLimit
		b.Remaining, b.Pending, b.Paid = v.Remaining, v.Pending, v.Paid
		b.Created = v.Created() - base.Created
		b.Released = v.Released() - base.Released
		b.Settled = settled
	case ScenarioOpen, ScenarioShake:
		v, err := a.Pool(ctx, poolKind(cfg), poolID(cfg))
		if err != nil {
			return b, err
		}
		n, c := v.issued()
		b.TotalCents, b.Count = v.TotalCents, v.Count
		b.IssuedCount, b.IssuedCents = n-base.IssuedN, c-base.IssuedCent
		return b, nil
	default:
		if cfg.Scenario != ScenarioSend {
			return b, nil
		}
	}
	ids := make([]Win, len(t.Wins))
	copy(ids, t.Wins)
	if len(ids) > maxProbes {
		rand.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
		ids = ids[:maxProbes]
	}
	b.Orders = make(map[string]BookOrder, len(ids))
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
		next     = make(chan Win)
	)
	for range 16 {
		wg.Go(func() {
			for w := range next {
				var o BookOrder
				var err error
				if cfg.Scenario == ScenarioSend {
					o, err = a.Envelope(ctx, w.ID)
				} else {
					o, err = a.Order(ctx, w.ID, w.User)
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("look up %s: %w", w.ID, err)
				} else if err == nil {
					b.Orders[w.ID] = o
				}
				mu.Unlock()
			}
		})
	}
	for _, w := range ids {
		if w.ID != "" {
			next <- w
		}
	}
	close(next)
	wg.Wait()
	return b, firstErr
}

// settledSale reads the sale until two reads 200 ms apart agree (for at most
// 5 s), so the conservation check does not race a buy the server is still
// finishing; settled reports whether they did.
func (a *API) settledSale(ctx context.Context, id string) (v SaleView, settled bool, err error) {
	prev, err := a.Sale(ctx, id)
	if err != nil {
		return prev, false, err
	}
	for range 25 {
		select {
		case <-ctx.Done():
			return prev, false, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		v, err := a.Sale(ctx, id)
		if err != nil {
			return v, false, err
		}
		if v == prev {
			return v, true, nil
		}
		prev = v
	}
	return prev, false, nil
}
