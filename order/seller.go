package order

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
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
}

// SellerConfig tunes a Seller. Zero durations and sizes take the defaults
// documented in configs/default.yaml.
type SellerConfig struct {
	Node            string        // this node's id, recorded on every order
	BufferUnits     int64         // extra units above the fair share
	BufferPercent   float64       // extra units as a percentage of the fair share; the larger buffer wins
	RefreshInterval time.Duration // at most one share refresh from Redis per sale per interval
	RedisTimeout    time.Duration // bound of one script call
	ConfirmTimeout  time.Duration // bound of one Publish of a batch's order.created events
	Coalescer       stock.CoalescerConfig
	MaxSales        int // sales one node keeps state for; more are refused
}

// Seller is a node's ticket seller. It is safe for concurrent use.
type Seller struct {
	cfg     SellerConfig
	rdb     redis.UniversalClient
	members stock.Membership
	log     *slog.Logger

	sales *stock.Cache[*saleState]
	frame *stock.Frame[*saleState, buyReq, buyRes]

	refreshes atomic.Int64 // share refreshes that read Redis, for /metrics
}

type saleState struct {
	id       string
	share    *stock.Refill
	startsMs int64
	endsMs   int64
}

type buyReq struct {
	sale *saleState
	user string
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
)

// Sentinels lists the Seller's package-level errors, so the API can render
// their bodies once.
func Sentinels() []*flashsale.Error {
	return []*flashsale.Error{ErrSoldOut, ErrLimit, ErrNotStarted, ErrEnded, ErrNoSale, ErrOverloaded, ErrRedis}
}

// NewSeller returns a Seller that deducts from Redis and makes each order
// durable through pub (order.created on Kafka) before its buyer hears of it.
// members may be nil for a single node.
func NewSeller(cfg SellerConfig, rdb redis.UniversalClient, pub stock.Publisher, members stock.Membership, log *slog.Logger) *Seller {
	if members == nil {
		members = stock.SingleNode{}
	}
	if log == nil {
		log = slog.Default()
	}
	cfg.RefreshInterval = stock.Or(cfg.RefreshInterval, 100*time.Millisecond)
	cfg.RedisTimeout = stock.Or(cfg.RedisTimeout, 500*time.Millisecond)
	cfg.ConfirmTimeout = stock.Or(cfg.ConfirmTimeout, 5*time.Second)
	if cfg.MaxSales <= 0 {
		cfg.MaxSales = 1024
	}
	s := &Seller{cfg: cfg, rdb: rdb, members: members, log: log, sales: stock.NewCache[*saleState](cfg.MaxSales)}
	s.frame = stock.NewFrame(stock.FrameConfig{Node: cfg.Node, Subsystem: "order", RedisTimeout: cfg.RedisTimeout,
		PublishTimeout: cfg.ConfirmTimeout, Coalescer: cfg.Coalescer}, tickets{s}, pub,
		func(ctx context.Context, sale, batch string) (int, error) {
			orders, err := lua.ResolveBatch(ctx, rdb, sale, batch)
			return len(orders), err
		}, log)
	return s
}

// Buy sells one unit of sale saleID to userID. On success the order is in
// Redis and confirmed (durable); on any error nothing is held: the unit is
// back in Redis and in the local share. The order number is returned with an
// ErrNotDurable error too, so the outcome log can name the undone order.
func (s *Seller) Buy(ctx context.Context, saleID, userID string) (Reservation, error) {
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
	res, ok := s.frame.Do(buyReq{sale: st, user: userID})
	if !ok {
		st.share.Give(1)
		return Reservation{}, ErrOverloaded
	}
	return res.r, res.err
}

// reload is a sale's stock.ReloadFunc: its fair part of what Redis has left plus
// the buffer. It is called through the sale's stock.Refill, at most once per
// RefreshInterval when the local share is empty, so a sold-out sale costs
// each node at most 1/RefreshInterval Redis reads a second.
func (s *Seller) reload(id string) stock.ReloadFunc {
	return func(ctx context.Context) (int64, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
		defer cancel()
		s.refreshes.Add(1)
		v, found, err := lua.SaleRemaining(ctx, s.rdb, id)
		if err != nil || !found {
			return 0, !found && err == nil, err
		}
		return s.ShareOf(v), false, nil
	}
}

// ShareOf returns the local share a node takes of remaining units.
func (s *Seller) ShareOf(remaining int64) int64 {
	return stock.FairShare(remaining, s.members.LiveNodes(), s.cfg.BufferUnits, s.cfg.BufferPercent)
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
	v, found, err := lua.LoadSaleState(ctx, s.rdb, id)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRedis, err)
	}
	if !found {
		return nil, ErrNoSale
	}
	st := &saleState{id: id, share: stock.NewRefill(s.ShareOf(v.Remaining), s.cfg.RefreshInterval, s.reload(id)),
		startsMs: v.StartsMs, endsMs: v.EndsMs}
	got, _, err := s.sales.Put(id, st, func(map[string]*saleState) error {
		return errTooManySales
	})
	return got, err
}

var errTooManySales = flashsale.Errorf(flashsale.EOVERLOADED, "this node serves too many sales")

