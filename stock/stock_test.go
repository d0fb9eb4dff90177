package stock

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Invariant: concurrent takers never take more units than the share holds.
func TestShareNeverOvergives(t *testing.T) {
	s := NewShare(1000)
	var taken atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 64; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if s.TryTake() {
					taken.Add(1)
					if i%10 == 0 {
						s.Give(1)
						taken.Add(-1)
					}
				}
			}
		}()
	}
	wg.Wait()
	if taken.Load()+s.Left() != 1000 {
		t.Fatalf("taken %d + left %d != 1000", taken.Load(), s.Left())
	}
}

// Invariant: every request gets its own result, batches respect MaxBatch,
// and a full queue is refused at once.
func TestCoalescer(t *testing.T) {
	var maxSeen atomic.Int64
	c := NewCoalescer(CoalescerConfig{MaxBatch: 8, Flushers: 2, QueueSize: 64}, func(reqs []int, res []int) {
		if n := int64(len(reqs)); n > maxSeen.Load() {
			maxSeen.Store(n)
		}
		time.Sleep(time.Millisecond)
		for i, r := range reqs {
			res[i] = r * 2
		}
	})
	var wg sync.WaitGroup
	var refused atomic.Int64
	for g := 0; g < 200; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			r, ok := c.Do(g)
			if !ok {
				refused.Add(1)
				return
			}
			if r != g*2 {
				t.Errorf("Do(%d) = %d", g, r)
			}
		}(g)
	}
	wg.Wait()
	c.Close()
	if maxSeen.Load() > 8 || maxSeen.Load() < 2 {
		t.Fatalf("largest batch %d: want coalescing within MaxBatch 8", maxSeen.Load())
	}
	if _, ok := c.Do(1); ok {
		t.Fatal("Do after Close succeeded")
	}
	t.Logf("refused %d of 200 with a queue of 64", refused.Load())
}

func TestCoalescerLingerFillsBatches(t *testing.T) {
	var batches atomic.Int64
	c := NewCoalescer(CoalescerConfig{MaxBatch: 100, Flushers: 1, QueueSize: 100, Linger: 50 * time.Millisecond},
		func(reqs []int, res []int) { batches.Add(1) })
	defer c.Close()
	var wg sync.WaitGroup
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() { defer wg.Done(); c.Do(1) }()
	}
	wg.Wait()
	if batches.Load() > 3 {
		t.Fatalf("%d batches for 20 requests inside one linger window", batches.Load())
	}
}

// Buyers who arrive while a reload is running get the reloaded units, not a
// false "sold out".
func TestRefillWaitersShareTheReload(t *testing.T) {
	release := make(chan struct{})
	r := NewRefill(0, time.Nanosecond, func(ctx context.Context) (int64, bool, error) {
		<-release
		return 10, false, nil
	})
	time.Sleep(time.Millisecond)
	var got atomic.Int64
	var wg sync.WaitGroup
	started := make(chan struct{}, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started <- struct{}{}
			if ok, _ := r.Take(context.Background()); ok {
				got.Add(1)
			}
		}()
	}
	for i := 0; i < 10; i++ {
		<-started
	}
	time.Sleep(50 * time.Millisecond) // let every buyer find the reload running
	close(release)
	wg.Wait()
	if got.Load() != 10 {
		t.Fatalf("%d of 10 buyers got a unit from a reload of 10", got.Load())
	}
}

// Invariant: Dry is true exactly when Take would take nothing without a
// reload — empty and reloaded within the interval, or gone — and false once
// the interval has passed, so a Take then reloads and finds returned units.
func TestRefillDryMatchesTake(t *testing.T) {
	var reloads atomic.Int64
	back := atomic.Int64{} // units the authority will hand out at the next reload
	r := NewRefill(1, 40*time.Millisecond, func(ctx context.Context) (int64, bool, error) {
		reloads.Add(1)
		return back.Swap(0), false, nil
	})
	if r.Dry() {
		t.Fatal("dry while holding a unit")
	}
	if ok, _ := r.Take(context.Background()); !ok {
		t.Fatal("the one unit was not taken")
	}
	if !r.Dry() {
		t.Fatal("not dry right after the last unit, within the interval")
	}
	if ok, _ := r.Take(context.Background()); ok || reloads.Load() != 0 {
		t.Fatalf("Take within the interval: took %v after %d reloads, want nothing and no reload", ok, reloads.Load())
	}
	back.Store(2) // a cancel gives two units back
	time.Sleep(50 * time.Millisecond)
	if r.Dry() {
		t.Fatal("dry after the interval: the returned units would never be seen")
	}
	if ok, _ := r.Take(context.Background()); !ok || reloads.Load() != 1 {
		t.Fatalf("Take after the interval: took %v after %d reloads, want a unit from one reload", ok, reloads.Load())
	}
	r.MarkGone()
	time.Sleep(50 * time.Millisecond)
	if !r.Dry() {
		t.Fatal("a gone item is not dry")
	}
}
