package api

import (
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/envelope"
	"github.com/flashsale/flashsale/shake"
)

// CreateEnvelopeRequest is the body of POST /v1/envelopes. expires_in is a
// Go duration ("30m", "24h"); without it the configured default applies.
type CreateEnvelopeRequest struct {
	SenderID   string `json:"sender_id"`
	TotalCents *int64 `json:"total_cents"`
	Count      *int64 `json:"count"`
	ExpiresIn  string `json:"expires_in"`
}

// ParseCreateEnvelope parses and validates a send-envelope body from
// sender (the token's subject): a sender_id, if still sent, must be the
// same user (else 403 forbidden).
func ParseCreateEnvelope(body []byte, l envelope.Limits, sender string) (envelope.Request, error) {
	var r CreateEnvelopeRequest
	if err := decodeStrict(body, &r); err != nil {
		return envelope.Request{}, err
	}
	if r.TotalCents == nil || r.Count == nil {
		return envelope.Request{}, flashsale.Errorf(flashsale.EINVALID, "total_cents and count are required")
	}
	if *r.Count < 1 || *r.Count > int64(l.MaxCount) {
		return envelope.Request{}, flashsale.Errorf(flashsale.EINVALID, "count must be between 1 and %d", l.MaxCount)
	}
	req := envelope.Request{SenderID: sender, TotalCents: *r.TotalCents, Count: int(*r.Count), ExpiresIn: l.DefaultExpiry}
	if r.SenderID != "" {
		req.SenderID = r.SenderID // validated below, then compared
	}
	if r.ExpiresIn != "" {
		d, err := time.ParseDuration(r.ExpiresIn)
		if err != nil {
			return envelope.Request{}, flashsale.Errorf(flashsale.EINVALID, "expires_in must be a duration like \"30m\"")
		}
		req.ExpiresIn = d
	}
	if err := l.Validate(req); err != nil {
		return envelope.Request{}, err
	}
	if req.SenderID != sender {
		return envelope.Request{}, errForbidden
	}
	return req, nil
}

// CreateShakeRequest is the body of POST /v1/shakes. Amounts are drawn
// either by splitting budget_cents exactly among total_envelopes, or
// uniformly in [min_cents, max_cents] — one of the two, not both.
type CreateShakeRequest struct {
	ID             string     `json:"id"`
	TotalEnvelopes *int64     `json:"total_envelopes"`
	BudgetCents    int64      `json:"budget_cents"`
	MinCents       int64      `json:"min_cents"`
	MaxCents       int64      `json:"max_cents"`
	RatePerSec     *int64     `json:"rate_per_sec"`
	StartsAt       *time.Time `json:"starts_at"`
	MaxWinsPerUser int64      `json:"max_wins_per_user"`
}

// ParseCreateShake parses and validates a campaign.
func ParseCreateShake(body []byte, l shake.Limits) (shake.Campaign, error) {
	var r CreateShakeRequest
	if err := decodeStrict(body, &r); err != nil {
		return shake.Campaign{}, err
	}
	if r.TotalEnvelopes == nil || r.RatePerSec == nil {
		return shake.Campaign{}, flashsale.Errorf(flashsale.EINVALID, "total_envelopes and rate_per_sec are required")
	}
	c := shake.Campaign{ID: r.ID, Total: *r.TotalEnvelopes, RatePerSec: *r.RatePerSec, BudgetCents: r.BudgetCents,
		MinCents: r.MinCents, MaxCents: r.MaxCents, MaxWinsPerUser: r.MaxWinsPerUser, Mode: shake.ModeRange}
	if r.BudgetCents != 0 {
		c.Mode = shake.ModeSplit
	}
	if r.StartsAt != nil {
		if r.StartsAt.Before(time.Unix(0, 0)) || r.StartsAt.After(time.Now().Add(MaxStartsIn)) {
			return shake.Campaign{}, flashsale.Errorf(flashsale.EINVALID, "starts_at must be after 1970 and within a year from now")
		}
		c.StartsAt = *r.StartsAt
	}
	if err := l.Validate(c); err != nil {
		return shake.Campaign{}, err
	}
	return c, nil
}
