// Package bench is flashsale's load generator: it drives one or more nodes
// with many distinct users in a closed loop, at a fixed open-loop arrival
// rate, or as hongbao-style time-slot clients, and reports what the clients
// saw — throughput, latency from a real HDR histogram, the status and error
// code mix, the per-node spread and what was won — as a live progress line,
// a summary, a JSON report and a plot. Check compares that client tally with
// the server's books.
//
// The request loop writes pre-built request bytes over raw keep-alive
// HTTP/1.1 connections and parses replies in place, so the sold-out path
// costs the generator no allocation; see README.md for why and how much.
package bench

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/flashsale/flashsale/auth"
)

// Scenarios Run knows.
const (
	ScenarioBuy   = "buy"   // POST /v1/sales/{sale}/buy: win = 201 with an order id
	ScenarioOpen  = "open"  // POST /v1/envelopes/{envelope}/open: win = 200 with amount_cents
	ScenarioShake = "shake" // POST /v1/shakes/{campaign}/shake: win = 200 with won:true
	ScenarioSend  = "send"  // POST /v1/envelopes: win = 201 with an envelope id
	ScenarioGet   = "get"   // GET Path: win = any 2xx; the ceiling measurement against a hello server
	ScenarioQueue = "queue" // a sale's waiting room: join, poll, buy when admitted (RunQueue, not Run)
)

// Step is one stage of a time-slot step profile: QPS requests per second
// for Duration.
type Step struct {
	QPS      int           `json:"qps"`
	Duration time.Duration `json:"duration_ns"`
}

// ParseSteps parses a step profile such as "30000:10s,60000:10s".
func ParseSteps(s string) ([]Step, error) {
	var steps []Step
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		q, d, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("step %q: want QPS:DURATION", part)
		}
		qps, err := strconv.Atoi(strings.TrimSpace(q))
		if err != nil || qps <= 0 {
			return nil, fmt.Errorf("step %q: QPS must be a positive integer", part)
		}
		dur, err := time.ParseDuration(strings.TrimSpace(d))
		if err != nil || dur < time.Second {
			return nil, fmt.Errorf("step %q: duration must be at least 1s", part)
		}
		steps = append(steps, Step{QPS: qps, Duration: dur.Truncate(time.Second)})
	}
	if len(steps) == 0 {
		return nil, errors.New("empty step profile")
	}
	return steps, nil
}

// Config describes one run. The zero value is not useful; fill Targets,
// Scenario and one of Duration, Requests or Steps.
type Config struct {
	Targets  []string // base URLs; requests go round-robin over them
	Scenario string   // one of the Scenario constants

	Sale     string // buy: the sale id
	Envelope string // open: the envelope id
	Campaign string // shake: the shake campaign id
	Path     string // get: the request path, "/" by default

	// send: each request creates an envelope of EnvelopeCents split into
	// EnvelopeShares shares.
	EnvelopeCents, EnvelopeShares int64

	Users      int    // distinct user ids UserPrefix+0 .. UserPrefix+(Users-1)
	UserPrefix string // "u" by default

	Connections int           // keep-alive connections per target (= workers)
	Duration    time.Duration // stop after this long ...
	Requests    int64         // ... or after this many requests (whichever is set; both: first hit)
	Rate        float64       // > 0: open-loop arrivals per second; 0: closed loop
	Timeout     time.Duration // per request; 10s by default

	// PayFraction of buy winners pay their order right away on the same
	// connection, through the payment provider's signed callback for
	// PriceCents (signed with PaymentSecret); the rest leave it to expire.
	PayFraction   float64
	PriceCents    int64
	PaymentSecret []byte

	// AuthSecret is the nodes' auth.secret: every per-person request (buy,
	// open, shake, send) carries a bearer token for its user, minted per
	// request (about a microsecond; the hello server gets the same bytes).
	AuthSecret []byte

	// SlotGroups > 0 selects time-slot clients: user u may send only in a
	// wall-clock second s with s%SlotGroups == u%SlotGroups, at most once.
	// Steps gives the aggregate QPS profile (Rate and Duration when empty).
	SlotGroups int
	Steps      []Step

	// Progress, when set, receives one line per second.
	Progress io.Writer
}

