// Package dashboard is the live view of a running sale: a sampler that once
// a second reads every node's Prometheus metrics and the books in Redis,
// keeps a bounded history, and pushes each sample to the open pages over
// Server-Sent Events; the page (one embedded HTML file, no CDN) draws the
// charts. The same page, with the history inlined, is the demo's saved
// report.
//
// It never touches the buy path: it reads the metrics endpoint each node
// already serves and, per sale, one small hash in Redis, with deadlines on
// every call — a few cheap reads a second whatever the load.
package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/redis/go-redis/v9"
)

// MembersKey is the sorted set where nodes beat (member: node id, score: the
// last beat in Redis milliseconds); the same key as the node's membership.
const MembersKey = "fs:nodes"

// Config configures a Dashboard. Zero durations and sizes take the defaults
// of configs/default.yaml's dashboard section.
type Config struct {
	// Redis is read only: the sales index, each sale's books, the members
	// set, TIME and INFO server. Required.
	Redis redis.UniversalClient
	// Nodes are the nodes' metrics URLs ("http://host:port" gets /metrics).
	Nodes []string
	// MemberTTL is how long a node counts as live after its last beat (the
	// nodes' cluster.ttl).
	MemberTTL time.Duration
	// Interval between samples.
	Interval time.Duration
	// ScrapeTimeout bounds one node's metrics read; RedisTimeout all the
	// Redis reads of one sample.
	ScrapeTimeout time.Duration
	RedisTimeout  time.Duration
	// History is how many samples are kept (the charts' time span).
	History int
	// MaxSubscribers is how many pages may be open at once; each gets a
	// buffer of SubscriberBuffer samples and is dropped when it is full.
	MaxSubscribers   int
	SubscriberBuffer int
	// MaxSales caps the sales charted.
	MaxSales int
	// Log receives scrape and Redis errors (once per change, not per tick).
	Log *slog.Logger
}

func (c *Config) defaults() error {
	if c.Redis == nil {
		return errors.New("dashboard: a Redis client is required")
	}
	if len(c.Nodes) == 0 {
		return errors.New("dashboard: no node metrics URLs (--nodes)")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defi := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	def(&c.MemberTTL, 3*time.Second)
	def(&c.Interval, time.Second)
	def(&c.ScrapeTimeout, 800*time.Millisecond)
	def(&c.RedisTimeout, 500*time.Millisecond)
	defi(&c.History, 900)
	defi(&c.MaxSubscribers, 16)
	defi(&c.SubscriberBuffer, 4)
	defi(&c.MaxSales, 16)
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Dashboard samples the cluster and serves the live page. Create it with
// New, start sampling with Run, serve Handler. Its methods are safe for
// concurrent use.
type Dashboard struct {
	cfg   Config
	http  *http.Client
	nodes []*nodeState
	hub   *hub

	mu      sync.Mutex
	history *ring[json.RawMessage] // encoded samples, oldest first
	last    *Sample

	// Sampler-only state (Run's goroutine).
	redisUp    bool
	redisRunID string
	members    map[string]bool
	brokerDown bool
	soldOut    map[string]bool
	ticks      int
}

// nodeState is what the sampler remembers of one node between ticks.
type nodeState struct {
	url  string
	name string
	prev *scrape
	at   time.Time
	up   bool
	seen bool // scraped at least once (so the first success is no event)
}

// New checks cfg and returns a Dashboard that has not sampled yet.
func New(cfg Config) (*Dashboard, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	d := &Dashboard{cfg: cfg, hub: newHub(cfg.MaxSubscribers, cfg.SubscriberBuffer),
		history: newRing[json.RawMessage](cfg.History), members: map[string]bool{}, soldOut: map[string]bool{}, redisUp: true,
		http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute,
			ResponseHeaderTimeout: cfg.ScrapeTimeout}}}
	for _, raw := range cfg.Nodes {
		u, err := metricsURL(raw)
		if err != nil {
			return nil, err
		}
		d.nodes = append(d.nodes, &nodeState{url: u, name: hostOf(u), up: true})
	}
	return d, nil
}

func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Host
	}
	return raw
}

