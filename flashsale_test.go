package flashsale

import (
	"errors"
	"fmt"
	"testing"
)

func TestErrorCode(t *testing.T) {
	e := Errorf(ESOLDOUT, "sold out")
	for _, tc := range []struct {
		err        error
		code, text string
	}{
		{nil, "", ""},
		{e, ESOLDOUT, "sold out"},
		{fmt.Errorf("wrapped: %w", e), ESOLDOUT, "sold out"},
		{errors.New("boom"), EINTERNAL, "internal error"},
	} {
		if c, m := ErrorCode(tc.err), ErrorMessage(tc.err); c != tc.code || m != tc.text {
			t.Errorf("ErrorCode/Message(%v) = %q %q, want %q %q", tc.err, c, m, tc.code, tc.text)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = ErrorCode(e) }); n != 0 {
		t.Errorf("ErrorCode of a bare *Error allocates %v times", n)
	}
}

func TestOrderIDRoundTrip(t *testing.T) {
	id := OrderID("sale-1", 42)
	if s, n, err := ParseOrderID(id); err != nil || s != "sale-1" || n != 42 {
		t.Fatalf("ParseOrderID(%q) = %q %d %v", id, s, n, err)
	}
	for _, bad := range []string{"", "x", ".5", "s.", "s.0", "s.-1", "s.x", "a.b.c.d"} {
		if _, _, err := ParseOrderID(bad); err == nil {
			t.Errorf("ParseOrderID(%q) accepted", bad)
		}
	}
}
