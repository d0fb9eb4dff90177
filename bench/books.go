package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/client"
)

// This file talks to the API off the hot path — creating the sale before a
// run and reading the books after it — so it uses the SDK (package client)
// rather than the raw client.

// SaleSpec is the body of POST /v1/sales: the SDK's type.
type SaleSpec = client.CreateSale

// Room is a sale's waiting-room settings as POST /v1/sales takes them: the
// SDK's type.
type Room = client.Room

// SaleView is GET /v1/sales/{id}: the SDK's type.
type SaleView = client.Sale

// API is the setup and books calls, on the SDK's client. It is safe for
// concurrent use.
type API struct {
	c *client.Client
	// AuthSecret mints the buyer tokens an order is read with: an order
	// answers only its owner.
	AuthSecret []byte
}

// NewAPI returns an API for base (one node's URL) with a 10 s per-call
// timeout; token is the admin bearer token, for creating sales and
// crediting wallets.
func NewAPI(base, token string) *API { return &API{c: client.New(base, token)} }

// Base is the node's base URL the API calls.
func (a *API) Base() string { return a.c.Base }

// CreateSale creates the sale; an existing id is an error (409 conflict),
// because a run against a half-sold sale would not mean what it says.
func (a *API) CreateSale(ctx context.Context, s SaleSpec) error {
	if _, err := a.c.CreateSale(ctx, s); err != nil {
		return fmt.Errorf("create sale %s: %w", s.ID, err)
	}
	return nil
}

// Sale reads a sale's view.
func (a *API) Sale(ctx context.Context, id string) (SaleView, error) {
	return whenServed(ctx, func() (SaleView, error) { return a.c.Sale(ctx, id) })
}

// readTries bounds how often a read of the books is sent again after a 503.
const readTries = 8

// whenServed runs read, a GET of the books, again while the node answers
// 503 (overloaded or unavailable) — for at most readTries attempts, backing
// off from 50 ms to 1 s — as a client honouring Retry-After does. A 503 is
// a node saying it did nothing, and on a loaded box admission may shed a
// read right after a rush even though the node is nearly idle (the proxy's
// X-Request-Start made it look queued; seen once in CI on nbio): the books
// must not fail the run for it. Any other answer returns at once.
func whenServed[T any](ctx context.Context, read func() (T, error)) (T, error) {
	pause := 50 * time.Millisecond
	for try := 1; ; try++ {
		v, err := read()
		var e *client.Error
		if try == readTries || !errors.As(err, &e) || e.Status != http.StatusServiceUnavailable {
			return v, err
		}
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// pool is what the books need of an envelope or a shake campaign.
type pool struct {
	TotalCents, Count   int64 // an envelope's; 0 for a campaign
	Issued, IssuedCents int64 // opened shares / wins, and their cents
}

// Pool reads the envelope (ScenarioOpen) or shake campaign (ScenarioShake)
// of the run.
func (a *API) pool(ctx context.Context, cfg *Config) (pool, error) {
	if cfg.Scenario == ScenarioShake {
		v, err := whenServed(ctx, func() (client.Shake, error) { return a.c.Campaign(ctx, cfg.Campaign) })
		return pool{Issued: v.Taken, IssuedCents: v.PaidCents}, err
	}
	v, err := whenServed(ctx, func() (client.Envelope, error) { return a.c.Envelope(ctx, cfg.Envelope) })
	return pool{TotalCents: v.TotalCents, Count: v.Count, Issued: v.Opened, IssuedCents: v.OpenedCents}, err
}

// Order reads one order as user, who the client says won it; an order the
// server does not know — or does not give to user, which it answers the
// same way — is returned with Found == false and no error.
func (a *API) Order(ctx context.Context, id, user string) (BookOrder, error) {
	tok, err := auth.Mint(a.AuthSecret, user, time.Minute)
	if err != nil {
		return BookOrder{}, err
	}
	c := a.c.As(tok)
	v, err := whenServed(ctx, func() (client.Order, error) { return c.Order(ctx, id) })
	if client.IsNotFound(err) {
		return BookOrder{}, nil
	}
	if err != nil {
		return BookOrder{}, err
	}
	return BookOrder{Found: true, User: v.UserID, Status: v.Status}, nil
}

// Credit puts cents into user's wallet (admin), once per reference.
func (a *API) Credit(ctx context.Context, user string, cents int64, reference string) error {
	if _, err := a.c.Credit(ctx, user, client.Credit{Cents: cents, Reference: reference}); err != nil {
		return fmt.Errorf("credit %s: %w", user, err)
	}
	return nil
}

// Envelope reads one envelope as a BookOrder (its sender as User), for send.
func (a *API) Envelope(ctx context.Context, id string) (BookOrder, error) {
	v, err := whenServed(ctx, func() (client.Envelope, error) { return a.c.Envelope(ctx, id) })
	if client.IsNotFound(err) {
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
		v, err := a.pool(ctx, cfg)
		return Baseline{IssuedN: v.Issued, IssuedCent: v.IssuedCents}, err
	}
	return Baseline{}, nil
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
		v, err := a.pool(ctx, cfg)
		if err != nil {
			return b, err
		}
		b.TotalCents, b.Count = v.TotalCents, v.Count
		b.IssuedCount, b.IssuedCents = v.Issued-base.IssuedN, v.IssuedCents-base.IssuedCent
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
		if sameBooks(v, prev) {
			return v, true, nil
		}
		prev = v
	}
	return prev, false, nil
}

// sameBooks compares two reads of a sale's counters (not its pointer
// fields, which differ on every decode).
func sameBooks(a, b SaleView) bool {
	return a.Stock == b.Stock && a.Remaining == b.Remaining && a.Pending == b.Pending && a.Paid == b.Paid &&
		a.Expired == b.Expired && a.Cancelled == b.Cancelled && a.Aborted == b.Aborted
}
