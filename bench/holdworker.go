package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/spf13/cobra"

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/holdload"
)

// The hold workers are child processes of `bench --hold`: one process may
// hold at most its open-files limit of descriptors (20,000 here), so a
// million connections take about fifty of them. Parent and worker speak
// JSON lines: the parent writes a holdSpec, then commands, on the worker's
// stdin (the auth secret never appears in argv); the worker writes
// holdMsgs on stdout. A worker whose stdin closes exits, so an interrupted
// parent leaves none behind.

// holdSpec is a worker's part of the run.
type holdSpec struct {
	Addrs          []string      `json:"addrs"`
	Sources        []string      `json:"sources"`
	PortsPerSource int           `json:"ports_per_source"`
	FirstPort      int           `json:"first_port"`
	Base           int           `json:"base"` // this worker's first connection number over the run
	Conns          int           `json:"conns"`
	Rate           float64       `json:"rate"`
	MaxPending     int           `json:"max_pending"`
	ConnectTimeout time.Duration `json:"connect_timeout"`
	Timeout        time.Duration `json:"timeout"`
	Host           string        `json:"host"`
	Campaign       string        `json:"campaign"`
	AuthSecret     []byte        `json:"auth_secret"`
	UserPrefix     string        `json:"user_prefix"`
	TokenExp       int64         `json:"token_exp"`
	Worker         int           `json:"worker"`
	Workers        int           `json:"workers"`
}

// holdCmd is a command from the parent.
type holdCmd struct {
	Cmd string `json:"cmd"` // ramp, stop_ramp, shake, exit
	// shake: the slot schedule every worker shares; this worker sends
	// request k of second s when k % Workers == Worker.
	Slot0  int64   `json:"slot0,omitempty"`
	Groups int     `json:"groups,omitempty"`
	Users  int     `json:"users,omitempty"`
	PerSec []int64 `json:"per_sec,omitempty"`
	Steps  []int   `json:"steps,omitempty"` // step index of each second
}

// holdMsg is a report from a worker.
type holdMsg struct {
	T       string `json:"t"` // ready, ramp, held, tick, result
	Est     int64  `json:"est,omitempty"`
	Fail    int64  `json:"fail,omitempty"`
	Closed  int64  `json:"closed,omitempty"`
	Pending int64  `json:"pending,omitempty"`
	Held    int64  `json:"held,omitempty"`
	// tick: second Sec of the shake schedule is over for this worker.
	Sec  int   `json:"sec,omitempty"`
	Req  int64 `json:"req,omitempty"`
	Won  int64 `json:"won,omitempty"`
	Errs int64 `json:"errs,omitempty"`
	// result
	Steps []holdStepResult `json:"steps,omitempty"`
	Wins  []Win            `json:"wins,omitempty"`
	Nodes map[string]int64 `json:"nodes,omitempty"`
	// Lost: requests with no reply, by why (closed, write, malformed, timeout).
	Lost  map[string]int64 `json:"lost,omitempty"`
	Error string           `json:"error,omitempty"`
}

// holdStepResult is one step's numbers from one worker.
type holdStepResult struct {
	Requests int64            `json:"requests"`
	Codes    map[string]int64 `json:"codes"`
	Cents    int64            `json:"cents"`
	Hist     [][2]int64       `json:"hist"` // sparse HDR counts: [index, count]
}

func holdWorkerCommand() *cobra.Command {
	return &cobra.Command{
		Use:    "hold-worker",
		Short:  "One client process of bench --hold (started by it; speaks JSON lines on stdin/stdout)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runHoldWorker(os.Stdin, os.Stdout)
		},
	}
}

