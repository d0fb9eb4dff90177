package order

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
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
	// Repeat is true when the buyer's Idempotency-Key named this order,
	// created by an earlier attempt: nothing was sold now.
	Repeat bool
	// held: the buy took a unit of this node's local share (a keyed buy of
	// a dry share takes none and sells from Redis alone), so Undo gives one
	// back only then.
	held bool
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
	pub     stock.Publisher
	members stock.Membership
	log     *slog.Logger
	// events publishes the order.created of kept orders from the outbox
	// (see AnnounceKept); nil without a publisher.
	events *Outbox

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

// buyReq is one queued buyer of sale. ctx is the request's context
// (cancelled when the client or the proxy gives up) and deadline its request
// deadline (zero: none); both are checked before the batch is sent and again
// before the answer, so a buyer nobody is waiting for is never sold to.
type buyReq struct {
	sale      *saleState
	user, key string
	ticket    int64 // waiting-room ticket number; 0: none
	held      bool  // it took a unit of the local share (a keyed buy of a dry share holds none)
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
	// payBy is when r's pay window closes on this node's clock (the Redis
	// deadline read against the reply's Redis time): a "yes" after it is
	// taken back.
	payBy time.Time
}

// Errors the Seller answers with; api maps their codes to statuses.
var (
	ErrSoldOut = flashsale.Errorf(flashsale.ESOLDOUT, "sold out")
	ErrLimit   = flashsale.Errorf(flashsale.ELIMITREACHED, "you already hold the most orders this sale allows")
	// ErrTicketUsed answers a buy whose waiting-room ticket already bought.
	ErrTicketUsed = flashsale.Errorf(flashsale.ECONFLICT, "this queue ticket has already bought; each admitted ticket buys once")
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
	return []*flashsale.Error{ErrSoldOut, ErrLimit, ErrTicketUsed, ErrNotStarted, ErrEnded, ErrNoSale, ErrOverloaded, ErrRedis, ErrDeadline}
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
	s := &Seller{cfg: cfg, rdb: rdb, pub: pub, members: members, log: log, sales: stock.NewCache[*saleState](cfg.MaxSales)}
	if pub != nil {
		s.events = NewOutbox(rdb, pub, cfg.RedisTimeout, time.Second, log)
	}
	s.frame = stock.NewFrame(stock.FrameConfig{Node: cfg.Node, Subsystem: "order", RedisTimeout: cfg.RedisTimeout,
		PublishTimeout: cfg.ConfirmTimeout, Coalescer: cfg.Coalescer}, tickets{s}, pub,
		func(ctx context.Context, sale, batch string) (int, error) {
			if action, orders, ok := parseAbortJob(batch); ok {
				return s.retryAbort(ctx, sale, action, orders)
			}
			undone, kept, err := lua.ResolveBatch(ctx, rdb, sale, batch)
			if len(kept) > 0 {
				// A repeat on another node was told of these orders while
				// this node waited for the lost reply: they stand, and their
				// batch never reached Kafka.
				s.announceKept(sale, kept)
			}
			return len(undone), err
		}, log)
	return s
}

// PublishTo makes the seller announce kept orders through o (the node's
// outbox, whose metrics it registers) instead of its own. Call it before the
// first buy.
func (s *Seller) PublishTo(o *Outbox) { s.events = o }

// announceKept publishes the order.created of orders of sale that an
// AbortUnsent kept, within the publish timeout of their own; what fails
// stays in the outbox, and the sweeper's Drain publishes it.
func (s *Seller) announceKept(sale string, kept []int64) {
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConfirmTimeout+s.cfg.RedisTimeout)
	defer cancel()
	s.events.AnnounceKept(ctx, sale, kept)
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
	return s.BuyTicketed(ctx, saleID, userID, key, 0, deadline)
}

// BuyTicketed is BuyKeyed for a buyer admitted by a sale's waiting room
// with ticket number ticket (0: none; see package waitroom, which checked
// the ticket's signature and turn). The ticket buys once: the buy script
// refuses it with ErrTicketUsed once it has bought an order that stands,
// in the same Redis call that sells, so single use costs no extra round
// trip and a refused buy has nothing to give back.
func (s *Seller) BuyTicketed(ctx context.Context, saleID, userID, key string, ticket int64, deadline time.Time) (Reservation, error) {
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
	held := true
	if ok, err := st.share.Take(ctx); !ok {
		if err != nil {
			s.log.Warn("share refresh failed", "sale", st.id, "err", err)
		}
		if key == "" {
			return Reservation{}, ErrSoldOut
		}
		// A keyed buy may be the retry of one whose answer was lost and
		// whose order stands: only the script knows, so it goes there
		// holding no unit (it can still hear sold out from Redis).
		held = false
	}
	res, ok := s.frame.Do(buyReq{sale: st, user: userID, key: key, ticket: ticket, held: held, ctx: ctx, deadline: deadline})
	if !ok {
		if held {
			st.share.Give(1)
		}
		return Reservation{}, ErrOverloaded
	}
	res.r.held = held
	return res.r, res.err
}

