package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// HoldOptions are bench --hold's: how many connections to open and hold
// before the shakes, and how.
type HoldOptions struct {
	// Conns is the connections to hold (--hold); 0: no hold phase.
	Conns int
	// Rate is connects per second over all workers (--hold-rate).
	Rate float64
	// PerProc is the most connections one worker process opens
	// (--hold-per-proc): under the 20,000 open-files limit with room.
	PerProc int
	// MemFloor stops the ramp when MemAvailable falls below it (--mem-floor).
	MemFloor int64
	// ServerPIDs are the server processes whose RSS is measured
	// (--server-pids); empty: every process listening on a target's port.
	ServerPIDs []int
	// FirstSource is the first loopback source address (--hold-source);
	// the next ones follow it.
	FirstSource string
	// Settle is how long the held connections sit idle before memory is
	// read and the shakes start (--hold-settle).
	Settle time.Duration
}

// HoldResult is the hold phase's numbers, for the summary and the JSON.
type HoldResult struct {
	Tried, Held, Failed, Lost int64
	HeldAfter                 int64 // still held once the shakes ended
	Workers, Sources          int
	RampSeconds               float64
	RampStopped               string // why the ramp stopped early, if it did

	ServerProcs            int
	ServerRSSBefore        int64 // bytes, summed over the server processes
	ServerRSSAfter         int64
	ClientRSSStart         int64 // the workers, ready but before connecting
	ClientRSSAfter         int64
	ClientPSSAfter         int64 // the workers' PSS: shared pages counted once
	MemBefore, MemAfter    meminfo
	SockMemBefore, SockMem int64 // /proc/net/sockstat TCP mem, pages
	Steps                  []HoldStep
	// CPU seconds the server and client processes used during the shakes.
	ServerCPU, ClientCPU float64
	ShakeSeconds         float64
	Won, WonCents        int64
	Unanswered           int64
	Nodes                map[string]int64
	LostReplies          map[string]int64 // unanswered requests by why
	Check                string
}

// HoldStep is one step of the shake profile over the held connections.
type HoldStep struct {
	QPS      int              `json:"qps"`
	Seconds  int              `json:"seconds"`
	Requests int64            `json:"requests"`
	RPS      float64          `json:"rps"`
	P50ms    float64          `json:"p50_ms"`
	P99ms    float64          `json:"p99_ms"`
	MaxMs    float64          `json:"max_ms"`
	Won      int64            `json:"won"`
	Cents    int64            `json:"cents"`
	Codes    map[string]int64 `json:"codes"`
}

// meminfo is the part of /proc/meminfo the report reads, in bytes.
type meminfo struct {
	Available, Slab, SUnreclaim, KernelStack, PageTables int64
}

func readMeminfo() meminfo {
	var m meminfo
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return m
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		v *= 1024
		switch f[0] {
		case "MemAvailable:":
			m.Available = v
		case "Slab:":
			m.Slab = v
		case "SUnreclaim:":
			m.SUnreclaim = v
		case "KernelStack:":
			m.KernelStack = v
		case "PageTables:":
			m.PageTables = v
		}
	}
	return m
}

// kernel is the kernel memory the report charges to connections: slab
// (sockets, dentries, inodes, epoll items), kernel stacks, page tables.
func (m meminfo) kernel() int64 { return m.Slab + m.KernelStack + m.PageTables }

// sockMemPages is /proc/net/sockstat's TCP "mem": pages held in TCP
// socket buffers.
func sockMemPages() int64 {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !strings.HasPrefix(line, "TCP:") {
			continue
		}
		f := strings.Fields(line)
		for i := 1; i+1 < len(f); i++ {
			if f[i] == "mem" {
				v, _ := strconv.ParseInt(f[i+1], 10, 64)
				return v
			}
		}
	}
	return 0
}

// rssOf is the summed VmRSS of pids, in bytes; a gone process counts 0.
func rssOf(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "VmRSS:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					v, _ := strconv.ParseInt(f[1], 10, 64)
					sum += v * 1024
				}
			}
		}
	}
	return sum
}

