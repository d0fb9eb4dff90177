// Package admit decides, by time rather than by count, which requests a node
// works on: a fixed number of work slots, a waiting line in front of them,
// and a controlled-delay (CoDel) policy on the time requests spend in line.
//
// The line absorbs bursts: a waiting request costs a parked goroutine (a few
// KB), not CPU, and a fast refusal costs about as much CPU as a sale, so
// turning buyers away while the node could still serve them in time lowers
// goodput. The line is bounded by time: no request waits longer than MaxWait
// (its share of the request deadline), and once the sojourn time has stayed
// above Target for a whole Interval, the CoDel control law sheds requests at
// a slowly rising rate (Interval/√n apart) until the sojourn falls below
// Target again. MaxWaiting bounds memory only, far above what the deadline
// lets through.
//
// The package imports nothing from the domain; the clock is injectable so
// the controller is tested deterministically.
package admit

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Shed says which request the control law refuses when it is time to shed.
type Shed int

const (
	// ShedNewest refuses the arriving request at the door: the cheapest
	// refusal (no wait, no slot), and the ones already in line keep their place.
	ShedNewest Shed = iota
	// ShedOldest refuses the request at the head of the line when a slot
	// frees (the RFC 8289 head drop): the one closest to its deadline.
	ShedOldest
)

// ParseShed maps "newest" and "oldest" to a Shed.
func ParseShed(s string) (Shed, bool) {
	switch s {
	case "newest":
		return ShedNewest, true
	case "oldest":
		return ShedOldest, true
	}
	return 0, false
}

// Config tunes a Controller.
type Config struct {
	Slots      int           // requests worked on at once; the rest wait in line
	MaxWaiting int           // memory guard on the line; 0: no line (a plain in-flight cap)
	Target     time.Duration // acceptable standing sojourn in line
	Interval   time.Duration // how long the sojourn must stay above Target before shedding starts
	MaxWait    time.Duration // no request waits in line longer than this
	Shed       Shed
	// LIFO serves the newest waiter first while the controller is shedding
	// (adaptive LIFO): under a standing queue the newest request is the one
	// most likely still to be wanted, and the oldest reach MaxWait and are
	// refused instead of everyone being served late.
	LIFO bool
	// Now is the monotonic clock; nil uses the time since New.
	Now func() time.Duration
}

// Reason says why a request was refused.
type Reason int

// Refusal reasons, as counted by Stats.
const (
	ReasonFull     Reason = iota // the line was at MaxWaiting (or there is no line)
	ReasonCoDel                  // the control law shed it
	ReasonDeadline               // it waited MaxWait
	ReasonGone                   // its context ended while it waited
	nReasons
)

// Stats are a Controller's counters.
type Stats struct {
	Admitted int64
	Waited   int64 // admitted after waiting in line
	Refused  [nReasons]int64
	Waiting  int  // in line now
	Dropping bool // the control law is shedding
	InUse    int  // slots in use now
}

type waiter struct {
	enq   time.Duration
	ch    chan bool // capacity 1: true a slot was handed over, false refused
	state uint8
}

const (
	waiting uint8 = iota
	settled
	abandoned
)

// Controller admits requests. It is safe for concurrent use; create it with
// New and stop it with Close.
type Controller struct {
	cfg   Config
	now   func() time.Duration
	mu    sync.Mutex
	free  int
	line  ring
	codel codel
	pool  sync.Pool

	admitted, waited atomic.Int64
	refused          [nReasons]atomic.Int64

	stop chan struct{}
	done chan struct{}
	wake chan struct{} // cap 1: the line went from empty to not (wakes the sweeper)
	once sync.Once
}