// Sample is one tick of the whole cluster, as the page receives it.
type Sample struct {
	T      int64        `json:"t"` // unix milliseconds
	Redis  bool         `json:"redis"`
	Live   []string     `json:"live"` // node ids beating in Redis
	Nodes  []NodeSample `json:"nodes"`
	Sales  []SaleSample `json:"sales"`
	Events []Event      `json:"events,omitempty"` // what happened since the last tick
}

// NodeSample is one node in one tick. Rates are per second since the
// node's previous scrape.
type NodeSample struct {
	Name      string  `json:"name"`
	URL       string  `json:"url"`
	Up        bool    `json:"up"`   // its metrics answered
	Live      bool    `json:"live"` // it beats in Redis
	Err       string  `json:"err,omitempty"`
	Sales     float64 `json:"sales"`    // units sold per second, every sale
	Refused   float64 `json:"refused"`  // buy refusals per second, every sale
	Shed      float64 `json:"shed"`     // requests shed (503) per second
	PubErrors float64 `json:"pub_errs"` // failed Kafka publishes per second
	Lag       float64 `json:"lag"`      // consumer lag, messages
}

// SaleSample is one sale in one tick.
type SaleSample struct {
	ID    string `json:"id"`
	Books *Books `json:"books"` // nil when Redis did not answer
	// Sales is units sold per second (every node); Refusals per second by
	// reason (sold_out, limit_reached, overloaded, ...).
	Sales    float64            `json:"sales"`
	Refusals map[string]float64 `json:"refusals"`
	// P50 and P99 are buy latency in milliseconds over the tick; nil
	// without buys.
	P50 *float64 `json:"p50"`
	P99 *float64 `json:"p99"`
	// PerNode: each node's sales/s, refusals/s and local share of this sale.
	PerNode map[string]SaleNode `json:"per_node"`
}

// Books are a sale's counters in Redis.
type Books struct {
	Stock     int64 `json:"stock"`
	Remaining int64 `json:"remaining"`
	Pending   int64 `json:"pending"`
	Paid      int64 `json:"paid"`
	Expired   int64 `json:"expired"`
	Cancelled int64 `json:"cancelled"`
	Aborted   int64 `json:"aborted"`
}

// SaleNode is one node's part of one sale in one tick.
type SaleNode struct {
	Sales   float64 `json:"sales"`
	Refused float64 `json:"refused"`
	Share   float64 `json:"share"` // local share units left
}

// Event is something of note, drawn as a marker on the time axis.
type Event struct {
	T    int64  `json:"t"`
	Kind string `json:"kind"` // node, redis, broker, sale
	Text string `json:"text"`
}

