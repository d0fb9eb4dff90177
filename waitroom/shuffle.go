package waitroom

import "math/bits"

// Rank maps ticket seq (1-based) to its place in line: the pre tickets
// issued before the opening are permuted by seed (one shuffle, computed by
// any node from the same three numbers, nothing stored per ticket); later
// tickets keep their join order after them.
func Rank(seq, pre int64, seed uint64) int64 {
	if seq > pre || pre <= 1 {
		return seq
	}
	return int64(permute(uint64(seq-1), uint64(pre), seed)) + 1
}

// permute is a keyed bijection of [0, n): a four-round Feistel network on
// the smallest even number of bits covering n, cycle-walking values that
// land outside [0, n) (each walk step stays inside the bijection, so the
// walk ends in a value of [0, n) and no two inputs share it).
func permute(x, n, seed uint64) uint64 {
	b := bits.Len64(n - 1)
	if b < 2 {
		b = 2
	}
	b += b & 1
	half := uint(b / 2)
	mask := uint64(1)<<half - 1
	for {
		l, r := x>>half, x&mask
		for round := uint64(0); round < 4; round++ {
			l, r = r, l^(mix(seed^(round<<56)^r)&mask)
		}
		x = l<<half | r
		if x < n {
			return x
		}
	}
}

// mix is SplitMix64's finaliser: a cheap, well-spread round function.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
