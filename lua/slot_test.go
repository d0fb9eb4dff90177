package lua

import "testing"

// Reference values of Redis Cluster's CRC16 (cluster spec, appendix A).
func TestSlot(t *testing.T) {
	if got := crc16(0, "123456789"); got != 0x31C3 {
		t.Fatalf("crc16 = %#x, want 0x31c3", got)
	}
	for _, sender := range []string{"boss", "u1", "alice@example", "x"} {
		id, ok := EnvelopeIDForSender("e0123456789abcdef0123", sender)
		if !ok || Slot("env:"+id) != Slot("wallet:"+sender) || len(id) != 25 {
			t.Fatalf("sender %s: id %q ok=%v slots %d %d", sender, id, ok, Slot("env:"+id), Slot("wallet:"+sender))
		}
	}
}
