// Package client is a small Go SDK for flashsale's HTTP API: the request and
// response types of every route (the server renders its sale and order
// views from these same types) and a Client that calls them. The bench,
// chaos and end-to-end tests use it, so a renamed field breaks them instead
// of being guessed around.
//
// It imports nothing of the server: a program that sells through flashsale
// can import it alone.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// maxBody bounds one response body read.
const maxBody = 4 << 20

// Error is an answer other than 2xx: the API's {"error":{"code","message"}}
// with its status. Code is one of the application codes (sold_out,
// limit_reached, not_found, unavailable, overloaded, ...).
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d %s: %s", e.Status, e.Code, e.Message) }

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// IsNotFound reports whether err is a 404.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound
}

// Client calls one flashsale node (or nginx in front of many). It is safe
// for concurrent use. Per-person routes (buy, orders, open, shake, wallet)
// act as the subject of Token, a buyer token; admin routes need the admin
// token. As gives a copy for another token.
type Client struct {
	Base  string       // base URL, e.g. http://127.0.0.1:8080
	Token string       // bearer token sent on every call
	HTTP  *http.Client // nil: a client with a 10 s timeout
	// Strict makes decoding refuse fields the types here do not know, so a
	// test learns at once that the server's answer and this SDK drifted.
	Strict bool
}

// New returns a Client for base with a 10 s per-call timeout.
func New(base, token string) *Client {
	return &Client{Base: base, Token: token, HTTP: &http.Client{Timeout: 10 * time.Second}}
}

// As returns a copy of c that sends token instead (a buyer's, say).
func (c *Client) As(token string) *Client {
	cp := *c
	cp.Token = token
	return &cp
}

// Do sends one request with in (when not nil) as its JSON body and decodes
// a 2xx answer into out (when not nil); any other status is an *Error.
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	return c.do(ctx, method, path, nil, in, out)
}

// do is Do with extra request headers (name, value pairs).
func (c *Client) do(ctx context.Context, method, path string, hdr []string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if c.Strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode %s: %w", method, path, b, err)
	}
	return nil
}

// CreateSale creates a sale (admin); an existing id is a 409 conflict,
// never a reset.
func (c *Client) CreateSale(ctx context.Context, s CreateSale) (Sale, error) {
	var v Sale
	err := c.Do(ctx, http.MethodPost, "/v1/sales", s, &v)
	return v, err
}

// Sale reads a sale's settings and books.
func (c *Client) Sale(ctx context.Context, id string) (Sale, error) {
	var v Sale
	err := c.Do(ctx, http.MethodGet, "/v1/sales/"+url.PathEscape(id), nil, &v)
	return v, err
}

// IdempotencyHeader names a buy attempt: while the order an earlier
// attempt with the same key made is live, a retry gets that order back
// instead of a second one.
const IdempotencyHeader = "Idempotency-Key"

// Buy buys one unit of sale for the token's subject. key ("" for none) is
// the attempt's Idempotency-Key: retry a lost answer with the same key.
func (c *Client) Buy(ctx context.Context, sale, key string) (Bought, error) {
	var hdr []string
	if key != "" {
		hdr = []string{IdempotencyHeader, key}
	}
	var v Bought
	err := c.do(ctx, http.MethodPost, "/v1/sales/"+url.PathEscape(sale)+"/buy", hdr, nil, &v)
	return v, err
}

// Order reads one of the token subject's orders (another's is a 404).
func (c *Client) Order(ctx context.Context, id string) (Order, error) {
	var v Order
	err := c.Do(ctx, http.MethodGet, "/v1/orders/"+url.PathEscape(id), nil, &v)
	return v, err
}

// MyOrders lists the token subject's live orders of sale: the way to learn
// the truth after a lost answer.
func (c *Client) MyOrders(ctx context.Context, sale string) (MyOrders, error) {
	var v MyOrders
	err := c.Do(ctx, http.MethodGet, "/v1/users/me/orders?sale="+url.QueryEscape(sale), nil, &v)
	return v, err
}

// SignatureHeader carries the payment provider's signature of a callback.
const SignatureHeader = "Flashsale-Signature"

// PaymentCallback posts the provider's signed confirmation that p paid its
// order: body is the exact JSON that signature signs (see PaymentCallback).
// The same payment id again answers the paid order again.
func (c *Client) PaymentCallback(ctx context.Context, body []byte, signature string) (Order, error) {
	var v Order
	err := c.do(ctx, http.MethodPost, "/v1/payments/callback", []string{SignatureHeader, signature}, json.RawMessage(body), &v)
	return v, err
}

// Cancel cancels one of the token subject's pending orders; its unit is
// back at once.
func (c *Client) Cancel(ctx context.Context, id string) (Order, error) {
	var v Order
	err := c.Do(ctx, http.MethodPost, "/v1/orders/"+url.PathEscape(id)+"/cancel", nil, &v)
	return v, err
}

// SendEnvelope sends a red envelope; the sender's wallet is debited.
func (c *Client) SendEnvelope(ctx context.Context, e SendEnvelope) (Sent, error) {
	var v Sent
	err := c.Do(ctx, http.MethodPost, "/v1/envelopes", e, &v)
	return v, err
}

// OpenEnvelope opens envelope id for the token's subject.
func (c *Client) OpenEnvelope(ctx context.Context, id string) (Opened, error) {
	var v Opened
	err := c.Do(ctx, http.MethodPost, "/v1/envelopes/"+url.PathEscape(id)+"/open", nil, &v)
	return v, err
}

// Envelope reads an envelope's books.
func (c *Client) Envelope(ctx context.Context, id string) (Envelope, error) {
	var v Envelope
	err := c.Do(ctx, http.MethodGet, "/v1/envelopes/"+url.PathEscape(id), nil, &v)
	return v, err
}

// CreateShake creates a shake campaign (admin).
func (c *Client) CreateShake(ctx context.Context, s CreateShake) (ShakeCreated, error) {
	var v ShakeCreated
	err := c.Do(ctx, http.MethodPost, "/v1/shakes", s, &v)
	return v, err
}

// Shake shakes campaign id once for the token's subject.
func (c *Client) Shake(ctx context.Context, id string) (Shaken, error) {
	var v Shaken
	err := c.Do(ctx, http.MethodPost, "/v1/shakes/"+url.PathEscape(id)+"/shake", nil, &v)
	return v, err
}

// Campaign reads a shake campaign's books.
func (c *Client) Campaign(ctx context.Context, id string) (Shake, error) {
	var v Shake
	err := c.Do(ctx, http.MethodGet, "/v1/shakes/"+url.PathEscape(id), nil, &v)
	return v, err
}

// Credit puts cents into user's wallet (admin), once per cr.Reference.
func (c *Client) Credit(ctx context.Context, user string, cr Credit) (Credited, error) {
	var v Credited
	err := c.Do(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(user)+"/wallet/credit", cr, &v)
	return v, err
}

// Wallet reads a user's wallet (the token's subject's only).
func (c *Client) Wallet(ctx context.Context, user string) (Wallet, error) {
	var v Wallet
	err := c.Do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(user)+"/wallet", nil, &v)
	return v, err
}