// SoldOut reports whether a buy of sale would hear sold out from this node
// without any call to Redis: the sale is known, inside its window, and its
// local share is dry (see stock.Refill.Dry). It reads no Redis and changes
// nothing, so the API can answer such a buy before any other work (the
// token included: a sold-out sale is public, see GET /v1/sales/{id}). A
// keyed buy must not be answered this way (see BuyTicketed).
func (s *Seller) SoldOut(saleID string) bool {
	st, ok := s.sales.Get(saleID)
	if !ok {
		return false
	}
	now := time.Now()
	if st.startsMs > 0 || st.endsMs > 0 {
		ms := now.UnixMilli()
		if st.startsMs > 0 && ms < st.startsMs || st.endsMs > 0 && ms >= st.endsMs {
			return false // not started or ended: the buy path's own answer
		}
	}
	return st.share.DryAt(now.UnixNano())
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
	return s.sales.Load(ctx, id, func(ctx context.Context) (*saleState, error) {
		v, found, err := lua.LoadSaleState(ctx, s.rdb, id)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRedis, err)
		}
		if !found {
			return nil, ErrNoSale
		}
		return &saleState{id: id, share: stock.NewRefill(s.ShareOf(v.Remaining), s.cfg.RefreshInterval, s.reload(id)),
			startsMs: v.StartsMs, endsMs: v.EndsMs}, nil
	}, func(map[string]*saleState) error { return errTooManySales })
}

var errTooManySales = flashsale.Errorf(flashsale.EOVERLOADED, "this node serves too many sales")

// tickets is the ticket product of the batch frame: one buy.lua call per
// batch of one sale's buyers, order.created for every order, an abort of
// every order Kafka did not take or whose answer would come too late.
type tickets struct{ s *Seller }

func (tickets) Item(r buyReq) *saleState    { return r.sale }
func (tickets) ItemID(st *saleState) string { return st.id }

// Deadline is the buyer's request deadline: the frame waits for Kafka no
// longer than the last buyer of the batch waits for its answer.
func (tickets) Deadline(r buyReq) time.Time { return r.deadline }

// Call settles one batch of buyers with one buy script call and gives the
// local share back what the batch did not use. Buyers nobody waits for any
// more are not sent: they hear 503 and nothing is sold to them.
func (t tickets) Call(ctx context.Context, st *saleState, batch string, reqs []buyReq, res []buyRes) ([]int, error) {
	s := t.s
	now := time.Now()
	users := make([]string, 0, len(reqs))
	var keys []string
	var tickets []int64
	pos := make([]int, 0, len(reqs)) // pos[j]: the request of the script's buyer j
	var lateHeld, sentHeld int64     // units the late and the sent buyers hold
	for i := range reqs {
		r := &reqs[i]
		if r.late(now) {
			res[i].err = ErrDeadline
			lateHeld += held(r)
			continue
		}
		sentHeld += held(r)
		if r.key != "" && keys == nil {
			keys = make([]string, len(users), len(reqs))
		}
		if r.ticket != 0 && tickets == nil {
			tickets = make([]int64, len(users), len(reqs))
		}
		users = append(users, r.user)
		if keys != nil {
			keys = append(keys, r.key)
		}
		if tickets != nil {
			tickets = append(tickets, r.ticket)
		}
		pos = append(pos, i)
	}
	if lateHeld > 0 {
		st.share.Give(lateHeld)
	}
	if len(users) == 0 {
		return nil, nil
	}
	reply, err := lua.BuyTicketed(ctx, s.rdb, st.id, s.cfg.Node, batch, users, keys, tickets, nil)
	if err != nil {
		return nil, err
	}
	replied := time.Now()
	if v, refusal := saleVerdict(reply.SaleCode); refusal != nil {
		st.share.Refuse(v, int(sentHeld))
		fillAt(res, pos, refusal)
		return nil, nil
	}
	var unused int64
	soldOut := false
	won := make([]int, 0, len(users))
	rep := 0
	for j, n := range reply.Results {
		i := pos[j]
		r := Reservation{SaleID: st.id, UserID: users[j], Node: s.cfg.Node, Order: n,
			CreatedMs: reply.NowMs, DeadlineMs: reply.DeadlineMs}
		if rep < len(reply.Repeats) && reply.Repeats[rep].I == j {
			// The buyer's Idempotency-Key named a live order: Answer
			// settles it once this batch's own orders are settled.
			r.DeadlineMs, r.Repeat = reply.Repeats[rep].DeadlineMs, true
			res[i] = buyRes{r: r, payBy: payBy(replied, reply.NowMs, r.DeadlineMs)}
			rep++
			unused += held(&reqs[i]) // a repeat sold no unit
			continue
		}
		switch {
		case n > 0:
			res[i] = buyRes{r: r, payBy: payBy(replied, reply.NowMs, r.DeadlineMs)}
			won = append(won, i)
		case n == lua.BuySoldOut:
			soldOut = true
			res[i].err = ErrSoldOut
		case n == lua.BuyTicketUsed:
			unused += held(&reqs[i])
			res[i].err = ErrTicketUsed
		default:
			unused += held(&reqs[i])
			res[i].err = ErrLimit
		}
	}
	// Sold out: Redis is out even though this node still had an allowance.
	st.share.Settle(soldOut, unused)
	return won, nil
}

