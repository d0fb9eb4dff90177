package admit

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a hand-driven monotonic clock.
type clock struct{ t atomic.Int64 }

func (c *clock) now() time.Duration      { return time.Duration(c.t.Load()) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d)) }

func TestCoDelControlLaw(t *testing.T) {
	q := codel{target: 5 * time.Millisecond, interval: 100 * time.Millisecond}
	ms := time.Millisecond
	// Below target: never drops.
	for i := 0; i < 10; i++ {
		q.observe(time.Duration(i)*ms, 4*ms)
		if q.dropNow(time.Duration(i) * ms) {
			t.Fatal("dropped under target")
		}
	}
	// Above target, but not yet for a whole interval.
	q.observe(10*ms, 20*ms)
	q.observe(109*ms, 20*ms)
	if q.dropping || q.dropNow(109*ms) {
		t.Fatal("dropping before an interval above target")
	}
	// A whole interval above target: one drop at once, the next 100ms/√2 later.
	q.observe(110*ms, 20*ms)
	if !q.dropping || !q.dropNow(110*ms) {
		t.Fatal("not dropping after an interval above target")
	}
	if q.dropNow(110 * ms) {
		t.Fatal("two drops at the same instant")
	}
	next := 110*ms + time.Duration(float64(100*ms)/1.4142135623730951)
	if q.dropNow(next - time.Microsecond) {
		t.Fatal("dropped before interval/sqrt(2)")
	}
	if !q.dropNow(next) {
		t.Fatal("no drop at interval/sqrt(2)")
	}
	// Drops get closer together: count grows.
	if q.count != 3 {
		t.Fatalf("count %d, want 3", q.count)
	}
	// The sojourn falls under target: shedding stops at once.
	q.observe(300*ms, 1*ms)
	if q.dropping || q.dropNow(400*ms) {
		t.Fatal("still dropping after the sojourn fell")
	}
	// Re-entering soon resumes near the previous rate (count - lastCount = 2).
	q.observe(310*ms, 20*ms)
	q.observe(410*ms, 20*ms)
	if !q.dropping || q.count != 2 {
		t.Fatalf("re-entry: dropping %v count %d, want count 2", q.dropping, q.count)
	}
}

// waitFor polls until cond holds (the waiters are real goroutines).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// park starts n requests that wait in line and reports each outcome on out.
func park(t *testing.T, c *Controller, n int, out chan<- bool) {
	t.Helper()
	before := c.Stats().Waiting
	for i := 0; i < n; i++ {
		go func() { out <- c.Acquire(context.Background()) }()
		waitFor(t, "a waiter in line", func() bool { return c.Stats().Waiting == before+i+1 })
	}
}

func TestLineWaitsInsteadOfRefusing(t *testing.T) {
	clk := &clock{}
	c := New(Config{Slots: 2, MaxWaiting: 100, Target: 5 * time.Millisecond, Interval: 100 * time.Millisecond,
		MaxWait: time.Hour, Now: clk.now})
	defer c.Close()
	ctx := context.Background()
	if !c.Acquire(ctx) || !c.Acquire(ctx) {
		t.Fatal("free slots refused")
	}
	out := make(chan bool, 10)
	park(t, c, 10, out) // a burst five times the slots waits; nobody is refused
	for i := 0; i < 10; i++ {
		clk.advance(time.Millisecond) // short sojourns: under target
		c.Release()
		if !<-out {
			t.Fatalf("waiter %d refused", i)
		}
	}
	c.Release()
	c.Release()
	st := c.Stats()
	if st.Admitted != 12 || st.Waited != 10 || st.InUse != 0 || st.Waiting != 0 || st.Refused != [nReasons]int64{} {
		t.Fatalf("stats %+v", st)
	}
}