// cpuOf is the CPU time (user + system) pids have used, in seconds.
func cpuOf(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces) in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + st
		}
	}
	return float64(ticks) / 100 // USER_HZ is 100 on Linux
}

// pssOf is the summed proportional set size of pids, in bytes: pages
// shared between them (the binary's text, mapped by every worker) counted
// once over all of them rather than once per process as RSS does.
func pssOf(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "Pss:") {
				f := strings.Fields(line)
				if len(f) >= 2 {
					v, _ := strconv.ParseInt(f[1], 10, 64)
					sum += v * 1024
				}
			}
		}
	}
	return sum
}

// listenerPIDs finds the processes holding a listening TCP socket on one
// of ports (with SO_REUSEPORT, each member of a node group has its own):
// the sockets' inodes from /proc/net/tcp, then whose fd table has them.
// Run it before the ramp, while fd tables are small.
func listenerPIDs(ports map[uint16]bool) []int {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fs[1], ":")
			if !ok {
				continue
			}
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err == nil && ports[uint16(p)] {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	var pids []int
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		fds, err := os.ReadDir("/proc/" + p.Name() + "/fd")
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join("/proc", p.Name(), "fd", fd.Name())); err == nil && inodes[l] {
				pids = append(pids, pid)
				break
			}
		}
	}
	sort.Ints(pids)
	return pids
}

// The client ports: holdPortsPerSource of them from holdPortFirst on each
// loopback source, clear of the well-known ports below and close to the
// whole unprivileged range.
const (
	holdPortFirst      = 10_000
	holdPortsPerSource = 50_000
)

// holdWorker is the parent's handle on one worker process.
type holdWorker struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	mu    sync.Mutex
	last  holdMsg // the latest ramp/held counters
	held  bool
	res   *holdMsg
	ticks map[int]holdMsg
	err   string
}

func (w *holdWorker) send(v any) {
	b, _ := json.Marshal(v)
	_, _ = w.stdin.Write(append(b, '\n'))
}