func (c *Config) setDefaults() error {
	if len(c.Targets) == 0 {
		return errors.New("no target")
	}
	if c.Scenario == "" {
		c.Scenario = ScenarioBuy
	}
	if c.UserPrefix == "" {
		c.UserPrefix = "u"
	}
	if c.Users <= 0 {
		c.Users = 1
	}
	if c.Connections <= 0 {
		c.Connections = 1
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Path == "" {
		c.Path = "/"
	}
	switch c.Scenario {
	case ScenarioBuy:
		if c.Sale == "" {
			return errors.New("buy needs a sale id")
		}
	case ScenarioOpen:
		if c.Envelope == "" {
			return errors.New("open needs an envelope id")
		}
	case ScenarioShake:
		if c.Campaign == "" {
			return errors.New("shake needs a campaign id")
		}
	case ScenarioSend:
		if c.EnvelopeCents <= 0 || c.EnvelopeShares <= 0 || c.EnvelopeCents < c.EnvelopeShares {
			return errors.New("send needs envelope cents ≥ shares > 0")
		}
	case ScenarioGet:
	default:
		return fmt.Errorf("unknown scenario %q", c.Scenario)
	}
	if c.PayFraction < 0 || c.PayFraction > 1 {
		return errors.New("pay fraction must be within [0,1]")
	}
	if c.PayFraction > 0 && len(c.PaymentSecret) == 0 {
		return errors.New("paying needs the payment secret (--payment-secret or $FLASHSALE_PAYMENT_SECRET)")
	}
	if c.Scenario != ScenarioGet && len(c.AuthSecret) < auth.MinSecretLen {
		return fmt.Errorf("%s needs the nodes' auth secret of at least %d bytes (--auth-secret or $FLASHSALE_AUTH_SECRET)",
			c.Scenario, auth.MinSecretLen)
	}
	if c.SlotGroups > 0 {
		if len(c.Steps) == 0 {
			if c.Rate <= 0 || c.Duration < time.Second {
				return errors.New("time-slot clients need --steps, or --rate and --duration ≥ 1s")
			}
			c.Steps = []Step{{QPS: int(c.Rate), Duration: c.Duration.Truncate(time.Second)}}
		}
		return nil
	}
	if c.Duration <= 0 && c.Requests <= 0 {
		return errors.New("set a duration or a request count")
	}
	return nil
}

// Win is one thing a client won: a unit (buy: ID is the order id), an
// envelope share (open, shake: Cents) or a created envelope (send).
type Win struct {
	ID    string `json:"id,omitempty"`
	User  string `json:"user"`
	Cents int64  `json:"cents,omitempty"`
	Paid  bool   `json:"paid,omitempty"` // buy: the client paid and got 200
}

// Result is what Run returns: the report and the client tally.
type Result struct {
	Report *Report
	Tally  Tally
}

// Run drives the targets as cfg says until the duration, request count or
// step profile is used up, or ctx is cancelled, and returns what it saw.
// Errors are configuration errors; failed requests are counted, not returned.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	targets := make([]target, len(cfg.Targets))
	for i, s := range cfg.Targets {
		t, err := parseTarget(s)
		if err != nil {
			return nil, err
		}
		targets[i] = t
	}
	r := &runner{cfg: cfg, targets: targets, tokenExp: time.Now().Add(time.Hour + cfg.Duration + stepsDuration(cfg.Steps)).Unix()}
	sched, notes, err := newSchedule(&cfg)
	if err != nil {
		return nil, err
	}
	r.sched = sched
	r.notes = notes
	nShards := min(cfg.Connections, 16)
	r.shards = make([]*shard, nShards)
	for i := range r.shards {
		r.shards[i] = &shard{hist: newHist()}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sched.waitStart(ctx)
	sched.setEnd(cfg.Duration)

	workers := make([]*worker, cfg.Connections)
	var wg sync.WaitGroup
	for i := range workers {
		w := r.newWorker(i)
		workers[i] = w
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.run(ctx)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	agg := newAggregate(sched.start)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
loop:
	for {
		select {
		case <-tick.C:
			p := agg.harvest(r.shards, time.Now())
			if cfg.Progress != nil {
				fmt.Fprintln(cfg.Progress, p.progressLine())
			}
		case <-done:
			break loop
		}
	}
	end := time.Now()
	p := agg.harvest(r.shards, end)
	if cfg.Progress != nil && p.Interval > 0.05 {
		fmt.Fprintln(cfg.Progress, p.progressLine())
	}
	for _, w := range workers {
		w.closeConns()
	}

	tally := Tally{Scenario: cfg.Scenario}
	for _, w := range workers {
		tally.Wins = append(tally.Wins, w.wins...)
	}
	sort.Slice(tally.Wins, func(i, j int) bool { return tally.Wins[i].ID < tally.Wins[j].ID })
	tally.Requests = agg.total.requests
	tally.Successes = agg.total.codes[codeOK]
	tally.Unanswered = agg.total.codes[codeTransport] + agg.total.codes[codeTimeout]
	for _, w := range tally.Wins {
		tally.Cents += w.Cents
	}
	interrupted := ctx.Err() != nil
	if interrupted {
		r.notes = append(r.notes, "interrupted before the end of the run")
	}
	rep := agg.report(&cfg, end, sched, r.notes)
	if interrupted {
		rep.Dropped = 0 // not sent because we stopped, not because we fell behind
	}
	rep.Won = wonSummary(cfg.Scenario, tally.Wins)
	for _, w := range workers {
		if w.firstErr != "" {
			rep.Errors = append(rep.Errors, w.firstErr)
			if len(rep.Errors) >= 5 {
				break
			}
		}
	}
	return &Result{Report: rep, Tally: tally}, nil
}

type runner struct {
	cfg     Config
	targets []target
	sched   *schedule
	shards  []*shard
	notes   []string
	winsN   atomic.Int64 // buy wins so far, for the pay fraction
	// tokenExp is when the run's tokens expire: an hour after the run's
	// scheduled end, so no request carries an expired one.
	tokenExp int64
}

// template is a request with the user's bearer token left out: head up to
// and including "Bearer ", then the rest of the headers and the body, which
// name nobody (the person is the token's subject).
type template struct {
	head, tail []byte
	noToken    bool
}

func (r *runner) templates(t target) template {
	cfg := &r.cfg
	post := func(path, body string) template {
		return template{
			head: []byte("POST " + path + " HTTP/1.1\r\nHost: " + t.host + "\r\nAuthorization: Bearer "),
			tail: []byte("\r\nContent-Type: application/json\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body),
		}
	}
	switch cfg.Scenario {
	case ScenarioBuy:
		return post("/v1/sales/"+escapePath(cfg.Sale)+"/buy", "")
	case ScenarioOpen:
		return post("/v1/envelopes/"+escapePath(cfg.Envelope)+"/open", "")
	case ScenarioShake:
		return post("/v1/shakes/"+escapePath(cfg.Campaign)+"/shake", "")
	case ScenarioSend:
		return post("/v1/envelopes", fmt.Sprintf(`{"total_cents":%d,"count":%d}`, cfg.EnvelopeCents, cfg.EnvelopeShares))
	default:
		return template{head: []byte("GET " + cfg.Path + " HTTP/1.1\r\nHost: " + t.host + "\r\n\r\n"), noToken: true}
	}
}

// build appends the request for user to buf without allocating (buf is the
// worker's reused buffer): head, a fresh token for user, tail.
func (w *worker) build(t *template, buf []byte, user int) []byte {
	buf = append(buf, t.head...)
	if t.noToken {
		return buf
	}
	w.sub = strconv.AppendInt(append(w.sub[:0], w.r.cfg.UserPrefix...), int64(user), 10)
	buf = w.minter.AppendBytes(buf, w.sub, w.r.tokenExp)
	return append(buf, t.tail...)
}

func escapePath(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "/", "%2F"), " ", "%20")
}

type worker struct {
	r        *runner
	minter   *auth.Minter
	sub      []byte // the user id of the request being built
	id       int
	shard    *shard
	conns    []*conn
	tmpl     []template
	buf      []byte
	timer    *time.Timer
	wins     []Win
	firstErr string
}

func (r *runner) newWorker(id int) *worker {
	w := &worker{r: r, id: id, shard: r.shards[id%len(r.shards)], buf: make([]byte, 0, 512)}
	if len(r.cfg.AuthSecret) > 0 {
		w.minter = auth.NewMinter(r.cfg.AuthSecret)
	}
	for _, t := range r.targets {
		w.conns = append(w.conns, newConn(t, r.cfg.Timeout))
		w.tmpl = append(w.tmpl, r.templates(t))
	}
	return w
}

func (w *worker) closeConns() {
	for _, c := range w.conns {
		c.close()
	}
}

func (w *worker) run(ctx context.Context) {
	var resp response
	nt := len(w.conns)
	for {
		if ctx.Err() != nil {
			return
		}
		i, user, at, ok := w.r.sched.claim()
		if !ok {
			return
		}
		if !at.IsZero() {
			if d := time.Until(at); d > 0 && !w.sleep(ctx, d) {
				return
			}
		}
		ti := int(i % int64(nt))
		c := w.conns[ti]
		w.buf = w.build(&w.tmpl[ti], w.buf[:0], user)
		start := at
		if start.IsZero() {
			start = time.Now()
		}
		err := c.roundTrip(w.buf, &resp)
		lat := time.Since(start)
		if err != nil {
			code := codeTransport
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				code = codeTimeout
			}
			if w.firstErr == "" {
				w.firstErr = err.Error()
			}
			w.shard.record(lat, 0, code, 0, nil)
			// A refused dial would otherwise spin this worker at full CPU
			// and starve the workers that still have a live server.
			if c.nc == nil && !w.sleep(ctx, 10*time.Millisecond) {
				return
			}
			continue
		}
		code, cents := w.classify(&resp, user)
		w.shard.record(lat, resp.status, code, cents, resp.node)
		if code == codeOK && w.r.cfg.Scenario == ScenarioBuy && w.r.cfg.PayFraction > 0 {
			n := w.r.winsN.Add(1)
			f := w.r.cfg.PayFraction
			if math.Floor(float64(n)*f) > math.Floor(float64(n-1)*f) {
				w.pay(c, &w.wins[len(w.wins)-1], &resp)
			}
		}
	}
}

