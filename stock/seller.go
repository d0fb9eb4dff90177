package stock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Reservation is a unit Redis has handed to a user: a pending order.
type Reservation struct {
	SaleID     string
	UserID     string
	Node       string
	Order      int64 // order number within the sale
	CreatedMs  int64 // Redis clock
	DeadlineMs int64 // pay deadline, Redis clock
	// Repeat is true when the buyer's Idempotency-Key named this order,
	// created by an earlier attempt: nothing was sold now.
	Repeat bool
}

// Confirmer makes reservations durable before the buyer hears "you got it"
// — in flashsale, by publishing order.created events to Kafka. Confirm sets
// errs[i] for every reservation it could not make durable; the Seller then
// undoes those in Redis. It must bound itself in time.
type Confirmer interface {
	Confirm(ctx context.Context, rs []Reservation, errs []error)
}

// Membership tells how many nodes share the stock; cluster.Membership
// implements it. LiveNodes is called on the refresh path and must be cheap.
type Membership interface {
	LiveNodes() int
}

// SingleNode is the Membership of a node that sells alone.
type SingleNode struct{}

// LiveNodes implements Membership.
func (SingleNode) LiveNodes() int { return 1 }

// SellerConfig tunes a Seller. Zero durations and sizes take the defaults
// documented in configs/default.yaml.
type SellerConfig struct {
	Node            string        // this node's id, recorded on every order
	BufferUnits     int64         // extra units above the fair share
	BufferPercent   float64       // extra units as a percentage of the fair share; the larger buffer wins
	RefreshInterval time.Duration // at most one share refresh from Redis per sale per interval
	RedisTimeout    time.Duration // bound of one script call
	ConfirmTimeout  time.Duration // bound of one Confirm call
	Coalescer       CoalescerConfig
	MaxSales        int // sales one node keeps state for; more are refused
}

// Seller is a node's ticket seller. It is safe for concurrent use.
type Seller struct {
	cfg     SellerConfig
	rdb     redis.UniversalClient
	confirm Confirmer
	members Membership
	log     *slog.Logger

	sales *Cache[*saleState]

	refreshes atomic.Int64 // share refreshes that read Redis, for /metrics
	batches   prometheus.Histogram
	doubt     *InDoubt
}

type saleState struct {
	s        *Seller
	id       string
	share    *Refill
	co       *Coalescer[buyReq, buyRes]
	startsMs int64
	endsMs   int64
}

// buyReq is one queued buyer. ctx is the request's context (cancelled
// when the client or the proxy gives up) and deadline its request deadline
// (zero: none); both are checked before the batch is sent and again before
// the answer, so a buyer nobody is waiting for is never sold to.
type buyReq struct {
	user, key string
	ctx       context.Context
	deadline  time.Time
}

// late reports whether nobody will hear this buyer's answer any more.
func (r *buyReq) late(now time.Time) bool {
	return r.ctx.Err() != nil || !r.deadline.IsZero() && !now.Before(r.deadline)
}

type buyRes struct {
	r   Reservation
	err error
}

// Errors the Seller answers with; api maps their codes to statuses.
var (
	ErrSoldOut    = flashsale.Errorf(flashsale.ESOLDOUT, "sold out")
	ErrLimit      = flashsale.Errorf(flashsale.ELIMITREACHED, "you already hold the most orders this sale allows")
	ErrNotStarted = flashsale.Errorf(flashsale.ENOTSTARTED, "the sale has not started")
	ErrEnded      = flashsale.Errorf(flashsale.EENDED, "the sale has ended")
	ErrNoSale     = flashsale.Errorf(flashsale.ENOTFOUND, "no such sale")
	ErrOverloaded = flashsale.Errorf(flashsale.EOVERLOADED, "too many buyers at once; retry shortly")
	ErrRedis      = flashsale.Errorf(flashsale.EUNAVAILABLE, "stock service unavailable; retry shortly")
	ErrNotDurable = flashsale.Errorf(flashsale.EUNAVAILABLE, "order could not be recorded; retry shortly")
	// ErrDeadline is the answer to a buyer whose request deadline passed (or
	// who went away) before the sale could be confirmed: nothing is held.
	ErrDeadline = flashsale.Errorf(flashsale.EUNAVAILABLE, "the request deadline passed before the order was confirmed; nothing is held, retry shortly")
)

// Sentinels lists the Seller's package-level errors, so the API can render
// their bodies once.
func Sentinels() []*flashsale.Error {
	return []*flashsale.Error{ErrSoldOut, ErrLimit, ErrNotStarted, ErrEnded, ErrNoSale, ErrOverloaded, ErrRedis, ErrDeadline}
}

