// Package limit holds token buckets per key (a user id, a client IP) in
// bounded memory: a fixed number of shards, each an LRU of at most
// MaxKeys/shards buckets. When a shard is full its least recently used
// bucket is dropped; a dropped key starts again with a full burst, which
// only ever favours the client, and only one that has been quiet longest.
package limit

import (
	"container/list"
	"hash/maphash"
	"math"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const shards = 64

// Keyed is a set of token buckets, one per key, each refilling at Rate per
// second up to Burst. It is safe for concurrent use. A nil *Keyed allows
// everything (the limit is off).
type Keyed struct {
	rate     rate.Limit
	burst    int
	perShard int
	seed     maphash.Seed
	shards   [shards]shard
	// RetryAfter is the Retry-After value to send with a refusal: the
	// seconds one token takes to come back, at least 1. Rendered once.
	RetryAfter []string
}

type shard struct {
	mu  sync.Mutex
	m   map[string]*list.Element
	lru list.List // front: most recently used; values are *bucket
}

type bucket struct {
	key string
	lim *rate.Limiter
}

// New returns buckets of perSec tokens a second with burst, for at most
// maxKeys keys, or nil (no limit) when perSec <= 0.
func New(perSec float64, burst, maxKeys int) *Keyed {
	if perSec <= 0 {
		return nil
	}
	k := &Keyed{rate: rate.Limit(perSec), burst: max(burst, 1), perShard: max(maxKeys/shards, 1), seed: maphash.MakeSeed()}
	for i := range k.shards {
		k.shards[i].m = make(map[string]*list.Element)
	}
	k.RetryAfter = []string{strconv.Itoa(int(math.Max(1, math.Ceil(1/perSec))))}
	return k
}

// Allow takes one token from key's bucket and reports whether there was one.
func (k *Keyed) Allow(key string) bool {
	if k == nil {
		return true
	}
	return k.limiter(key).Allow()
}

// Exhausted reports whether key's bucket is empty, taking nothing: for
// limits on failures, checked before the work and charged (Allow) only
// when it fails.
func (k *Keyed) Exhausted(key string) bool {
	if k == nil {
		return false
	}
	return k.limiter(key).TokensAt(time.Now()) < 1
}

// Len returns how many keys are held.
func (k *Keyed) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

func (k *Keyed) limiter(key string) *rate.Limiter {
	s := &k.shards[maphash.String(k.seed, key)%shards]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		s.lru.MoveToFront(e)
		return e.Value.(*bucket).lim
	}
	if len(s.m) >= k.perShard {
		// Drop the coldest bucket: the shard never grows.
		e := s.lru.Back()
		delete(s.m, e.Value.(*bucket).key)
		s.lru.Remove(e)
	}
	b := &bucket{key: key, lim: rate.NewLimiter(k.rate, k.burst)}
	s.m[key] = s.lru.PushFront(b)
	return b.lim
}
