package admit

import (
	"context"
	"testing"
	"time"
)

// With the real clock and no slot freeing, every waiter is refused about
// MaxWait after it arrived (the sweeper), not when a slot frees.
func TestSweeperRefusesOnTime(t *testing.T) {
	c := New(Config{Slots: 1, MaxWaiting: 100, MaxWait: 100 * time.Millisecond})
	defer c.Close()
	c.Acquire(context.Background())
	defer c.Release()
	start := time.Now()
	out := make(chan time.Duration, 50)
	for i := 0; i < 50; i++ {
		go func() {
			if c.Acquire(context.Background()) {
				t.Error("admitted without a free slot")
			}
			out <- time.Since(start)
		}()
	}
	var slowest time.Duration
	for i := 0; i < 50; i++ {
		slowest = max(slowest, <-out)
	}
	if slowest > 2*time.Second {
		t.Fatalf("slowest refusal after %v, want about 100ms", slowest)
	}
	t.Logf("slowest refusal after %v", slowest)
}

// The sweeper sleeps while the line is empty; a line that forms again
// later must wake it, so those waiters too are refused about MaxWait
// after they arrived, round after round.
func TestSweeperWakesForALaterLine(t *testing.T) {
	c := New(Config{Slots: 1, MaxWaiting: 100, MaxWait: 50 * time.Millisecond})
	defer c.Close()
	c.Acquire(context.Background())
	defer c.Release()
	for round := 0; round < 3; round++ {
		time.Sleep(100 * time.Millisecond) // long enough for the sweeper to go to sleep
		start := time.Now()
		// A sweeper left asleep would leave this to the context (counted
		// as gone, not deadline).
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ok := c.Acquire(ctx)
		cancel()
		if ok {
			t.Fatal("admitted without a free slot")
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("round %d: refused after %v, want about 50ms", round, took)
		}
	}
	// Refused by the controller every time: for the wait (the sweeper),
	// or by the control law once rounds of 50 ms sojourns have made a
	// standing queue (timing under -race) — never left to the context.
	st := c.Stats()
	if got := st.Refused[ReasonDeadline] + st.Refused[ReasonCoDel]; got != 3 || st.Refused[ReasonGone] != 0 {
		t.Fatalf("refused %v (deadline %d + codel %d, gone %d), want 3 by the controller and none by the context",
			st.Refused, st.Refused[ReasonDeadline], st.Refused[ReasonCoDel], st.Refused[ReasonGone])
	}
}