func (w *worker) sleep(ctx context.Context, d time.Duration) bool {
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d)
	}
	select {
	case <-w.timer.C:
		return true
	case <-ctx.Done():
		w.timer.Stop()
		return false
	}
}

// classify turns a reply into an outcome code and, for wins, records the
// win. Only wins allocate (the order id and user id strings).
func (w *worker) classify(resp *response, user int) (code int, cents int64) {
	if resp.status == 502 || resp.status == 504 {
		// nginx's answer when the node died or stalled mid-request: the
		// node may have sold the unit, so to the client the outcome is as
		// unknown as with no reply at all.
		return codeTransport, 0
	}
	if resp.status/100 != 2 {
		if v, ok := jsonField(resp.body, "code"); ok {
			return codeIndex(v), 0
		}
		return codeOther, 0
	}
	switch w.r.cfg.Scenario {
	case ScenarioBuy:
		id, ok := jsonField(resp.body, "order_id")
		if !ok || len(id) == 0 {
			return codeOther, 0
		}
		w.wins = append(w.wins, Win{ID: string(id), User: w.user(user)})
	case ScenarioOpen:
		c, ok := jsonInt(resp.body, "amount_cents")
		if !ok {
			return codeOther, 0
		}
		w.wins = append(w.wins, Win{User: w.user(user), Cents: c})
		return codeOK, c
	case ScenarioShake:
		won, ok := jsonField(resp.body, "won")
		if !ok {
			return codeOther, 0
		}
		if string(won) != "true" {
			return codeNoWin, 0
		}
		c, _ := jsonInt(resp.body, "amount_cents")
		id, _ := jsonField(resp.body, "envelope_id")
		w.wins = append(w.wins, Win{ID: string(id), User: w.user(user), Cents: c})
		return codeOK, c
	case ScenarioSend:
		id, ok := jsonField(resp.body, "envelope_id")
		if !ok {
			return codeOther, 0
		}
		w.wins = append(w.wins, Win{ID: string(id), User: w.user(user), Cents: w.r.cfg.EnvelopeCents})
		return codeOK, w.r.cfg.EnvelopeCents
	}
	return codeOK, 0
}

