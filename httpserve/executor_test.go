package httpserve

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Invariant: the nbio executor runs every job, never more than Workers at
// once, keeps exactly residentWorkers goroutines parked between jobs, and
// survives a job that panics past the handler's own recovery.
func TestExecutorBoundsReusesAndSurvivesPanics(t *testing.T) {
	const workers = 40
	e := newExecutor(workers)
	defer e.stop()

	var running, peak, ran atomic.Int32
	release := make(chan struct{})
	var wg sync.WaitGroup
	job := func() {
		defer wg.Done()
		n := running.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		running.Add(-1)
		ran.Add(1)
	}
	const jobs = 100
	wg.Add(jobs)
	go func() {
		for range jobs {
			e.run(job) // may block once every worker is busy and the overflow queue is in use
		}
	}()
	// Every slot fills: the residents plus the overflow pool.
	deadline := time.Now().Add(5 * time.Second)
	for running.Load() < workers-1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if r := running.Load(); r < workers-1 {
		t.Fatalf("%d jobs running at once, want %d (residents + overflow)", r, workers-1)
	}
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	if ran.Load() != jobs {
		t.Fatalf("ran %d jobs, want %d", ran.Load(), jobs)
	}
	if p := peak.Load(); p > workers {
		t.Fatalf("%d jobs ran at once, more than Workers=%d", p, workers)
	}
	if r := e.resident.Load(); r != residentWorkers {
		t.Fatalf("%d resident workers, want %d", r, residentWorkers)
	}

	// A panic ends its job only; the resident workers keep serving.
	done := make(chan struct{})
	e.run(func() { panic("boom") })
	for range 2 * residentWorkers {
		wg.Add(1)
		e.run(func() { wg.Done() })
	}
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("jobs after a panic never ran")
	}
	if r := e.resident.Load(); r != residentWorkers {
		t.Fatalf("%d resident workers after a panic, want %d", r, residentWorkers)
	}
}
