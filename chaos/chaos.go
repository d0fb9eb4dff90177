// Package chaos sells out a flash sale on a real local cluster while
// something breaks — a node SIGKILLed mid-sale, Redis crashed and restarted
// from its AOF, the broker stopped — and then proves the books balance: the
// clients' tally against the server (bench.Check) and every node's stat.log,
// Redis and Kafka against each other (reconcile).
//
// SellOut is the one choreography; `flashsale demo` and the chaos tests both
// run it, with different sizes.
package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/bench"
	"github.com/flashsale/flashsale/cluster"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/node"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/reconcile"
	"github.com/flashsale/flashsale/store"
	"github.com/redis/go-redis/v9"
)

// NodeEnv is the node configuration SellOut adds when it brings a cluster
// up, so a run takes seconds rather than minutes: a dead node leaves the
// membership within about a second and node logs keep to warnings (an
// order whose expiry event was lost is swept within a second of its
// deadline by default).
// Options.Up.Env comes after it, so a caller can override any of it.
var NodeEnv = []string{
	"FLASHSALE_CLUSTER_HEARTBEAT=250ms",
	"FLASHSALE_CLUSTER_TTL=1s",
	"FLASHSALE_EXPIRY_RETRY_DELAY=250ms",
	"FLASHSALE_LOG_LEVEL=warn",
}

// Options describe one run. The zero value of a field takes the default
// documented on it.
type Options struct {
	// Cluster is the cluster to sell on. When nil, SellOut brings one up with
	// Up (NodeEnv added to its Env) and takes it down at the end unless Keep.
	Cluster *cluster.Cluster
	Up      cluster.Config
	Keep    bool

	Sale       string        // sale id; "chaos-<unix ms>" when empty
	Stock      int64         // units on sale; 2,000 when 0
	Demand     int           // distinct buyers per unit, each asking once in the rush; 10 when 0
	PayTimeout time.Duration // the sale's pay deadline; 2 s when 0
	// PayFraction of the rush's winners pay at once; the others leave their
	// order to expire, so its unit returns to stock and must be sold again.
	// 0: nobody pays in the rush.
	PayFraction float64
	Rate        float64       // rush arrivals per second; 4,000 when 0
	Connections int           // load generator connections per target; 64 when 0
	Timeout     time.Duration // bound of one request; 5 s when 0

	// Fault is injected once FaultAt of the stock is sold (0.3 when 0);
	// nil runs the sale without one.
	Fault   Fault
	FaultAt float64

	// SettleTimeout bounds the settle phase: demand goes on, every winner
	// paying, until every unit is paid. 60 s when 0.
	SettleTimeout time.Duration

	Log      io.Writer // progress events; discarded when nil
	Progress io.Writer // the load generator's one line per second; none when nil

	// Report, when set, is where the dashboard's final page (the charts of
	// the whole run, self-contained HTML) is saved before the cluster goes
	// down. It needs the cluster's dashboard (Up.Dashboard).
	Report string
}