// Run samples every Interval until ctx ends, then closes the open pages'
// streams. It returns nil on cancellation.
func (d *Dashboard) Run(ctx context.Context) error {
	t := time.NewTicker(d.cfg.Interval)
	defer t.Stop()
	defer d.hub.close()
	for {
		d.Tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick takes one sample now, records it and sends it to the open pages.
// Run calls it every Interval; it must not be called concurrently with Run.
func (d *Dashboard) Tick(ctx context.Context) Sample {
	now := time.Now()
	s := Sample{T: now.UnixMilli()}
	note := func(kind, format string, args ...any) {
		s.Events = append(s.Events, Event{T: s.T, Kind: kind, Text: fmt.Sprintf(format, args...)})
	}
	scrapes := d.scrapeAll(ctx)
	rs := d.readRedis(ctx, scrapes)
	d.ticks++

	// Redis up/down and restarts (a failover shows as a new run_id: the
	// client now talks to another server).
	s.Redis = rs.err == nil
	switch {
	case rs.err != nil && d.redisUp:
		note("redis", "Redis unreachable: %v", rs.err)
		d.cfg.Log.Warn("dashboard: redis unreachable", "err", rs.err)
	case rs.err == nil && !d.redisUp:
		note("redis", "Redis back")
	}
	if rs.err == nil {
		if d.redisRunID != "" && rs.runID != "" && rs.runID != d.redisRunID {
			note("redis", "Redis restarted or failed over (run_id %.8s → %.8s)", d.redisRunID, rs.runID)
		}
		if rs.runID != "" {
			d.redisRunID = rs.runID
		}
	}
	d.redisUp = rs.err == nil

	// Membership: who beats in Redis.
	if rs.err == nil {
		for id := range rs.live {
			if !d.members[id] && d.ticks > 1 {
				note("node", "%s joined", id)
			}
		}
		for id := range d.members {
			if !rs.live[id] {
				note("node", "%s left", id)
			}
		}
		d.members = rs.live
	}
	for id := range d.members {
		s.Live = append(s.Live, id)
	}
	slices.Sort(s.Live)

	// Per node and per sale rates.
	sales := map[string]*SaleSample{}
	hists := map[string]*hist{}
	saleOf := func(id string) *SaleSample {
		if ss, ok := sales[id]; ok {
			return ss
		}
		ss := &SaleSample{ID: id, Refusals: map[string]float64{}, PerNode: map[string]SaleNode{}}
		sales[id] = ss
		return ss
	}
	for _, id := range rs.sales {
		saleOf(id)
	}
	var pubErrs, published float64
	for i, n := range d.nodes {
		sc := scrapes[i]
		ns := NodeSample{Name: n.name, URL: n.url, Up: sc.err == nil}
		if sc.err != nil {
			ns.Err = sc.err.Error()
			if n.up && n.seen {
				note("node", "%s metrics unreachable", n.name)
			}
			if n.up {
				d.cfg.Log.Warn("dashboard: node metrics unreachable", "url", n.url, "err", sc.err)
			}
			n.up = false
			ns.Live = d.members[n.name]
			s.Nodes = append(s.Nodes, ns)
			continue
		}
		cur := sc.s
		if cur.node != "" {
			n.name, ns.Name = cur.node, cur.node
		}
		if !n.up && n.seen {
			note("node", "%s metrics back", n.name)
		}
		n.up, n.seen = true, true
		ns.Live = d.members[n.name]
		ns.Lag = cur.lag
		if prev := n.prev; prev != nil {
			dt := sc.at.Sub(n.at).Seconds()
			if dt <= 0 {
				dt = d.cfg.Interval.Seconds()
			}
			for sale, results := range cur.buys {
				if !sales[sale].known() {
					continue
				}
				ss := sales[sale]
				sn := ss.PerNode[n.name]
				for result, v := range results {
					r := delta(v, prev.buys[sale][result]) / dt
					if result == "ok" {
						sn.Sales += r
						ss.Sales += r
						ns.Sales += r
					} else if r > 0 {
						sn.Refused += r
						ss.Refusals[result] += r
						ns.Refused += r
					}
				}
				ss.PerNode[n.name] = sn
			}
			for sale, h := range cur.hist {
				if sales[sale].known() {
					hists[sale] = hists[sale].add(h.since(prev.hist[sale]))
				}
			}
			ns.Shed = delta(cur.shed, prev.shed) / dt
			ns.PubErrors = delta(cur.pubErrors, prev.pubErrors) / dt
			pubErrs += delta(cur.pubErrors, prev.pubErrors)
			published += delta(cur.published, prev.published)
		}
		for sale, v := range cur.share {
			if ss := sales[sale]; ss.known() {
				sn := ss.PerNode[n.name]
				sn.Share = v
				ss.PerNode[n.name] = sn
			}
		}
		n.prev, n.at = cur, sc.at
		s.Nodes = append(s.Nodes, ns)
	}

	// The broker: publishes failing means the nodes cannot confirm sales.
	switch {
	case pubErrs > 0 && !d.brokerDown:
		d.brokerDown = true
		note("broker", "broker down? %.0f failed publishes", pubErrs)
	case d.brokerDown && pubErrs == 0 && published > 0:
		d.brokerDown = false
		note("broker", "broker back")
	}

	for _, id := range rs.sales {
		ss := sales[id]
		if b, ok := rs.books[id]; ok {
			ss.Books = &b
			if b.Remaining == 0 && b.Stock > 0 && !d.soldOut[id] {
				d.soldOut[id] = true
				note("sale", "%s sold out", id)
			} else if b.Remaining > 0 {
				delete(d.soldOut, id)
			}
		}
		if h := hists[id]; h != nil {
			if v, ok := h.quantile(0.5); ok {
				ms := v * 1000
				ss.P50 = &ms
			}
			if v, ok := h.quantile(0.99); ok {
				ms := v * 1000
				ss.P99 = &ms
			}
		}
		s.Sales = append(s.Sales, *ss)
	}
	for id := range d.soldOut {
		if _, ok := sales[id]; !ok {
			delete(d.soldOut, id)
		}
	}

	b, err := json.Marshal(&s)
	if err != nil { // cannot happen: plain fields only
		d.cfg.Log.Error("dashboard: encode sample", "err", err)
		return s
	}
	d.mu.Lock()
	d.history.push(b)
	d.last = &s
	d.mu.Unlock()
	d.hub.publish(sseMessage("sample", b))
	return s
}

// known is false for a sale the sampler does not chart this tick.
func (s *SaleSample) known() bool { return s != nil }

type scrapeResult struct {
	s   *scrape
	at  time.Time
	err error
}

// scrapeAll reads every node's metrics at once (one goroutine per node,
// each bounded by ScrapeTimeout).
func (d *Dashboard) scrapeAll(ctx context.Context) []scrapeResult {
	out := make([]scrapeResult, len(d.nodes))
	var wg sync.WaitGroup
	for i, n := range d.nodes {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, d.cfg.ScrapeTimeout)
			defer cancel()
			s, err := fetchMetrics(cctx, d.http, n.url)
			out[i] = scrapeResult{s: s, at: time.Now(), err: err}
		})
	}
	wg.Wait()
	return out
}

