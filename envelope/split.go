package envelope

import "math/rand/v2"

// Split divides total cents into count shares by the "double mean" method,
// all at once when the envelope is created: each share but the last is
// uniform in [1, 2 × rest / shares left), and the last takes the rest.
//
// Why pre-split: the shares go into a Redis list at creation, so an open is
// an atomic LPOP inside the open script — no arithmetic under contention —
// and the sum is exact by construction (the last share is whatever is left),
// checked once more by the create script. Why the double mean: every share
// has the same expected value (total / count) whatever its position, no
// share is below 1 cent, and none can exceed twice the running mean, which
// is what people expect of a red envelope.
//
// Every share is ≥ 1: with rest ≥ left (true at the start since
// total ≥ count), a share a < 2·rest/left leaves rest − a ≥ left − 1 for the
// left − 1 shares after it. total must be ≥ count ≥ 1; rng may be nil.
func Split(total int64, count int, rng *rand.Rand) []int64 {
	if count < 1 || total < int64(count) {
		panic("envelope.Split: need total >= count >= 1")
	}
	intn := rand.Int64N
	if rng != nil {
		intn = rng.Int64N
	}
	out := make([]int64, count)
	rest := total
	for i := 0; i < count-1; i++ {
		left := int64(count - i)
		hi := 2 * rest / left // exclusive upper bound
		a := int64(1)
		if hi > 2 {
			a = 1 + intn(hi-1) // uniform in [1, hi)
		}
		out[i] = a
		rest -= a
	}
	out[count-1] = rest
	return out
}