// held is 1 for a buyer holding a unit of the local share, else 0.
func held(r *buyReq) int64 {
	if r.held {
		return 1
	}
	return 0
}

// payBy reads a Redis-clock deadline against the local time of the reply
// that carried Redis's clock nowMs.
func payBy(replied time.Time, nowMs, deadlineMs int64) time.Time {
	return replied.Add(time.Duration(deadlineMs-nowMs) * time.Millisecond)
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

// Unavailable answers 503 to the buyers the failed call was sent for (the
// late ones already have their answer) and gives their units back.
func (tickets) Unavailable(st *saleState, reqs []buyReq, res []buyRes, _ error) {
	var n int64
	for i := range res {
		if res[i].err == nil {
			res[i].err = ErrRedis
			n += held(&reqs[i])
		}
	}
	st.share.Give(n)
}

func (tickets) AppendEvent(b []byte, _ *saleState, _ buyReq, res *buyRes) []byte {
	r := &res.r
	return kafka.AppendOrderCreated(b, kafka.OrderCreated{SaleID: r.SaleID, UserID: r.UserID, Node: r.Node,
		Order: r.Order, CreatedMs: r.CreatedMs, DeadlineMs: r.DeadlineMs})
}

// Answer is the last look before the answer. An order Kafka did not take,
// or whose buyer no longer waits, or whose pay window has closed, is
// aborted: its buyer hears 503 with the order number, so the outcome log
// can name the undone order. Then the repeats are settled.
func (t tickets) Answer(ctx context.Context, st *saleState, reqs []buyReq, res []buyRes, wins []int, errs []error) {
	now := time.Now()
	var undo []int64
	unsent := 0        // undo[:unsent] are not on Kafka, undo[unsent:] are
	var undoHeld int64 // units the undone buyers held
	for j, i := range wins {
		switch {
		case errs[j] != nil:
			res[i].err = fmt.Errorf("%w: %w", ErrNotDurable, errs[j])
			undo = slices.Insert(undo, unsent, res[i].r.Order)
			unsent++
		case reqs[i].late(now) || !now.Before(res[i].payBy):
			res[i].err = ErrDeadline
			undo = append(undo, res[i].r.Order)
		default:
			continue
		}
		undoHeld += held(&reqs[i])
	}
	if len(undo) > 0 {
		// An order kept although Kafka refused its event was claimed by a
		// repeat on another node (while this one was slow): it stands, so
		// its order.created goes out from the outbox entry the abort wrote.
		keptUnsent := t.s.abort(ctx, st.id, lua.AbortUnsent, undo[:unsent])
		kept := len(keptUnsent) + len(t.s.abort(ctx, st.id, lua.Abort, undo[unsent:]))
		// Units go back for the undone orders that held one; a kept order
		// stands (at most the kept ones are subtracted, never below zero).
		st.share.Give(max(undoHeld-int64(kept), 0))
		if len(keptUnsent) > 0 {
			t.s.announceKept(st.id, keptUnsent)
		}
	}
	t.answerRepeats(ctx, st, reqs, res, wins, undo, now)
}

// answerRepeats settles the buyers whose Idempotency-Key named a live
// order. A repeat of an order made by this very batch shares its outcome.
// Any other is claimed in Redis before it is answered, so a late abort of
// the first attempt (on another node, say one that was frozen) cannot take
// back the order this buyer is now told of; an order that ended in between
// cannot be claimed, and the buyer hears 503 (a retry buys anew).
func (t tickets) answerRepeats(ctx context.Context, st *saleState, reqs []buyReq, res []buyRes, wins []int, undo []int64, now time.Time) {
	var claim []int64
	var claimAt []int
	for i := range res {
		r := &res[i]
		if r.err != nil || !r.r.Repeat {
			continue
		}
		if slices.ContainsFunc(wins, func(w int) bool { return res[w].r.Order == r.r.Order }) {
			if slices.Contains(undo, r.r.Order) || reqs[i].late(now) {
				r.err = ErrDeadline // undone, or the first of the batch is answered and this one is late
			}
			continue
		}
		if reqs[i].late(now) || !now.Before(r.payBy) {
			r.err = ErrDeadline
			continue
		}
		claim = append(claim, r.r.Order)
		claimAt = append(claimAt, i)
	}
	if len(claim) == 0 {
		return
	}
	_, out, err := lua.Settle(ctx, t.s.rdb, st.id, lua.Claim, claim)
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
		t.s.log.Warn("claim of repeated idempotency keys failed", "sale", st.id, "orders", len(claim), "err", err)
	}
}

