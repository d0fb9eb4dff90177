// Package shake is the "shake" red-envelope rain (摇红包): a campaign hands
// out a fixed number of envelopes at a fixed rate to whoever shakes, and
// nearly every shake gets nothing.
//
// The losing answer comes from memory. Each node holds a locally released
// allowance — its share of rate × elapsed time, plus a buffer — spread over
// buckets (one stock.Share each, the seed's SETs) chosen by a hash of the
// user id, so concurrent shakers rarely meet on one lock and a shaker whose
// bucket is empty loses on an atomic load. A shaker who draws a token from
// the bucket becomes a candidate; candidates are batched by a
// stock.Coalescer and confirmed by one Lua script per campaign, which
// computes released-so-far from Redis TIME and the rate and lets a win
// through only while taken < released (≤ total). A win is credited to the
// winner's wallet idempotently (see package wallet).
//
// So the nodes decide only how many candidates reach Redis — about rate ×
// (1 + buffer) a second in total — and Redis alone decides who wins: taken
// ≤ released ≤ total holds however many nodes run and however their clocks
// drift.
package shake

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/flashsale/flashsale/wallet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Modes of drawing amounts.
const (
	ModeSplit = "split" // a budget split exactly among the envelopes (double mean)
	ModeRange = "range" // each envelope uniform in [min, max] cents
)

// Campaign is a shake campaign's settings.
type Campaign struct {
	ID             string
	Total          int64 // envelopes
	RatePerSec     int64
	StartsAt       time.Time // zero: now
	Mode           string
	BudgetCents    int64 // split
	MinCents       int64 // range
	MaxCents       int64 // range
	MaxWinsPerUser int64 // 0: no cap
}

// Limits bound campaigns; anything outside is a 400.
type Limits struct {
	MaxEnvelopes   int64
	MaxRatePerSec  int64
	MaxBudgetCents int64
	MaxAmountCents int64
}

// Validate checks c against the limits.
func (l Limits) Validate(c Campaign) error {
	e := func(format string, args ...any) error { return flashsale.Errorf(flashsale.EINVALID, format, args...) }
	switch {
	case !flashsale.ValidID(c.ID):
		return e("id must be 1-64 characters of [A-Za-z0-9_-:@]")
	case c.Total < 1 || c.Total > l.MaxEnvelopes:
		return e("total_envelopes must be between 1 and %d", l.MaxEnvelopes)
	case c.RatePerSec < 1 || c.RatePerSec > l.MaxRatePerSec:
		return e("rate_per_sec must be between 1 and %d", l.MaxRatePerSec)
	case c.MaxWinsPerUser < 0 || c.MaxWinsPerUser > c.Total:
		return e("max_wins_per_user must be between 0 (no cap) and total_envelopes")
	case !c.StartsAt.IsZero() && c.StartsAt.Before(time.Now().Add(-time.Minute)):
		return e("starts_at must not be in the past (a past start would release a backlog at once)")
	}
	switch c.Mode {
	case ModeSplit:
		if c.BudgetCents < c.Total || c.BudgetCents > l.MaxBudgetCents {
			return e("budget_cents must be between total_envelopes (1 cent each) and %d", l.MaxBudgetCents)
		}
		if c.MinCents != 0 || c.MaxCents != 0 {
			return e("give either budget_cents or min_cents/max_cents, not both")
		}
	case ModeRange:
		if c.MinCents < 1 || c.MaxCents < c.MinCents || c.MaxCents > l.MaxAmountCents {
			return e("need 1 <= min_cents <= max_cents <= %d", l.MaxAmountCents)
		}
		if c.BudgetCents != 0 {
			return e("give either budget_cents or min_cents/max_cents, not both")
		}
		if c.Total > math.MaxInt64/c.MaxCents {
			return e("total_envelopes × max_cents is too large")
		}
	default:
		return e("give budget_cents (split) or min_cents and max_cents (range)")
	}
	return nil
}

// Config tunes a Service.
type Config struct {
	Node          string
	Limits        Limits
	Buckets       int           // local allowance buckets per campaign
	BufferPercent float64       // a node releases locally its share of the rate plus this much
	Burst         time.Duration // a bucket holds at most this much of its release (tokens nobody draws do not pile up)
	Tick          time.Duration // how often local allowances are released
	RedisTimeout  time.Duration
	Coalescer     stock.CoalescerConfig
	MaxCampaigns  int
	RecentEntries int
}

