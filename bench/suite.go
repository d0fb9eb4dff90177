package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/cluster"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// SuiteConfig describes one `flashsale bench suite` run.
type SuiteConfig struct {
	Duration time.Duration // per scenario and round, split into Slices
	// Slices is how many interleaved wrk runs each scenario's Duration is
	// split into (hello, sold-out, selling, hello, ...), so that the drift of
	// a noisy box hits all scenarios of a round alike; 1 when 0.
	Slices      int
	Connections int
	// OverloadConnections is wrk's connection count for the overload row,
	// run once per round against the selling sale for Duration; 0 skips it.
	OverloadConnections int
	// OpenLoopFactor > 0 adds, per round, an open-loop row: the selling
	// path offered OpenLoopFactor x the round's selling rate (256
	// connections) as a fixed arrival rate, by this package's generator
	// (wrk is closed loop), for Duration. The row reports the rate offered,
	// the rate the generator managed to send, and goodput.
	OpenLoopFactor float64
	OpenLoopConns  int // connections of the open-loop row; 0: openLoopConns
	// ShedCompare adds, per round, the overload row against two more nodes
	// of the same cluster: one shedding the oldest waiter first
	// (admission.shed oldest) and one serving its line newest first under
	// load (admission.lifo true), beside the default (shed newest, FIFO).
	ShedCompare bool
	// NoOrderStore runs the cluster without its PostgreSQL order store, so
	// node 1 runs no store consumer: the selling path as it was measured
	// before orders of record existed (issue 15), for comparing with those
	// figures. With the store (the default) its CPU is the table's
	// "store CPU/req" column and node 1's consumer is in the node's.
	NoOrderStore bool
	Threads      int    // wrk threads
	Runs         int    // rounds; each round measures every scenario once, in turn
	WrkScript    string // bench/wrk/buy.lua
	Binary       string // the flashsale binary for the node, broker and hello processes
	Dir          string // run directory (logs, stat.log, Redis data)
	Out          io.Writer
}

// SuiteRow is one scenario's figures in one round, summed over its slices.
type SuiteRow struct {
	Scenario string
	Round    int
	Slices   int
	Requests int64
	// RPS is all the slices' requests over all their time (not a mean of
	// the slices' rates); SliceRPSMin and SliceRPSMax are the spread of the
	// slices' own rates within the round.
	RPS                      float64
	SliceRPSMin, SliceRPSMax float64
	// wrk's percentiles cannot be merged exactly across runs: P50 is the
	// median of the slices' p50s, P99 the worst slice's p99 (conservative).
	P50, P99      time.Duration
	Non2xx        int64
	Statuses      string        // HTTP status mix summed over the slices, as tally.lua prints it
	Ratio         float64       // RPS / the hello server's RPS in the same round
	RedisCmdPerRq float64       // commands Redis ran per request, those inside scripts included
	EvalPerRq     float64       // script calls (round trips) per request: coalescing shows here
	RedisCPUPerRq time.Duration // Redis CPU time per request from INFO (per sold unit on the selling path)
	// User+system CPU per request of the server under test (the hello
	// server or the node) and of the broker, from /proc (Linux only, zero
	// elsewhere), and of wrk itself, from its rusage. Redis and the broker
	// are left zero on the hello row: they have no part in it.
	ServerCPUPerRq time.Duration
	BrokerCPUPerRq time.Duration
	// StoreCPUPerRq is the order store's (PostgreSQL: the postmaster and
	// its backends) per request; zero with no store and on the hello row.
	StoreCPUPerRq time.Duration
	WrkCPUPerRq   time.Duration
}

// OverloadRow is the node's selling path driven with far more connections
// than its http.max_inflight, once per round: the excess should be refused
// with fast 503s while the admitted requests still sell.
type OverloadRow struct {
	Scenario     string
	Round        int
	Connections  int
	Requests     int64
	RPS          float64 // all replies per second
	GoodRPS      float64 // 201s (units sold) per second
	Share503     float64 // 503s / all replies
	P50, P99     time.Duration
	Non2xx       int64
	SocketErrors int64 // wrk's connect, read, write errors and timeouts
	Statuses     string
	// GoodVsSelling is GoodRPS over the same round's selling-path req/s
	// (256 connections): the overload target is >= 0.9.
	GoodVsSelling float64
	// EvalPer201 is buy-script calls per unit sold: batches grow under load
	// when this falls below the selling row's script calls/req.
	EvalPer201 float64
	// The node's go_goroutines and process_resident_memory_bytes, scraped
	// from /metrics right after wrk exits; -1 when the scrape failed.
	Goroutines int64
	RSS        int64
}

// OpenLoopRow is the selling path offered a fixed arrival rate (open
// loop: a slow answer does not slow the arrivals, as with a real crowd).
type OpenLoopRow struct {
	Scenario string
	Round    int
	// Offered is the arrival rate asked of the generator; Sent the rate it
	// actually sent (requests / elapsed) and Dropped the arrivals it never
	// sent because it fell behind: on a small box the generator itself may
	// not reach the offered rate, and the row says so.
	Offered, Sent float64
	Dropped       int64
	GoodRPS       float64 // 201s per second
	GoodVsSelling float64 // GoodRPS over the same round's selling-path req/s
	Share503      float64
	P50, P99      time.Duration // from each request's intended send time
	P99OK         time.Duration // of the 201s alone (the "p99 of admitted buys")
	Conns         int64         // connections the generator held
	Non2xx        int64
	SocketErrors  int64 // requests with no reply (transport errors, timeouts)
	Statuses      string
}

