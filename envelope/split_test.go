package envelope

import (
	"math/rand/v2"
	"testing"
)

// Property: over many random envelopes, the shares sum to the total exactly,
// each is ≥ 1 cent and < twice the running mean, and the mean is sane.
func TestSplitProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20000; i++ {
		count := 1 + rng.IntN(200)
		if i%10 == 0 {
			count = 1 + rng.IntN(1000)
		}
		var total int64
		switch i % 4 {
		case 0:
			total = int64(count) // every share exactly 1 cent
		case 1:
			total = int64(count) + rng.Int64N(int64(count)) // tight
		default:
			total = int64(count) + rng.Int64N(200_000)
		}
		shares := Split(total, count, rng)
		if len(shares) != count {
			t.Fatalf("Split(%d, %d): %d shares", total, count, len(shares))
		}
		var sum int64
		rest := total
		for j, a := range shares {
			left := int64(count - j)
			if a < 1 {
				t.Fatalf("Split(%d, %d): share %d is %d cents", total, count, j, a)
			}
			if j < count-1 && a > 1 && a >= 2*rest/left {
				t.Fatalf("Split(%d, %d): share %d = %d is not below twice the running mean %d/%d", total, count, j, a, rest, left)
			}
			rest -= a
			sum += a
		}
		if sum != total {
			t.Fatalf("Split(%d, %d) sums to %d", total, count, sum)
		}
	}
}

// The double mean gives every position the same expected share.
func TestSplitMeanPerPosition(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const total, count, rounds = 10_000, 10, 20000
	var sums [count]float64
	for r := 0; r < rounds; r++ {
		for j, a := range Split(total, count, rng) {
			sums[j] += float64(a)
		}
	}
	for j, s := range sums {
		mean := s / rounds
		if mean < 900 || mean > 1100 {
			t.Errorf("position %d: mean share %.1f, want about %d", j, mean, total/count)
		}
	}
}

func TestSplitOne(t *testing.T) {
	if s := Split(7, 1, nil); len(s) != 1 || s[0] != 7 {
		t.Fatalf("Split(7, 1) = %v", s)
	}
}