// tickets is the ticket product of the batch frame: one buy.lua call per
// batch of one sale's buyers, order.created for every order, an abort of
// every order Kafka did not take.
type tickets struct{ s *Seller }

func (tickets) Item(r buyReq) *saleState    { return r.sale }
func (tickets) ItemID(st *saleState) string { return st.id }

// Call settles one batch of buyers with one buy script call and gives the
// local share back what the batch did not use.
func (t tickets) Call(ctx context.Context, st *saleState, batch string, reqs []buyReq, res []buyRes) ([]int, error) {
	s := t.s
	users := make([]string, len(reqs))
	for i, r := range reqs {
		users[i] = r.user
	}
	reply, err := lua.Buy(ctx, s.rdb, st.id, s.cfg.Node, batch, users, nil)
	if err != nil {
		return nil, err
	}
	if v, refusal := saleVerdict(reply.SaleCode); refusal != nil {
		st.share.Refuse(v, len(reqs))
		fill(res, refusal)
		return nil, nil
	}
	var unused int64
	soldOut := false
	won := make([]int, 0, len(reqs))
	for i, n := range reply.Results {
		switch {
		case n > 0:
			res[i].r = Reservation{SaleID: st.id, UserID: users[i], Node: s.cfg.Node, Order: n,
				CreatedMs: reply.NowMs, DeadlineMs: reply.DeadlineMs}
			won = append(won, i)
		case n == lua.BuySoldOut:
			soldOut = true
			res[i].err = ErrSoldOut
		default:
			unused++
			res[i].err = ErrLimit
		}
	}
	// Sold out: Redis is out even though this node still had an allowance.
	st.share.Settle(soldOut, unused)
	return won, nil
}

// saleVerdict maps the buy script's sale-level code; a nil error: the
// sale is open and every buyer has a result.
func saleVerdict(code int64) (stock.Verdict, error) {
	switch code {
	case lua.BuyVoid: // cannot happen: only a lost reply is written off
		return stock.GiveBack, ErrRedis
	case lua.BuyNoSale:
		return stock.NoItem, ErrNoSale
	case lua.BuyNotStarted:
		return stock.GiveBack, ErrNotStarted
	case lua.BuyEnded:
		return stock.Closed, ErrEnded
	}
	return 0, nil
}

func (tickets) Unavailable(st *saleState, reqs []buyReq, res []buyRes, _ error) {
	st.share.Give(int64(len(reqs)))
	fill(res, ErrRedis)
}

func (tickets) AppendEvent(b []byte, _ *saleState, _ buyReq, res *buyRes) []byte {
	return kafka.AppendOrderCreated(b, kafka.OrderCreated(res.r))
}

// Undo aborts the orders Kafka did not take. Their buyers hear 503 with the
// order number, so the outcome log can name the undone order. If Redis fails
// too, the orders stay pending with their deadline and the sweeper returns
// them, so nothing is stranded.
func (t tickets) Undo(ctx context.Context, st *saleState, _ []buyReq, res []buyRes, wins []int, errs []error) {
	orders := make([]int64, len(wins))
	for j, i := range wins {
		orders[j] = res[i].r.Order
		res[i].err = fmt.Errorf("%w: %w", ErrNotDurable, errs[j])
	}
	st.share.Give(int64(len(orders)))
	if _, _, err := lua.Settle(ctx, t.s.rdb, st.id, lua.Abort, orders); err != nil {
		t.s.log.Error("abort of unconfirmed orders failed; the sweeper will release them after their deadline",
			"sale", st.id, "orders", len(orders), "err", err)
	}
}

func (tickets) Settled([]buyReq, []buyRes) {}

func fill(res []buyRes, err error) {
	for i := range res {
		res[i].err = err
	}
}

// Forget drops the node's state of a sale (e.g. after it was deleted).
func (s *Seller) Forget(id string) { s.sales.Delete(id) }

// Close settles queued buyers and stops the flushers. Call it after the
// HTTP server has stopped taking requests.
func (s *Seller) Close() {
	s.frame.Close()
	s.sales.Drain()
}

var shareDesc = metric.Desc("stock", "local_share_units",
	"Units this node may still try to sell before asking Redis again.", []string{"sale"})
var refreshDesc = metric.Desc("stock", "share_refreshes_total", "Share refreshes that read Redis.", nil)

// Describe implements prometheus.Collector.
func (s *Seller) Describe(ch chan<- *prometheus.Desc) {
	ch <- shareDesc
	ch <- refreshDesc
	s.frame.Describe(ch)
}

// Collect implements prometheus.Collector; it reads the shares at scrape
// time so the buy path pays nothing for the gauge.
func (s *Seller) Collect(ch chan<- prometheus.Metric) {
	s.sales.Range(func(id string, st *saleState) {
		ch <- prometheus.MustNewConstMetric(shareDesc, prometheus.GaugeValue, float64(st.share.Left()), id)
	})
	ch <- prometheus.MustNewConstMetric(refreshDesc, prometheus.CounterValue, float64(s.refreshes.Load()))
	s.frame.Collect(ch)
}
