package stock

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// Invariant: the resolver holds at most its size in batches, counting the
// ones waiting for a retry while Redis is down, not only the queued ones;
// once Redis answers, every held batch is settled.
func TestInDoubtIsBoundedDuringAnOutage(t *testing.T) {
	var down atomic.Bool
	down.Store(true)
	var settled atomic.Int64
	d := NewInDoubt("test", func(context.Context, string, string) (int, error) {
		if down.Load() {
			return 0, errors.New("redis down")
		}
		settled.Add(1)
		return 1, nil
	}, time.Second, 4, slog.New(slog.DiscardHandler))
	defer d.Close()
	for i := 0; i < 100; i++ {
		d.Add("s", "b")
		time.Sleep(time.Millisecond) // let the resolver move each one to its retry list
	}
	if n := d.unsettled.Load(); n != 4 {
		t.Fatalf("%d batches held during the outage, want the size 4", n)
	}
	down.Store(false)
	for end := time.Now().Add(3 * time.Second); d.unsettled.Load() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%d batches unsettled after Redis came back", d.unsettled.Load())
		}
	}
	if settled.Load() != 4 {
		t.Fatalf("%d batches settled, want the 4 held", settled.Load())
	}
}
