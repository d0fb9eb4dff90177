package stock

import "sync/atomic"

// Share is a node's in-memory allowance for one item: how many more units it
// may try to sell before it must ask Redis again. It is only an allowance —
// Redis decides every sale — so shares of all nodes may add up to more than
// the stock without any oversell, and a dead node's unused share strands
// nothing.
//
// A channel of capacity one is the lock (the 12306 design). It is held only
// for the in-memory check-and-decrement, never across network I/O. An atomic
// copy of the count lets the sold-out path answer without touching the lock.
// Share is safe for concurrent use; the zero value is not: use NewShare.
type Share struct {
	lock  chan struct{}
	left  int64        // guarded by lock
	avail atomic.Int64 // mirror of left, written under lock, read without it
}

// NewShare returns a share holding n units.
func NewShare(n int64) *Share {
	s := &Share{lock: make(chan struct{}, 1)}
	s.left = max(n, 0)
	s.avail.Store(s.left)
	return s
}

// TryTake takes one unit and reports whether there was one.
func (s *Share) TryTake() bool {
	if s.avail.Load() <= 0 {
		return false // sold out locally: no lock, no network
	}
	s.lock <- struct{}{}
	ok := s.left > 0
	if ok {
		s.left--
		s.avail.Store(s.left)
	}
	<-s.lock
	return ok
}

// Give returns n units taken earlier that were not sold.
func (s *Share) Give(n int64) {
	if n <= 0 {
		return
	}
	s.lock <- struct{}{}
	s.left += n
	s.avail.Store(s.left)
	<-s.lock
}

// Set replaces the allowance, e.g. after Redis reported sold out (0) or after
// a refresh from Redis's remaining stock.
func (s *Share) Set(n int64) {
	s.lock <- struct{}{}
	s.left = max(n, 0)
	s.avail.Store(s.left)
	<-s.lock
}

// Left returns the units left, without taking the lock.
func (s *Share) Left() int64 { return s.avail.Load() }

// Fill adds n units but never above limit: a pool released over time (the
// shake campaigns) tops its buckets up this way, so a bucket nobody draws
// from does not hoard what the clock released.
func (s *Share) Fill(n, limit int64) {
	if n <= 0 {
		return
	}
	s.lock <- struct{}{}
	if s.left < limit {
		s.left = min(s.left+n, limit)
		s.avail.Store(s.left)
	}
	<-s.lock
}
