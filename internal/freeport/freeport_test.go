package freeport

import (
	"net"
	"strconv"
	"testing"
)

// Invariant: a picked port can be listened on, and lies below the kernel's
// ephemeral range whenever the range leaves room for it.
func TestPickIsFreeAndBelowTheEphemeralRange(t *testing.T) {
	low := ephemeralLow()
	for range 50 {
		p, err := Pick()
		if err != nil {
			t.Fatal(err)
		}
		if low > 11000 && (p < 10000 || p >= low) {
			t.Fatalf("port %d outside [10000, %d)", p, low)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			t.Fatalf("picked port %d is not free: %v", p, err)
		}
		l.Close()
	}
}