// runHoldWorker is one worker's life: read the spec, report ready, ramp on
// command, hold, shake on command, report, exit on command or EOF.
func runHoldWorker(in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	enc := json.NewEncoder(out)
	if !sc.Scan() {
		return fmt.Errorf("hold worker: no spec on stdin: %v", sc.Err())
	}
	var spec holdSpec
	if err := json.Unmarshal(sc.Bytes(), &spec); err != nil {
		return fmt.Errorf("hold worker: spec: %w", err)
	}
	cfg := holdload.Config{Conns: spec.Conns, Rate: spec.Rate, MaxPending: spec.MaxPending,
		ConnectTimeout: spec.ConnectTimeout, Timeout: spec.Timeout,
		PortsPerSource: spec.PortsPerSource, FirstPort: spec.FirstPort, Base: spec.Base}
	for _, a := range spec.Addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			return fmt.Errorf("hold worker: address %q: %w", a, err)
		}
		cfg.Addrs = append(cfg.Addrs, ap)
	}
	for _, s := range spec.Sources {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("hold worker: source %q: %w", s, err)
		}
		cfg.Sources = append(cfg.Sources, a)
	}
	eng, err := holdload.New(cfg)
	if err != nil {
		_ = enc.Encode(holdMsg{T: "result", Error: err.Error()})
		return err
	}
	defer eng.Close()

	cmds := make(chan holdCmd, 4)
	go func() {
		defer close(cmds)
		for sc.Scan() {
			var c holdCmd
			if json.Unmarshal(sc.Bytes(), &c) == nil {
				cmds <- c
			}
		}
	}()
	_ = enc.Encode(holdMsg{T: "ready"})

	stopRamp := make(chan struct{})
	exit := make(chan struct{})
	var shake *holdCmd
	// Commands arrive while the engine's loop runs on this goroutine, so a
	// forwarder turns them into the channel closes the loop polls.
	wait := func(want string) *holdCmd {
		for c := range cmds {
			if c.Cmd == want {
				return &c
			}
			if c.Cmd == "exit" {
				return nil
			}
		}
		return nil
	}
	if wait("ramp") == nil {
		return nil
	}
	shakeCh := make(chan *holdCmd, 1)
	go func() {
		stopped := false
		for c := range cmds {
			switch c.Cmd {
			case "stop_ramp":
				if !stopped {
					close(stopRamp)
					stopped = true
				}
			case "shake":
				c := c
				shakeCh <- &c
			case "exit":
				close(exit)
				return
			}
		}
		close(exit) // stdin closed: the parent is gone
	}()
	done := make(chan struct{})
	ticking := make(chan struct{}) // closed when the ramp ticker has stopped writing
	go func() {
		defer close(ticking)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				_ = enc.Encode(holdMsg{T: "ramp", Est: eng.Stats.Established.Load(), Fail: eng.Stats.Failed.Load(),
					Closed: eng.Stats.Closed.Load(), Pending: eng.Stats.Pending.Load()})
			case <-done:
				return
			}
		}
	}()
	rampStop := make(chan struct{})
	go func() {
		select {
		case <-stopRamp:
		case <-exit:
		case <-done:
			return
		}
		close(rampStop)
	}()
	held := eng.Ramp(rampStop)
	close(done)
	// A tick being written now carries counts from before the ramp ended,
	// and one encoder must not be written from two goroutines: "held" goes
	// after the ticker is gone.
	<-ticking
	_ = enc.Encode(holdMsg{T: "held", Held: held, Est: eng.Stats.Established.Load(), Fail: eng.Stats.Failed.Load(),
		Closed: eng.Stats.Closed.Load()})

	select {
	case shake = <-shakeCh:
	case <-exit:
		return nil
	}
	h := newHoldHandler(&spec, shake)
	src := h.source()
	stopDrive := make(chan struct{})
	flushing := make(chan struct{}) // closed when the tick flusher has stopped writing
	go func() {
		defer close(flushing)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				h.flushTicks(enc, time.Now().UnixNano())
			case <-exit:
				close(stopDrive)
				return
			case <-h.finished:
				return
			}
		}
	}()
	eng.Drive(src, h, stopDrive)
	close(h.finished)
	<-flushing
	h.flushTicks(enc, 1<<62)
	res := h.result()
	res.Held = eng.Stats.Held()
	res.Closed = eng.Stats.Closed.Load()
	_ = enc.Encode(res)
	<-exit
	return nil
}