// Service runs shake campaigns on a node. It is safe for concurrent use;
// Run releases the local allowances, Close stops it.
type Service struct {
	cfg     Config
	rdb     redis.UniversalClient
	members stock.Membership
	log     *slog.Logger
	co      *stock.Coalescer[takeReq, takeRes]
	seed    maphash.Seed

	camps *stock.Cache[*campaign]

	candidates, wins, lostLocal, deferred prometheus.Counter
}

type campaign struct {
	id       string
	total    int64
	rate     int64
	startsMs int64
	buckets  []*stock.Share
	limit    int64        // tokens one bucket may hold
	granted  float64      // tokens released locally so far; owned by the release loop
	next     int          // bucket the next token goes to; owned by the release loop
	done     atomic.Bool  // Redis said every envelope is taken
	settled  atomic.Bool  // the ledger repair ran after done
	lastSeen atomic.Int64 // unix ms of the last shake, for eviction
}

type takeReq struct {
	c      *campaign
	bucket int
	user   string
	draw   int64
}

type takeRes struct {
	win Win
	err error
}

// Win is the answer to a shake. Won false: nothing this time.
type Win struct {
	Won         bool
	AmountCents int64
	EnvelopeID  string // "<campaign>.<n>": the campaign's n-th envelope
}

// Errors the Service answers with.
var (
	ErrNotFound   = flashsale.Errorf(flashsale.ENOTFOUND, "no such shake campaign")
	ErrNotStarted = flashsale.Errorf(flashsale.ENOTSTARTED, "the campaign has not started")
	ErrOverloaded = flashsale.Errorf(flashsale.EOVERLOADED, "too many shakers at once; retry shortly")
	ErrRedis      = flashsale.Errorf(flashsale.EUNAVAILABLE, "shake service unavailable; retry shortly")
)

// NewService returns a Service; members may be nil for a single node.
func NewService(cfg Config, rdb redis.UniversalClient, members stock.Membership, log *slog.Logger) *Service {
	if members == nil {
		members = stock.SingleNode{}
	}
	if log == nil {
		log = slog.Default()
	}
	cfg.Buckets = max(cfg.Buckets, 1)
	if cfg.Tick <= 0 {
		cfg.Tick = 10 * time.Millisecond
	}
	if cfg.Burst <= 0 {
		cfg.Burst = time.Second
	}
	if cfg.RedisTimeout <= 0 {
		cfg.RedisTimeout = 500 * time.Millisecond
	}
	cfg.MaxCampaigns = max(cfg.MaxCampaigns, 1)
	cfg.RecentEntries = max(cfg.RecentEntries, 1)
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_shake_" + name, Help: help})
	}
	s := &Service{cfg: cfg, rdb: rdb, members: members, log: log, seed: maphash.MakeSeed(), camps: stock.NewCache[*campaign](cfg.MaxCampaigns),
		candidates: c("candidates_total", "Shakes that drew a local token and went to Redis."),
		wins:       c("wins_total", "Shakes Redis confirmed as wins."),
		lostLocal:  c("lost_local_total", "Shakes answered \"nothing\" from memory (empty bucket)."),
		deferred:   c("credits_deferred_total", "Batches whose wallet credits failed and wait for the ledger repair."),
	}
	s.co = stock.NewCoalescer(cfg.Coalescer, s.flush)
	return s
}

// Create validates and stores a campaign; an existing id is a conflict.
func Create(ctx context.Context, rdb redis.UniversalClient, l Limits, c Campaign) (Campaign, error) {
	if err := l.Validate(c); err != nil {
		return Campaign{}, err
	}
	var starts int64
	if !c.StartsAt.IsZero() {
		starts = c.StartsAt.UnixMilli()
	}
	created, startsMs, err := lua.ShakeCreate(ctx, rdb, c.ID, lua.ShakeSettings{Total: c.Total, RatePerSec: c.RatePerSec,
		StartsMs: starts, Mode: c.Mode, Budget: c.BudgetCents, Min: c.MinCents, Max: c.MaxCents, MaxWins: c.MaxWinsPerUser})
	if err != nil {
		return Campaign{}, fmt.Errorf("%w: %w", ErrRedis, err)
	}
	if !created {
		return Campaign{}, flashsale.Errorf(flashsale.ECONFLICT, "shake campaign %q already exists", c.ID)
	}
	if err := rdb.SAdd(ctx, lua.ShakesKey, c.ID).Err(); err != nil {
		return Campaign{}, fmt.Errorf("index shake %q: %w: %w", c.ID, ErrRedis, err)
	}
	c.StartsAt = time.UnixMilli(startsMs).UTC()
	return c, nil
}