func (w *worker) user(u int) string { return w.r.cfg.UserPrefix + strconv.Itoa(u) }

// pay pays win's order on c right after the buy, as the payment provider
// would: the signed callback. It reuses the worker's buffer; its latency is
// not mixed into the buy histogram.
func (w *worker) pay(c *conn, win *Win, resp *response) {
	// One payment id per order (ids may not hold the order id's dots).
	sum := sha256.Sum256([]byte(win.ID))
	body := fmt.Sprintf(`{"order_id":%q,"payment_id":"bench-%x","amount_cents":%d}`, win.ID, sum[:8], w.r.cfg.PriceCents)
	w.buf = append(w.buf[:0], "POST /v1/payments/callback HTTP/1.1\r\nHost: "...)
	w.buf = append(w.buf, c.t.host...)
	w.buf = append(w.buf, "\r\n"+auth.SignatureHeader+": "...)
	w.buf = append(w.buf, auth.SignPayload(w.r.cfg.PaymentSecret, time.Now(), []byte(body))...)
	w.buf = append(w.buf, "\r\nContent-Type: application/json\r\nContent-Length: "...)
	w.buf = strconv.AppendInt(w.buf, int64(len(body)), 10)
	w.buf = append(w.buf, "\r\n\r\n"...)
	w.buf = append(w.buf, body...)
	err := c.roundTrip(w.buf, resp)
	ok := err == nil && resp.status == 200
	win.Paid = ok
	w.shard.recordPay(ok)
}