// SuiteResult is what Suite measured: the main table, the overload table
// and the open-loop table.
type SuiteResult struct {
	Rows     []SuiteRow
	Overload []OverloadRow
	OpenLoop []OpenLoopRow
}

// suiteScenario is one thing wrk drives: url with the wrk script's sale
// argument ("none" for the hello server), served by the process pid.
type suiteScenario struct {
	name, url, sale string
	pid             int
}

// Suite measures, on this machine and in one run, a bare net/http hello
// server, a node's sold-out path and a node's selling path, each driven by
// the same wrk script (so the client costs the same for all three), and
// reports every figure as a ratio to the hello server of the same round.
// Each round runs the three scenarios' slices interleaved, then the
// overload row when cfg.OverloadConnections > 0.
func Suite(ctx context.Context, cfg SuiteConfig) (SuiteResult, error) {
	var res SuiteResult
	if _, err := exec.LookPath("wrk"); err != nil {
		return res, fmt.Errorf("wrk not found: run `make deps`")
	}
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	nslices := max(cfg.Slices, 1)
	// wrk's -d takes whole seconds.
	sliceDur := (cfg.Duration / time.Duration(nslices)).Truncate(time.Second)
	if sliceDur < time.Second {
		return res, fmt.Errorf("--duration %v in %d slices is under 1s a slice: wrk runs whole seconds", cfg.Duration, nslices)
	}
	if total := sliceDur * time.Duration(nslices); total != cfg.Duration {
		fmt.Fprintf(out, "note: %d slices of %v = %v per scenario (wrk runs whole seconds)\n", nslices, sliceDur, total)
	}
	// Before any child starts: they inherit the limit (see raiseNoFile).
	if cur, err := raiseNoFile(); err != nil {
		fmt.Fprintf(out, "note: cannot raise the open-files limit: %v\n", err)
	} else if need := uint64(cfg.OverloadConnections + 64); cfg.OverloadConnections > 0 && cur < need {
		fmt.Fprintf(out, "note: open-files limit %d is under the %d the overload row needs; expect wrk connect errors\n", cur, need)
	}

	helloAddr, err := freeAddr()
	if err != nil {
		return res, err
	}
	hello := exec.CommandContext(ctx, cfg.Binary, "bench", "hello", "--addr", helloAddr)
	hello.Stdout, hello.Stderr = io.Discard, io.Discard
	if err := hello.Start(); err != nil {
		return res, fmt.Errorf("start hello server: %w", err)
	}
	defer func() { _ = hello.Process.Kill(); _ = hello.Wait() }()

	fmt.Fprintln(out, "starting redis-server, the broker and one node ...")
	// Rate limits off: wrk is one IP and a pool of tokens hammering the
	// node tens of thousands of times a second (what the run measures).
	c, err := cluster.Up(ctx, cluster.Config{Nodes: 1, NoNginx: true, Dir: cfg.Dir, Fresh: true, Binary: cfg.Binary,
		RedisFsync: "everysec", NoRateLimits: true, NoPostgres: cfg.NoOrderStore})
	if err != nil {
		return res, err
	}
	defer c.Down()
	st := c.State()
	node := st.Nodes[0].URL
	api := NewAPI(node, c.AdminToken())
	// Every request carries a bearer token of the pool (the hello server
	// gets the same bytes); the selling sale lets each of the pool's users
	// buy without limit, so every request there is a sale.
	pool := filepath.Join(cfg.Dir, "tokens.txt")
	if err := auth.WriteTokenPool(pool, []byte(c.AuthSecret()), "u", suiteTokens, 24*time.Hour); err != nil {
		return res, err
	}
	m0 := meterPool(pool)
	for _, s := range []SaleSpec{{ID: "soldout", Stock: 1, PerUserLimit: 1},
		{ID: "selling", Stock: 100_000_000, PerUserLimit: order.MaxPerUserLimit}} {
		if err := api.CreateSale(ctx, s); err != nil {
			return res, fmt.Errorf("create sale %s: %w", s.ID, err)
		}
	}
	first, err := auth.Mint([]byte(c.AuthSecret()), "first", time.Hour)
	if err != nil {
		return res, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, node+"/v1/sales/soldout/buy", nil)
	req.Header.Set("Authorization", "Bearer "+first)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return res, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return res, fmt.Errorf("selling out the soldout sale: %s", resp.Status)
	}
	if err := waitHTTP(ctx, "http://"+helloAddr+"/"); err != nil {
		return res, err
	}
	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr()})
	defer rdb.Close()
	// Keep the AOF (fsync every second, as a node runs it) but not its
	// automatic rewrite: a rewrite forks and re-serialises every order sold so
	// far, and whichever slice it lands in (hello's or a node's) loses a core
	// for seconds — noise, not a cost of the path being measured.
	if err := rdb.ConfigSet(ctx, "auto-aof-rewrite-percentage", "0").Err(); err != nil {
		return res, fmt.Errorf("redis: turn off AOF auto-rewrite for the run: %w", err)
	}
	m := meter{cfg: cfg, rdb: rdb, brokerPID: st.Broker.PID, pool: m0}
	if st.Postgres != nil {
		m.storePID = st.Postgres.PID
	}

	// The WAIT row (issue 14): a replica of the same Redis and a second node
	// that answers a buy only once the replica has it (min_replicas_acked 1:
	// WAIT 1 pipelined after every buy script). From here on every row's
	// Redis also feeds the replica, as a replicated deployment does.
	fmt.Fprintln(out, "starting a Redis replica and a node with redis.min_replicas_acked 1 ...")
	waitNode, waitPID, stopWait, err := startWaitNode(ctx, cfg, st)
	if err != nil {
		return res, err
	}
	defer stopWait()
	// No per-user limit, as on the selling sale: with a limit of one the
	// pool's users had all bought within the first slice and the row
	// measured limit_reached answers, not sales.
	if err := NewAPI(waitNode, c.AdminToken()).CreateSale(ctx, SaleSpec{ID: "selling-wait", Stock: 100_000_000, PerUserLimit: order.MaxPerUserLimit}); err != nil {
		return res, fmt.Errorf("create sale selling-wait: %w", err)
	}

	// The shedding variants (issue 16): more nodes of the same cluster, on
	// the same Redis and broker, each with one admission setting changed.
	// Each runs only its own overload row, so they idle through the rest.
	type variant struct {
		name string
		sc   suiteScenario
	}
	var variants []variant
	if cfg.ShedCompare && cfg.OverloadConnections > 0 {
		for _, v := range []struct{ id, name, env string }{
			{"node-shed-oldest", "shed oldest", "FLASHSALE_ADMISSION_SHED=oldest"},
			{"node-lifo", "shed newest, LIFO", "FLASHSALE_ADMISSION_LIFO=true"},
		} {
			fmt.Fprintf(out, "starting a node with %s ...\n", v.env)
			u, pid, stopV, err := startNode(ctx, cfg, st, v.id, v.env)
			if err != nil {
				return res, err
			}
			defer stopV()
			variants = append(variants, variant{v.name, suiteScenario{url: u, sale: "selling", pid: pid}})
		}
	}

	scenarios := []suiteScenario{
		{"hello (net/http)", "http://" + helloAddr, "none", hello.Process.Pid},
		{"node sold-out path", node, "soldout", st.Nodes[0].PID},
		{"node selling path", node, "selling", st.Nodes[0].PID},
		{"selling, WAIT 1 replica", waitNode, "selling-wait", waitPID},
	}
	for round := 1; round <= max(cfg.Runs, 1); round++ {
		sums := make([]sliceSum, len(scenarios))
		for range nslices {
			for i, sc := range scenarios {
				r, err := m.measure(ctx, sc, cfg.Connections, sliceDur)
				if err != nil {
					return res, fmt.Errorf("%s: %w", sc.name, err)
				}
				sums[i].add(r)
			}
		}
		var base float64
		for i, sc := range scenarios {
			row := sums[i].row(sc.name, round, sc.sale != "none")
			if sc.sale == "none" {
				base = row.RPS
			}
			if base > 0 {
				row.Ratio = row.RPS / base
			}
			spread := ""
			if row.Slices > 1 {
				spread = fmt.Sprintf("slices %.0f..%.0f  ", row.SliceRPSMin, row.SliceRPSMax)
			}
			fmt.Fprintf(out, "round %d  %-20s %9.0f req/s  p99 %-8v ratio %.2f  %s%s\n", round, sc.name, row.RPS, row.P99, row.Ratio, spread, row.Statuses)
			res.Rows = append(res.Rows, row)
		}
		selling := 0.0
		for _, r := range res.Rows[len(res.Rows)-len(scenarios):] {
			if r.Scenario == scenarios[2].name {
				selling = r.RPS
			}
		}
		if cfg.OverloadConnections > 0 {
			runs := []struct {
				name  string
				sc    suiteScenario
				admin string
			}{{fmt.Sprintf("node overload (c%d)", cfg.OverloadConnections), scenarios[2], st.Nodes[0].AdminURL}}
			for _, v := range variants {
				runs = append(runs, struct {
					name  string
					sc    suiteScenario
					admin string
				}{fmt.Sprintf("overload, %s (c%d)", v.name, cfg.OverloadConnections), v.sc, ""})
			}
			for _, run := range runs {
				o, err := m.overload(ctx, run.name, run.sc, round, run.admin, selling)
				if err != nil {
					return res, err
				}
				fmt.Fprintf(out, "round %d  %-20s %9.0f req/s  201/s %.0f  503 share %.2f  p99 %-8v  goroutines %d  %s\n",
					round, o.Scenario, o.RPS, o.GoodRPS, o.Share503, o.P99, o.Goroutines, o.Statuses)
				res.Overload = append(res.Overload, o)
			}
		}
		if cfg.OpenLoopFactor > 0 && selling > 0 {
			o, err := openLoop(ctx, cfg, node, c.AuthSecret(), round, selling)
			if err != nil {
				return res, err
			}
			fmt.Fprintf(out, "round %d  %-20s offered %.0f/s sent %.0f/s  201/s %.0f (%.2fx selling)  p99 %-8v  %s\n",
				round, o.Scenario, o.Offered, o.Sent, o.GoodRPS, o.GoodVsSelling, o.P99, o.Statuses)
			res.OpenLoop = append(res.OpenLoop, o)
		}
	}
	return res, nil
}

