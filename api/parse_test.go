package api

import (
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
)

func FuzzParseBuy(f *testing.F) {
	for _, s := range []string{`{"user_id":"u1"}`, `{}`, `{"user_id":7}`, `{"user_id":"a"} x`, `[`, ``, `{"user_id":"é"}`, `{"user_id":"u","x":1}`} {
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
		if !flashsale.ValidID(r.UserID) {
			t.Fatalf("ParseBuy(%q) accepted user %q", body, r.UserID)
		}
	})
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
		if err == nil && (!flashsale.ValidID(u) || !strings.Contains(raw, "user_id="+u)) {
			t.Fatalf("queryUser(%q) = %q", raw, u)
		}
	})
}

func TestStatusOfEveryCode(t *testing.T) {
	for _, code := range []string{flashsale.EINVALID, flashsale.ENOTFOUND, flashsale.ECONFLICT, flashsale.ESOLDOUT,
		flashsale.ELIMITREACHED, flashsale.ENOTSTARTED, flashsale.EENDED, flashsale.EEXPIRED, flashsale.EUNAVAILABLE,
		flashsale.EOVERLOADED, flashsale.EUNAUTHORIZED, flashsale.ETOOLARGE, flashsale.EEMPTY, flashsale.EALREADYOPENED} {
		if StatusOf(code) == 500 {
			t.Errorf("code %s has no status", code)
		}
	}
}
