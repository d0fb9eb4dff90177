package api

import (
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/envelope"
	"github.com/flashsale/flashsale/shake"
)

var testEnvLimits = envelope.Limits{MaxCount: 100, MaxTotalCents: 20_000_00, DefaultExpiry: time.Hour,
	MinExpiry: time.Second, MaxExpiry: 72 * time.Hour}

var testShakeLimits = shake.Limits{MaxEnvelopes: 1_000_000, MaxRatePerSec: 100_000, MaxBudgetCents: 1_000_000_00, MaxAmountCents: 20_000_00}

func FuzzParseCreateEnvelope(f *testing.F) {
	for _, s := range []string{`{"sender_id":"s","total_cents":100,"count":3}`, `{"sender_id":"s","total_cents":3,"count":3,"expires_in":"1m"}`,
		`{"sender_id":"s","total_cents":2,"count":3}`, `{"sender_id":"s","total_cents":100,"count":0}`, `{"sender_id":"s","total_cents":1e30,"count":3}`,
		`{"sender_id":"s","total_cents":100,"count":3,"expires_in":"-1s"}`, `{"sender_id":"s","total_cents":100,"count":101}`,
		`{"sender_id":"s","total_cents":100}`, `{"sender_id":"s","total_cents":100,"count":9223372036854775807}`, `{"sender_id":"a b","total_cents":1,"count":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseCreateEnvelope(body, testEnvLimits, "s")
		if err != nil {
			if c := flashsale.ErrorCode(err); c != flashsale.EINVALID && c != flashsale.EFORBIDDEN || flashsale.ErrorMessage(err) == "" {
				t.Fatalf("ParseCreateEnvelope(%q): %v is not a clear invalid", body, err)
			}
			return
		}
		if r.SenderID != "s" || r.Count < 1 || r.Count > testEnvLimits.MaxCount || r.TotalCents < int64(r.Count) ||
			r.TotalCents > testEnvLimits.MaxTotalCents || r.ExpiresIn < time.Second || r.ExpiresIn > 72*time.Hour {
			t.Fatalf("ParseCreateEnvelope(%q) accepted %+v", body, r)
		}
		// Whatever is accepted splits exactly.
		sum := int64(0)
		for _, a := range envelope.Split(r.TotalCents, r.Count, nil) {
			if a < 1 {
				t.Fatalf("share %d < 1 for %+v", a, r)
			}
			sum += a
		}
		if sum != r.TotalCents {
			t.Fatalf("shares sum to %d, not %d", sum, r.TotalCents)
		}
	})
}

func FuzzParseCreateShake(f *testing.F) {
	for _, s := range []string{`{"id":"c1","total_envelopes":100,"budget_cents":10000,"rate_per_sec":200}`,
		`{"id":"c1","total_envelopes":100,"min_cents":1,"max_cents":500,"rate_per_sec":200,"max_wins_per_user":1}`,
		`{"id":"c1","total_envelopes":100,"budget_cents":99,"rate_per_sec":200}`, `{"id":"c1","total_envelopes":100,"budget_cents":10000,"min_cents":1,"max_cents":2,"rate_per_sec":200}`,
		`{"id":"c1","total_envelopes":100,"min_cents":5,"max_cents":4,"rate_per_sec":200}`, `{"id":"c1","total_envelopes":100,"budget_cents":10000}`,
		`{"id":"c1","total_envelopes":100,"budget_cents":10000,"rate_per_sec":0}`, `{"id":"c1","total_envelopes":100,"budget_cents":10000,"rate_per_sec":1,"starts_at":"2001-01-01T00:00:00Z"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		c, err := ParseCreateShake(body, testShakeLimits)
		if err != nil {
			if flashsale.ErrorCode(err) != flashsale.EINVALID || flashsale.ErrorMessage(err) == "" {
				t.Fatalf("ParseCreateShake(%q): %v is not a clear invalid", body, err)
			}
			return
		}
		ok := flashsale.ValidID(c.ID) && c.Total >= 1 && c.RatePerSec >= 1 && c.MaxWinsPerUser >= 0 &&
			(c.Mode == shake.ModeSplit && c.BudgetCents >= c.Total || c.Mode == shake.ModeRange && c.MinCents >= 1 && c.MaxCents >= c.MinCents)
		if !ok {
			t.Fatalf("ParseCreateShake(%q) accepted %+v", body, c)
		}
	})
}
