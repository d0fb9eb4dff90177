package order

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
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

// Publisher makes events durable before the buyer hears "you got it";
// kafka.Publisher implements it. Publish sets errs[i] for every message it
// could not make durable; the Seller then undoes those orders in Redis. It
// must bound itself in time.
type Publisher interface {
	Publish(ctx context.Context, msgs []kafkago.Message, errs []error)
}

// SellerConfig tunes a Seller. Zero durations and sizes take the defaults
// documented in configs/default.yaml.
type SellerConfig struct {
	Node            string        // this node's id, recorded on every order
	BufferUnits     int64         // extra units above the fair share
	BufferPercent   float64       // extra units as a percentage of the fair share; the larger buffer wins
	RefreshInterval time.Duration // at most one share refresh from Redis per sale per interval
	RedisTimeout    time.Duration // bound of one script call
	ConfirmTimeout  time.Duration // bound of one Confirm call
	Coalescer       stock.CoalescerConfig
	MaxSales        int // sales one node keeps state for; more are refused
}

// Seller is a node's ticket seller. It is safe for concurrent use.
type Seller struct {
	cfg     SellerConfig
	rdb     redis.UniversalClient
	confirm Publisher
	members stock.Membership
	log     *slog.Logger

	sales *stock.Cache[*saleState]

	refreshes atomic.Int64 // share refreshes that read Redis, for /metrics
	batches   prometheus.Histogram
	doubt     *stock.InDoubt
}

type saleState struct {
	s        *Seller
	id       string
	share    *stock.Refill
	co       *stock.Coalescer[buyReq, buyRes]
	startsMs int64
	endsMs   int64
}

type buyReq struct{ user string }

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

// NewSeller returns a Seller that deducts from Redis and confirms through c.
// members may be nil for a single node.
func NewSeller(cfg SellerConfig, rdb redis.UniversalClient, c Publisher, members stock.Membership, log *slog.Logger) *Seller {
	if members == nil {
		members = stock.SingleNode{}
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
	return &Seller{cfg: cfg, rdb: rdb, confirm: c, members: members, log: log, sales: stock.NewCache[*saleState](cfg.MaxSales),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "flashsale_stock_batch_size",
			Help: "Buyers settled by one buy script call (coalescing at work).", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		doubt: stock.NewInDoubt("sale", func(ctx context.Context, sale, batch string) (int, error) {
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
	res, ok := st.co.Do(buyReq{user: userID})
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

	st := &saleState{s: s, id: id, share: stock.NewRefill(s.ShareOf(remaining), s.cfg.RefreshInterval, s.reload(id)),
		startsMs: starts, endsMs: ends}
	st.co = stock.NewCoalescer(s.cfg.Coalescer, st.flush)
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
// the winners, one abort call for any winner that could not be confirmed,
// and one adjustment of the local share.
func (st *saleState) flush(reqs []buyReq, res []buyRes) {
	s := st.s
	s.batches.Observe(float64(len(reqs)))
	users := make([]string, len(reqs))
	for i, r := range reqs {
		users[i] = r.user
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	batch := stock.NewBatchID(s.cfg.Node)
	reply, err := lua.Buy(ctx, s.rdb, st.id, s.cfg.Node, batch, users, nil)
	cancel()
	if err != nil {
		s.log.Warn("buy script failed", "sale", st.id, "batch", len(reqs), "err", err)
		if !stock.Definite(err) {
			// The script may still run, or may have run: settle that later
			// so the 503 these buyers get stays true.
			s.doubt.Add(st.id, batch)
		}
		st.share.Give(int64(len(reqs)))
		fill(res, ErrRedis)
		return
	}
	switch reply.SaleCode {
	case lua.BuyVoid: // cannot happen: only a lost reply is written off
		st.share.Give(int64(len(reqs)))
		fill(res, ErrRedis)
		return
	case lua.BuyNoSale:
		st.share.MarkGone()
		fill(res, ErrNoSale)
		return
	case lua.BuyNotStarted:
		st.share.Give(int64(len(reqs)))
		fill(res, ErrNotStarted)
		return
	case lua.BuyEnded:
		st.share.Set(0)
		fill(res, ErrEnded)
		return
	}

	var unused int64
	soldOut := false
	won := make([]Reservation, 0, len(reqs))
	idx := make([]int, 0, len(reqs))
	for i, n := range reply.Results {
		switch {
		case n > 0:
			res[i].r = Reservation{SaleID: st.id, UserID: users[i], Node: s.cfg.Node, Order: n,
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
	if len(won) > 0 {
		errs := make([]error, len(won))
		cctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConfirmTimeout)
		s.publishCreated(cctx, won, errs)
		cancel()
		var undo []int64
		for j, e := range errs {
			if e != nil {
				undo = append(undo, won[j].Order)
				res[idx[j]].err = fmt.Errorf("%w: %w", ErrNotDurable, e)
			}
		}
		if len(undo) > 0 {
			unused += int64(len(undo))
			st.abort(undo)
		}
	}
	if soldOut {
		// Redis is out even though this node still had an allowance.
		st.share.Set(0)
	} else {
		st.share.Give(unused)
	}
}

// publishCreated publishes one order.created event per reservation and
// reports each one Kafka did not take.
func (s *Seller) publishCreated(ctx context.Context, rs []Reservation, errs []error) {
	msgs := make([]kafkago.Message, len(rs))
	buf := make([]byte, 0, 192*len(rs)) // one buffer for the whole batch
	var key []byte                      // a batch is one sale: one key for all
	for i, r := range rs {
		if key == nil || string(key) != r.SaleID {
			key = []byte(r.SaleID)
		}
		start := len(buf)
		buf = kafka.AppendOrderCreated(buf, kafka.OrderCreated(r))
		msgs[i] = kafkago.Message{Key: key, Value: buf[start:len(buf):len(buf)]}
	}
	s.confirm.Publish(ctx, msgs, errs)
}

// abort undoes reservations that could not be confirmed. If Redis fails too,
// the orders stay pending with their deadline and the expiry sweeper returns
// them, so nothing is stranded.
func (st *saleState) abort(orders []int64) {
	ctx, cancel := context.WithTimeout(context.Background(), st.s.cfg.RedisTimeout)
	defer cancel()
	if _, _, err := lua.Settle(ctx, st.s.rdb, st.id, lua.Abort, orders); err != nil {
		st.s.log.Error("abort of unconfirmed orders failed; the sweeper will release them after their deadline",
			"sale", st.id, "orders", len(orders), "err", err)
	}
}

func fill(res []buyRes, err error) {
	for i := range res {
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