func (o *Options) setDefaults() {
	if o.Sale == "" {
		o.Sale = "chaos-" + strconv.FormatInt(time.Now().UnixMilli(), 10)
	}
	if o.Stock <= 0 {
		o.Stock = 2000
	}
	if o.Demand <= 0 {
		o.Demand = 10
	}
	if o.PayTimeout <= 0 {
		o.PayTimeout = 2 * time.Second
	}
	if o.Rate <= 0 {
		o.Rate = 4000
	}
	if o.Connections <= 0 {
		o.Connections = 64
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.FaultAt <= 0 {
		o.FaultAt = 0.3
	}
	if o.SettleTimeout <= 0 {
		o.SettleTimeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if _, ok := o.Log.(*SyncWriter); !ok {
		o.Log = &SyncWriter{W: o.Log}
	}
}

// SyncWriter serializes writes to W: a run logs from several goroutines
// (the watcher, the fault, the cluster launcher). Give the same SyncWriter
// to the cluster's Log and to Options.Log when they share a destination.
type SyncWriter struct {
	mu sync.Mutex
	W  io.Writer
}

// Lock holds writes back until Unlock, e.g. to read what W collected.
func (s *SyncWriter) Lock() { s.mu.Lock() }

// Unlock lets writes through again.
func (s *SyncWriter) Unlock() { s.mu.Unlock() }

func (s *SyncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.W.Write(b)
}

// Outcome is what a run saw and proved.
type Outcome struct {
	Sale    string
	Stock   int64
	Buyers  int      // distinct users
	Nodes   []string // node names
	Targets []string // where the load went: nginx, or every node
	Fault   string   // "" without one
	Killed  []string // node ids the fault SIGKILLed

	Timings Timings
	// PerNode is every node's orders in Redis (aborted ones left out), node
	// name order.
	PerNode []NodeSales
	// Probe is a GET of the sale every 25 ms to a node the fault spares:
	// when the API could not answer and how slow it got.
	Probe ProbeStats

	Rush, Settle *bench.Report // the two load phases
	Tally        bench.Tally   // both phases' client tally together
	ClientCheck  error         // bench.Check of Tally against the server's books
	Reconcile    *reconcile.Report
	Failures     []string // every check that failed; empty: the run passed
}

// OK reports whether every check passed.
func (o *Outcome) OK() bool { return len(o.Failures) == 0 }

// Timings are measured from the start of the rush unless said otherwise.
type Timings struct {
	Up          time.Duration // bringing the cluster up (0: given one)
	Rush        time.Duration // the rush phase: every buyer asks once
	FaultAt     time.Duration // the fault was injected ...
	SoldAtFault int64         // ... when this many units were sold
	FaultDone   time.Duration // Inject returned: node dead, or the piece back up
	SoldOutAt   time.Duration // first moment after the fault with nothing left in Redis (0: never)
	FirstExpiry time.Duration // the first unpaid order was released (0: none)
	SettledAt   time.Duration // every unit paid (0: never)
	Reconcile   time.Duration // the reconciliation itself
	Total       time.Duration // SellOut from call to return, cluster start and stop included
}

// NodeSales is one node's share of the orders, from Redis.
type NodeSales struct {
	Node       string
	Orders     int64 // orders it created, in any status but aborted
	Paid       int64
	Expired    int64
	AfterFault int64 // orders created once the fault was done (a killed node dead, Redis or the broker back)
	Aborted    int64 // orders it undid because they could not be made durable
}

// ProbeStats summarize the availability probe.
type ProbeStats struct {
	Target     string
	Probes     int
	Failed     int           // non-200 or no reply
	FirstFail  time.Duration // since the rush began (0: none failed)
	LastFail   time.Duration
	MaxLatency time.Duration
}

// Unavailable is how long the probe saw failures: from the first failed
// probe to the last one.
func (p ProbeStats) Unavailable() time.Duration {
	if p.Failed == 0 {
		return 0
	}
	return p.LastFail - p.FirstFail
}

// SellOut runs the choreography:
//
//  1. bring a cluster up (unless one is given) and create the sale;
//  2. rush: Demand×Stock distinct buyers each ask once, at Rate, through
//     nginx (or round robin over the nodes without it); PayFraction of the
//     winners pay, the rest leave their order to expire;
//  3. when FaultAt of the stock is sold, inject the fault (in the middle of
//     the rush, which goes on);
//  4. settle: demand goes on, every winner now paying, until every unit is
//     paid — which needs the expired units sold again by the nodes alive;
//  5. check the clients' tally against the server (bench.Check) and run
//     reconcile with ExpectSellout and the killed nodes listed.
//
// An error means the run could not be carried out (the cluster did not
// start, the sale could not be created); a run that found broken books
// returns an Outcome with Failures and no error.
func SellOut(ctx context.Context, o Options) (out *Outcome, err error) {
	o.setDefaults()
	t0 := time.Now()
	out = &Outcome{Sale: o.Sale, Stock: o.Stock, Buyers: o.Demand * int(o.Stock)}
	if o.Fault != nil {
		out.Fault = o.Fault.String()
	}
	c := o.Cluster
	if c == nil {
		up := o.Up
		if up.Nodes == 0 {
			up.Nodes = 3
		}
		up.Env = append(append([]string{}, NodeEnv...), up.Env...)
		// The whole crowd is one loopback IP and buyers who retry for the
		// run's length: the abuse limits would be the thing measured.
		up.NoRateLimits = true
		if up.Log == nil {
			up.Log = o.Log
		}
		fmt.Fprintf(o.Log, "bringing up %d nodes, redis, the broker, postgres (when installed) and nginx in %s\n", up.Nodes, up.Dir)
		if c, err = cluster.Up(ctx, up); err != nil {
			return nil, err
		}
		out.Timings.Up = time.Since(t0)
		if !o.Keep {
			defer func() {
				fmt.Fprintln(o.Log, "bringing the cluster down")
				if derr := c.Down(); derr != nil && err == nil {
					err = fmt.Errorf("cluster down: %w", derr)
				}
			}()
		} else {
			defer fmt.Fprintf(o.Log, "the cluster stays up (--keep): `flashsale cluster down --dir %s` stops it\n", c.Dir())
		}
	}
	defer func() { out.Timings.Total = time.Since(t0) }()
	out.Nodes = c.NodeNames()

	r := &run{o: o, c: c, out: out, settled: make(chan struct{}), faultDone: make(chan struct{})}
	if f, ok := o.Fault.(RedisFailover); ok && f.Key == "" {
		f.Key = lua.KeysFor(o.Sale).Meta
		r.o.Fault = f
	}
	// The run reads the books from whichever server is master now.
	r.rdb = redis.NewUniversalClient(node.RedisOptions(node.RedisTarget{Addrs: c.RedisAddrs(),
		MasterName: c.RedisMasterName(), Cluster: c.IsRedisCluster()}, &redis.UniversalOptions{
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond}))
	defer r.rdb.Close()
	if u := c.DashboardURL(); u != "" {
		fmt.Fprintf(o.Log, "dashboard: %s/\n", u)
	}
	err = r.sellOut(ctx)
	if o.Report != "" {
		if rerr := saveReport(ctx, c.DashboardURL(), o.Report); rerr != nil {
			fmt.Fprintf(o.Log, "report not saved: %v\n", rerr)
		} else {
			fmt.Fprintf(o.Log, "report saved: %s\n", o.Report)
		}
	}
	return out, err
}

// saveReport waits for the dashboard's next sample (so the report ends
// with the settled books) and saves its report page to path.
func saveReport(ctx context.Context, dashboardURL, path string) error {
	if dashboardURL == "" {
		return errors.New("the cluster has no dashboard")
	}
	select {
	case <-time.After(1500 * time.Millisecond):
	case <-ctx.Done():
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, dashboardURL+"/report", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("fetch the report: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch the report: %s", resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, io.LimitReader(resp.Body, 64<<20)); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// run is one SellOut in progress.
type run struct {
	o   Options
	c   *cluster.Cluster
	out *Outcome
	rdb redis.UniversalClient
	api *bench.API

	mu          sync.Mutex // guards the fields below, written by watch and inject
	start       time.Time
	faultOn     bool
	faultAt     time.Time
	soldAtFault int64
	faultEnd    time.Time
	faultErr    error
	killed      []string
	soldOutAt   time.Time
	firstExpiry time.Time
	settledAt   time.Time
	settled     chan struct{} // closed once every unit is paid
	faultDone   chan struct{} // closed when Inject returned
}

func (r *run) logf(format string, args ...any) {
	r.mu.Lock()
	start := r.start
	r.mu.Unlock()
	if !start.IsZero() {
		format = "%6.2fs  " + format
		args = append([]any{time.Since(start).Seconds()}, args...)
	}
	fmt.Fprintf(r.o.Log, format+"\n", args...)
}

func (r *run) sellOut(ctx context.Context) error {
	o, out := r.o, r.out
	out.Targets = r.c.NodeURLs()
	base := r.c.NodeURLs()[0]
	if lb := r.c.LBURL(); lb != "" {
		out.Targets, base = []string{lb}, lb
	}
	r.api = bench.NewAPI(base, r.c.AdminToken())
	r.api.AuthSecret = []byte(r.c.AuthSecret())
	spec := bench.SaleSpec{ID: o.Sale, Name: "chaos: " + out.Fault, Stock: o.Stock, PriceCents: 100,
		PerUserLimit: 1, PayTimeout: o.PayTimeout.String()}
	if err := r.api.CreateSale(ctx, spec); err != nil {
		return fmt.Errorf("create sale: %w", err)
	}
	r.logf("sale %s: %d units, %d buyers (%d× demand), pay within %v; %.0f%% of the rush's winners pay",
		o.Sale, o.Stock, out.Buyers, o.Demand, o.PayTimeout, o.PayFraction*100)

	wctx, stopWatch := context.WithCancel(ctx)
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stopWatch()
	r.mu.Lock()
	r.start = time.Now()
	r.mu.Unlock()
	bg.Add(2)
	go func() { defer bg.Done(); r.watch(wctx) }()
	go func() { defer bg.Done(); r.probe(wctx) }()

	// Rush: every buyer asks once.
	users := out.Buyers
	r.logf("rush: %d buyers at %.0f/s through %v", users, o.Rate, out.Targets)
	rush, err := bench.Run(ctx, bench.Config{Targets: out.Targets, Scenario: bench.ScenarioBuy, Sale: o.Sale,
		Users: users, Connections: o.Connections, Requests: int64(users), Rate: o.Rate, Timeout: o.Timeout,
		PayFraction: o.PayFraction, PriceCents: spec.PriceCents, AuthSecret: []byte(r.c.AuthSecret()),
		PaymentSecret: []byte(r.c.PaymentSecret()), Progress: prefixed(o.Progress, "rush   ")})
	if err != nil {
		return err
	}
	out.Rush = rush.Report
	out.Timings.Rush = time.Since(r.start)
	r.logf("rush over: %d requests, %d won", rush.Report.Requests, rush.Tally.Successes)

	// Settle: demand goes on, every winner paying, until every unit is paid.
	sctx, cancel := context.WithTimeout(ctx, o.SettleTimeout)
	defer cancel()
	go func() {
		select {
		case <-r.settled:
			// Let the fault finish (a restart) before the load stops, so
			// the last phase sees the healed cluster.
			select {
			case <-r.faultDoneOrNone():
			case <-sctx.Done():
			}
			cancel()
		case <-sctx.Done():
		}
	}()
	r.logf("settle: demand goes on, every winner pays, until all %d units are paid (at most %v)", o.Stock, o.SettleTimeout)
	settleRate := max(o.Rate/4, 200)
	settle, err := bench.Run(sctx, bench.Config{Targets: out.Targets, Scenario: bench.ScenarioBuy, Sale: o.Sale,
		Users: users, Connections: max(o.Connections/4, 8), Duration: o.SettleTimeout, Rate: settleRate,
		Timeout: o.Timeout, PayFraction: 1, PriceCents: spec.PriceCents, AuthSecret: []byte(r.c.AuthSecret()),
		PaymentSecret: []byte(r.c.PaymentSecret()), Progress: prefixed(o.Progress, "settle ")})
	if err != nil {
		return err
	}
	out.Settle = settle.Report
	select {
	case <-r.faultDoneOrNone():
	case <-ctx.Done():
		return ctx.Err()
	}
	stopWatch()
	bg.Wait()
	// Nodes flush stat.log every flush_interval (100 ms by default): give
	// the last answers' lines time to land before reconcile reads them.
	time.Sleep(500 * time.Millisecond)

	r.mu.Lock()
	since := func(t time.Time) time.Duration {
		if t.IsZero() {
			return 0
		}
		return t.Sub(r.start)
	}
	tm := &out.Timings
	tm.FaultAt, tm.SoldAtFault, tm.FaultDone = since(r.faultAt), r.soldAtFault, since(r.faultEnd)
	tm.SoldOutAt, tm.FirstExpiry, tm.SettledAt = since(r.soldOutAt), since(r.firstExpiry), since(r.settledAt)
	out.Killed = r.killed
	faultOn, faultErr, faultEnd := r.faultOn, r.faultErr, r.faultEnd
	r.mu.Unlock()
	switch {
	case o.Fault != nil && !faultOn:
		r.fail("the fault was never injected: %.0f%% of the stock was never sold", o.FaultAt*100)
	case faultErr != nil:
		r.fail("fault %s: %v", out.Fault, faultErr)
	}
	if tm.SettledAt == 0 {
		r.fail("not every unit was paid within the settle phase (%v)", o.SettleTimeout)
	}

	// The client tally against the server's books.
	// No allowance for a Redis crash: a buy whose script Redis ran but
	// crashed before answering was answered 503, and the node resolves that
	// batch (undoes its orders) once Redis is back, so a 503 is always true.
	out.Tally = mergeTallies(rush, settle)
	books, err := r.api.ReadBooks(ctx, &bench.Config{Scenario: bench.ScenarioBuy, Sale: o.Sale}, out.Tally, bench.Baseline{})
	if err != nil {
		return fmt.Errorf("read the books: %w", err)
	}
	if out.ClientCheck = bench.Check(ctx, out.Tally, books); out.ClientCheck != nil {
		r.fail("client tally vs server books: %v", out.ClientCheck)
	}

	// Every node's stat.log, Redis and Kafka against each other.
	t := time.Now()
	in := reconcile.Input{Sale: o.Sale, Redis: r.rdb,
		Brokers: []string{r.c.BrokerAddr()}, Topic: r.c.Topic(), StatLogs: r.c.StatLogs(),
		Killed: out.Killed, ExpectSellout: true}
	if dsn := r.c.PostgresDSN(); dsn != "" {
		// The third record: the order store, fed by the nodes' consumers.
		st, err := store.Open(ctx, store.Config{DSN: dsn, MaxConns: 2, Timeout: 10 * time.Second})
		if err != nil {
			return fmt.Errorf("open the order store: %w", err)
		}
		defer st.Close()
		in.Store, in.StoreWait = st, 30*time.Second
	}
	out.Reconcile, err = reconcile.Run(ctx, in)
	out.Timings.Reconcile = time.Since(t)
	if err != nil {
		return fmt.Errorf("reconcile: %w", err)
	}
	for _, ch := range out.Reconcile.Checks {
		if !ch.OK {
			r.fail("reconcile %s: %s", ch.Name, ch.Detail)
		}
	}
	if out.PerNode, err = perNode(ctx, r.rdb, o.Sale, out.Nodes, faultEnd); err != nil {
		return err
	}
	return nil
}

func (r *run) fail(format string, args ...any) {
	r.out.Failures = append(r.out.Failures, fmt.Sprintf(format, args...))
}

// faultDoneOrNone is closed once the fault has run its course, or at once
// when there is no fault.
func (r *run) faultDoneOrNone() <-chan struct{} {
	if r.o.Fault == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	r.mu.Lock()
	on := r.faultOn
	r.mu.Unlock()
	if !on {
		// Never injected: nothing to wait for (reported as a failure).
		c := make(chan struct{})
		close(c)
		return c
	}
	return r.faultDone
}

// watch reads the sale's books from Redis every 20 ms: it injects the fault
// when enough is sold and notes when the sale sold out, when the first
// unpaid order came back and when every unit was paid. While Redis is down
// it just misses readings.
func (r *run) watch(ctx context.Context) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, b, err := order.LoadSale(rctx, r.rdb, r.o.Sale)
		cancel()
		if err == nil {
			r.observe(ctx, b, time.Now())
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (r *run) observe(ctx context.Context, b flashsale.Books, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sold := b.Stock - b.Remaining
	if r.o.Fault != nil && !r.faultOn && float64(sold) >= r.o.FaultAt*float64(b.Stock) {
		r.faultOn, r.faultAt, r.soldAtFault = true, now, sold
		go r.inject(ctx)
	}
	if (r.o.Fault == nil || r.faultOn) && r.soldOutAt.IsZero() && b.Remaining == 0 {
		r.soldOutAt = now
		go r.logf("sold out: remaining 0 in Redis (pending %d, paid %d)", b.Pending, b.Paid)
	}
	if r.firstExpiry.IsZero() && b.Expired > 0 {
		r.firstExpiry = now
		go r.logf("first unpaid orders released: %d expired, their units back in stock", b.Expired)
	}
	if r.settledAt.IsZero() && b.Paid == b.Stock {
		r.settledAt = now
		close(r.settled)
		go r.logf("settled: all %d units paid (%d orders expired and their units were sold again)", b.Paid, b.Expired)
	}
}

// inject runs the fault; the sale goes on meanwhile. It is bounded by the
// run's context, not by the watch's, so a restart is never abandoned.
func (r *run) inject(_ context.Context) {
	r.mu.Lock()
	sold := r.soldAtFault
	r.mu.Unlock()
	r.logf("fault: %s, with %d/%d units sold", r.o.Fault, sold, r.o.Stock)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	killed, err := r.o.Fault.Inject(ctx, r.c)
	r.mu.Lock()
	r.faultEnd, r.killed, r.faultErr = time.Now(), killed, err
	r.mu.Unlock()
	if err != nil {
		r.logf("fault failed: %v", err)
	} else {
		r.logf("fault done: %s", r.o.Fault)
	}
	close(r.faultDone)
}

// probe GETs the sale every 25 ms from a node the fault spares, with a
// 2 s bound, to see how long the API could not answer and how slow it got.
func (r *run) probe(ctx context.Context) {
	target := r.c.NodeURLs()[0]
	if k, ok := r.o.Fault.(KillNode); ok && string(k) == r.c.NodeNames()[0] && len(r.c.NodeURLs()) > 1 {
		target = r.c.NodeURLs()[1]
	}
	url := target + "/v1/sales/" + r.o.Sale
	client := &http.Client{Timeout: 2 * time.Second}
	p := &r.out.Probe
	p.Target = target
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t := time.Now()
		ok := false
		if resp, err := client.Get(url); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			ok = resp.StatusCode == http.StatusOK
		}
		lat := time.Since(t)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		p.Probes++
		p.MaxLatency = max(p.MaxLatency, lat)
		if !ok {
			at := t.Sub(r.start)
			if p.Failed == 0 {
				p.FirstFail = at
			}
			p.Failed++
			p.LastFail = at
		}
		r.mu.Unlock()
	}
}

// mergeTallies joins the phases' tallies. A 502 or 504 is nginx saying its
// node died or timed out with the request: the buy may or may not have gone
// through, so the client counts it as unanswered, like a lost connection.
func mergeTallies(rs ...*bench.Result) bench.Tally {
	t := bench.Tally{Scenario: bench.ScenarioBuy}
	for _, r := range rs {
		t.Requests += r.Tally.Requests
		t.Successes += r.Tally.Successes
		t.Unanswered += r.Tally.Unanswered + r.Report.Status["502"] + r.Report.Status["504"]
		t.Wins = append(t.Wins, r.Tally.Wins...)
	}
	return t
}

// perNode counts each node's orders from the order records in Redis.
func perNode(ctx context.Context, rdb redis.UniversalClient, sale string, nodes []string, after time.Time) ([]NodeSales, error) {
	raw, err := rdb.HGetAll(ctx, lua.KeysFor(sale).Orders).Result()
	if err != nil {
		return nil, fmt.Errorf("orders of %q: %w", sale, err)
	}
	by := map[string]*NodeSales{}
	for _, n := range nodes {
		by[n] = &NodeSales{Node: n}
	}
	for _, s := range raw {
		rec, err := lua.ParseRecord(s)
		if err != nil {
			return nil, err
		}
		ns := by[rec.Node]
		if ns == nil {
			ns = &NodeSales{Node: rec.Node}
			by[rec.Node] = ns
		}
		if rec.Status == lua.StatusAborted {
			ns.Aborted++
			continue
		}
		ns.Orders++
		switch rec.Status {
		case lua.StatusPaid:
			ns.Paid++
		case lua.StatusExpired:
			ns.Expired++
		}
		if !after.IsZero() && rec.CreatedMs > after.UnixMilli() {
			ns.AfterFault++
		}
	}
	out := make([]NodeSales, 0, len(by))
	for _, ns := range by {
		out = append(out, *ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Node < out[j].Node })
	return out, nil
}

// prefixed writes each line to w after prefix; nil stays nil.
func prefixed(w io.Writer, prefix string) io.Writer {
	if w == nil {
		return nil
	}
	return &prefixWriter{w: w, prefix: prefix}
}

type prefixWriter struct {
	w      io.Writer
	prefix string
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if _, err := io.WriteString(p.w, p.prefix); err != nil {
		return 0, err
	}
	return p.w.Write(b)
}