// Create validates and stores a campaign.
func (s *Service) Create(ctx context.Context, c Campaign) (Campaign, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	return Create(ctx, s.rdb, s.cfg.Limits, c)
}

// Shake is one shake of user in campaign id. Losing is the common answer
// and costs no I/O: only a shaker who draws a local token asks Redis.
func (s *Service) Shake(ctx context.Context, id, user string) (Win, error) {
	c, err := s.campaign(ctx, id)
	if err != nil {
		return Win{}, err
	}
	now := time.Now().UnixMilli()
	c.lastSeen.Store(now)
	if now < c.startsMs {
		return Win{}, ErrNotStarted
	}
	if c.done.Load() {
		return Win{}, nil
	}
	b := int(maphash.String(s.seed, user) % uint64(len(c.buckets)))
	if !c.buckets[b].TryTake() {
		s.lostLocal.Inc()
		return Win{}, nil
	}
	s.candidates.Inc()
	res, ok := s.co.Do(takeReq{c: c, bucket: b, user: user, draw: rand.Int64N(1 << 31)})
	if !ok {
		c.buckets[b].Give(1)
		return Win{}, ErrOverloaded
	}
	return res.win, res.err
}

// campaign returns the node's state of a campaign, loading it on first use.
func (s *Service) campaign(ctx context.Context, id string) (*campaign, error) {
	if c, ok := s.camps.Get(id); ok {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	v, err := s.rdb.HMGet(ctx, lua.ShakeKeysFor(id).Meta, "total", "rate", "starts_at_ms", "taken").Result()
	if err != nil {
		return nil, fmt.Errorf("load shake %q: %w: %w", id, ErrRedis, err)
	}
	if v[0] == nil {
		return nil, ErrNotFound
	}
	c := &campaign{id: id, total: toInt(v[0]), rate: toInt(v[1]), startsMs: toInt(v[2])}
	c.done.Store(toInt(v[3]) >= c.total)
	c.buckets = make([]*stock.Share, s.cfg.Buckets)
	for i := range c.buckets {
		c.buckets[i] = stock.NewShare(0)
	}
	c.limit = max(2, int64(math.Ceil(s.localRate(c)*s.cfg.Burst.Seconds()/float64(len(c.buckets)))))
	// Start from what the clock released up to now, not from zero: a node
	// that joins late must not release a backlog at once.
	c.granted = s.localDue(c, time.Now())
	c.lastSeen.Store(time.Now().UnixMilli())

	got, _, err := s.camps.Put(id, c, s.evict)
	return got, err
}

var errTooManyCampaigns = flashsale.Errorf(flashsale.EOVERLOADED, "this node serves too many shake campaigns")

// evict makes room in a full cache (its lock held): it drops finished
// campaigns and those nobody shook for a minute, and refuses when none is.
func (s *Service) evict(camps map[string]*campaign) error {
	idle := time.Now().Add(-time.Minute).UnixMilli()
	for id, c := range camps {
		if c.done.Load() || c.lastSeen.Load() < idle {
			delete(camps, id)
		}
	}
	if len(camps) >= s.cfg.MaxCampaigns {
		return errTooManyCampaigns
	}
	return nil
}

// localRate is this node's release rate: its share of the campaign's rate
// plus the buffer, so the survivors of a dead node keep the pace.
func (s *Service) localRate(c *campaign) float64 {
	return float64(c.rate) / float64(max(s.members.LiveNodes(), 1)) * (1 + s.cfg.BufferPercent/100)
}

// localDue is how many tokens this node releases from the start to t.
func (s *Service) localDue(c *campaign, t time.Time) float64 {
	el := float64(t.UnixMilli()-c.startsMs) / 1000
	if el <= 0 {
		return 0
	}
	return s.localRate(c) * el
}

// Run releases local allowances every Tick until ctx ends.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(s.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			s.release(now)
		case <-ctx.Done():
			return
		}
	}
}