func stepsDuration(steps []Step) time.Duration {
	var d time.Duration
	for _, s := range steps {
		d += s.Duration
	}
	return d
}

// schedule hands out request slots: an index, a user and (open loop) the
// intended send time. It is shared by all workers.
type schedule struct {
	mode     int // modeClosed, modeRate, modeSlots
	next     atomic.Int64
	start    time.Time
	end      time.Time // zero: no time limit
	limit    int64     // 0: no count limit
	users    int
	interval float64 // rate: nanoseconds between arrivals
	grace    time.Duration

	// slots
	groups   int
	slot0    int64   // unix second of the first slot
	perSec   []int64 // requests in each second
	cum      []int64 // cum[i] = requests before second i; len = len(perSec)+1
	expected int64   // requests the profile asks for (open loop)
}

const (
	modeClosed = iota
	modeRate
	modeSlots
)

func newSchedule(cfg *Config) (*schedule, []string, error) {
	s := &schedule{users: cfg.Users, limit: cfg.Requests, grace: 2 * time.Second}
	var notes []string
	switch {
	case cfg.SlotGroups > 0:
		s.mode = modeSlots
		s.groups = cfg.SlotGroups
		s.cum = []int64{0}
		now := time.Now()
		s.slot0 = now.Unix() + 1
		sec := int64(0)
		for _, st := range cfg.Steps {
			capped := false
			for k := int64(0); k < int64(st.Duration/time.Second); k++ {
				gs := groupSize(cfg.Users, cfg.SlotGroups, int((s.slot0+sec)%int64(cfg.SlotGroups)))
				n := int64(st.QPS)
				if n > gs {
					n, capped = gs, true
				}
				s.perSec = append(s.perSec, n)
				s.cum = append(s.cum, s.cum[len(s.cum)-1]+n)
				sec++
			}
			if capped {
				notes = append(notes, fmt.Sprintf("step %d QPS capped at users/groups ≈ %d: each user sends at most once per slot", st.QPS, cfg.Users/cfg.SlotGroups))
			}
		}
		s.expected = s.cum[len(s.cum)-1]
	case cfg.Rate > 0:
		s.mode = modeRate
		s.interval = float64(time.Second) / cfg.Rate
		s.expected = cfg.Requests
		if cfg.Duration > 0 {
			n := int64(math.Ceil(cfg.Duration.Seconds() * cfg.Rate))
			if s.expected == 0 || n < s.expected {
				s.expected = n
			}
		}
	default:
		s.mode = modeClosed
	}
	return s, notes, nil
}

// groupSize is how many of users 0..users-1 have uid%groups == r.
func groupSize(users, groups, r int) int64 {
	if r >= users {
		return 0
	}
	return int64((users - r + groups - 1) / groups)
}

