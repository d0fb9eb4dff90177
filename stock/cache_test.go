package stock

import (
	"errors"
	"sync"
	"testing"
)

// Invariant: however many requests load one item at once, all end up with
// the same state, and a full cache asks for room before growing.
func TestCacheOneStatePerItem(t *testing.T) {
	c := NewCache[*int](2)
	var wg sync.WaitGroup
	got := make([]*int, 50)
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if v, ok := c.Get("a"); ok {
				got[i] = v
				return
			}
			mine := new(int)
			got[i], _, _ = c.Put("a", mine, nil)
		}(i)
	}
	wg.Wait()
	for _, v := range got {
		if v != got[0] {
			t.Fatal("two states for one item")
		}
	}
	c.Put("b", new(int), nil)
	refuse := errors.New("full")
	if _, ok, err := c.Put("c", new(int), func(map[string]*int) error { return refuse }); ok || !errors.Is(err, refuse) {
		t.Fatalf("full cache inserted (ok=%v err=%v)", ok, err)
	}
	if _, ok, err := c.Put("c", new(int), func(m map[string]*int) error { delete(m, "b"); return nil }); !ok || err != nil {
		t.Fatalf("room made but not inserted (ok=%v err=%v)", ok, err)
	}
	if _, ok := c.Get("b"); ok {
		t.Fatal("evicted item still cached")
	}
	if n := len(c.Drain()); n != 2 || len(c.Values()) != 0 {
		t.Fatalf("drained %d, %d left", n, len(c.Values()))
	}
}