// mainHold is bench --hold: spawn the workers, ramp, hold, measure, shake
// over the held connections, check, report.
func mainHold(ctx context.Context, o Options, api *API, out io.Writer) error {
	ho := o.Hold
	if ho.PerProc <= 0 {
		ho.PerProc = 18_000
	}
	if ho.Rate <= 0 {
		ho.Rate = 20_000
	}
	if ho.FirstSource == "" {
		ho.FirstSource = "127.0.0.2"
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.UserPrefix == "" {
		o.UserPrefix = "u"
	}
	if o.Scenario != ScenarioShake {
		return errors.New("--hold runs the shake scenario (--scenario shake)")
	}
	if o.Campaign == "" {
		return errors.New("shake needs a campaign id (--campaign)")
	}
	if o.SlotGroups <= 0 {
		o.SlotGroups = 20
	}
	if len(o.Steps) == 0 {
		return errors.New("--hold needs a step profile (--steps QPS:DURATION,...)")
	}
	var addrs []string
	ports := map[uint16]bool{}
	host := ""
	for _, t := range o.Targets {
		pt, err := parseTarget(t)
		if err != nil {
			return err
		}
		ap, err := resolve4(pt.addr)
		if err != nil {
			return fmt.Errorf("--hold target %s: %w", t, err)
		}
		addrs = append(addrs, ap.String())
		ports[ap.Port()] = true
		if host == "" {
			host = pt.host
		}
	}
	workers := (ho.Conns + ho.PerProc - 1) / ho.PerProc
	// The workers bind each connection to a port of their own choosing on
	// its source (holdload.Config.PortsPerSource): the kernel's ephemeral
	// port search slows to a crawl as a range fills, a known port costs one
	// bind. Ports holdPortFirst… on 127.0.0.2… are used by nobody else.
	nSources := (ho.Conns + holdPortsPerSource - 1) / holdPortsPerSource
	first, err := netip.ParseAddr(ho.FirstSource)
	if err != nil || !first.Is4() {
		return fmt.Errorf("--hold-source %q: not an IPv4 address", ho.FirstSource)
	}
	sources := make([]string, 0, nSources)
	for a := first; len(sources) < nSources; a = a.Next() {
		if !a.IsLoopback() {
			return fmt.Errorf("need %d loopback source addresses from %s; ran out of 127.0.0.0/8", nSources, ho.FirstSource)
		}
		sources = append(sources, a.String())
	}
	serverPIDs := ho.ServerPIDs
	if len(serverPIDs) == 0 {
		serverPIDs = listenerPIDs(ports)
	}

	r := &HoldResult{Workers: workers, Sources: nSources, ServerProcs: len(serverPIDs), Tried: int64(ho.Conns)}
	r.MemBefore, r.SockMemBefore = readMeminfo(), sockMemPages()
	r.ServerRSSBefore = rssOf(serverPIDs)
	fmt.Fprintf(o.Progress, "hold: %d connections to %s over %d worker processes from %d source addresses (%s …), %.0f connects/s; %d server processes (RSS %s)\n",
		ho.Conns, strings.Join(addrs, ","), workers, nSources, sources[0], ho.Rate, len(serverPIDs), human(r.ServerRSSBefore))

	exe, err := os.Executable()
	if err != nil {
		return err
	}
	tokenExp := time.Now().Add(2*time.Hour + stepsDuration(o.Steps)).Unix()
	ws := make([]*holdWorker, workers)
	connBase := 0
	var wg sync.WaitGroup
	defer func() {
		for _, w := range ws {
			if w != nil {
				w.send(holdCmd{Cmd: "exit"})
				_ = w.stdin.Close()
			}
		}
		wg.Wait()
	}()
	for i := range ws {
		n := ho.Conns / workers
		if i < ho.Conns%workers {
			n++
		}
		cmd := exec.Command(exe, "bench", "hold-worker")
		cmd.Stderr = o.Progress
		// The workers are single epoll loops: one P each keeps their
		// runtime (and RSS) small.
		cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			return err
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("start hold worker %d: %w", i, err)
		}
		w := &holdWorker{cmd: cmd, stdin: stdin, ticks: map[int]holdMsg{}}
		ws[i] = w
		w.send(holdSpec{Addrs: addrs, Sources: sources, PortsPerSource: holdPortsPerSource, FirstPort: holdPortFirst, Base: connBase, Conns: n, Rate: ho.Rate / float64(workers),
			MaxPending: max(64, 2048/workers), ConnectTimeout: 10 * time.Second, Timeout: o.Timeout, Host: host,
			Campaign: o.Campaign, AuthSecret: o.AuthSecret, UserPrefix: o.UserPrefix, TokenExp: tokenExp,
			Worker: i, Workers: workers})
		connBase += n
		wg.Add(1)
		go func() {
			defer wg.Done()
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for sc.Scan() {
				var m holdMsg
				if json.Unmarshal(sc.Bytes(), &m) != nil {
					continue
				}
				w.mu.Lock()
				switch m.T {
				case "ready":
					w.last.T = "ready"
				case "ramp":
					if !w.held { // a tick written just before "held" may arrive after it
						w.last = m
					}
				case "held":
					w.last, w.held = m, true
				case "tick":
					w.ticks[m.Sec] = m
				case "result":
					mm := m
					w.res = &mm
					if m.Error != "" {
						w.err = m.Error
					}
				}
				w.mu.Unlock()
			}
			_ = cmd.Wait()
			w.mu.Lock()
			if w.res == nil && w.err == "" {
				w.err = "worker exited early"
			}
			w.mu.Unlock()
		}()
	}
	all := func(f func(w *holdWorker) bool) bool {
		for _, w := range ws {
			w.mu.Lock()
			ok := f(w)
			w.mu.Unlock()
			if !ok {
				return false
			}
		}
		return true
	}
	workerErr := func() error {
		for i, w := range ws {
			w.mu.Lock()
			e := w.err
			w.mu.Unlock()
			if e != "" {
				return fmt.Errorf("hold worker %d: %s", i, e)
			}
		}
		return nil
	}
	// Ready: the workers run, their tables allocated, nothing connected.
	for !all(func(w *holdWorker) bool { return w.last.T != "" }) {
		if err := workerErr(); err != nil {
			return err
		}
		if !pause(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
	pids := make([]int, len(ws))
	for i, w := range ws {
		pids[i] = w.cmd.Process.Pid
	}
	r.ClientRSSStart = rssOf(pids)

	t0 := time.Now()
	for _, w := range ws {
		w.send(holdCmd{Cmd: "ramp"})
	}
	tick := time.NewTicker(time.Second)
	stopped := false
	for {
		if !pause(ctx, 100*time.Millisecond) {
			return ctx.Err()
		}
		if err := workerErr(); err != nil {
			return err
		}
		m := readMeminfo()
		if !stopped && ho.MemFloor > 0 && m.Available < ho.MemFloor {
			stopped = true
			r.RampStopped = fmt.Sprintf("MemAvailable %s fell under the floor %s", human(m.Available), human(ho.MemFloor))
			fmt.Fprintf(o.Progress, "hold: stopping the ramp: %s\n", r.RampStopped)
			for _, w := range ws {
				w.send(holdCmd{Cmd: "stop_ramp"})
			}
		}
		done := all(func(w *holdWorker) bool { return w.held })
		select {
		case <-tick.C:
		default:
			if !done {
				continue
			}
		}
		var est, fail, closed, pend int64
		all(func(w *holdWorker) bool {
			est, fail, closed, pend = est+w.last.Est, fail+w.last.Fail, closed+w.last.Closed, pend+w.last.Pending
			return true
		})
		used := r.MemBefore.Available - m.Available
		fmt.Fprintf(o.Progress, "%6.1fs established %-8d held %-8d failed %-6d lost %-6d connecting %-5d box memory used %s (available %s)\n",
			time.Since(t0).Seconds(), est, est-closed, fail, closed, pend, human(used), human(m.Available))
		if done {
			r.Held, r.Failed, r.Lost = est-closed, fail, closed
			break
		}
	}
	tick.Stop()
	r.RampSeconds = time.Since(t0).Seconds()
	if ho.Settle > 0 && !pause(ctx, ho.Settle) {
		return ctx.Err()
	}
	r.ServerRSSAfter, r.ClientRSSAfter, r.ClientPSSAfter = rssOf(serverPIDs), rssOf(pids), pssOf(pids)
	r.MemAfter, r.SockMem = readMeminfo(), sockMemPages()
	var held int64
	all(func(w *holdWorker) bool { held += w.last.Held; return true })
	fmt.Fprintf(o.Progress, "hold: %d connections held after %.1f s; server RSS %s → %s, clients %s, kernel +%s\n",
		r.Held, r.RampSeconds, human(r.ServerRSSBefore), human(r.ServerRSSAfter), human(r.ClientRSSAfter),
		human(r.MemAfter.kernel()-r.MemBefore.kernel()))

	// The shakes: one slot schedule shared by every worker.
	var base Baseline
	if o.Check {
		if base, err = api.ReadBaseline(ctx, &o.Config); err != nil {
			return fmt.Errorf("read books before the run: %w", err)
		}
	}
	users := o.Users
	slot0 := time.Now().Unix() + 2
	cmd := holdCmd{Cmd: "shake", Slot0: slot0, Groups: o.SlotGroups, Users: users}
	for si, st := range o.Steps {
		for k := 0; k < int(st.Duration/time.Second); k++ {
			sec := len(cmd.PerSec)
			gs := groupSize(users, o.SlotGroups, int((slot0+int64(sec))%int64(o.SlotGroups)))
			cmd.PerSec = append(cmd.PerSec, min(int64(st.QPS), gs))
			cmd.Steps = append(cmd.Steps, si)
		}
	}
	cpuS, cpuC := cpuOf(serverPIDs), cpuOf(pids)
	for _, w := range ws {
		w.send(cmd)
	}
	next := 0
	var wonTotal int64
	for {
		if !pause(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
		if err := workerErr(); err != nil {
			return err
		}
		for next < len(cmd.PerSec) && all(func(w *holdWorker) bool { _, ok := w.ticks[next]; return ok }) {
			var req, won, errs int64
			all(func(w *holdWorker) bool {
				t := w.ticks[next]
				req, won, errs = req+t.Req, won+t.Won, errs+t.Errs
				return true
			})
			wonTotal += won
			fmt.Fprintf(o.Progress, "%6ds %7d shakes (target %d)  won %-5d (total %d)  errors %d\n",
				next+1, req, cmd.PerSec[next], won, wonTotal, errs)
			next++
		}
		if all(func(w *holdWorker) bool { return w.res != nil }) {
			break
		}
	}
	r.ServerCPU, r.ClientCPU = cpuOf(serverPIDs)-cpuS, cpuOf(pids)-cpuC
	r.ShakeSeconds = float64(len(cmd.PerSec))
	// Merge the workers' results.
	r.Nodes, r.LostReplies = map[string]int64{}, map[string]int64{}
	tally := Tally{Scenario: ScenarioShake}
	hists := make([]*hdrhistogram.Histogram, len(o.Steps))
	r.Steps = make([]HoldStep, len(o.Steps))
	for i, st := range o.Steps {
		hists[i] = newHist()
		r.Steps[i] = HoldStep{QPS: st.QPS, Seconds: int(st.Duration / time.Second), Codes: map[string]int64{}}
	}
	for _, w := range ws {
		res := w.res
		r.HeldAfter += res.Held
		for k, v := range res.Nodes {
			r.Nodes[k] += v
		}
		for k, v := range res.Lost {
			r.LostReplies[k] += v
		}
		tally.Wins = append(tally.Wins, res.Wins...)
		for i, sr := range res.Steps {
			if i >= len(r.Steps) {
				break
			}
			s := &r.Steps[i]
			s.Requests += sr.Requests
			s.Cents += sr.Cents
			for k, v := range sr.Codes {
				s.Codes[k] += v
			}
			s.Won += sr.Codes["ok"]
			hists[i].Merge(histFromSparse(sr.Hist))
		}
	}
	for i := range r.Steps {
		s := &r.Steps[i]
		s.RPS = float64(s.Requests) / float64(max(1, s.Seconds))
		s.P50ms, s.P99ms, s.MaxMs = ms(hists[i].ValueAtQuantile(50)), ms(hists[i].ValueAtQuantile(99)), ms(hists[i].Max())
		tally.Requests += s.Requests
		tally.Successes += s.Won
		tally.Unanswered += s.Codes["transport"] + s.Codes["timeout"]
	}
	for _, w := range tally.Wins {
		tally.Cents += w.Cents
	}
	r.Won, r.WonCents, r.Unanswered = tally.Successes, tally.Cents, tally.Unanswered
	var checkErr error
	if o.Check {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		books, err := api.ReadBooks(cctx, &o.Config, tally, base)
		if err == nil {
			err = Check(cctx, tally, books)
		}
		cancel()
		if err != nil {
			checkErr = fmt.Errorf("check failed:\n%w", err)
			r.Check = "FAILED: " + strings.ReplaceAll(err.Error(), "\n", "; ")
		} else {
			r.Check = fmt.Sprintf("ok: %d envelopes / %d cents won by the clients = issued by the server (%d / %d)",
				tally.Successes, tally.Cents, books.IssuedCount, books.IssuedCents)
		}
	}
	r.Summary(out)
	if o.JSON != "" {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.JSON, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return checkErr
}

// Summary prints the hold run as the table of the README and RESULTS.md.
func (r *HoldResult) Summary(w io.Writer) {
	per := func(b int64, n int64) string {
		if n <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f KB", float64(b)/float64(n)/1024)
	}
	fmt.Fprintf(w, "hold      %d connections held of %d tried (%d failed, %d lost) in %.1f s over %d client processes and %d source addresses\n",
		r.Held, r.Tried, r.Failed, r.Lost, r.RampSeconds, r.Workers, r.Sources)
	if r.RampStopped != "" {
		fmt.Fprintf(w, "          ramp stopped early: %s\n", r.RampStopped)
	}
	fmt.Fprintf(w, "          %d still held after the shakes\n", r.HeldAfter)
	fmt.Fprintf(w, "server    %d processes, RSS %s → %s: %s per connection\n", r.ServerProcs,
		human(r.ServerRSSBefore), human(r.ServerRSSAfter), per(r.ServerRSSAfter-r.ServerRSSBefore, r.Held))
	fmt.Fprintf(w, "client    %d processes, RSS %s → %s: %s per connection; whole PSS %s: %s per connection\n", r.Workers,
		human(r.ClientRSSStart), human(r.ClientRSSAfter), per(r.ClientRSSAfter-r.ClientRSSStart, r.Held),
		human(r.ClientPSSAfter), per(r.ClientPSSAfter, r.Held))
	dk := r.MemAfter.kernel() - r.MemBefore.kernel()
	fmt.Fprintf(w, "kernel    slab+stacks+page tables +%s: %s per connection (slab %s, unreclaimable %s); TCP buffers %d → %d pages\n",
		human(dk), per(dk, r.Held), per(r.MemAfter.Slab-r.MemBefore.Slab, r.Held),
		per(r.MemAfter.SUnreclaim-r.MemBefore.SUnreclaim, r.Held), r.SockMemBefore, r.SockMem)
	da := r.MemBefore.Available - r.MemAfter.Available
	fmt.Fprintf(w, "box       MemAvailable %s → %s: %s per connection, everything counted\n",
		human(r.MemBefore.Available), human(r.MemAfter.Available), per(da, r.Held))
	fmt.Fprintf(w, "%-9s %8s %6s %10s %10s %9s %9s %9s %8s %10s  %s\n", "step", "target", "secs", "requests", "req/s", "p50", "p99", "max", "won", "cents", "codes")
	for i, s := range r.Steps {
		fmt.Fprintf(w, "%-9d %8d %6d %10d %10.0f %7.2fms %7.2fms %7.1fms %8d %10d  %s\n", i+1, s.QPS, s.Seconds, s.Requests,
			s.RPS, s.P50ms, s.P99ms, s.MaxMs, s.Won, s.Cents, mapLine(s.Codes))
	}
	var req int64
	for _, s := range r.Steps {
		req += s.Requests
	}
	if req > 0 {
		fmt.Fprintf(w, "cpu       during the shakes (≈ %.0f s): server %.1f s (%.0f µs per shake), clients %.1f s (%.0f µs per shake); the box has 2 cores\n",
			r.ShakeSeconds, r.ServerCPU, r.ServerCPU/float64(req)*1e6, r.ClientCPU, r.ClientCPU/float64(req)*1e6)
	}
	fmt.Fprintf(w, "won       %d envelopes, %d cents (%d requests unanswered)\n", r.Won, r.WonCents, r.Unanswered)
	if len(r.LostReplies) > 0 {
		fmt.Fprintf(w, "lost      %s (a request that times out or loses its reply closes its connection)\n", mapLine(r.LostReplies))
	}
	if len(r.Nodes) > 0 {
		fmt.Fprintf(w, "nodes     %d answered; %s\n", len(r.Nodes), spread(r.Nodes))
	}
	if r.Check != "" {
		fmt.Fprintf(w, "check     %s\n", r.Check)
	}
}

// spread says how evenly the nodes answered: min, max and the count.
func spread(m map[string]int64) string {
	if len(m) > 8 {
		lo, hi := int64(-1), int64(0)
		for _, v := range m {
			if lo < 0 || v < lo {
				lo = v
			}
			hi = max(hi, v)
		}
		return fmt.Sprintf("replies per node from %d to %d", lo, hi)
	}
	return mapLine(m)
}

func human(b int64) string {
	neg := ""
	if b < 0 {
		neg, b = "-", -b
	}
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%s%.2f GiB", neg, float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%s%.1f MiB", neg, float64(b)/(1<<20))
	default:
		return fmt.Sprintf("%s%.1f KiB", neg, float64(b)/1024)
	}
}

// pause waits d or until ctx is done; false means ctx ended it.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// resolve4 turns host:port into an IPv4 address and port.
func resolve4(hostport string) (netip.AddrPort, error) {
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return netip.AddrPort{}, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", p, err)
	}
	ips, err := net.LookupIP(h)
	if err != nil {
		return netip.AddrPort{}, err
	}
	for _, ip := range ips {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && ip.To4() != nil {
			return netip.AddrPortFrom(a, uint16(port)), nil
		}
	}
	return netip.AddrPort{}, fmt.Errorf("%s has no IPv4 address", h)
}