// NewSeller returns a Seller that deducts from Redis and confirms through c.
// members may be nil for a single node.
func NewSeller(cfg SellerConfig, rdb redis.UniversalClient, c Confirmer, members Membership, log *slog.Logger) *Seller {
	if members == nil {
		members = SingleNode{}
	}
	if log == nil {
		log = slog.Default()
	}
	cfg.RefreshInterval = cmp0(cfg.RefreshInterval, 100*time.Millisecond)
	cfg.RedisTimeout = cmp0(cfg.RedisTimeout, 500*time.Millisecond)
	cfg.ConfirmTimeout = cmp0(cfg.ConfirmTimeout, 5*time.Second)
	if cfg.MaxSales <= 0 {
		cfg.MaxSales = 1024
	}
	return &Seller{cfg: cfg, rdb: rdb, confirm: c, members: members, log: log, sales: NewCache[*saleState](cfg.MaxSales),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashsale_stock_batch_size",
			Help: "Buyers settled by one buy script call (coalescing at work).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		doubt: NewInDoubt("sale", func(ctx context.Context, sale, batch string) (int, error) {
			orders, err := lua.ResolveBatch(ctx, rdb, sale, batch)
			return len(orders), err
		}, cfg.RedisTimeout, 4096, log)}
}

func cmp0(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Buy sells one unit of sale saleID to userID. On success the order is in
// Redis and confirmed (durable); on any error nothing is held: the unit is
// back in Redis and in the local share. The order number is returned with an
// ErrNotDurable or ErrDeadline error too, so the outcome log can name the
// undone order.
//
// ctx is the buyer's request: its deadline (ctx.Deadline) and its
// cancellation are the request deadline. A buyer whose deadline passes
// before its batch is sent is left out of it (ErrDeadline); one whose
// deadline passes, or whose pay deadline passes, after the script ran but
// before the answer is undone through the same abort as a lost reply.
func (s *Seller) Buy(ctx context.Context, saleID, userID string) (Reservation, error) {
	return s.BuyKeyed(ctx, saleID, userID, "", time.Time{})
}

// BuyKeyed is Buy with an Idempotency-Key (key "" for none; otherwise it
// must pass lua.ValidIdempotencyKey): while the order an earlier attempt
// with the same key made is live, the same buyer gets that order back
// (Reservation.Repeat) instead of a second one or ErrLimit. deadline is the
// request deadline; zero means ctx.Deadline(). It is passed apart from ctx
// so the hot path needs no timer per request.
func (s *Seller) BuyKeyed(ctx context.Context, saleID, userID, key string, deadline time.Time) (Reservation, error) {
	if deadline.IsZero() {
		deadline, _ = ctx.Deadline()
	}
	if !deadline.IsZero() && !time.Now().Before(deadline) || ctx.Err() != nil {
		return Reservation{}, ErrDeadline
	}
	st, err := s.sale(ctx, saleID)
	if err != nil {
		return Reservation{}, err
	}
	if st.startsMs > 0 || st.endsMs > 0 {
		// A local fast answer; the script checks again with Redis's clock.
		now := time.Now().UnixMilli()
		if st.startsMs > 0 && now < st.startsMs {
			return Reservation{}, ErrNotStarted
		}
		if st.endsMs > 0 && now >= st.endsMs {
			return Reservation{}, ErrEnded
		}
	}
	if ok, err := st.share.Take(ctx); !ok {
		if err != nil {
			s.log.Warn("share refresh failed", "sale", st.id, "err", err)
		}
		return Reservation{}, ErrSoldOut
	}
	res, ok := st.co.Do(buyReq{user: userID, key: key, ctx: ctx, deadline: deadline})
	if !ok {
		st.share.Give(1)
		return Reservation{}, ErrOverloaded
	}
	return res.r, res.err
}

// reload is a sale's ReloadFunc: its fair part of what Redis has left plus
// the buffer. It is called through the sale's Refill, at most once per
// RefreshInterval when the local share is empty, so a sold-out sale costs
// each node at most 1/RefreshInterval Redis reads a second.
func (s *Seller) reload(id string) ReloadFunc {
	return func(ctx context.Context) (int64, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
		defer cancel()
		s.refreshes.Add(1)
		v, err := s.rdb.HGet(ctx, lua.KeysFor(id).Meta, "remaining").Int64()
		if errors.Is(err, redis.Nil) {
			return 0, true, nil
		} else if err != nil {
			return 0, false, fmt.Errorf("read remaining of sale %q: %w", id, err)
		}
		return s.ShareOf(v), false, nil
	}
}

// ShareOf returns the local share a node takes of remaining units.
func (s *Seller) ShareOf(remaining int64) int64 {
	return FairShare(remaining, s.members.LiveNodes(), s.cfg.BufferUnits, s.cfg.BufferPercent)
}

// Reshare recomputes every sale's share, e.g. when the set of live nodes
// changes. Errors are logged; the next refresh tries again.
func (s *Seller) Reshare(ctx context.Context) {
	for _, st := range s.sales.Values() {
		if err := st.share.Reload(ctx); err != nil {
			s.log.Warn("reshare failed", "sale", st.id, "err", err)
		}
	}
}

// sale returns the node's state for a sale, loading it from Redis on first use.
func (s *Seller) sale(ctx context.Context, id string) (*saleState, error) {
	if st, ok := s.sales.Get(id); ok {
		return st, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	v, err := s.rdb.HMGet(ctx, lua.KeysFor(id).Meta, "remaining", "starts_at_ms", "ends_at_ms").Result()
	if err != nil {
		return nil, fmt.Errorf("load sale %q: %w: %w", id, ErrRedis, err)
	}
	if v[0] == nil {
		return nil, ErrNoSale
	}
	remaining, _ := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
	starts, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
	ends, _ := strconv.ParseInt(fmt.Sprint(v[2]), 10, 64)

	st := &saleState{s: s, id: id, share: NewRefill(s.ShareOf(remaining), s.cfg.RefreshInterval, s.reload(id)),
		startsMs: starts, endsMs: ends}
	st.co = NewCoalescer(s.cfg.Coalescer, st.flush)
	got, inserted, err := s.sales.Put(id, st, func(map[string]*saleState) error {
		return errTooManySales
	})
	if !inserted {
		st.co.Close() // another buyer's state won, or there was no room
	}
	return got, err
}

var errTooManySales = flashsale.Errorf(flashsale.EOVERLOADED, "this node serves too many sales")

// flush settles one batch of buyers: one buy script call, one Confirm for
// the winners, one abort call for any winner that could not be confirmed
// or whose answer would come too late, and one adjustment of the local share.
func (st *saleState) flush(reqs []buyReq, res []buyRes) {
	s := st.s
	// Buyers nobody waits for any more are not sent: they hear 503 and
	// nothing is sold to them.
	now := time.Now()
	users := make([]string, 0, len(reqs))
	var keys []string
	pos := make([]int, 0, len(reqs)) // pos[j]: the request of the script's buyer j
	var latest time.Time             // the latest request deadline of the batch; zero: none
	unbounded := false
	for i := range reqs {
		r := &reqs[i]
		if r.late(now) {
			res[i].err = ErrDeadline
			continue
		}
		if r.key != "" && keys == nil {
			keys = make([]string, len(users), len(reqs))
		}
		users = append(users, r.user)
		if keys != nil {
			keys = append(keys, r.key)
		}
		pos = append(pos, i)
		if r.deadline.IsZero() {
			unbounded = true
		} else if r.deadline.After(latest) {
			latest = r.deadline
		}
	}
	if len(users) < len(reqs) {
		st.share.Give(int64(len(reqs) - len(users)))
	}
	if len(users) == 0 {
		return
	}
	if unbounded {
		latest = time.Time{}
	}
	s.batches.Observe(float64(len(users)))
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	batch := NewBatchID(s.cfg.Node)
	reply, err := lua.BuyKeyed(ctx, s.rdb, st.id, s.cfg.Node, batch, users, keys, nil)
	cancel()
	replied := time.Now()
	if err != nil {
		s.log.Warn("buy script failed", "sale", st.id, "batch", len(users), "err", err)
		if !Definite(err) {
			// The script may still run, or may have run: settle that later
			// so the 503 these buyers get stays true.
			s.doubt.Add(st.id, batch)
		}
		st.share.Give(int64(len(users)))
		fillAt(res, pos, ErrRedis)
		return
	}
	switch reply.SaleCode {
	case lua.BuyVoid: // cannot happen: only a lost reply is written off
		st.share.Give(int64(len(users)))
		fillAt(res, pos, ErrRedis)
		return
	case lua.BuyNoSale:
		st.share.MarkGone()
		fillAt(res, pos, ErrNoSale)
		return
	case lua.BuyNotStarted:
		st.share.Give(int64(len(users)))
		fillAt(res, pos, ErrNotStarted)
		return
	case lua.BuyEnded:
		st.share.Set(0)
		fillAt(res, pos, ErrEnded)
		return
	}

	var unused int64
	soldOut := false
	won := make([]Reservation, 0, len(users))
	idx := make([]int, 0, len(users)) // request index of won[j]
	var repeats []int                 // script buyer index of each repeat
	rep := 0
	for j, n := range reply.Results {
		i := pos[j]
		if rep < len(reply.Repeats) && reply.Repeats[rep].I == j {
			res[i].r = Reservation{SaleID: st.id, UserID: users[j], Node: s.cfg.Node, Order: n,
				CreatedMs: reply.NowMs, DeadlineMs: reply.Repeats[rep].DeadlineMs, Repeat: true}
			repeats = append(repeats, j)
			rep++
			unused++ // a repeat took no unit
			continue
		}
		switch {
		case n > 0:
			res[i].r = Reservation{SaleID: st.id, UserID: users[j], Node: s.cfg.Node, Order: n,
				CreatedMs: reply.NowMs, DeadlineMs: reply.DeadlineMs}
			won = append(won, res[i].r)
			idx = append(idx, i)
		case n == lua.BuySoldOut:
			soldOut = true
			res[i].err = ErrSoldOut
		default:
			unused++
			res[i].err = ErrLimit
		}
	}
	var undo []int64
	if len(won) > 0 {
		errs := make([]error, len(won))
		// Waiting for Kafka past every buyer's deadline is pointless: the
		// answers would be undone anyway.
		cctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConfirmTimeout)
		if !latest.IsZero() {
			cctx, cancel = context.WithDeadline(context.Background(), minTime(latest, time.Now().Add(s.cfg.ConfirmTimeout)))
		}
		s.confirm.Confirm(cctx, won, errs)
		cancel()
		// The last look before the answer: a "yes" nobody hears any more,
		// or for an order whose pay window has closed, is taken back.
		now := time.Now()
		redisNow := reply.NowMs + now.Sub(replied).Milliseconds()
		var unpublished []Reservation
		for j, e := range errs {
			r := &reqs[idx[j]]
			switch {
			case e != nil:
				res[idx[j]].err = fmt.Errorf("%w: %w", ErrNotDurable, e)
				unpublished = append(unpublished, won[j])
			case r.late(now) || redisNow >= won[j].DeadlineMs:
				res[idx[j]].err = ErrDeadline
			default:
				continue
			}
			undo = append(undo, won[j].Order)
		}
		if len(undo) > 0 {
			unused += int64(len(undo))
			if kept := st.abort(undo); len(kept) > 0 {
				// A repeat of its Idempotency-Key was answered with the
				// order on another node meanwhile (claimed): it stays, its
				// unit stays sold, and it still needs its order.created.
				unused -= int64(len(kept))
				st.confirmKept(unpublished, kept)
			}
		}
	}
	if len(repeats) > 0 {
		st.answerRepeats(reqs, res, pos, repeats, won, undo, reply.NowMs, replied)
	}
	if soldOut {
		// Redis is out even though this node still had an allowance.
		st.share.Set(0)
	} else {
		st.share.Give(unused)
	}
}

// answerRepeats settles the buyers whose Idempotency-Key named a live
// order. A repeat of an order made by this very batch shares its outcome.
// Any other is claimed in Redis before it is answered, so a late abort of
// the first attempt (on another node, say one that was frozen) cannot take
// back the order this buyer is now told of; an order that ended in between
// cannot be claimed, and the buyer hears 503 (a retry buys anew).
func (st *saleState) answerRepeats(reqs []buyReq, res []buyRes, pos, repeats []int, won []Reservation, undo []int64,
	nowMs int64, replied time.Time) {
	s := st.s
	now := time.Now()
	redisNow := nowMs + now.Sub(replied).Milliseconds()
	var claim []int64
	var claimAt []int
	for _, j := range repeats {
		i := pos[j]
		r := &res[i]
		if k := slices.IndexFunc(won, func(w Reservation) bool { return w.Order == r.r.Order }); k >= 0 {
			if slices.Contains(undo, r.r.Order) {
				r.err = ErrDeadline
			} else if reqs[i].late(now) {
				r.err = ErrDeadline // the first of the batch is answered; this one is late
			}
			continue
		}
		if reqs[i].late(now) || redisNow >= r.r.DeadlineMs {
			r.err = ErrDeadline
			continue
		}
		claim = append(claim, r.r.Order)
		claimAt = append(claimAt, i)
	}
	if len(claim) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	defer cancel()
	_, out, err := lua.Settle(ctx, s.rdb, st.id, lua.Claim, claim)
	for k, i := range claimAt {
		switch {
		case err != nil:
			// The claim may have run: the order is then kept for this
			// buyer, who holds its key and learns it on the next retry.
			res[i].err = ErrRedis
		case out[k].Code == lua.SettleDone || out[k].Code == lua.SettleRepeat:
			res[i].r.CreatedMs = out[k].Record.CreatedMs
			res[i].r.DeadlineMs = out[k].Record.DeadlineMs
			res[i].r.Node = out[k].Record.Node
		default:
			res[i].err = ErrDeadline
		}
	}
	if err != nil {
		s.log.Warn("claim of repeated idempotency keys failed", "sale", st.id, "orders", len(claim), "err", err)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// abort undoes reservations that could not be confirmed. If Redis fails too,
// the orders stay pending with their deadline and the expiry sweeper returns
// them, so nothing is stranded.
//
// It returns the orders the abort left alone because a repeat of their
// Idempotency-Key was answered with them (lua.SettleClaimed): those are
// someone's "yes" and stay pending.
func (st *saleState) abort(orders []int64) (kept []int64) {
	ctx, cancel := context.WithTimeout(context.Background(), st.s.cfg.RedisTimeout)
	defer cancel()
	_, res, err := lua.Settle(ctx, st.s.rdb, st.id, lua.Abort, orders)
	if err != nil {
		st.s.log.Error("abort of unconfirmed orders failed; the sweeper will release them after their deadline",
			"sale", st.id, "orders", len(orders), "err", err)
		return nil
	}
	for i, r := range res {
		if r.Code == lua.SettleClaimed {
			kept = append(kept, orders[i])
		}
	}
	return kept
}

// confirmKept publishes the order.created events of the reservations in
// unpublished (their Confirm failed) that an abort kept (claimed by a repeat
// answered elsewhere). If it fails again the order is still in Redis with
// its deadline: the sweeper expires it.
func (st *saleState) confirmKept(unpublished []Reservation, kept []int64) {
	var rs []Reservation
	for _, w := range unpublished {
		if slices.Contains(kept, w.Order) {
			rs = append(rs, w)
		}
	}
	if len(rs) == 0 {
		return // kept orders whose order.created is already on Kafka
	}
	errs := make([]error, len(rs))
	ctx, cancel := context.WithTimeout(context.Background(), st.s.cfg.ConfirmTimeout)
	defer cancel()
	st.s.confirm.Confirm(ctx, rs, errs)
	for i, err := range errs {
		if err != nil {
			st.s.log.Warn("order.created of a claimed order not published; the sweeper expires it if unpaid",
				"sale", st.id, "order", rs[i].Order, "err", err)
		}
	}
}

// fillAt answers err to the requests the script saw (pos); the others
// already have their answer.
// Undo takes back an order this node sold but whose buyer will never hear
// of it (the connection closed after the batch settled): the same abort as
// a lost reply, so the unit and the limit slot go back at once.
func (s *Seller) Undo(saleID string, order int64) {
	if st, ok := s.sales.Get(saleID); ok {
		st.abort([]int64{order})
		st.share.Give(1)
	}
}

func fillAt(res []buyRes, pos []int, err error) {
	for _, i := range pos {
		res[i].err = err
	}
}

// Forget drops the node's state of a sale (e.g. after it was deleted).
func (s *Seller) Forget(id string) {
	if st, ok := s.sales.Delete(id); ok {
		st.co.Close()
	}
}

// Close settles queued buyers and stops every sale's flushers. Call it after
// the HTTP server has stopped taking requests.
func (s *Seller) Close() {
	for _, st := range s.sales.Drain() {
		st.co.Close()
	}
	s.doubt.Close()
}

var shareDesc = prometheus.NewDesc("flashsale_stock_local_share_units",
	"Units this node may still try to sell before asking Redis again.", []string{"sale"}, nil)
var refreshDesc = prometheus.NewDesc("flashsale_stock_share_refreshes_total",
	"Share refreshes that read Redis.", nil, nil)

// Describe implements prometheus.Collector.
func (s *Seller) Describe(ch chan<- *prometheus.Desc) {
	ch <- shareDesc
	ch <- refreshDesc
	s.batches.Describe(ch)
	s.doubt.Describe(ch)
}

// Collect implements prometheus.Collector; it reads the shares at scrape
// time so the buy path pays nothing for the gauge.
func (s *Seller) Collect(ch chan<- prometheus.Metric) {
	s.sales.Range(func(id string, st *saleState) {
		ch <- prometheus.MustNewConstMetric(shareDesc, prometheus.GaugeValue, float64(st.share.Left()), id)
	})
	ch <- prometheus.MustNewConstMetric(refreshDesc, prometheus.CounterValue, float64(s.refreshes.Load()))
	s.batches.Collect(ch)
	s.doubt.Collect(ch)
}