// overload runs one overload row: wrk with cfg.OverloadConnections against
// sc's selling sale, goodput against the round's selling rate, and the
// node's goroutines and RSS from admin's /metrics ("" skips the scrape).
func (m meter) overload(ctx context.Context, name string, sc suiteScenario, round int, admin string, selling float64) (OverloadRow, error) {
	conns := m.cfg.OverloadConnections
	r, err := m.measure(ctx, sc, conns, m.cfg.Duration.Truncate(time.Second))
	if err != nil {
		return OverloadRow{}, fmt.Errorf("%s: %w", name, err)
	}
	o := overloadRow(name, round, conns, r.wrk)
	if sold := r.wrk.Statuses["201"]; sold > 0 {
		o.EvalPer201 = float64(r.redis.evals) / float64(sold)
	}
	if selling > 0 {
		o.GoodVsSelling = o.GoodRPS / selling
	}
	o.Goroutines, o.RSS = -1, -1
	if admin == "" {
		return o, nil
	}
	if text, err := getText(ctx, admin+"/metrics"); err != nil {
		fmt.Fprintf(m.cfg.Out, "note: scrape %s/metrics: %v\n", admin, err)
	} else {
		if v, ok := promValue(text, "go_goroutines"); ok {
			o.Goroutines = int64(v)
		}
		if v, ok := promValue(text, "process_resident_memory_bytes"); ok {
			o.RSS = int64(v)
		}
	}
	return o, nil
}

