package stock

import (
	"context"
	"errors"
	"sync"

	"github.com/flashsale/flashsale"
)

// Cache holds a node's state per item (a sale, an envelope, a campaign),
// built on first use and shared by every request for that item. Callers
// load the item outside any lock and Put it; if another request put the same
// item meanwhile, Put returns that one, so every request of an item sees one
// state. Cache is safe for concurrent use; the zero value is not: use
// NewCache.
type Cache[T any] struct {
	mu      sync.RWMutex
	m       map[string]T
	max     int
	flights map[string]*flight[T] // Load's builds under way, one per id
	slots   chan struct{}         // a token per build running (LoadsInFlight)
}

// LoadsInFlight is how many items one cache builds at once (Load). Each
// build is a store read outside any batch; a flood of requests for ids that
// do not exist would otherwise take as many of the shared Redis pool's
// connections as it has requests in flight, and starve the batches that
// sell. Requests of an id being built wait for that build, not for a slot.
const LoadsInFlight = 8

// flight is one Load build; done closes when v and err are set.
type flight[T any] struct {
	done       chan struct{}
	v          T
	err        error
	leaderGone bool // the building request's context ended: others retry
}

// NewCache returns a cache that calls its Put's room function whenever it
// already holds max items.
func NewCache[T any](max int) *Cache[T] {
	return &Cache[T]{m: map[string]T{}, max: max, flights: map[string]*flight[T]{},
		slots: make(chan struct{}, LoadsInFlight)}
}

// Load returns the state of id, building it on a miss: build reads the item
// (its error, "no such item" included, goes to the caller and is not
// cached) and the state is Put with room. Concurrent misses of one id share
// one build, so a crowd's first requests of a new sale cost the store one
// read; at most LoadsInFlight builds of different ids run at once, the rest
// wait for a slot until ctx ends. If the request that builds leaves (its ctx
// ends), a request still waiting for the same id builds again rather than
// inherit an error that was not its own.
func (c *Cache[T]) Load(ctx context.Context, id string, build func(context.Context) (T, error), room func(map[string]T) error) (T, error) {
	for {
		c.mu.Lock()
		if v, ok := c.m[id]; ok {
			c.mu.Unlock()
			return v, nil
		}
		if f, ok := c.flights[id]; ok {
			c.mu.Unlock()
			select {
			case <-f.done:
			case <-ctx.Done():
				var zero T
				return zero, ctx.Err()
			}
			if f.leaderGone && ctx.Err() == nil {
				continue
			}
			return f.v, f.err
		}
		f := &flight[T]{done: make(chan struct{})}
		c.flights[id] = f
		c.mu.Unlock()

		f.v, f.err = c.build(ctx, id, build, room)
		f.leaderGone = f.err != nil && ctx.Err() != nil
		c.mu.Lock()
		delete(c.flights, id)
		c.mu.Unlock()
		close(f.done)
		return f.v, f.err
	}
}

// ErrLoadBusy is what Load reports when its ctx ended before a build slot
// freed (the context's error is joined to it): the node is loading as many
// items as it may, so the answer is 503 overloaded, retry shortly.
var ErrLoadBusy = flashsale.Errorf(flashsale.EOVERLOADED, "this node is loading too many items at once; retry shortly")

// build runs one Load build in a slot.
func (c *Cache[T]) build(ctx context.Context, id string, build func(context.Context) (T, error), room func(map[string]T) error) (T, error) {
	var zero T
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return zero, errors.Join(ErrLoadBusy, ctx.Err())
	}
	v, err := build(ctx)
	<-c.slots
	if err != nil {
		return zero, err
	}
	got, _, err := c.Put(id, v, room)
	return got, err
}

// Get returns the state of id, if cached.
func (c *Cache[T]) Get(id string) (T, bool) {
	c.mu.RLock()
	v, ok := c.m[id]
	c.mu.RUnlock()
	return v, ok
}

// Put caches v for id unless a state is already there, which it returns
// instead (inserted false). When the cache is full, room is called with the
// lock held and the map itself: it may delete entries, and its error refuses
// the insert.
func (c *Cache[T]) Put(id string, v T, room func(m map[string]T) error) (got T, inserted bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur, ok := c.m[id]; ok {
		return cur, false, nil
	}
	if len(c.m) >= c.max && room != nil {
		if err := room(c.m); err != nil {
			var zero T
			return zero, false, err
		}
	}
	c.m[id] = v
	return v, true, nil
}

// Delete drops id and returns what was cached.
func (c *Cache[T]) Delete(id string) (T, bool) {
	c.mu.Lock()
	v, ok := c.m[id]
	delete(c.m, id)
	c.mu.Unlock()
	return v, ok
}

// Values returns a snapshot of every cached state, for work done outside
// the lock (network calls).
func (c *Cache[T]) Values() []T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]T, 0, len(c.m))
	for _, v := range c.m {
		out = append(out, v)
	}
	return out
}

// Range calls fn for each item under the read lock; fn must be quick.
func (c *Cache[T]) Range(fn func(id string, v T)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for id, v := range c.m {
		fn(id, v)
	}
}

// Drain empties the cache and returns what it held.
func (c *Cache[T]) Drain() []T {
	c.mu.Lock()
	old := c.m
	c.m = map[string]T{}
	c.mu.Unlock()
	out := make([]T, 0, len(old))
	for _, v := range old {
		out = append(out, v)
	}
	return out
}
