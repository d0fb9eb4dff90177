package stock

import (
	"context"
	"sync/atomic"
	"time"
)

// Refill is a Share that reloads itself from the global authority when it
// runs dry, at most once per interval. Tickets (one per sale) and red
// envelopes (one per envelope) both sell through it, so an item that is gone
// costs each node at most 1/interval Redis reads a second however many
// people keep asking, and everything else is answered from memory.
//
// Refill is safe for concurrent use. The embedded Share is the allowance
// itself; callers Give back units they took but could not use.
type Refill struct {
	*Share
	interval time.Duration
	reload   ReloadFunc
	last     atomic.Int64                  // unix nanos of the last reload attempt
	gone     atomic.Bool                   // the authority no longer knows the item
	inflight atomic.Pointer[chan struct{}] // closed when the running reload ends
}

// ReloadFunc reads the item from the authority and returns the allowance the
// node may now hold. gone reports that the item no longer exists; the
// allowance then stays 0 for good.
type ReloadFunc func(ctx context.Context) (units int64, gone bool, err error)

// NewRefill returns a Refill holding units, reloading through reload at most
// once per interval. The first reload may happen one interval from now.
func NewRefill(units int64, interval time.Duration, reload ReloadFunc) *Refill {
	r := &Refill{Share: NewShare(units), interval: interval, reload: reload}
	r.last.Store(time.Now().UnixNano())
	return r
}

// Take takes one unit, reloading first when the share is empty and the last
// reload is older than the interval. It reports whether a unit was taken,
// and the reload error (the caller logs it; the answer is "none left").
//
// Buyers who find the share empty while a reload is running wait for it
// (bounded by the reload's own timeout) rather than hear a false "sold out":
// after units come back, the first buyer's reload would otherwise leave
// everyone who arrived during that round trip empty-handed.
func (r *Refill) Take(ctx context.Context) (bool, error) {
	if r.TryTake() {
		return true, nil
	}
	if r.gone.Load() {
		return false, nil
	}
	if ch := r.inflight.Load(); ch != nil {
		select {
		case <-*ch:
			return r.TryTake(), nil
		case <-ctx.Done():
			return false, nil
		}
	}
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(r.interval) || !r.last.CompareAndSwap(last, now) {
		return false, nil
	}
	ch := make(chan struct{})
	r.inflight.Store(&ch)
	err := r.Reload(ctx)
	r.inflight.Store(nil)
	close(ch)
	if err != nil {
		return false, err
	}
	return r.TryTake(), nil
}

// Dry reports whether Take would take nothing right now without asking the
// authority: the allowance is empty and the item is gone, or its last reload
// is younger than the interval and none is running. It changes nothing, so a
// caller can answer "none left" before doing any other work for a request;
// once the interval has passed Dry is false and the next Take reloads, so
// units that come back are seen as soon as they would be through Take.
func (r *Refill) Dry() bool { return r.DryAt(time.Now().UnixNano()) }

// DryAt is Dry at now (Unix nanoseconds), for a caller that has read the
// clock already.
func (r *Refill) DryAt(now int64) bool {
	if r.Left() > 0 {
		return false
	}
	if r.gone.Load() {
		return true
	}
	if r.inflight.Load() != nil {
		return false // Take would wait for the running reload
	}
	return now-r.last.Load() < int64(r.interval)
}

// Reload sets the allowance from the authority now, whatever the interval.
func (r *Refill) Reload(ctx context.Context) error {
	units, gone, err := r.reload(ctx)
	if err != nil {
		return err
	}
	if gone {
		r.MarkGone()
		return nil
	}
	r.Set(units)
	return nil
}

// MarkGone records that the authority no longer knows the item: the
// allowance drops to 0 and is never reloaded.
func (r *Refill) MarkGone() {
	r.gone.Store(true)
	r.Set(0)
}

// Gone reports whether MarkGone was called.
func (r *Refill) Gone() bool { return r.gone.Load() }

// Verdict is what an item-level answer of a product's script (no result per
// request) means for the local allowance of the n units the batch had taken.
type Verdict int

// Verdicts of an item-level answer.
const (
	GiveBack Verdict = iota // not decided (not started, written off): the units go back
	NoItem                  // the authority does not know the item: it is gone
	Closed                  // ended, expired: nothing more to hand out
)

// Refuse applies an item-level verdict to the allowance of a batch of n.
func (r *Refill) Refuse(v Verdict, n int) {
	switch v {
	case GiveBack:
		r.Give(int64(n))
	case NoItem:
		r.MarkGone()
	case Closed:
		r.Set(0)
	}
}

// Settle adjusts the allowance after a batch's per-request results: when
// the authority said it ran out, the allowance is 0 whatever this node
// still held; otherwise the units the batch did not use go back.
func (r *Refill) Settle(exhausted bool, unused int64) {
	if exhausted {
		r.Set(0)
		return
	}
	r.Give(unused)
}

// FairShare is the local allowance a node takes of remaining units when live
// nodes share them: ceil(remaining / live) plus a buffer of
// max(bufferUnits, fair × bufferPercent / 100), so that the survivors of a
// dead node can still sell its part (no undersell) while Redis, the
// authority, prevents oversell.
func FairShare(remaining int64, live int, bufferUnits int64, bufferPercent float64) int64 {
	if remaining <= 0 {
		return 0
	}
	n := int64(max(live, 1))
	fair := (remaining + n - 1) / n
	buf := max(bufferUnits, int64(float64(fair)*bufferPercent/100+0.999999))
	return fair + buf
}

// Membership tells how many nodes share an item's units; membership.Members
// implements it. LiveNodes is called on the refresh path and must be cheap.
type Membership interface {
	LiveNodes() int
}

// SingleNode is the Membership of a node that serves alone.
type SingleNode struct{}

// LiveNodes implements Membership.
func (SingleNode) LiveNodes() int { return 1 }