// openLoop offers the node's selling sale cfg.OpenLoopFactor x selling
// arrivals a second for cfg.Duration with this package's open-loop
// generator, over openLoopConns connections.
func openLoop(ctx context.Context, cfg SuiteConfig, node, secret string, round int, selling float64) (OpenLoopRow, error) {
	rate := cfg.OpenLoopFactor * selling
	dur := cfg.Duration.Truncate(time.Second)
	t, err := epollOpenLoop(ctx, openLoopSpec{Node: node, Sale: "selling", Secret: []byte(secret), Users: 100_000,
		Rate: rate, Duration: dur, Conns: cmp.Or(cfg.OpenLoopConns, openLoopConns(rate)), Timeout: 5 * time.Second})
	if err != nil {
		return OpenLoopRow{}, fmt.Errorf("open-loop row: %w", err)
	}
	o := OpenLoopRow{Scenario: fmt.Sprintf("open loop %.0fx selling", cfg.OpenLoopFactor), Round: round, Offered: rate,
		Sent: float64(t.Sent) / dur.Seconds(), Dropped: t.Offered - t.Sent, Conns: t.Held,
		P50: time.Duration(t.All.ValueAtQuantile(50)) * time.Microsecond, P99: time.Duration(t.All.ValueAtQuantile(99)) * time.Microsecond,
		P99OK: time.Duration(t.OK.ValueAtQuantile(99)) * time.Microsecond, SocketErrors: t.Lost}
	status := map[string]int64{}
	for st, n := range t.Statuses {
		status[strconv.Itoa(st)] = n
		if st/100 != 2 {
			o.Non2xx += n
		}
	}
	if t.Lost > 0 {
		status["none"] = t.Lost
	}
	o.Statuses = mapLine(status)
	o.GoodRPS = float64(t.Statuses[201]) / dur.Seconds()
	if t.Sent > 0 {
		o.Share503 = float64(t.Statuses[503]) / float64(t.Sent)
	}
	o.GoodVsSelling = o.GoodRPS / selling
	return o, nil
}

// openLoopConns is how many connections carry an open loop of rate
// arrivals a second: by Little's law rate x latency are busy, so at 35,000
// a second and 200 ms about 7,000; but held connections cost the node, and
// measured on this box (bench/RESULTS.md) 14,000 of them made it answer a
// third of what it answered over 4,000 (its netpoller, scheduler and GC
// with a goroutine each). A proxy in front keeps such a bounded upstream
// pool too, so arrivals beyond it queue in the generator, timed from their
// intended send, as they would in the proxy.
func openLoopConns(rate float64) int {
	return int(min(max(rate/2, 1000), 4_000))
}