func TestShedsNewestUnderStandingQueue(t *testing.T) {
	clk := &clock{}
	c := New(Config{Slots: 1, MaxWaiting: 100, Target: 5 * time.Millisecond, Interval: 100 * time.Millisecond,
		MaxWait: time.Hour, Shed: ShedNewest, Now: clk.now})
	defer c.Close()
	ctx := context.Background()
	c.Acquire(ctx)
	out := make(chan bool, 100)
	park(t, c, 3, out)
	// Each one leaves the line after 50 ms (over target) for 150 ms.
	for i := 0; i < 3; i++ {
		clk.advance(50 * time.Millisecond)
		c.Release()
		if !<-out {
			t.Fatal("waiter refused before the control law started")
		}
		if i < 2 { // the third release starts the shedding (checked below)
			park(t, c, 1, out)
		}
	}
	if !c.Stats().Dropping {
		t.Fatal("not dropping after 150 ms above target")
	}
	// Now the arriving request is refused at the door, without waiting...
	if c.Acquire(ctx) {
		t.Fatal("arrival admitted while a shed was due")
	}
	// ...but only one per control-law step: the next arrival waits.
	park(t, c, 1, out)
	if got := c.Stats().Refused[ReasonCoDel]; got != 1 {
		t.Fatalf("codel refusals %d, want 1", got)
	}
	// The line drains (three waiters): the last one's short sojourn ends the shedding.
	for i := 0; i < 3; i++ {
		clk.advance(time.Millisecond)
		c.Release()
		if !<-out {
			t.Fatal("a waiter in line was refused")
		}
	}
	if c.Stats().Dropping {
		t.Fatal("still dropping after the sojourn fell under target")
	}
	c.Release()
}

func TestShedsOldestAndServesNewestFirst(t *testing.T) {
	clk := &clock{}
	c := New(Config{Slots: 1, MaxWaiting: 100, Target: 5 * time.Millisecond, Interval: 100 * time.Millisecond,
		MaxWait: time.Hour, Shed: ShedOldest, LIFO: true, Now: clk.now})
	defer c.Close()
	ctx := context.Background()
	c.Acquire(ctx)
	first := make(chan bool, 1)
	park(t, c, 1, first)
	clk.advance(50 * time.Millisecond)
	c.Release() // sojourn 50ms: above target from now on
	<-first
	// Three waiters in arrival order a, b, c; 101 ms later the queue has
	// stood above target for an interval.
	a, b, cc := make(chan bool, 1), make(chan bool, 1), make(chan bool, 1)
	park(t, c, 1, a)
	park(t, c, 1, b)
	park(t, c, 1, cc)
	clk.advance(101 * time.Millisecond)
	c.Release()
	// The first pop (FIFO: not yet dropping) is a, and observing it starts
	// dropping: a is shed (head drop), and from now on the newest (c) is served.
	if <-a {
		t.Fatal("oldest waiter admitted, want it shed")
	}
	if !<-cc {
		t.Fatal("newest waiter refused, want it served first (adaptive LIFO)")
	}
	if c.Stats().Waiting != 1 {
		t.Fatal("b should still be waiting")
	}
	c.Close()
	if <-b {
		t.Fatal("waiter admitted by Close")
	}
}

func TestNobodyWaitsPastMaxWait(t *testing.T) {
	clk := &clock{}
	c := New(Config{Slots: 1, MaxWaiting: 100, MaxWait: 200 * time.Millisecond, Now: clk.now})
	defer c.Close()
	ctx := context.Background()
	c.Acquire(ctx)
	old, young := make(chan bool, 1), make(chan bool, 1)
	park(t, c, 1, old)
	clk.advance(150 * time.Millisecond)
	park(t, c, 1, young)
	clk.advance(51 * time.Millisecond)
	// No slot frees (a stuck dependency): the sweeper still refuses the old one.
	c.Sweep()
	if <-old {
		t.Fatal("waiter past MaxWait admitted")
	}
	if c.Stats().Waiting != 1 {
		t.Fatal("the young waiter was refused too")
	}
	clk.advance(time.Millisecond)
	c.Release()
	if !<-young {
		t.Fatal("young waiter refused")
	}
	c.Release()
	if got := c.Stats().Refused[ReasonDeadline]; got != 1 {
		t.Fatalf("deadline refusals %d, want 1", got)
	}
}

func TestFullLineAndNoLine(t *testing.T) {
	c := New(Config{Slots: 1, MaxWaiting: 0})
	defer c.Close()
	ctx := context.Background()
	if !c.Acquire(ctx) {
		t.Fatal("free slot refused")
	}
	if c.Acquire(ctx) {
		t.Fatal("MaxWaiting 0 must behave as a plain in-flight cap")
	}
	c.Release()
	if got := c.Stats().Refused[ReasonFull]; got != 1 {
		t.Fatalf("full refusals %d", got)
	}
}

