package stock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
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

// Invariant: concurrent misses of one item share one build, and every
// request gets the state it built.
func TestCacheLoadSharesOneBuild(t *testing.T) {
	c := NewCache[*int](8)
	var builds atomic.Int64
	release := make(chan struct{})
	build := func(context.Context) (*int, error) {
		builds.Add(1)
		<-release
		return new(int), nil
	}
	var wg sync.WaitGroup
	got := make([]*int, 100)
	errs := make([]error, len(got))
	for i := range got {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			got[i], errs[i] = c.Load(context.Background(), "a", build, nil)
		}(i)
	}
	time.Sleep(50 * time.Millisecond) // let them all miss
	close(release)
	wg.Wait()
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds for one item, want 1", n)
	}
	for i := range got {
		if errs[i] != nil || got[i] == nil || got[i] != got[0] {
			t.Fatalf("request %d: %p %v, want the one state %p", i, got[i], errs[i], got[0])
		}
	}
}

// Invariant: however many different items are asked for at once, at most
// LoadsInFlight builds run (a flood of unknown ids cannot take the store's
// whole connection pool), a build's error is not cached, and a request
// that waited for a slot past its deadline is told overloaded.
func TestCacheLoadBoundsBuilds(t *testing.T) {
	c := NewCache[*int](1000)
	var running, most, builds atomic.Int64
	release := make(chan struct{})
	missing := errors.New("no such item")
	build := func(context.Context) (*int, error) {
		builds.Add(1)
		n := running.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		<-release
		running.Add(-1)
		return nil, missing
	}
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, errs[i] = c.Load(context.Background(), fmt.Sprint("unknown", i), build, nil)
		}(i)
	}
	for end := time.Now().Add(2 * time.Second); running.Load() < LoadsInFlight && time.Now().Before(end); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	if m := most.Load(); m != LoadsInFlight {
		t.Fatalf("%d builds ran at once, want exactly %d", m, LoadsInFlight)
	}
	// A request for another item while every slot is taken waits, and
	// gives up with its context.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	_, err := c.Load(ctx, "late", build, nil)
	cancel()
	if !errors.Is(err, ErrLoadBusy) || !errors.Is(err, context.DeadlineExceeded) || flashsale.ErrorCode(err) != flashsale.EOVERLOADED {
		t.Fatalf("load without a slot: %v, want ErrLoadBusy (overloaded) with the deadline", err)
	}
	close(release)
	wg.Wait()
	for i, err := range errs {
		if !errors.Is(err, missing) {
			t.Fatalf("request %d: %v, want the build's error", i, err)
		}
	}
	if m := most.Load(); m > LoadsInFlight {
		t.Fatalf("%d builds ran at once, want at most %d", m, LoadsInFlight)
	}
	before := builds.Load()
	if _, err := c.Load(context.Background(), "unknown0", build, nil); !errors.Is(err, missing) || builds.Load() != before+1 {
		t.Fatalf("a failed build was cached (err %v, %d builds)", err, builds.Load()-before)
	}
	if len(c.Values()) != 0 || len(c.flights) != 0 {
		t.Fatalf("%d states, %d flights left after failed builds", len(c.Values()), len(c.flights))
	}
}

// Invariant: when the request that builds an item leaves, one still
// waiting for the same item builds it again instead of being handed the
// leaver's cancellation.
func TestCacheLoadOutlivesTheBuilder(t *testing.T) {
	c := NewCache[*int](8)
	started := make(chan struct{}, 2)
	var builds atomic.Int64
	build := func(ctx context.Context) (*int, error) {
		if builds.Add(1) == 1 {
			started <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return new(int), nil
	}
	leaver, leave := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Load(leaver, "a", build, nil)
		first <- err
	}()
	<-started
	second := make(chan error, 1)
	var got *int
	go func() {
		var err error
		got, err = c.Load(context.Background(), "a", build, nil)
		second <- err
	}()
	time.Sleep(20 * time.Millisecond) // the second waits on the first's build
	leave()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("leaver: %v, want its own cancellation", err)
	}
	if err := <-second; err != nil || got == nil {
		t.Fatalf("the request that stayed: %p %v, want a state", got, err)
	}
	if n := builds.Load(); n != 2 {
		t.Fatalf("%d builds, want 2 (the leaver's and the one that stayed)", n)
	}
}