func msDur(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// meter runs one wrk measurement and brackets it with the counters of the
// processes taking part.
type meter struct {
	cfg       SuiteConfig
	rdb       *redis.Client
	brokerPID int
	storePID  int // PostgreSQL's postmaster, 0 when the cluster has no order store
	pool      meterPool
}

// measurement is one wrk run and what the other processes spent meanwhile.
type measurement struct {
	wrk            wrkResult
	redis          rstats        // Redis's INFO counters over the run
	server, broker time.Duration // CPU of the server under test and of the broker over the run
	store          time.Duration // CPU of the order store (PostgreSQL and its backends) over the run
}

func (m meter) measure(ctx context.Context, sc suiteScenario, conns int, d time.Duration) (measurement, error) {
	before, err := redisStats(ctx, m.rdb)
	if err != nil {
		return measurement{}, err
	}
	// Read /proc as close to wrk as possible, inside the INFO brackets, so
	// the INFO round trips are not charged to the server.
	srv0, brk0, sto0 := cluster.ProcCPU(sc.pid), cluster.ProcCPU(m.brokerPID), cluster.TreeCPU(m.storePID)
	w, err := runWrk(ctx, m.cfg.Threads, conns, d, m.cfg.WrkScript, sc.url, sc.sale, string(m.pool))
	if err != nil {
		return measurement{}, err
	}
	srv1, brk1, sto1 := cluster.ProcCPU(sc.pid), cluster.ProcCPU(m.brokerPID), cluster.TreeCPU(m.storePID)
	after, err := redisStats(ctx, m.rdb)
	if err != nil {
		return measurement{}, err
	}
	return measurement{wrk: w, redis: after.sub(before), server: srv1 - srv0, broker: brk1 - brk0, store: sto1 - sto0}, nil
}

// sliceSum adds up one scenario's slices within a round.
type sliceSum struct {
	n              int
	requests       int64
	elapsed        time.Duration
	non2xx         int64
	statuses       map[string]int64
	p50s           []time.Duration
	p99            time.Duration
	minRPS, maxRPS float64
	redis          rstats
	server, broker time.Duration
	store          time.Duration
	wrkCPU         time.Duration
}

func (s *sliceSum) add(m measurement) {
	w := m.wrk
	rps := w.rps()
	if s.n == 0 || rps < s.minRPS {
		s.minRPS = rps
	}
	if s.n == 0 || rps > s.maxRPS {
		s.maxRPS = rps
	}
	s.n++
	s.requests += w.Requests
	s.elapsed += w.Elapsed
	s.non2xx += w.Non2xx
	if s.statuses == nil {
		s.statuses = map[string]int64{}
	}
	for k, v := range w.Statuses {
		s.statuses[k] += v
	}
	s.p50s = append(s.p50s, w.P50)
	s.p99 = max(s.p99, w.P99)
	s.redis = s.redis.add(m.redis)
	s.server += m.server
	s.broker += m.broker
	s.store += m.store
	s.wrkCPU += w.CPU
}

// row turns the sums into a table row; backend (Redis, broker) figures only
// when the scenario uses them.
func (s *sliceSum) row(name string, round int, backend bool) SuiteRow {
	r := SuiteRow{Scenario: name, Round: round, Slices: s.n, Requests: s.requests, Non2xx: s.non2xx,
		Statuses: mapLine(s.statuses), P50: median(s.p50s), P99: s.p99, SliceRPSMin: s.minRPS, SliceRPSMax: s.maxRPS}
	if s.elapsed > 0 {
		r.RPS = float64(s.requests) / s.elapsed.Seconds()
	}
	if s.requests <= 0 {
		return r
	}
	n := float64(s.requests)
	perRq := func(d time.Duration) time.Duration { return time.Duration(float64(d) / n) }
	r.ServerCPUPerRq, r.WrkCPUPerRq = perRq(s.server), perRq(s.wrkCPU)
	if backend {
		r.RedisCmdPerRq = float64(s.redis.commands) / n
		r.EvalPerRq = float64(s.redis.evals) / n
		r.RedisCPUPerRq = perRq(time.Duration(s.redis.cpu))
		r.BrokerCPUPerRq = perRq(s.broker)
		r.StoreCPUPerRq = perRq(s.store)
	}
	return r
}

func overloadRow(name string, round, conns int, w wrkResult) OverloadRow {
	o := OverloadRow{Scenario: name, Round: round, Connections: conns, Requests: w.Requests, RPS: w.rps(),
		P50: w.P50, P99: w.P99, Non2xx: w.Non2xx, SocketErrors: w.SocketErrors, Statuses: mapLine(w.Statuses)}
	if w.Elapsed > 0 {
		o.GoodRPS = float64(w.Statuses["201"]) / w.Elapsed.Seconds()
	}
	if w.Requests > 0 {
		o.Share503 = float64(w.Statuses["503"]) / float64(w.Requests)
	}
	return o
}

// median returns the middle of ds (the mean of the two middle ones for an
// even count), 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// WriteTable prints res as the tables `make bench` shows and RESULTS.md
// keeps: the main table, a note on how slices were merged, and the overload
// table when there is one.
func WriteTable(w io.Writer, res SuiteResult) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tscenario\treq/s\tp50\tp99\tratio to hello\tnon-2xx\tscript calls/req\tRedis cmds/req\tRedis CPU/req\tserver CPU/req\tbroker CPU/req\tstore CPU/req\twrk CPU/req\t")
	for _, r := range res.Rows {
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%v\t%v\t%.2f\t%d\t%.4f\t%.3f\t%v\t%v\t%v\t%v\t%v\t\n", r.Round, r.Scenario, r.RPS, r.P50, r.P99, r.Ratio, r.Non2xx,
			r.EvalPerRq, r.RedisCmdPerRq, cpuCell(r.RedisCPUPerRq), cpuCell(r.ServerCPUPerRq), cpuCell(r.BrokerCPUPerRq), cpuCell(r.StoreCPUPerRq), cpuCell(r.WrkCPUPerRq))
	}
	tw.Flush()
	if len(res.Rows) > 0 && res.Rows[0].Slices > 1 {
		fmt.Fprintf(w, "(%d interleaved slices per scenario and round: req/s = all requests / all time; p50 = median of the slices' p50s, p99 = worst slice's p99)\n",
			res.Rows[0].Slices)
	}
	fmt.Fprintln(w, "(CPU/req = user+sys: Redis from INFO; server = hello or node, broker, and store = PostgreSQL with its backends, from /proc; wrk from its rusage)")
	defer writeOpenLoop(w, res.OpenLoop)
	if len(res.Overload) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\toverload\treq/s\t201/s\t201/s vs selling\tscript calls/201\t503 share\tp50\tp99\tnon-2xx\tsocket errors\tgoroutines after\tRSS after\t")
	for _, o := range res.Overload {
		rss := "?"
		if o.RSS >= 0 {
			rss = fmt.Sprintf("%.0f MiB", float64(o.RSS)/(1<<20))
		}
		fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.0f\t%.2f\t%.4f\t%.3f\t%v\t%v\t%d\t%d\t%d\t%s\t\n", o.Round, o.Scenario, o.RPS, o.GoodRPS,
			o.GoodVsSelling, o.EvalPer201, o.Share503,
			o.P50, o.P99, o.Non2xx, o.SocketErrors, o.Goroutines, rss)
	}
	tw.Flush()
}