func (tickets) Settled([]buyReq, []buyRes) {}

// abort undoes orders whose buyers hear no with action (lua.Abort, or
// lua.AbortUnsent for orders whose order.created is not on Kafka), and
// returns those it had to keep: a repeat of their Idempotency-Key was
// answered with them (claimed). If Redis fails too, the abort is retried
// from the in-doubt queue (retryAbort), and should that never succeed the
// sweeper returns the orders at their deadline: nothing is stranded.
func (s *Seller) abort(ctx context.Context, sale, action string, orders []int64) (kept []int64) {
	if len(orders) == 0 {
		return nil
	}
	kept, err := s.settleAbort(ctx, sale, action, orders)
	if err != nil {
		// Their buyers hear 503 while the orders stand in Redis, holding a
		// unit and the buyer's limit slot: retried until Redis answers (the
		// sweeper releases them at their deadline if even that fails).
		s.log.Warn("abort of unconfirmed orders failed; retrying it in the background",
			"sale", sale, "orders", len(orders), "err", err)
		s.frame.Retry(sale, abortJob(action, orders))
		return nil
	}
	return kept
}

// settleAbort runs one abort (action Abort or AbortUnsent) of orders and
// returns those it kept because a repeat of their key claimed them.
func (s *Seller) settleAbort(ctx context.Context, sale, action string, orders []int64) (kept []int64, err error) {
	_, out, err := lua.Settle(ctx, s.rdb, sale, action, orders)
	if err != nil {
		return nil, err
	}
	for k, r := range out {
		if r.Code == lua.SettleClaimed {
			kept = append(kept, orders[k])
		}
	}
	return kept, nil
}

// retryAbort runs an abort that failed before (see abort) again, from the
// in-doubt resolver, and reports how many orders it undid. Abort is
// idempotent; a claimed order it keeps still gets its creation published.
func (s *Seller) retryAbort(ctx context.Context, sale, action string, orders []int64) (int, error) {
	kept, err := s.settleAbort(ctx, sale, action, orders)
	if err != nil {
		return 0, err
	}
	if action == lua.AbortUnsent && len(kept) > 0 {
		s.announceKept(sale, kept)
	}
	return len(orders) - len(kept), nil
}

// abortJob spells an abort for the in-doubt resolver's queue (Frame.Retry):
// "|<action>|<n>,<n>...". A batch id starts with its node's id, which
// cannot hold "|" (order records are "|"-separated), so the two never mix.
func abortJob(action string, orders []int64) string {
	b := make([]byte, 0, len(action)+2+8*len(orders))
	b = append(b, '|')
	b = append(b, action...)
	b = append(b, '|')
	for i, n := range orders {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, n, 10)
	}
	return string(b)
}

// parseAbortJob reads abortJob's spelling; ok is false for a batch id.
func parseAbortJob(job string) (action string, orders []int64, ok bool) {
	rest, isJob := strings.CutPrefix(job, "|")
	if !isJob {
		return "", nil, false
	}
	action, list, found := strings.Cut(rest, "|")
	if !found || (action != lua.Abort && action != lua.AbortUnsent) || list == "" {
		return "", nil, false
	}
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			return "", nil, false
		}
		orders = append(orders, n)
	}
	return action, orders, true
}

// Undo takes back r, an order this node sold but whose buyer will never
// hear of it (the connection closed after the batch settled): the same
// abort as a lost reply, so the unit and the limit slot go back at once.
// The local share gets its unit back only when the buy took one from it and
// the abort did not keep the order.
func (s *Seller) Undo(r Reservation) {
	st, ok := s.sales.Get(r.SaleID)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	defer cancel()
	if kept := s.abort(ctx, r.SaleID, lua.Abort, []int64{r.Order}); len(kept) == 0 && r.held {
		st.share.Give(1)
	}
}

// fillAt answers err to the requests the script saw (pos); the others
// already have their answer.
func fillAt(res []buyRes, pos []int, err error) {
	for _, i := range pos {
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
