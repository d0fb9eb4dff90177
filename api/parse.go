package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"time"

	"github.com/flashsale/flashsale"
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
	WaitingRoom  *struct {
		Enabled     bool   `json:"enabled"`
		AdmitPerSec int64  `json:"admit_per_sec"`
		PreQueue    string `json:"pre_queue"` // a duration before starts_at, e.g. "10m"
	} `json:"waiting_room"`
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
	if w := r.WaitingRoom; w != nil && w.Enabled {
		s.WaitingRoom = flashsale.WaitingRoom{Enabled: true, AdmitPerSec: w.AdmitPerSec}
		if w.PreQueue != "" {
			d, err := time.ParseDuration(w.PreQueue)
			if err != nil {
				return flashsale.Sale{}, flashsale.Errorf(flashsale.EINVALID, "waiting_room.pre_queue must be a duration like \"10m\"")
			}
			s.WaitingRoom.PreQueue = d
		}
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
	var found string
	seen := false
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != "user_id" {
			continue
		}
		if seen {
			return "", flashsale.Errorf(flashsale.EINVALID, "user_id given more than once")
		}
		seen, found = true, v
	}
	if !flashsale.ValidID(found) {
		return "", errBadUser
	}
	return found, nil
}

// fieldErr is a helper for handlers that validate path parameters.
func fieldErr(name string) error {
	return flashsale.Errorf(flashsale.EINVALID, "%s must be 1-64 characters of [A-Za-z0-9_-:@]", name)
}