// New returns a Controller and starts its sweeper, which refuses waiters
// that reached MaxWait even while no slot frees (a stuck dependency).
func New(cfg Config) *Controller {
	cfg.Slots = max(cfg.Slots, 1)
	cfg.MaxWaiting = max(cfg.MaxWaiting, 0)
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.Target <= 0 {
		cfg.Target = 5 * time.Millisecond
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = time.Second
	}
	c := &Controller{cfg: cfg, now: cfg.Now, free: cfg.Slots, line: newRing(cfg.MaxWaiting),
		codel: codel{target: cfg.Target, interval: cfg.Interval},
		stop:  make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	if c.now == nil {
		start := time.Now()
		c.now = func() time.Duration { return time.Since(start) }
	}
	c.pool.New = func() any { return &waiter{ch: make(chan bool, 1)} }
	go c.sweeper()
	return c
}

// Acquire takes a work slot, waiting in line if none is free. It reports
// false, without a slot, when the request is refused; a true must be paired
// with one Release. It allocates nothing in steady state.
func (c *Controller) Acquire(ctx context.Context) bool { return c.AcquireWaited(ctx, 0) }

// AcquireWaited is Acquire for a request that had already waited before it
// reached the line — in the node's socket and run queue, which a proxy's
// X-Request-Start reveals: that wait counts as time in line. A request that
// has already waited MaxWait is refused at once (ReasonDeadline), and its
// wait is what the control law sees even when a slot is free, so a queue
// standing in front of the line (every goroutine runnable, none yet here)
// makes it shed as a queue in the line would.
func (c *Controller) AcquireWaited(ctx context.Context, waited time.Duration) bool {
	waited = max(waited, 0)
	if waited > c.cfg.MaxWait {
		c.refused[ReasonDeadline].Add(1)
		return false
	}
	c.mu.Lock()
	now := c.now()
	if c.free > 0 && c.line.len() == 0 {
		c.codel.observe(now, waited) // an empty line: only the wait before it
		if waited > 0 && c.codel.dropNow(now) {
			c.mu.Unlock()
			c.refused[ReasonCoDel].Add(1)
			return false
		}
		c.free--
		c.mu.Unlock()
		c.admitted.Add(1)
		return true
	}
	if c.line.len() >= c.cfg.MaxWaiting {
		c.mu.Unlock()
		c.refused[ReasonFull].Add(1)
		return false
	}
	if c.cfg.Shed == ShedNewest && c.codel.dropNow(now) {
		c.mu.Unlock()
		c.refused[ReasonCoDel].Add(1)
		return false
	}
	w := c.pool.Get().(*waiter)
	w.enq, w.state = now-waited, waiting
	first := c.line.len() == 0
	c.line.pushBack(w)
	c.mu.Unlock()
	if first {
		select {
		case c.wake <- struct{}{}:
		default: // a wake is already pending
		}
	}

	select {
	case ok := <-w.ch:
		c.pool.Put(w)
		if ok {
			c.admitted.Add(1)
			c.waited.Add(1)
		}
		return ok
	case <-ctx.Done():
	}
	c.mu.Lock()
	if w.state == waiting {
		// Still in line: whoever pops it recycles it.
		w.state = abandoned
		c.mu.Unlock()
		c.refused[ReasonGone].Add(1)
		return false
	}
	c.mu.Unlock()
	ok := <-w.ch // settled meanwhile: the answer is in the channel
	c.pool.Put(w)
	if ok {
		c.admitted.Add(1)
		c.waited.Add(1)
	}
	return ok
}

// Release returns a slot taken by Acquire, handing it straight to a waiter
// when there is one.
func (c *Controller) Release() {
	c.mu.Lock()
	now := c.now()
	for c.line.len() > 0 {
		var w *waiter
		if c.cfg.LIFO && c.codel.dropping {
			w = c.line.popBack()
		} else {
			w = c.line.popFront()
		}
		if c.settleGone(w) {
			continue
		}
		soj := now - w.enq
		if soj > c.cfg.MaxWait {
			c.refuse(w, ReasonDeadline)
			continue
		}
		c.codel.observe(now, soj)
		if c.cfg.Shed == ShedOldest && c.codel.dropNow(now) {
			c.refuse(w, ReasonCoDel)
			continue
		}
		w.state = settled
		w.ch <- true
		c.mu.Unlock()
		return
	}
	c.free++
	c.mu.Unlock()
}

// settleGone recycles w if its requester stopped waiting. Called with mu held.
func (c *Controller) settleGone(w *waiter) bool {
	if w.state != abandoned {
		return false
	}
	c.pool.Put(w)
	return true
}

// refuse answers w false. Called with mu held.
func (c *Controller) refuse(w *waiter, r Reason) {
	// Counted before the answer: the refused request may read Stats the
	// moment it hears (TestSweeperWakesForALaterLine saw 2 of 3 in CI).
	c.refused[r].Add(1)
	w.state = settled
	w.ch <- false
}

// Sweep refuses every waiter that has been in line longer than MaxWait. The
// sweeper calls it every few milliseconds; tests call it directly.
func (c *Controller) Sweep() { c.sweep() }

// sweep is Sweep; it returns how many are still in line.
func (c *Controller) sweep() int {
	c.mu.Lock()
	now := c.now()
	// The line is in arrival order whichever end Release serves from, so
	// the expired waiters are at the front — all of them but one whose wait
	// before the line (AcquireWaited) makes it expire before those ahead
	// of it: that one is refused when it reaches the front.
	for c.line.len() > 0 {
		w := c.line.front()
		if w.state != abandoned && now-w.enq <= c.cfg.MaxWait {
			break
		}
		c.line.popFront()
		if !c.settleGone(w) {
			c.refuse(w, ReasonDeadline)
		}
	}
	n := c.line.len()
	c.mu.Unlock()
	return n
}

// sweeper sweeps every few milliseconds while someone is in line and
// sleeps while the line is empty (most of the time: a line forms only
// when every slot is taken), so an idle node does not wake 100 times a
// second for it — sixty-odd node processes on one box (a node group)
// paid that in CPU. The waiter that finds the line empty wakes it;
// the first one's deadline is MaxWait away, many ticks.
func (c *Controller) sweeper() {
	defer close(c.done)
	d := min(c.cfg.MaxWait/8, 10*time.Millisecond)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if c.sweep() > 0 {
				continue
			}
			t.Stop()
			select {
			case <-c.wake:
				// A wake sent while the line was being swept may be
				// stale; one extra sweep of an empty line is harmless.
				t.Reset(d)
			case <-c.stop:
				return
			}
		case <-c.stop:
			return
		}
	}
}

