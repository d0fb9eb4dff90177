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
