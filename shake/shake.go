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
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/metric"
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
	frame   *stock.Frame[*campaign, takeReq, takeRes]
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
	cfg.Tick = stock.Or(cfg.Tick, 10*time.Millisecond)
	cfg.Burst = stock.Or(cfg.Burst, time.Second)
	cfg.RedisTimeout = stock.Or(cfg.RedisTimeout, 500*time.Millisecond)
	cfg.MaxCampaigns = max(cfg.MaxCampaigns, 1)
	cfg.RecentEntries = max(cfg.RecentEntries, 1)
	c := func(name, help string) prometheus.Counter { return metric.Counter("shake", name, help, nil) }
	s := &Service{cfg: cfg, rdb: rdb, members: members, log: log, seed: maphash.MakeSeed(), camps: stock.NewCache[*campaign](cfg.MaxCampaigns),
		candidates: c("candidates_total", "Shakes that drew a local token and went to Redis."),
		wins:       c("wins_total", "Shakes Redis confirmed as wins."),
		lostLocal:  c("lost_local_total", "Shakes answered \"nothing\" from memory (empty bucket)."),
		deferred:   c("credits_deferred_total", "Batches whose wallet credits failed and wait for the ledger repair."),
	}
	// Shakes publish no events: a win is durable once Redis has it, and a
	// lost reply is resolved like the other products' (the win undone).
	s.frame = stock.NewFrame(stock.FrameConfig{Node: cfg.Node, Subsystem: "shake", RedisTimeout: cfg.RedisTimeout,
		Coalescer: cfg.Coalescer}, shakes{s}, nil,
		func(ctx context.Context, id, batch string) (int, error) {
			wins, err := lua.ResolveShakeBatch(ctx, rdb, id, batch)
			return len(wins), err
		}, log)
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
	res, ok := s.frame.Do(takeReq{c: c, bucket: b, user: user, draw: rand.Int64N(1 << 31)})
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
	return s.camps.Load(ctx, id, func(ctx context.Context) (*campaign, error) {
		v, found, err := lua.LoadShakeState(ctx, s.rdb, id)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRedis, err)
		}
		if !found {
			return nil, ErrNotFound
		}
		c := &campaign{id: id, total: v.Total, rate: v.RatePerSec, startsMs: v.StartsMs}
		c.done.Store(v.Taken >= c.total)
		c.buckets = make([]*stock.Share, s.cfg.Buckets)
		for i := range c.buckets {
			c.buckets[i] = stock.NewShare(0)
		}
		c.limit = max(2, int64(math.Ceil(s.localRate(c)*s.cfg.Burst.Seconds()/float64(len(c.buckets)))))
		// Start from what the clock released up to now, not from zero: a node
		// that joins late must not release a backlog at once.
		c.granted = s.localDue(c, time.Now())
		c.lastSeen.Store(time.Now().UnixMilli())
		return c, nil
	}, s.evict)
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

// shakes is the shake product of the batch frame: one take script per
// campaign of a batch; no events; then one pipelined round of wallet
// credits for the winners.
type shakes struct{ s *Service }

func (shakes) Item(r takeReq) *campaign  { return r.c }
func (shakes) ItemID(c *campaign) string { return c.id }

// Call confirms one campaign's candidates with one take script call; a
// token a candidate could not use goes back to its bucket.
func (h shakes) Call(ctx context.Context, c *campaign, batch string, reqs []takeReq, res []takeRes) ([]int, error) {
	shakers := make([]lua.Shaker, len(reqs))
	for i, r := range reqs {
		shakers[i] = lua.Shaker{User: r.user, Draw: r.draw}
	}
	reply, err := lua.ShakeTake(ctx, h.s.rdb, c.id, h.s.cfg.Node, batch, shakers)
	if err != nil {
		return nil, err
	}
	switch reply.Code {
	case lua.TakeVoid: // cannot happen: only a lost reply is written off
		h.Unavailable(c, reqs, res, nil)
		return nil, nil
	case lua.TakeNone:
		c.done.Store(true)
		fillErr(res, ErrNotFound)
		return nil, nil
	case lua.TakeNotStarted:
		fillErr(res, ErrNotStarted)
		return nil, nil
	}
	n := reply.TakenBefore
	for i, v := range reply.Results {
		switch {
		case v > 0:
			n++
			res[i].win = Win{Won: true, AmountCents: v, EnvelopeID: winID(c.id, n)}
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
			if _, err := SettleLedger(context.Background(), h.s.rdb, c.id, h.s.cfg.RecentEntries); err != nil {
				h.s.log.Warn("shake ledger repair", "campaign", c.id, "err", err)
			}
		}()
	}
	return nil, nil
}

func (shakes) Unavailable(c *campaign, reqs []takeReq, res []takeRes, _ error) {
	for i, r := range reqs {
		c.buckets[r.bucket].Give(1)
		res[i].err = ErrRedis
	}
}

func (shakes) AppendEvent(b []byte, _ *campaign, _ takeReq, _ *takeRes) []byte { return b }

// Answer: a take has no event, so nothing can be refused after the script.
func (shakes) Answer(context.Context, *campaign, []takeReq, []takeRes, []int, []error) {}

// Deadline: a shake has no request deadline of its own.
func (shakes) Deadline(takeReq) time.Time { return time.Time{} }

// Settled credits every win of the batch in one pipelined round. The wins
// are recorded in their campaigns: if the credit fails, SettleLedger
// re-applies them.
func (h shakes) Settled(reqs []takeReq, res []takeRes) {
	var credits []wallet.Credit
	for i, r := range res {
		if r.win.Won {
			credits = append(credits, wallet.Credit{User: reqs[i].user,
				Entry: lua.Entry{ID: wallet.WinID(r.win.EnvelopeID), Amount: r.win.AmountCents}})
		}
	}
	h.s.wins.Add(float64(len(credits)))
	if err := wallet.CreditBatch(h.s.rdb, h.s.cfg.RecentEntries, h.s.cfg.RedisTimeout, credits); err != nil {
		h.s.deferred.Inc()
		h.s.log.Warn("shake wallet credit deferred to the ledger repair", "wins", len(credits), "err", err)
	}
}

func fillErr(res []takeRes, err error) {
	for i := range res {
		res[i].err = err
	}
}

// Close settles queued candidates, stops the flushers and resolves what is
// in doubt.
func (s *Service) Close() { s.frame.Close() }

// Describe implements prometheus.Collector.
func (s *Service) Describe(ch chan<- *prometheus.Desc) { s.collectors().Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Service) Collect(ch chan<- prometheus.Metric) { s.collectors().Collect(ch) }

func (s *Service) collectors() metric.Set {
	return metric.Set{s.frame, s.candidates, s.wins, s.lostLocal, s.deferred}
}

var errBadWin = errors.New("malformed win record")
