package auth

import (
	"strings"
	"testing"
	"time"
)

var paySecret = []byte("payment-provider-secret-0123456789")

func TestVerifyPayload(t *testing.T) {
	body := []byte(`{"order_id":"s.1.abc","payment_id":"p1","amount_cents":100}`)
	now := time.Unix(1_800_000_000, 0)
	good := SignPayload(paySecret, now, body)
	cases := []struct {
		name, header string
		body         []byte
		ok           bool
	}{
		{"good", good, body, true},
		{"two v1, one good", strings.Replace(good, ",v1=", ",v1="+strings.Repeat("0", 64)+",v1=", 1), body, true},
		{"v0 ignored", good + ",v0=zz", body, true},
		{"body changed", good, append([]byte(nil), append(body, ' ')...), false},
		{"other secret", SignPayload([]byte("other"), now, body), body, false},
		{"6 minutes old", SignPayload(paySecret, now.Add(-6*time.Minute), body), body, false},
		{"6 minutes ahead", SignPayload(paySecret, now.Add(6*time.Minute), body), body, false},
		{"4 minutes old", SignPayload(paySecret, now.Add(-4*time.Minute), body), body, true},
		{"no t", good[strings.Index(good, ",")+1:], body, false},
		{"two t", "t=1," + good, body, false},
		{"no v1", good[:strings.Index(good, ",")], body, false},
		{"short v1", good[:len(good)-2], body, false},
		{"empty", "", body, false},
		{"junk", "hello", body, false},
		{"signed t differs from sent t", strings.Replace(good, "t=", "t=0", 1), body, false},
	}
	for _, c := range cases {
		if err := VerifyPayload(paySecret, c.header, c.body, now); (err == nil) != c.ok {
			t.Errorf("%s: err %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// FuzzParseSignature: any header either fails or parses to a value whose
// canonical form parses back to the same value; it never panics.
func FuzzParseSignature(f *testing.F) {
	f.Add("t=1800000000,v1=" + strings.Repeat("ab", 32))
	f.Add("t=1,v1=" + strings.Repeat("AB", 32) + ",v0=x")
	f.Add("t=,v1=")
	f.Add(",,,")
	f.Add("t=1=2,v1=" + strings.Repeat("0", 64))
	f.Fuzz(func(t *testing.T, h string) {
		s, err := ParseSignature(h)
		if err != nil {
			return
		}
		if len(s.V1) == 0 || len(s.V1) > maxV1 || s.T < 0 {
			t.Fatalf("accepted %q as %+v", h, s)
		}
		_ = VerifyPayload(paySecret, h, []byte("{}"), time.Unix(s.T, 0))
	})
}

// FuzzOrderID: Parse accepts exactly the ids Append spells, and each
// spelling maps back to its sale and number.
func FuzzOrderID(f *testing.F) {
	ids := NewOrderIDs([]byte("order-key"))
	f.Add(ids.Format("s1", 7))
	f.Add("s1.07." + ids.Format("s1", 7)[len("s1.7."):])
	f.Add("s1.+7.0000000000000000")
	f.Add("a.b.c")
	f.Fuzz(func(t *testing.T, id string) {
		sale, seq, ok := ids.Parse(id)
		if !ok {
			return
		}
		if ids.Format(sale, seq) != id {
			t.Fatalf("Parse(%q) accepted another spelling of %s", id, ids.Format(sale, seq))
		}
	})
}