// writeOpenLoop prints the open-loop table, if any.
func writeOpenLoop(w io.Writer, rows []OpenLoopRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\topen loop\tconns\toffered/s\tsent/s\tnot sent\t201/s\t201/s vs selling\t503 share\tp50\tp99\tp99 of 201s\tnon-2xx\tno reply\t")
	for _, o := range rows {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f\t%.0f\t%d\t%.0f\t%.2f\t%.3f\t%v\t%v\t%v\t%d\t%d\t\n", o.Round, o.Scenario, o.Conns, o.Offered, o.Sent, o.Dropped,
			o.GoodRPS, o.GoodVsSelling, o.Share503, o.P50.Round(10*time.Microsecond), o.P99.Round(10*time.Microsecond),
			o.P99OK.Round(10*time.Microsecond), o.Non2xx, o.SocketErrors)
	}
	tw.Flush()
	fmt.Fprintln(w, "(open loop: arrivals at a fixed rate from one epoll loop (package holdload); latency from each request's intended send time; sent < offered means the generator, not the node, fell behind)")
}

func cpuCell(d time.Duration) time.Duration { return d.Round(10 * time.Nanosecond) }

// wrkResult is what one wrk run printed, plus wrk's own CPU time.
type wrkResult struct {
	Requests     int64
	Elapsed      time.Duration
	P50, P99     time.Duration
	Non2xx       int64
	SocketErrors int64
	Statuses     map[string]int64 // by HTTP status, from tally.lua's status line
	CPU          time.Duration
}

func (w wrkResult) rps() float64 {
	if w.Elapsed <= 0 {
		return 0
	}
	return float64(w.Requests) / w.Elapsed.Seconds()
}

var (
	requestsRe = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(us|ms|s|m|h),`)
	rpsRe      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	pctRe      = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([0-9.]+)(us|ms|s)\b`)
	non2xxRe   = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	sockErrRe  = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	// [ \t], not \s: an empty mix must not swallow the next line.
	statusRe = regexp.MustCompile(`(?m)^status[ \t]+([^\n]*)$`)
)

// suiteTokens is the size of the suite's token pool: distinct buyers enough
// to spread over the per-user rows in Redis like a crowd, few enough to be
// pre-built in each wrk thread.
const suiteTokens = 10_000

// meterPool is the path of the token-pool file wrk reads.
type meterPool string

func runWrk(ctx context.Context, threads, conns int, d time.Duration, script, url, sale, pool string) (wrkResult, error) {
	args := []string{"-t" + strconv.Itoa(max(threads, 1)), "-c" + strconv.Itoa(conns),
		"-d" + strconv.Itoa(int(d.Seconds())) + "s", "--latency", "-s", script, url, "--", sale, pool}
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, "wrk", args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	r, err := parseWrk(buf.String())
	if err != nil {
		return r, err
	}
	// wrk is gone by now, and /proc with it: its rusage is exact anyway.
	r.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

// parseWrk reads wrk --latency output with tally.lua's status mix.
func parseWrk(s string) (wrkResult, error) {
	var r wrkResult
	m := requestsRe.FindStringSubmatch(s)
	if m == nil {
		return r, fmt.Errorf("no \"N requests in T\" in wrk output:\n%s", s)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	d, err := time.ParseDuration(m[2] + m[3])
	if err != nil {
		return r, fmt.Errorf("wrk run time %q: %w", m[2]+m[3], err)
	}
	r.Elapsed = d
	// wrk prints its run time with two decimals (2.00s), but Requests/sec
	// (requests over that same run time) with seven or more significant
	// digits: take the run time from the two when it can be had.
	if m := rpsRe.FindStringSubmatch(s); m != nil {
		if rps, _ := strconv.ParseFloat(m[1], 64); rps > 0 && r.Requests > 0 {
			r.Elapsed = time.Duration(float64(r.Requests) / rps * float64(time.Second))
		}
	}
	for _, m := range pctRe.FindAllStringSubmatch(s, -1) {
		d, _ := time.ParseDuration(m[2] + m[3])
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	if m := non2xxRe.FindStringSubmatch(s); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := sockErrRe.FindStringSubmatch(s); m != nil {
		for _, v := range m[1:] {
			n, _ := strconv.ParseInt(v, 10, 64)
			r.SocketErrors += n
		}
	}
	if m := statusRe.FindStringSubmatch(s); m != nil {
		r.Statuses = parseMix(m[1])
	}
	return r, nil
}

// parseMix reads a tally.lua line body such as "201=74100  409=2".
func parseMix(s string) map[string]int64 {
	mix := map[string]int64{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(v, 10, 64); err == nil {
			mix[k] += n
		}
	}
	return mix
}

// raiseNoFile lifts the soft open-files limit to the hard one and returns
// the new soft limit. Go raises its own soft limit at start-up but gives
// child processes the original one (often 1024) back unless the program
// calls Setrlimit itself, so without this call wrk could not open the
// overload row's thousands of connections.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit: %w", err)
	}
	return lim.Cur, nil
}

// getText GETs url and returns the body.
func getText(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(b), nil
}

// promValue returns the value of the unlabelled sample name in Prometheus
// text exposition format.
func promValue(text, name string) (float64, bool) {
	for _, line := range strings.Split(text, "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
			continue // another metric with this prefix, or a labelled one
		}
		f := strings.Fields(rest) // value [timestamp]
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			return v, true
		}
	}
	return 0, false
}

// rstats are Redis's cumulative counters from INFO.
type rstats struct {
	commands int64
	evals    int64
	cpu      int64 // nanoseconds of user+sys CPU
}

func (a rstats) sub(b rstats) rstats {
	return rstats{commands: a.commands - b.commands, evals: a.evals - b.evals, cpu: a.cpu - b.cpu}
}

func (a rstats) add(b rstats) rstats {
	return rstats{commands: a.commands + b.commands, evals: a.evals + b.evals, cpu: a.cpu + b.cpu}
}

