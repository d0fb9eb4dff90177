package cluster

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// TreeCPU counts a child's CPU both while it runs and after it has exited
// and been waited for (then through the parent's cutime/cstime): the sum
// over a measurement must not drop what a server's worker spent just
// because the worker ended before the second reading.
func TestTreeCPUCountsChildrenRunningAndExited(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	self := os.Getpid()
	before := TreeCPU(self)
	// A child that burns about a second of CPU in a shell loop.
	child := exec.Command("sh", "-c", `i=0; while [ $i -lt 1000000 ]; do i=$((i+1)); done`)
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	// Wait (on a loaded box, as long as it takes) until the child has run
	// for a few ticks of its own, then the tree must count at least that.
	var childSoFar time.Duration
	for end := time.Now().Add(10 * time.Second); childSoFar < 30*time.Millisecond && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
		childSoFar = ProcCPU(child.Process.Pid)
	}
	running := TreeCPU(self) - before
	if err := child.Wait(); err != nil {
		t.Fatal(err)
	}
	spent := child.ProcessState.UserTime() + child.ProcessState.SystemTime()
	after := TreeCPU(self) - before
	// /proc counts in 10 ms ticks.
	const tick = 10 * time.Millisecond
	if childSoFar < 2*tick || running < childSoFar {
		t.Errorf("while the child ran: %v counted, want at least its own %v so far", running, childSoFar)
	}
	if after < spent-2*tick {
		t.Errorf("after the child exited: %v counted, want at least the %v it spent", after, spent)
	}
	if TreeCPU(-1) != 0 || TreeCPU(1<<30) != 0 {
		t.Error("TreeCPU of no process should be 0")
	}
}
