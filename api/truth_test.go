package api

import (
	"strings"
	"testing"
	"time"
)

// Invariant: an accepted Idempotency-Key never holds a script separator
// ("," or "|"), is 1-64 characters, and is what was sent (less RFC 8941 quotes).
func FuzzParseIdempotencyKey(f *testing.F) {
	for _, s := range []string{"a1b2", `"a1b2"`, "", `""`, "a,b", "a|b", strings.Repeat("k", 65), "550e8400-e29b-41d4-a716-446655440000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		k, err := ParseIdempotencyKey(v, true)
		if err != nil {
			return
		}
		if k == "" || len(k) > 64 || strings.ContainsAny(k, ",|\" ") || (k != v && `"`+k+`"` != v) {
			t.Fatalf("ParseIdempotencyKey(%q) = %q", v, k)
		}
	})
}

// Invariant: ParseRequestStart accepts only "t=secs[.frac]" with digits, and
// round-trips what nginx's ${msec} writes.
func FuzzParseRequestStart(f *testing.F) {
	for _, s := range []string{"t=1733097600.123", "1733097600", "t=", "t=1.2.3", "t=-5", "t=99999999999.999999", "t=1e9"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := ParseRequestStart(v)
		if !ok {
			return
		}
		secs, frac, _ := strings.Cut(strings.TrimPrefix(v, "t="), ".")
		if strings.Trim(secs+frac, "0123456789") != "" || got.Unix() < 0 {
			t.Fatalf("ParseRequestStart(%q) = %v", v, got)
		}
	})
}

func TestParseRequestStart(t *testing.T) {
	got, ok := ParseRequestStart("t=1733097600.123")
	if want := time.UnixMilli(1733097600123); !ok || !got.Equal(want) {
		t.Fatalf("got %v %v, want %v", got, ok, want)
	}
}
