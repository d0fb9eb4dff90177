package stock

import "sync"

// Cache holds a node's state per item (a sale, an envelope, a campaign),
// built on first use and shared by every request for that item. Callers
// load the item outside any lock and Put it; if another request put the same
// item meanwhile, Put returns that one, so every request of an item sees one
// state. Cache is safe for concurrent use; the zero value is not: use
// NewCache.
type Cache[T any] struct {
	mu  sync.RWMutex
	m   map[string]T
	max int
}

// NewCache returns a cache that calls its Put's room function whenever it
// already holds max items.
func NewCache[T any](max int) *Cache[T] {
	return &Cache[T]{m: map[string]T{}, max: max}
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
