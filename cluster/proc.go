package cluster

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one process the launcher started, as recorded in the state file so
// another `flashsale cluster` invocation can find, signal and restart it.
type Proc struct {
	Name string `json:"name"` // node1..nodeN, redis, broker, nginx
	Kind string `json:"kind"` // node, redis, broker, nginx
	PID  int    `json:"pid"`
	// StartTicks is the process start time from /proc/<pid>/stat. A PID is
	// signalled only while it still names the same process, so a stale state
	// file can never make `down` kill an unrelated process that reused it.
	StartTicks uint64 `json:"start_ticks,omitempty"`
	Addr       string `json:"addr"`                // host:port it serves
	URL        string `json:"url,omitempty"`       // http URL for nodes and nginx
	AdminURL   string `json:"admin_url,omitempty"` // nodes: the admin listener (/metrics, pprof, /readyz details)
	Weight     int    `json:"weight,omitempty"`
	// Group is the node a process belongs to when several share its port
	// (cluster up --procs-per-node K > 1): "node1" for node1-p1..node1-pK.
	Group   string   `json:"group,omitempty"`
	Log     string   `json:"log"`                // stdout+stderr, appended across restarts
	StatLog string   `json:"stat_log,omitempty"` // nodes only
	Argv    []string `json:"argv"`               // argv[0] is the executable
	Env     []string `json:"env,omitempty"`      // added to the launcher's environment
	Dir     string   `json:"dir"`                // working directory
	User    string   `json:"user,omitempty"`     // run as this user when the launcher is root (postgres)
}

// ownedProc is a child this process started and reaps.
type ownedProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// spawn starts p in its own session (so it outlives the launcher and a
// terminal's SIGHUP), with stdout and stderr appended to p.Log, and records
// its PID. The returned ownedProc reaps it.
func spawn(p *Proc) (*ownedProc, error) {
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", p.Name, err)
	}
	defer logf.Close() // the child holds its own descriptor
	fmt.Fprintf(logf, "=== %s flashsale cluster: starting %s: %s\n", time.Now().Format(time.RFC3339), p.Name, strings.Join(p.Argv, " "))
	cmd := exec.Command(p.Argv[0], p.Argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Dir = p.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cred, err := credential(p)
	if err != nil {
		return nil, err
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.PID = cmd.Process.Pid
	p.StartTicks = startTicks(p.PID)
	op := &ownedProc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(op.done) }()
	return op, nil
}

// statFields returns the fields of a /proc/PID/stat line that follow the
// command name, so f[0] is field 3 (state). The command name (field 2) may
// hold spaces and parentheses; the fields after the last ')' are plain.
func statFields(stat string) ([]string, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return nil, errors.New("malformed /proc stat")
	}
	return strings.Fields(stat[i+1:]), nil
}

// procStat returns the state letter and start time of pid from /proc.
func procStat(pid int) (state byte, ticks uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	f, err := statFields(string(b))
	if err != nil {
		return 0, 0, err
	}
	if len(f) < 20 {
		return 0, 0, errors.New("short stat")
	}
	ticks, err = strconv.ParseUint(f[19], 10, 64) // starttime, field 22
	return f[0][0], ticks, err
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times. It is 100 on
// every Linux build Go supports (the kernel converts for /proc whatever its
// internal HZ), so it is fixed here rather than asked of sysconf via cgo.
const clockTicks = 100

// ParseProcCPU returns utime+stime (fields 14 and 15) of a /proc/PID/stat line.
func ParseProcCPU(stat string) (time.Duration, error) {
	f, err := statFields(stat)
	if err != nil {
		return 0, err
	}
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	utime, err := strconv.ParseUint(f[14-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	stime, err := strconv.ParseUint(f[15-3], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return time.Duration(utime+stime) * (time.Second / clockTicks), nil
}

// ProcCPU returns pid's user+system CPU time so far (all its threads), or 0
// when it cannot be read (off Linux, or the process is gone).
func ProcCPU(pid int) time.Duration {
	d, _ := ParseProcCPU(readStat(pid))
	return d
}

// readStat returns pid's /proc/PID/stat line, "" when there is none.
func readStat(pid int) string {
	if pid <= 0 {
		return ""
	}
	b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return string(b)
}

func startTicks(pid int) uint64 {
	_, t, _ := procStat(pid)
	return t
}

// pidAlive reports whether pid is a running (not zombie) process that
// started at ticks (when ticks is known).
func pidAlive(pid int, ticks uint64) bool {
	if pid <= 0 {
		return false
	}
	state, t, err := procStat(pid)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false
		}
		// No usable /proc: fall back to signal 0.
		return syscall.Kill(pid, 0) == nil
	}
	if state == 'Z' || state == 'X' {
		return false
	}
	return ticks == 0 || t == ticks
}

// signalProc sends sig to p's process group (p leads its own session, so
// that includes nginx's workers or a Redis rewrite child), falling back to
// the process alone.
func signalProc(p *Proc, sig syscall.Signal) error {
	if err := syscall.Kill(-p.PID, sig); err == nil {
		return nil
	}
	if err := syscall.Kill(p.PID, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s (pid %d): %w", p.Name, p.PID, err)
	}
	return nil
}

// TreeCPU returns the CPU time of pid and its children: pid's own user+system
// time, what its exited and waited-for children spent (cutime+cstime), and
// the user+system time of each child still running. A server that forks a
// process per connection (PostgreSQL) spends most of its time in those
// children, which ProcCPU alone does not see; counting the exited ones too
// keeps the sum from falling when a child ends between two readings.
// Grandchildren still running are not counted. 0 off Linux.
func TreeCPU(pid int) time.Duration {
	f, err := statFields(readStat(pid))
	if err != nil || len(f) < 15 {
		return 0
	}
	var ticks uint64
	for _, i := range []int{14, 15, 16, 17} { // utime, stime, cutime, cstime
		n, _ := strconv.ParseUint(f[i-3], 10, 64)
		ticks += n
	}
	total := time.Duration(ticks) * (time.Second / clockTicks)
	ents, _ := os.ReadDir("/proc")
	parent := strconv.Itoa(pid)
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil || child == pid {
			continue
		}
		st := readStat(child)                                                     // "" when gone since the listing
		if f, err := statFields(st); err == nil && len(f) > 1 && f[1] == parent { // ppid, field 4
			d, _ := ParseProcCPU(st)
			total += d
		}
	}
	return total
}