// holdHandler builds the shake requests of one worker and tallies their
// replies. Build and Done run on the engine's goroutine; the tick counters
// are read by the ticker under mu.
type holdHandler struct {
	spec     *holdSpec
	cmd      *holdCmd
	minter   *auth.Minter
	head     []byte
	tail     []byte
	sub      []byte
	start    int64 // unix ns of second 0
	steps    []holdStepAcc
	wins     []Win
	nodes    map[string]int64
	lost     map[string]int64
	finished chan struct{}

	mu       chan struct{} // a one-slot semaphore: the engine and the ticker share secs
	secs     []holdSecAcc
	nextTick int
}

type holdStepAcc struct {
	requests int64
	codes    [numCodes]int64
	cents    int64
	hist     *hdrhistogram.Histogram
}

type holdSecAcc struct {
	req, won, errs int64
	done           int64 // replies (or failures) of this second's requests
	sent           int64 // requests of this second this worker has
}

func newHoldHandler(spec *holdSpec, cmd *holdCmd) *holdHandler {
	h := &holdHandler{spec: spec, cmd: cmd, minter: auth.NewMinter(spec.AuthSecret),
		start: cmd.Slot0 * int64(time.Second), nodes: map[string]int64{}, lost: map[string]int64{}, finished: make(chan struct{}),
		mu: make(chan struct{}, 1)}
	h.head = []byte("POST /v1/shakes/" + escapePath(spec.Campaign) + "/shake HTTP/1.1\r\nHost: " + spec.Host + "\r\nAuthorization: Bearer ")
	h.tail = []byte("\r\nContent-Length: 0\r\n\r\n")
	nSteps := 0
	for _, s := range cmd.Steps {
		nSteps = max(nSteps, s+1)
	}
	h.steps = make([]holdStepAcc, nSteps)
	for i := range h.steps {
		h.steps[i].hist = newHist()
	}
	h.secs = make([]holdSecAcc, len(cmd.PerSec))
	for s, n := range cmd.PerSec {
		h.secs[s].sent = mine(n, spec.Worker, spec.Workers)
	}
	return h
}

// mine is how many of k = 0..n-1 have k % workers == w.
func mine(n int64, w, workers int) int64 {
	if int64(w) >= n {
		return 0
	}
	return (n - int64(w) + int64(workers) - 1) / int64(workers)
}

// Build writes the shake request for req.User with a fresh token.
func (h *holdHandler) Build(buf []byte, req holdload.Request) []byte {
	buf = append(buf, h.head...)
	h.sub = strconv.AppendInt(append(h.sub[:0], h.spec.UserPrefix...), int64(req.User), 10)
	buf = h.minter.AppendBytes(buf, h.sub, h.spec.TokenExp)
	return append(buf, h.tail...)
}

// Done classifies a reply as the shake scenario does.
func (h *holdHandler) Done(req holdload.Request, r *holdload.Reply) {
	sec := int((req.At - h.start) / int64(time.Second))
	sec = max(0, min(sec, len(h.secs)-1))
	st := &h.steps[h.cmd.Steps[sec]]
	code, cents := codeTransport, int64(0)
	switch {
	case r.Timeout:
		code = codeTimeout
		h.lost["timeout"]++
	case r.Err != nil:
		h.lost[lostReason(r.Err)]++
	case r.Status/100 != 2:
		code = codeOther
		if v, ok := jsonField(r.Body, "code"); ok {
			code = codeIndex(v)
		}
	default:
		won, ok := jsonField(r.Body, "won")
		switch {
		case !ok:
			code = codeOther
		case string(won) != "true":
			code = codeNoWin
		default:
			code = codeOK
			cents, _ = jsonInt(r.Body, "amount_cents")
			id, _ := jsonField(r.Body, "envelope_id")
			h.wins = append(h.wins, Win{ID: string(id), User: h.spec.UserPrefix + strconv.Itoa(req.User), Cents: cents})
		}
	}
	if len(r.Node) > 0 {
		if p, ok := h.nodes[string(r.Node)]; ok {
			h.nodes[string(r.Node)] = p + 1
		} else if len(h.nodes) < 1024 {
			h.nodes[string(r.Node)] = 1
		}
	}
	us := max(histMin, min(r.Latency.Microseconds(), histMax))
	_ = st.hist.RecordValue(us)
	st.requests++
	st.codes[code]++
	st.cents += cents
	h.mu <- struct{}{}
	s := &h.secs[sec]
	s.req++
	s.done++
	if code == codeOK {
		s.won++
	}
	if code != codeOK && code != codeNoWin && code != codeEmpty && code != codeSoldOut {
		s.errs++
	}
	<-h.mu
}