// waitStart fixes the start time; time-slot clients first wait for the next
// whole wall-clock second so their slots line up with everyone's clock.
func (s *schedule) waitStart(ctx context.Context) {
	if s.mode == modeSlots {
		t := time.NewTimer(time.Until(time.Unix(s.slot0, 0)))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
	s.start = time.Now()
}

func (s *schedule) setEnd(d time.Duration) {
	if d > 0 {
		s.end = s.start.Add(d)
	}
}

// claim returns the next request slot, or ok=false when the run is over.
func (s *schedule) claim() (i int64, user int, at time.Time, ok bool) {
	i = s.next.Add(1) - 1
	switch s.mode {
	case modeClosed:
		if s.limit > 0 && i >= s.limit {
			return i, 0, time.Time{}, false
		}
		if !s.end.IsZero() && time.Now().After(s.end) {
			return i, 0, time.Time{}, false
		}
		return i, int(i % int64(s.users)), time.Time{}, true
	case modeRate:
		if i >= s.expected {
			return i, 0, time.Time{}, false
		}
		at = s.start.Add(time.Duration(float64(i) * s.interval))
		// A generator that fell far behind stops rather than run on past
		// the end; the report counts what it never sent as dropped.
		if time.Since(s.start) > time.Duration(float64(s.expected)*s.interval)+s.grace {
			return i, 0, time.Time{}, false
		}
		return i, int(i % int64(s.users)), at, true
	default:
		if i >= s.expected {
			return i, 0, time.Time{}, false
		}
		sec := sort.Search(len(s.perSec), func(k int) bool { return s.cum[k+1] > i })
		k := i - s.cum[sec]
		n := s.perSec[sec]
		at = s.start.Add(time.Duration(sec)*time.Second + time.Duration(k)*time.Second/time.Duration(n))
		unix := s.slot0 + int64(sec)
		if time.Since(s.start) > time.Duration(len(s.perSec))*time.Second+s.grace {
			return i, 0, time.Time{}, false
		}
		return i, slotUser(s.users, s.groups, unix, k, n), at, true
	}
}

// slotUser picks the k-th of n senders in wall-clock second unix: only users
// with uid%groups == unix%groups are eligible, and the n picked in one
// second are distinct (k < n ≤ group size). The window rotates from one
// slot of the group to the next so every user gets turns.
func slotUser(users, groups int, unix, k, n int64) int {
	r := int(unix % int64(groups))
	gs := groupSize(users, groups, r)
	off := ((unix / int64(groups)) * n) % gs
	j := (off + k) % gs
	return r + int(j)*groups
}

// aggregate collects the harvested shards into the per-second series and
// the run's totals.
type aggregate struct {
	start    time.Time
	last     time.Time
	sec      *hdrhistogram.Histogram
	total    counters
	totalH   *hdrhistogram.Histogram
	series   []Point
	interval counters
}

func newAggregate(start time.Time) *aggregate {
	return &aggregate{start: start, last: start, sec: newHist(), totalH: newHist()}
}

func (a *aggregate) harvest(shards []*shard, now time.Time) Point {
	a.sec.Reset()
	a.interval.reset()
	for _, s := range shards {
		s.harvest(a.sec, &a.interval)
	}
	dt := now.Sub(a.last).Seconds()
	a.last = now
	a.totalH.Merge(a.sec)
	a.total.add(&a.interval)
	c := &a.interval
	p := Point{
		T:         now.Sub(a.start).Seconds(),
		Interval:  dt,
		Requests:  c.requests,
		Successes: c.codes[codeOK],
		SoldOut:   c.codes[codeSoldOut] + c.codes[codeEmpty],
		Limit:     c.codes[codeLimit],
		Errors:    errorsOf(c),
		P50ms:     ms(a.sec.ValueAtQuantile(50)),
		P99ms:     ms(a.sec.ValueAtQuantile(99)),
		MaxMs:     ms(a.sec.Max()),
	}
	if dt > 0 {
		p.RPS = float64(c.requests) / dt
		p.SuccessesPS = float64(c.codes[codeOK]) / dt
	}
	p.totalSuccesses = a.total.codes[codeOK]
	a.series = append(a.series, p)
	return p
}

// errorsOf counts what a healthy run has none of: no reply, the 5xx codes,
// and replies the generator could not read.
func errorsOf(c *counters) int64 {
	return c.codes[codeTransport] + c.codes[codeTimeout] + c.codes[codeOther] +
		c.codes[codeIndex([]byte("unavailable"))] + c.codes[codeIndex([]byte("overloaded"))] + c.codes[codeIndex([]byte("internal"))]
}

func ms(us int64) float64 { return float64(us) / 1000 }

func (p Point) progressLine() string {
	return fmt.Sprintf("%6.1fs %9.0f req/s  ok %-8d (+%d)  sold_out %-8d limit %-6d err %-6d p50 %7.2fms  p99 %7.2fms",
		p.T, p.RPS, p.totalSuccesses, p.Successes, p.SoldOut, p.Limit, p.Errors, p.P50ms, p.P99ms)
}
