package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
)

// decodeStrict decodes exactly one JSON object into v, rejecting unknown
// fields and trailing data, with a message that says what was wrong.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return flashsale.Errorf(flashsale.EINVALID, "request body is empty; expected a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr):
			return flashsale.Errorf(flashsale.EINVALID, "field %q has the wrong type", typeErr.Field)
		case errors.As(err, &syntaxErr):
			return flashsale.Errorf(flashsale.EINVALID, "malformed JSON at byte %d", syntaxErr.Offset)
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return flashsale.Errorf(flashsale.EINVALID, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
		default:
			return flashsale.Errorf(flashsale.EINVALID, "malformed JSON")
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return flashsale.Errorf(flashsale.EINVALID, "trailing data after the JSON object")
	}
	return nil
}

// BuyRequest is the body of POST /v1/sales/{id}/buy.
type BuyRequest struct {
	UserID string `json:"user_id"`
}

// ParseBuy parses and validates a buy body.
func ParseBuy(body []byte) (BuyRequest, error) {
	var r BuyRequest
	if err := decodeStrict(body, &r); err != nil {
		return BuyRequest{}, err
	}
	if !flashsale.ValidID(r.UserID) {
		return BuyRequest{}, errBadUser
	}
	return r, nil
}

var errBadUser = flashsale.Errorf(flashsale.EINVALID, "user_id must be 1-64 characters of [A-Za-z0-9_-:@]")

// CreateSaleRequest is the body of POST /v1/sales.
type CreateSaleRequest struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Stock        *int64     `json:"stock"`
	PriceCents   int64      `json:"price_cents"`
	PerUserLimit *int64     `json:"per_user_limit"`
	PayTimeout   string     `json:"pay_timeout"`
	StartsAt     *time.Time `json:"starts_at"`
	EndsAt       *time.Time `json:"ends_at"`
}

// ParseCreateSale parses and validates a sale; defaultPay applies when the
// body has no pay_timeout.
func ParseCreateSale(body []byte, defaultPay time.Duration) (flashsale.Sale, error) {
	var r CreateSaleRequest
	if err := decodeStrict(body, &r); err != nil {
		return flashsale.Sale{}, err
	}
	if r.Stock == nil {
		return flashsale.Sale{}, flashsale.Errorf(flashsale.EINVALID, "stock is required")
	}
	s := flashsale.Sale{ID: r.ID, Name: r.Name, Stock: *r.Stock, PriceCents: r.PriceCents, PerUserLimit: 1, PayTimeout: defaultPay}
	if r.PerUserLimit != nil {
		s.PerUserLimit = *r.PerUserLimit
	}
	if r.PayTimeout != "" {
		d, err := time.ParseDuration(r.PayTimeout)
		if err != nil {
			return flashsale.Sale{}, flashsale.Errorf(flashsale.EINVALID, "pay_timeout must be a duration like \"5m\"")
		}
		s.PayTimeout = d
	}
	if r.StartsAt != nil {
		s.StartsAt = *r.StartsAt
	}
	if r.EndsAt != nil {
		s.EndsAt = *r.EndsAt
	}
	if err := stock.ValidateSale(s); err != nil {
		return flashsale.Sale{}, err
	}
	return s, nil
}

// queryUser extracts user_id from a raw query string without building a
// url.Values map. Ids are restricted to characters that need no unescaping,
// so an escaped or repeated user_id is rejected rather than decoded.
func queryUser(raw string) (string, error) {
	found, _, err := queryParam(raw, "user_id")
	if err != nil {
		return "", err
	}
	if !flashsale.ValidID(found) {
		return "", errBadUser
	}
	return found, nil
}

// queryParam returns the raw value of name in a raw query string (our
// values never need escaping: anything escaped fails validation) and
// whether it was present; a parameter given twice is invalid.
func queryParam(raw, name string) (string, bool, error) {
	var found string
	seen := false
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			continue
		}
		if seen {
			return "", false, flashsale.Errorf(flashsale.EINVALID, "%s given more than once", name)
		}
		seen, found = true, v
	}
	return found, seen, nil
}

// IdempotencyHeader is the request header naming a buy attempt (IETF
// httpapi draft "The Idempotency-Key HTTP Header Field"); GET buys take it
// as the idempotency_key query parameter (for ab and wrk).
const IdempotencyHeader = "Idempotency-Key"

var errBadKey = flashsale.Errorf(flashsale.EINVALID, "Idempotency-Key must be 1-64 characters of [A-Za-z0-9_.:@-]")

// ParseIdempotencyKey validates a key as sent: absent is "", a header
// value may be an RFC 8941 string ("..."), anything else must pass
// lua.ValidIdempotencyKey.
func ParseIdempotencyKey(v string, present bool) (string, error) {
	if !present {
		return "", nil
	}
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
	}
	if !lua.ValidIdempotencyKey(v) {
		return "", errBadKey
	}
	return v, nil
}

// fieldErr is a helper for handlers that validate path parameters.
func fieldErr(name string) error {
	return flashsale.Errorf(flashsale.EINVALID, "%s must be 1-64 characters of [A-Za-z0-9_-:@]", name)
}