// Close stops the sweeper and refuses everyone still in line. Slots held
// stay valid until released.
func (c *Controller) Close() {
	c.once.Do(func() {
		close(c.stop)
		<-c.done
		c.mu.Lock()
		for c.line.len() > 0 {
			w := c.line.popFront()
			if !c.settleGone(w) {
				c.refuse(w, ReasonGone)
			}
		}
		c.mu.Unlock()
	})
}

// Stats returns the counters and the current state.
func (c *Controller) Stats() Stats {
	s := Stats{Admitted: c.admitted.Load(), Waited: c.waited.Load()}
	for i := range s.Refused {
		s.Refused[i] = c.refused[i].Load()
	}
	c.mu.Lock()
	s.Waiting, s.Dropping, s.InUse = c.line.len(), c.codel.dropping, c.cfg.Slots-c.free
	c.mu.Unlock()
	return s
}

// codel is the controlled-delay state machine of RFC 8289, fed with the
// sojourn of each request leaving the line (0 when it never waited).
type codel struct {
	target, interval time.Duration
	firstAbove       time.Duration // when the sojourn will have been above target for an interval; 0: it is not above
	dropping         bool
	dropNext         time.Duration
	count, lastCount int
}

// observe records that a request left the line at now after sojourn.
func (q *codel) observe(now, sojourn time.Duration) {
	if sojourn < q.target {
		q.firstAbove, q.dropping = 0, false
		return
	}
	if q.firstAbove == 0 {
		q.firstAbove = max(now+q.interval, 1)
		return
	}
	if q.dropping || now < q.firstAbove {
		return
	}
	q.dropping = true
	// Re-entering soon after the last episode resumes near its rate rather
	// than from one (RFC 8289 §5.5).
	if delta := q.count - q.lastCount; delta > 1 && now-q.dropNext < 16*q.interval {
		q.count = delta
	} else {
		q.count = 1
	}
	q.lastCount = q.count
	q.dropNext = now // the first shed is due at once
}

// dropNow reports whether one request should be shed at now, and if so
// schedules the next shed Interval/√count later.
func (q *codel) dropNow(now time.Duration) bool {
	if !q.dropping || now < q.dropNext {
		return false
	}
	q.count++
	q.dropNext += time.Duration(float64(q.interval) / math.Sqrt(float64(q.count)))
	if q.dropNext < now {
		// Sheds are spaced from now, not accumulated: a quiet stretch in
		// the line must not release a burst of them.
		q.dropNext = now
	}
	return true
}

// ring is a fixed-capacity double-ended queue of waiters in arrival order.
type ring struct {
	buf        []*waiter
	head, size int
}

func newRing(n int) ring { return ring{buf: make([]*waiter, n)} }

func (r *ring) len() int { return r.size }

func (r *ring) pushBack(w *waiter) {
	r.buf[(r.head+r.size)%len(r.buf)] = w
	r.size++
}

func (r *ring) front() *waiter { return r.buf[r.head] }

func (r *ring) popFront() *waiter {
	w := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.size--
	return w
}

func (r *ring) popBack() *waiter {
	i := (r.head + r.size - 1) % len(r.buf)
	w := r.buf[i]
	r.buf[i] = nil
	r.size--
	return w
}
