package api

import (
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
)

func FuzzParseBuy(f *testing.F) {
	for _, s := range []string{`{"user_id":"u1"}`, `{}`, `{"user_id":7}`, `{"user_id":"a"} x`, `[`, ``, `{"user_id":"é"}`, `{"user_id":"u","x":1}`,
		`{"user_id":"alice","User_Id":"bob"}`, `{"USER_ID":"bob"}`, `{"user_id":"a","user_id":"b"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseBuy(body)
		if err != nil {
			if flashsale.ErrorCode(err) != flashsale.EINVALID || flashsale.ErrorMessage(err) == "" {
				t.Fatalf("ParseBuy(%q): error %v is not a clear invalid", body, err)
			}
			return
		}
		if r.UserID != "" && !flashsale.ValidID(r.UserID) {
			t.Fatalf("ParseBuy(%q) accepted user %q", body, r.UserID)
		}
		// Exact names only, each once: what was accepted names user_id at
		// most once, spelled exactly so.
		if n := strings.Count(strings.ToLower(string(body)), `"user_id"`); n > 1 || n == 1 && !strings.Contains(string(body), `"user_id"`) {
			t.Fatalf("ParseBuy(%q) accepted a duplicate or re-cased name", body)
		}
	})
}

// The attacks on JSON names: re-cased and duplicate keys are refused, so a
// body means one thing to every reader.
func TestStrictNames(t *testing.T) {
	for _, body := range []string{`{"user_id":"alice","User_Id":"bob"}`, `{"User_Id":"bob"}`, `{"user_id":"a","user_id":"b"}`} {
		if _, err := ParseBuy([]byte(body)); flashsale.ErrorCode(err) != flashsale.EINVALID {
			t.Errorf("ParseBuy(%s) = %v, want invalid", body, err)
		}
	}
	for _, body := range []string{`{"id":"s","stock":5,"Stock":7}`, `{"id":"s","stock":5,"stock":7}`, `{"id":"s","stock":5,"ID":"t"}`,
		`{"id":"s","stock":5,"name":"a\u0007b"}`, `{"id":"s","stock":5,"name":"a\nb"}`,
		`{"id":"s","stock":5,"ends_at":"2001-01-01T00:00:00Z"}`, `{"id":"s","stock":5,"starts_at":"1969-12-31T23:59:59Z"}`,
		`{"id":"s","stock":5,"starts_at":"2999-01-01T00:00:00Z"}`} {
		if _, err := ParseCreateSale([]byte(body), time.Minute); flashsale.ErrorCode(err) != flashsale.EINVALID {
			t.Errorf("ParseCreateSale(%s) = %v, want invalid", body, err)
		}
	}
	if s, err := ParseCreateSale([]byte(`{"id":"s","stock":5,"name":"春运 — 北京","ends_at":"`+
		time.Now().Add(time.Hour).UTC().Format(time.RFC3339)+`"}`), time.Minute); err != nil || s.Stock != 5 {
		t.Fatalf("a good sale refused: %v", err)
	}
}

func FuzzParseCreateSale(f *testing.F) {
	for _, s := range []string{`{"id":"s1","stock":5}`, `{"id":"s1","stock":5,"pay_timeout":"1m","per_user_limit":2}`,
		`{"id":"s1","stock":-5}`, `{"id":"s1","stock":5,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2029-01-01T00:00:00Z"}`,
		`{"stock":1e400}`, `{"id":"s1","stock":5,"pay_timeout":"-1s"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		s, err := ParseCreateSale(body, time.Minute)
		if err != nil {
			if flashsale.ErrorCode(err) != flashsale.EINVALID {
				t.Fatalf("ParseCreateSale(%q): %v", body, err)
			}
			return
		}
		if !flashsale.ValidID(s.ID) || s.Stock < 1 || s.PerUserLimit < 1 || s.PayTimeout < time.Second {
			t.Fatalf("ParseCreateSale(%q) accepted %+v", body, s)
		}
	})
}

func FuzzQueryUser(f *testing.F) {
	for _, s := range []string{"user_id=u1", "a=1&user_id=u2&b=3", "user_id=", "user_id=a&user_id=b", "user_id=a%20b", "&&&", "user_id"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := queryUser(raw)
		if err == nil && u != "" && (!flashsale.ValidID(u) || !strings.Contains(raw, "user_id="+u)) {
			t.Fatalf("queryUser(%q) = %q", raw, u)
		}
	})
}

func TestStatusOfEveryCode(t *testing.T) {
	for _, code := range []string{flashsale.EINVALID, flashsale.ENOTFOUND, flashsale.ECONFLICT, flashsale.ESOLDOUT,
		flashsale.ELIMITREACHED, flashsale.ENOTSTARTED, flashsale.EENDED, flashsale.EEXPIRED, flashsale.EUNAVAILABLE,
		flashsale.EOVERLOADED, flashsale.EUNAUTHORIZED, flashsale.ETOOLARGE, flashsale.EEMPTY, flashsale.EALREADYOPENED,
		flashsale.EFORBIDDEN, flashsale.ERATELIMITED, flashsale.EINSUFFICIENT} {
		if StatusOf(code) == 500 {
			t.Errorf("code %s has no status", code)
		}
	}
}

func FuzzParsePaymentCallback(f *testing.F) {
	for _, s := range []string{`{"order_id":"s.1.abc","payment_id":"p1","amount_cents":100}`, `{"order_id":"x","payment_id":"p","amount_cents":1,"amount_cents":2}`,
		`{"Order_Id":"x","payment_id":"p","amount_cents":1}`, `{"order_id":"x","payment_id":"a.b","amount_cents":1}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParsePaymentCallback(body)
		if err != nil {
			if flashsale.ErrorCode(err) != flashsale.EINVALID {
				t.Fatalf("ParsePaymentCallback(%q): %v", body, err)
			}
			return
		}
		if r.OrderID == "" || r.AmountCents == nil || !flashsale.ValidID(r.PaymentID) {
			t.Fatalf("ParsePaymentCallback(%q) accepted %+v", body, r)
		}
	})
}