func TestAbandonedWaiterLeavesNoSlotBehind(t *testing.T) {
	c := New(Config{Slots: 1, MaxWaiting: 10, MaxWait: time.Hour})
	defer c.Close()
	c.Acquire(context.Background())
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan bool, 1)
	go func() { got <- c.Acquire(ctx) }()
	waitFor(t, "a waiter", func() bool { return c.Stats().Waiting == 1 })
	cancel()
	if <-got {
		t.Fatal("cancelled waiter admitted")
	}
	c.Release() // skips the abandoned waiter: the slot is free again
	if st := c.Stats(); st.InUse != 0 || st.Waiting != 0 || st.Refused[ReasonGone] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Invariant: however requests race, slots in use never exceed Slots and
// every admitted request releases exactly one slot, so all slots come back.
func TestConcurrentSlotsBalance(t *testing.T) {
	const slots = 4
	c := New(Config{Slots: slots, MaxWaiting: 64, Target: time.Millisecond, Interval: 5 * time.Millisecond,
		MaxWait: 50 * time.Millisecond, LIFO: true, Shed: ShedOldest})
	defer c.Close()
	var inUse, peak, ok, no atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				if !c.Acquire(context.Background()) {
					no.Add(1)
					continue
				}
				n := inUse.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				time.Sleep(10 * time.Microsecond)
				inUse.Add(-1)
				ok.Add(1)
				c.Release()
			}
		}()
	}
	wg.Wait()
	st := c.Stats()
	if peak.Load() > slots || st.InUse != 0 || st.Waiting != 0 || ok.Load()+no.Load() != 32*200 || st.Admitted != ok.Load() {
		t.Fatalf("peak %d ok %d no %d stats %+v", peak.Load(), ok.Load(), no.Load(), st)
	}
}

func TestAcquireAllocatesNothing(t *testing.T) {
	c := New(Config{Slots: 1, MaxWaiting: 0})
	defer c.Close()
	ctx := context.Background()
	n := testing.AllocsPerRun(1000, func() {
		c.Acquire(ctx)
		c.Acquire(ctx) // refused: line full
		c.Release()
	})
	if n != 0 {
		t.Fatalf("%.1f allocations per admit+refuse", n)
	}
}

// Invariant: a request's wait before the line (AcquireWaited) counts as
// time in line: one past MaxWait is refused at once and takes no slot; with
// slots free, requests that all waited over target for an interval make
// the control law shed, and fresh ones (no prior wait) end the shedding.
func TestWaitBeforeTheLineCounts(t *testing.T) {
	clk := &clock{}
	c := New(Config{Slots: 4, MaxWaiting: 100, Target: 5 * time.Millisecond, Interval: 100 * time.Millisecond,
		MaxWait: time.Second, Now: clk.now})
	defer c.Close()
	ctx := context.Background()
	if c.AcquireWaited(ctx, 1001*time.Millisecond) {
		t.Fatal("a request that waited past MaxWait was admitted")
	}
	if st := c.Stats(); st.Refused[ReasonDeadline] != 1 || st.InUse != 0 {
		t.Fatalf("stats %+v: want one deadline refusal and no slot taken", st)
	}
	// Slots are free, but every arrival waited 50 ms in front of the line.
	admitted, shed := 0, 0
	for i := 0; i < 30; i++ {
		clk.advance(10 * time.Millisecond)
		if c.AcquireWaited(ctx, 50*time.Millisecond) {
			admitted++
			c.Release()
		} else {
			shed++
		}
	}
	if shed == 0 || admitted == 0 || c.Stats().Refused[ReasonCoDel] != int64(shed) || !c.Stats().Dropping {
		t.Fatalf("admitted %d shed %d stats %+v: want the control law shedding some of a standing queue", admitted, shed, c.Stats())
	}
	clk.advance(10 * time.Millisecond)
	if !c.Acquire(ctx) || c.Stats().Dropping {
		t.Fatal("a fresh arrival was refused or left the control law shedding")
	}
	c.Release()
	// In line, the earlier wait counts toward MaxWait too.
	for i := 0; i < 4; i++ {
		c.Acquire(ctx)
	}
	late := make(chan bool, 1)
	go func() { late <- c.AcquireWaited(ctx, 900*time.Millisecond) }()
	for c.Stats().Waiting != 1 {
		time.Sleep(time.Millisecond)
	}
	clk.advance(101 * time.Millisecond)
	c.Release()
	if <-late {
		t.Fatal("a waiter past MaxWait counting its earlier wait was admitted")
	}
	for i := 0; i < 3; i++ {
		c.Release()
	}
}