// flushTicks reports each second whose requests are all settled, or whose
// end is more than the timeout past, in order.
func (h *holdHandler) flushTicks(enc *json.Encoder, now int64) {
	h.mu <- struct{}{}
	defer func() { <-h.mu }()
	for h.nextTick < len(h.secs) {
		s := &h.secs[h.nextTick]
		end := h.start + int64(h.nextTick+1)*int64(time.Second)
		if now < end || (s.done < s.sent && now < end+int64(h.spec.Timeout)+int64(time.Second)) {
			return
		}
		_ = enc.Encode(holdMsg{T: "tick", Sec: h.nextTick, Req: s.req, Won: s.won, Errs: s.errs})
		h.nextTick++
	}
}

// lostReason names a reply error for the report (four names at most).
func lostReason(err error) string {
	switch err {
	case holdload.ErrClosed:
		return "closed by the server"
	case holdload.ErrWrite:
		return "write failed"
	case holdload.ErrMalformed:
		return "malformed reply"
	}
	return "other"
}

func (h *holdHandler) result() holdMsg {
	m := holdMsg{T: "result", Wins: h.wins, Nodes: h.nodes, Lost: h.lost}
	for i := range h.steps {
		st := &h.steps[i]
		r := holdStepResult{Requests: st.requests, Codes: map[string]int64{}, Cents: st.cents}
		for c, n := range st.codes {
			if n > 0 {
				r.Codes[codeNames[c]] = n
			}
		}
		for i, n := range st.hist.Export().Counts {
			if n > 0 {
				r.Hist = append(r.Hist, [2]int64{int64(i), n})
			}
		}
		m.Steps = append(m.Steps, r)
	}
	return m
}

// holdSource walks the shared slot schedule and yields this worker's share.
type holdSource struct {
	h   *holdHandler
	sec int
	k   int64
}

func (h *holdHandler) source() *holdSource {
	return &holdSource{h: h, k: int64(h.spec.Worker)}
}

// Peek returns the next request: second sec's k-th, k ≡ Worker mod Workers.
func (s *holdSource) Peek() (holdload.Request, bool) {
	per := s.h.cmd.PerSec
	for s.sec < len(per) && s.k >= per[s.sec] {
		s.sec++
		s.k = int64(s.h.spec.Worker)
	}
	if s.sec >= len(per) {
		return holdload.Request{}, false
	}
	n := per[s.sec]
	at := s.h.start + int64(s.sec)*int64(time.Second) + s.k*int64(time.Second)/n
	unix := s.h.cmd.Slot0 + int64(s.sec)
	return holdload.Request{At: at, User: slotUser(s.h.cmd.Users, s.h.cmd.Groups, unix, s.k, n)}, true
}

// Pop moves past the request Peek returned.
func (s *holdSource) Pop() { s.k += int64(s.h.spec.Workers) }

// histFromSparse rebuilds a worker's histogram in the parent.
func histFromSparse(sp [][2]int64) *hdrhistogram.Histogram {
	h := newHist()
	snap := h.Export()
	for _, p := range sp {
		if p[0] >= 0 && int(p[0]) < len(snap.Counts) {
			snap.Counts[p[0]] = p[1]
		}
	}
	return hdrhistogram.Import(snap)
}