type redisResult struct {
	err   error
	runID string
	live  map[string]bool
	sales []string // sorted, at most MaxSales
	books map[string]Books
}

// readRedis reads, under one deadline: TIME, the members set, INFO server's
// run_id, the sales index (only when it is small; otherwise just the sales
// the nodes report) and each charted sale's books.
func (d *Dashboard) readRedis(ctx context.Context, scrapes []scrapeResult) redisResult {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.RedisTimeout)
	defer cancel()
	r := redisResult{live: map[string]bool{}, books: map[string]Books{}}
	want := map[string]bool{}
	for _, sc := range scrapes {
		if sc.err != nil {
			continue
		}
		for id := range sc.s.buys {
			want[id] = true
		}
		for id := range sc.s.share {
			want[id] = true
		}
	}
	delete(want, "~other")

	pipe := d.cfg.Redis.Pipeline()
	tm := pipe.Time(ctx)
	members := pipe.ZRangeWithScores(ctx, MembersKey, 0, -1)
	info := pipe.Info(ctx, "server")
	card := pipe.SCard(ctx, lua.SalesIndexKey)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		r.err = fmt.Errorf("read redis: %w", err)
		r.sales = capSales(want, d.cfg.MaxSales)
		return r
	}
	now := tm.Val().UnixMilli()
	for _, z := range members.Val() {
		if id, ok := z.Member.(string); ok && int64(z.Score) >= now-d.cfg.MemberTTL.Milliseconds() {
			r.live[id] = true
		}
	}
	for _, line := range strings.Split(info.Val(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			r.runID = v
		}
	}
	if n := card.Val(); n > 0 && n <= int64(d.cfg.MaxSales) {
		ids, err := stock.ListSales(ctx, d.cfg.Redis)
		if err != nil {
			r.err = err
		}
		for _, id := range ids {
			want[id] = true
		}
	}
	r.sales = capSales(want, d.cfg.MaxSales)
	for _, id := range r.sales {
		_, b, err := stock.LoadSale(ctx, d.cfg.Redis, id)
		if errors.Is(err, stock.ErrNoSale) {
			continue
		}
		if err != nil {
			r.err = err
			break
		}
		r.books[id] = Books{Stock: b.Stock, Remaining: b.Remaining, Pending: b.Pending, Paid: b.Paid,
			Expired: b.Expired, Cancelled: b.Cancelled, Aborted: b.Aborted}
	}
	return r
}

func capSales(want map[string]bool, n int) []string {
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) > n {
		ids = ids[:n]
	}
	return ids
}

// History returns the samples kept, oldest first.
func (d *Dashboard) History() []Sample {
	d.mu.Lock()
	raw := d.history.items()
	d.mu.Unlock()
	out := make([]Sample, 0, len(raw))
	for _, b := range raw {
		var s Sample
		if json.Unmarshal(b, &s) == nil {
			out = append(out, s)
		}
	}
	return out
}

// Last returns the newest sample, if any.
func (d *Dashboard) Last() (Sample, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.last == nil {
		return Sample{}, false
	}
	return *d.last, true
}

func (d *Dashboard) historyRaw() []json.RawMessage {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.history.items()
}