// release tops every running campaign's buckets up with the tokens the
// clock released since the last tick, one at a time round robin, each
// bucket capped at its limit.
func (s *Service) release(now time.Time) {
	for _, c := range s.camps.Values() {
		if c.done.Load() {
			continue
		}
		due := s.localDue(c, now)
		n := int64(due - c.granted)
		if n <= 0 {
			continue
		}
		c.granted += float64(n)
		// More than every bucket can hold is dropped: it is the cap at work.
		n = min(n, c.limit*int64(len(c.buckets)))
		for ; n > 0; n-- {
			c.buckets[c.next].Fill(1, c.limit)
			c.next = (c.next + 1) % len(c.buckets)
		}
	}
}

// flush confirms one batch of candidates: one take script per campaign,
// one pipelined round of wallet credits for the winners.
func (s *Service) flush(reqs []takeReq, res []takeRes) {
	groups := map[*campaign][]int{}
	var order []*campaign
	for i, r := range reqs {
		if _, ok := groups[r.c]; !ok {
			order = append(order, r.c)
		}
		groups[r.c] = append(groups[r.c], i)
	}
	var credits []wallet.Credit
	for _, c := range order {
		idx := groups[c]
		shakers := make([]lua.Shaker, len(idx))
		for j, i := range idx {
			shakers[j] = lua.Shaker{User: reqs[i].user, Draw: reqs[i].draw}
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
		reply, err := lua.ShakeTake(ctx, s.rdb, c.id, s.cfg.Node, shakers)
		cancel()
		if err != nil {
			s.log.Warn("shake script failed", "campaign", c.id, "batch", len(idx), "err", err)
			for _, i := range idx {
				c.buckets[reqs[i].bucket].Give(1)
				res[i].err = ErrRedis
			}
			continue
		}
		switch reply.Code {
		case lua.TakeNone:
			c.done.Store(true)
			for _, i := range idx {
				res[i].err = ErrNotFound
			}
			continue
		case lua.TakeNotStarted:
			for _, i := range idx {
				res[i].err = ErrNotStarted
			}
			continue
		}
		n := reply.TakenBefore
		for j, v := range reply.Results {
			i := idx[j]
			switch {
			case v > 0:
				n++
				wid := winID(c.id, n)
				res[i].win = Win{Won: true, AmountCents: v, EnvelopeID: wid}
				credits = append(credits, wallet.Credit{User: reqs[i].user, Entry: lua.Entry{ID: wallet.WinID(wid), Amount: v}})
			case v == lua.TakeExhausted:
				c.done.Store(true)
			case v == lua.TakeCap:
				// The token was not used: another shaker of the bucket may have it.
				c.buckets[reqs[i].bucket].Give(1)
			}
			// TakeNotReleased: this node ran ahead of Redis's clock; the token is spent.
		}
		if c.done.Load() && c.settled.CompareAndSwap(false, true) {
			go func() {
				if _, err := SettleLedger(context.Background(), s.rdb, c.id, s.cfg.RecentEntries); err != nil {
					s.log.Warn("shake ledger repair", "campaign", c.id, "err", err)
				}
			}()
		}
	}
	s.wins.Add(float64(len(credits)))
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	_, err := wallet.ApplyAll(ctx, s.rdb, s.cfg.RecentEntries, credits)
	cancel()
	if err != nil {
		// The wins are recorded in the campaign: SettleLedger re-applies them.
		s.deferred.Inc()
		s.log.Warn("shake wallet credit deferred to the ledger repair", "wins", len(credits), "err", err)
	}
}

// Close settles queued candidates and stops the flushers.
func (s *Service) Close() { s.co.Close() }

// Describe implements prometheus.Collector.
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range []prometheus.Counter{s.candidates, s.wins, s.lostLocal, s.deferred} {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	for _, c := range []prometheus.Counter{s.candidates, s.wins, s.lostLocal, s.deferred} {
		c.Collect(ch)
	}
}

func toInt(v any) int64 {
	x, _ := v.(string)
	n, _ := strconv.ParseInt(x, 10, 64)
	return n
}

var errBadWin = errors.New("malformed win record")
