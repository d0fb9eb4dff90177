package waitroom

import (
	"errors"
	"testing"
)

// Rank is a bijection of the pre-queue onto 1..pre (nobody shares a place,
// nobody is lost) and keeps later joiners in order after it.
func TestRankIsAPermutation(t *testing.T) {
	for _, pre := range []int64{2, 3, 7, 64, 1000, 4097} {
		seen := make(map[int64]bool, pre)
		moved := 0
		for seq := int64(1); seq <= pre; seq++ {
			r := Rank(seq, pre, 42)
			if r < 1 || r > pre || seen[r] {
				t.Fatalf("pre %d: seq %d -> rank %d (out of range or taken)", pre, seq, r)
			}
			seen[r] = true
			if r != seq {
				moved++
			}
		}
		if pre >= 64 && moved < int(pre)/2 {
			t.Fatalf("pre %d: only %d of %d moved: not a shuffle", pre, moved, pre)
		}
		if r := Rank(pre+5, pre, 42); r != pre+5 {
			t.Fatalf("late joiner's rank %d, want its join order %d", r, pre+5)
		}
	}
	if Rank(5, 100, 1) == Rank(5, 100, 2) && Rank(6, 100, 1) == Rank(6, 100, 2) && Rank(7, 100, 1) == Rank(7, 100, 2) {
		t.Fatal("the seed does not change the shuffle")
	}
}

func TestTicketSignature(t *testing.T) {
	key := []byte("k1")
	tk := Ticket{Sale: "s1", Buyer: "u1", Seq: 7, ExpiresMs: 1e13}
	s := tk.Encode(key)
	if got, err := ParseTicket(key, s, "s1", "u1"); err != nil || got != tk {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	forged := Ticket{Sale: "s1", Buyer: "u1", Seq: 1, ExpiresMs: 1e13}.Encode([]byte("other key"))
	for name, c := range map[string]struct{ s, sale, buyer string }{
		"other buyer":  {s, "s1", "u2"},
		"other sale":   {s, "s2", "u1"},
		"other key":    {forged, "s1", "u1"},
		"edited seq":   {"q1.s1.u1.1.10000000000000" + s[len("q1.s1.u1.7.10000000000000"):], "s1", "u1"},
		"garbage":      {"nonsense", "s1", "u1"},
		"empty":        {"", "s1", "u1"},
		"no signature": {"q1.s1.u1.7.10000000000000.", "s1", "u1"},
	} {
		if _, err := ParseTicket(key, c.s, c.sale, c.buyer); !errors.Is(err, ErrBadTicket) {
			t.Errorf("%s: %v, want ErrBadTicket", name, err)
		}
	}
}

func FuzzParseTicket(f *testing.F) {
	key := []byte("k")
	f.Add(Ticket{Sale: "s", Buyer: "u", Seq: 1, ExpiresMs: 5}.Encode(key))
	f.Add("q1.s.u.1.5.AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		tk, err := ParseTicket(key, s, "s", "u")
		if err == nil && tk.Encode(key) != s {
			t.Fatalf("accepted %q, which is not what the key signs (%q)", s, tk.Encode(key))
		}
	})
}
