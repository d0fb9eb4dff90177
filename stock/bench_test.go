package stock

import (
	"testing"
)

// The sold-out fast path: an atomic load, no lock, no network.
func BenchmarkShareSoldOut(b *testing.B) {
	s := NewShare(0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if s.TryTake() {
				b.Fatal("took from an empty share")
			}
		}
	})
}

// Taking a unit under the channel lock, contended by every P.
func BenchmarkShareTake(b *testing.B) {
	s := NewShare(int64(b.N) + 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.TryTake()
		}
	})
}

// One round trip through the coalescer with a free flush: the cost the
// batching itself adds to a buy.
func BenchmarkCoalescerDo(b *testing.B) {
	c := NewCoalescer(CoalescerConfig{MaxBatch: 256, Flushers: 4, QueueSize: 8192}, func(reqs []int, res []int) {
		copy(res, reqs)
	})
	defer c.Close()
	b.ReportAllocs()
	b.SetParallelism(64)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Do(1)
		}
	})
}
