package order

import (
	"testing"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
)

// TestStatusTableRoundTrips checks that every state maps letter → status →
// letter, that the event of each move names the same status kafka reads back,
// and that unknown input maps to the documented sentinels.
func TestStatusTableRoundTrips(t *testing.T) {
	letters := []byte{lua.StatusPending, lua.StatusPaid, lua.StatusCancelled, lua.StatusExpired, lua.StatusAborted}
	seen := map[flashsale.OrderStatus]bool{}
	for _, l := range letters {
		st := StatusOf(l)
		if st == "unknown" || seen[st] {
			t.Fatalf("letter %q: status %q (duplicate or unknown)", l, st)
		}
		seen[st] = true
		if back := StatusLetter(st); back != l {
			t.Fatalf("status %q maps back to %q, want %q", st, back, l)
		}
		typ := TypeOfStatus(l)
		if l == lua.StatusPending {
			if typ != "" {
				t.Fatalf("pending has transition %q, want none", typ)
			}
			continue
		}
		if got, ok := kafka.OrderStatusOfType(typ); !ok || got != st {
			t.Fatalf("letter %q: event %q reads back as %q/%v, want %q", l, typ, got, ok, st)
		}
	}
	if StatusOf('z') != "unknown" || StatusLetter("bogus") != '?' || TypeOfStatus('z') != "" {
		t.Fatal("unknown input must map to the sentinels")
	}
}