func redisStats(ctx context.Context, rdb *redis.Client) (rstats, error) {
	info, err := rdb.Info(ctx, "stats", "cpu", "commandstats").Result()
	if err != nil {
		return rstats{}, fmt.Errorf("redis INFO: %w", err)
	}
	var st rstats
	var cpu float64
	for _, line := range strings.Split(info, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch k {
		case "total_commands_processed":
			st.commands, _ = strconv.ParseInt(v, 10, 64)
		case "cmdstat_evalsha", "cmdstat_eval":
			for _, kv := range strings.Split(v, ",") {
				if n, ok := strings.CutPrefix(kv, "calls="); ok {
					c, _ := strconv.ParseInt(n, 10, 64)
					st.evals += c
				}
			}
		case "used_cpu_user", "used_cpu_sys":
			f, _ := strconv.ParseFloat(v, 64)
			cpu += f
		}
	}
	// INFO itself is a command; two of them bracket every wrk run.
	st.commands--
	st.cpu = int64(cpu * 1e9)
	return st, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitHTTP(ctx context.Context, url string) error {
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
	}
	return fmt.Errorf("%s did not answer", url)
}

func suiteCommand() *cobra.Command {
	cfg := SuiteConfig{}
	var results string
	cmd := &cobra.Command{
		Use:   "suite",
		Short: "Measure hello vs the node's sold-out and selling paths with wrk; print ratios (make bench)",
		Long: `suite starts a bare net/http hello server and a one-node cluster (redis-server,
the broker, a node) and drives, with the same wrk script, the hello server, the
node's sold-out path and its selling path, printing each as a ratio to hello
measured in the same round.

Within a round each scenario's --duration is split into --slices wrk runs,
interleaved (hello, sold-out, selling, hello, ...), so that a noisy box's drift
hits all three alike. Slices are merged as follows: req/s is all requests over
all the time wrk measured; non-2xx, the status mix and the Redis and CPU
counters are summed. wrk's percentiles cannot be merged exactly, so p50 is the
median of the slices' p50s and p99 the worst slice's p99 (conservative).
--slices 1 gives one wrk run per scenario and round.

CPU/req columns are user+system CPU per request: Redis's from INFO, the server
under test's (hello or the node), the broker's and the order store's
(PostgreSQL's postmaster and backends) from /proc (Linux only; zero
elsewhere), wrk's from its rusage. The cluster runs its order store (and node
1 its store consumer, whose CPU is in the node's) unless --no-order-store:
then the selling path is measured as it was before orders of record existed.

After the three scenarios each round drives the selling path once more, for
--duration, with --overload-connections connections (far above the node's
http.max_inflight), and prints a second table: req/s, 201s per second, the
share of 503s, latency, and the node's goroutines and RSS from /metrics right
after the run. With --shed-compare the same row also runs against two more nodes
of the cluster, one shedding oldest-first (admission.shed oldest) and one
serving LIFO under load (admission.lifo true).

Then, with --open-loop F (default 3; 0: none), the selling path is offered F x
the round's selling rate as fixed arrivals by flashsale's own generator (wrk is
closed loop); the table says what was offered and what the generator managed to
send, so a generator that cannot keep up on a small box is seen, not hidden.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Out = cmd.ErrOrStderr()
			if cfg.Binary == "" {
				exe, err := os.Executable()
				if err != nil {
					return err
				}
				cfg.Binary = exe
			}
			if cfg.Dir == "" {
				dir, err := os.MkdirTemp("", "flashsale-bench-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				cfg.Dir = dir
			}
			res, err := Suite(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			var tbl bytes.Buffer
			WriteTable(&tbl, res)
			fmt.Fprintln(cmd.OutOrStdout())
			cmd.OutOrStdout().Write(tbl.Bytes())
			if results != "" {
				host, _ := os.Hostname()
				f, err := os.OpenFile(results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					return err
				}
				defer f.Close()
				overload := ""
				if cfg.OverloadConnections > 0 {
					overload = fmt.Sprintf("; overload -c%d", cfg.OverloadConnections)
				}
				if _, err := fmt.Fprintf(f, "\n### %s — %s, %d cores (wrk -t%d -c%d, %v per scenario in %d interleaved slices%s)\n\n```\n%s```\n",
					time.Now().UTC().Format("2006-01-02 15:04 UTC"), host, runtime.NumCPU(), cfg.Threads, cfg.Connections, cfg.Duration,
					max(cfg.Slices, 1), overload, tbl.String()); err != nil {
					return fmt.Errorf("append to %s: %w", results, err)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.DurationVar(&cfg.Duration, "duration", 10*time.Second, "per scenario and round (whole seconds per slice)")
	f.IntVar(&cfg.Slices, "slices", 10, "interleaved wrk runs per scenario and round; p50 = median of the slices' p50s, p99 = worst slice's p99")
	f.IntVar(&cfg.Connections, "connections", 256, "wrk connections")
	f.IntVar(&cfg.OverloadConnections, "overload-connections", 4000, "wrk connections for the overload row (0: no overload row)")
	f.Float64Var(&cfg.OpenLoopFactor, "open-loop", 3, "open-loop row: offer this many times the round's selling rate as fixed arrivals (0: no row)")
	f.IntVar(&cfg.OpenLoopConns, "open-loop-connections", 0, "connections of the open-loop row (0: offered rate / 2, between 1,000 and 4,000)")
	f.BoolVar(&cfg.NoOrderStore, "no-order-store", false, "run the cluster without its PostgreSQL order store (and node 1 without the store consumer), as before issue 15")
	f.BoolVar(&cfg.ShedCompare, "shed-compare", false, "overload rows also against a node shedding oldest-first and one serving LIFO under load")
	f.IntVar(&cfg.Threads, "threads", 1, "wrk threads")
	f.IntVar(&cfg.Runs, "runs", 3, "rounds (the spread across rounds is the run-to-run noise)")
	f.StringVar(&cfg.WrkScript, "script", filepath.Join("bench", "wrk", "buy.lua"), "wrk script for all scenarios")
	f.StringVar(&cfg.Binary, "binary", "", "flashsale binary (default: this one)")
	f.StringVar(&cfg.Dir, "dir", "", "run directory (default: a temporary one)")
	f.StringVar(&results, "results", "", "append the tables to this file (e.g. bench/RESULTS.md)")
	return cmd
}

// startWaitNode starts a redis-server replicating the suite's Redis and a
// node like the suite's own but with FLASHSALE_REDIS_MIN_REPLICAS_ACKED=1,
// and returns the node's URL and PID and a func that stops both.
func startWaitNode(ctx context.Context, cfg SuiteConfig, st cluster.State) (url string, pid int, stop func(), err error) {
	var procs []*exec.Cmd
	stop = func() {
		for _, p := range procs {
			_ = p.Process.Signal(syscall.SIGTERM)
			_ = p.Wait()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	raddr, err := freeAddr()
	if err != nil {
		return "", 0, stop, err
	}
	_, rport, _ := strings.Cut(raddr, ":")
	_, mport, _ := strings.Cut(st.Redis.Addr, ":")
	dir := filepath.Join(st.Dir, "redis-replica")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", 0, stop, err
	}
	rep := exec.CommandContext(ctx, "redis-server", "--port", rport, "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "no", "--save", "", "--replicaof", "127.0.0.1", mport, "--logfile", filepath.Join(dir, "redis.log"))
	if err := rep.Start(); err != nil {
		return "", 0, stop, fmt.Errorf("start the redis replica: %w", err)
	}
	procs = append(procs, rep)
	mc := redis.NewClient(&redis.Options{Addr: st.Redis.Addr})
	defer mc.Close()
	for deadline := time.Now().Add(20 * time.Second); ; {
		// "online" is not enough: after a diskless sync the master streams to
		// the replica only after its first REPLCONF ACK (up to 1 s later).
		// Ready means a write is acknowledged.
		info, _ := mc.Info(ctx, "replication").Result()
		if lua.ProbeReplicas(ctx, mc, 1, 100*time.Millisecond) == nil {
			break
		}
		if time.Now().After(deadline) {
			return "", 0, stop, fmt.Errorf("the redis replica %s did not come online: %s", raddr, info)
		}
		time.Sleep(50 * time.Millisecond)
	}

	nurl, npid, stopNode, err := startNode(ctx, cfg, st, "node-wait", "FLASHSALE_REDIS_MIN_REPLICAS_ACKED=1")
	if err != nil {
		return "", 0, stop, fmt.Errorf("the WAIT node: %w", err)
	}
	stopReplica := stop
	stop = func() { stopNode(); stopReplica() } // the node stops before its Redis replica
	return nurl, npid, stop, nil
}

// startNode starts one more node of the suite's cluster (same Redis,
// broker and secrets as node 1) named id, with env appended to node 1's
// environment, and returns its URL and PID and a func that stops it.
func startNode(ctx context.Context, cfg SuiteConfig, st cluster.State, id string, extra ...string) (url string, pid int, stop func(), err error) {
	stop = func() {}
	naddr, err := freeAddr()
	if err != nil {
		return "", 0, stop, err
	}
	ndir := filepath.Join(st.Dir, id)
	if err := os.MkdirAll(ndir, 0o755); err != nil {
		return "", 0, stop, err
	}
	env := os.Environ()
	for _, kv := range st.Nodes[0].Env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		// Its own ports and stat.log; no second order-store consumer (node1's
		// writes every order of the deployment).
		case "FLASHSALE_NODE_ID", "FLASHSALE_HTTP_ADDR", "FLASHSALE_STATLOG_PATH", "FLASHSALE_HTTP_ADMIN_ADDR",
			"FLASHSALE_POSTGRES_DSN":
		default:
			env = append(env, kv)
		}
	}
	aaddr, err := freeAddr()
	if err != nil {
		return "", 0, stop, err
	}
	env = append(env, "FLASHSALE_NODE_ID="+id, "FLASHSALE_HTTP_ADDR="+naddr, "FLASHSALE_HTTP_ADMIN_ADDR="+aaddr,
		"FLASHSALE_STATLOG_PATH="+filepath.Join(ndir, "stat.log"))
	env = append(env, extra...)
	logf, err := os.Create(filepath.Join(ndir, "node.log"))
	if err != nil {
		return "", 0, stop, err
	}
	defer logf.Close() // the child holds its own descriptor
	n := exec.CommandContext(ctx, cfg.Binary, "node")
	n.Env, n.Stdout, n.Stderr = env, logf, logf
	if err := n.Start(); err != nil {
		return "", 0, stop, fmt.Errorf("start node %s: %w", id, err)
	}
	stop = func() {
		_ = n.Process.Signal(syscall.SIGTERM)
		_ = n.Wait()
	}
	url = "http://" + naddr
	if err := waitHTTP(ctx, url+"/readyz"); err != nil {
		stop()
		return "", 0, func() {}, fmt.Errorf("node %s: %w", id, err)
	}
	return url, n.Process.Pid, stop, nil
}
