package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
)

// decodeStrict decodes exactly one JSON object into v, rejecting unknown
// fields and trailing data, with a message that says what was wrong.
// encoding/json alone matches field names case-insensitively and lets the
// last of duplicate keys win ({"user_id":"a","User_Id":"b"} would be b), so
// the object's keys are checked first: each exactly one of v's json names,
// each at most once.
func decodeStrict(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return flashsale.Errorf(flashsale.EINVALID, "request body is empty; expected a JSON object")
	}
	if err := checkKeys(body, jsonNames(v)); err != nil {
		return err
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

// checkKeys reads the top-level object's keys: each must be one of names,
// exactly, and appear once. Values are skipped (decoding checks them).
func checkKeys(body []byte, names map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return flashsale.Errorf(flashsale.EINVALID, "expected a JSON object")
	}
	seen := make(map[string]bool, len(names))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return flashsale.Errorf(flashsale.EINVALID, "malformed JSON")
		}
		k, _ := t.(string)
		switch {
		case !names[k]:
			return flashsale.Errorf(flashsale.EINVALID, "unknown field %q (names are case-sensitive)", k)
		case seen[k]:
			return flashsale.Errorf(flashsale.EINVALID, "field %q given more than once", k)
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return flashsale.Errorf(flashsale.EINVALID, "malformed JSON")
		}
	}
	return nil
}

var namesOf sync.Map // reflect.Type -> map[string]bool

// jsonNames returns the json names of the fields of the struct v points to.
func jsonNames(v any) map[string]bool {
	t := reflect.TypeOf(v).Elem()
	if m, ok := namesOf.Load(t); ok {
		return m.(map[string]bool)
	}
	m := map[string]bool{}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			m[name] = true
		}
	}
	namesOf.Store(t, m)
	return m
}

// BuyRequest is the optional body of POST /v1/sales/{id}/buy (and of open
// and shake): the buyer is the bearer token's subject, and a user_id, if
// still sent, must be that same user.
type BuyRequest struct {
	UserID string `json:"user_id"`
}

// ParseBuy parses and validates a buy body; user_id may be absent.
func ParseBuy(body []byte) (BuyRequest, error) {
	var r BuyRequest
	if err := decodeStrict(body, &r); err != nil {
		return BuyRequest{}, err
	}
	if r.UserID != "" && !flashsale.ValidID(r.UserID) {
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
	now := time.Now()
	if r.StartsAt != nil {
		if r.StartsAt.Before(time.Unix(0, 0)) || r.StartsAt.After(now.Add(MaxStartsIn)) {
			return flashsale.Sale{}, flashsale.Errorf(flashsale.EINVALID, "starts_at must be after 1970 and within a year from now")
		}
		s.StartsAt = *r.StartsAt
	}
	if r.EndsAt != nil {
		if !r.EndsAt.After(now) {
			return flashsale.Sale{}, flashsale.Errorf(flashsale.EINVALID, "ends_at is in the past")
		}
		s.EndsAt = *r.EndsAt
	}
	if !printable(s.Name) {
		return flashsale.Sale{}, flashsale.Errorf(flashsale.EINVALID, "name must be valid UTF-8 without control characters")
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

// queryUser extracts the optional user_id from a raw query string without
// building a url.Values map ("" when absent). Ids are restricted to
// characters that need no unescaping, so an escaped or repeated user_id is
// rejected rather than decoded.
func queryUser(raw string) (string, error) {
	found, seen, err := queryParam(raw, "user_id")
	if err != nil {
		return "", err
	}
	if seen && !flashsale.ValidID(found) {
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

// MaxStartsIn is how far ahead a sale (or campaign) may be scheduled.
const MaxStartsIn = 365 * 24 * time.Hour

// printable reports whether s is valid UTF-8 with no control character.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return false
		}
	}
	return true
}

// fieldErr is a helper for handlers that validate path parameters.
func fieldErr(name string) error {
	return flashsale.Errorf(flashsale.EINVALID, "%s must be 1-64 characters of [A-Za-z0-9_-:@]", name)
}
