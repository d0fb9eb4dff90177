// Package envelope is the red envelope (发红包 / 拆红包): a sender's amount
// split among N people who open it, with the unopened rest refunded to the
// sender at expiry, exactly once.
//
// The route is the ticket route: each node answers from a local allowance
// (stock.Refill, the channel-locked share) while it has one, concurrent
// openers are settled in batches by a stock.Coalescer, and each batch is one
// Lua script per envelope in Redis, the authority. Opened events are on
// Kafka before an opener hears the amount; the wallet credit follows,
// idempotently (see package wallet). The envelope's Redis record is the
// source of truth for its money, so anything lost between steps is repaired
// from it: at refund time every wallet entry the record implies is applied
// again, which is a no-op for those already there.
package envelope

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/flashsale/flashsale/wallet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
)

// Limits bound what a sender may ask for; anything outside is a 400.
type Limits struct {
	MaxCount      int           // most shares per envelope
	MaxTotalCents int64         // largest total of one envelope
	DefaultExpiry time.Duration // when the request has no expires_in
	MinExpiry     time.Duration
	MaxExpiry     time.Duration
}

// Request is a validated "send an envelope" request.
type Request struct {
	SenderID   string
	TotalCents int64
	Count      int
	ExpiresIn  time.Duration
}

// Validate checks r against the limits.
func (l Limits) Validate(r Request) error {
	switch {
	case !flashsale.ValidID(r.SenderID):
		return flashsale.Errorf(flashsale.EINVALID, "sender_id must be 1-64 characters of [A-Za-z0-9_-:@]")
	case r.Count < 1 || r.Count > l.MaxCount:
		return flashsale.Errorf(flashsale.EINVALID, "count must be between 1 and %d", l.MaxCount)
	case r.TotalCents < int64(r.Count):
		return flashsale.Errorf(flashsale.EINVALID, "total_cents must be at least count (every share is at least 1 cent)")
	case r.TotalCents > l.MaxTotalCents:
		return flashsale.Errorf(flashsale.EINVALID, "total_cents must be at most %d", l.MaxTotalCents)
	case r.ExpiresIn < l.MinExpiry || r.ExpiresIn > l.MaxExpiry:
		return flashsale.Errorf(flashsale.EINVALID, "expires_in must be between %v and %v", l.MinExpiry, l.MaxExpiry)
	}
	return nil
}

// Config tunes a Service. Zero values take the defaults of configs/default.yaml.
type Config struct {
	Node            string
	Limits          Limits
	BufferUnits     int64   // local allowance above the fair share, like stock.buffer_units
	BufferPercent   float64 // the same as a percentage; the larger buffer wins
	RefreshInterval time.Duration
	RedisTimeout    time.Duration
	PublishTimeout  time.Duration
	Coalescer       stock.CoalescerConfig
	MaxEnvelopes    int // envelopes one node keeps an allowance for; the least useful are dropped beyond
	RecentEntries   int // wallet entries kept in a wallet's "recent" list
}

// Service sends, opens, refunds and reads envelopes. It is safe for
// concurrent use; Close it after the HTTP server stopped.
type Service struct {
	cfg     Config
	rdb     redis.UniversalClient
	pub     stock.Publisher
	members stock.Membership
	log     *slog.Logger
	frame   *stock.Frame[*envState, openReq, openRes]

	envs *stock.Cache[*envState]

	metrics *metrics
}

// envState is a node's cached view of one envelope: its local allowance
// and deadline. Dropping it loses nothing; it is rebuilt from Redis.
type envState struct {
	id        string
	expiresMs int64
	share     *stock.Refill
	empty     atomic.Bool // Redis said no share is left
	expired   atomic.Bool // Redis said it expired or was refunded
}

type openReq struct {
	env  *envState
	user string
}

type openRes struct {
	amount int64
	seq    int64
	nowMs  int64 // Redis clock of the open
	err    error
}

// Errors the Service answers with.
var (
	ErrNotFound   = flashsale.Errorf(flashsale.ENOTFOUND, "no such envelope")
	ErrEmpty      = flashsale.Errorf(flashsale.EEMPTY, "every share of this envelope has been opened")
	ErrAlready    = flashsale.Errorf(flashsale.EALREADYOPENED, "you already opened this envelope")
	ErrExpired    = flashsale.Errorf(flashsale.EEXPIRED, "the envelope has expired; its rest went back to the sender")
	ErrOverloaded = flashsale.Errorf(flashsale.EOVERLOADED, "too many openers at once; retry shortly")
	ErrRedis      = flashsale.Errorf(flashsale.EUNAVAILABLE, "envelope service unavailable; retry shortly")
	ErrNotDurable = flashsale.Errorf(flashsale.EUNAVAILABLE, "the envelope could not be recorded; retry shortly")
)

// NewService returns a Service. members may be nil for a single node.
func NewService(cfg Config, rdb redis.UniversalClient, pub stock.Publisher, members stock.Membership, log *slog.Logger) *Service {
	if members == nil {
		members = stock.SingleNode{}
	}
	if log == nil {
		log = slog.Default()
	}
	cfg.RefreshInterval = stock.Or(cfg.RefreshInterval, 100*time.Millisecond)
	cfg.RedisTimeout = stock.Or(cfg.RedisTimeout, 500*time.Millisecond)
	cfg.PublishTimeout = stock.Or(cfg.PublishTimeout, 5*time.Second)
	cfg.MaxEnvelopes = max(cfg.MaxEnvelopes, 16)
	cfg.RecentEntries = max(cfg.RecentEntries, 1)
	s := &Service{cfg: cfg, rdb: rdb, pub: pub, members: members, log: log, envs: stock.NewCache[*envState](cfg.MaxEnvelopes), metrics: newMetrics()}
	s.frame = stock.NewFrame(stock.FrameConfig{Node: cfg.Node, Subsystem: "envelope", RedisTimeout: cfg.RedisTimeout,
		PublishTimeout: cfg.PublishTimeout, Coalescer: cfg.Coalescer}, envelopes{s}, pub,
		func(ctx context.Context, env, batch string) (int, error) {
			users, err := lua.ResolveEnvBatch(ctx, rdb, env, batch)
			return len(users), err
		}, log)
	return s
}

// Envelope is a created envelope.
type Envelope struct {
	ID         string
	SenderID   string
	TotalCents int64
	Count      int
	CreatedAt  time.Time
	ExpiresAt  time.Time
}

// NewID returns a fresh envelope id of sender: 20 random hex digits and
// four letters or digits that put its keys in the Redis Cluster slot of the
// sender's wallet (lua.EnvelopeIDForSender), so envelope links cannot be
// guessed and the debit is one script with the envelope's record.
func NewID(sender string) string {
	for {
		var b [10]byte
		_, _ = rand.Read(b[:])
		if id, ok := lua.EnvelopeIDForSender("e"+hex.EncodeToString(b[:]), sender); ok {
			return id
		}
	}
}

// ErrInsufficientFunds is a send the sender's balance does not cover.
var ErrInsufficientFunds = flashsale.Errorf(flashsale.EINSUFFICIENT, "the wallet's balance does not cover the envelope")

// Create sends an envelope: it pre-splits the total, stores the envelope and
// debits the sender in one step (ErrInsufficientFunds, nothing written, when
// the balance does not cover it), and announces it on Kafka (which
// schedules the refund). If it cannot be announced, it is refunded at once
// and the sender gets an ErrNotDurable error; the ledger nets to zero.
func (s *Service) Create(ctx context.Context, r Request) (Envelope, error) {
	if err := s.cfg.Limits.Validate(r); err != nil {
		return Envelope{}, err
	}
	shares := Split(r.TotalCents, r.Count, nil)
	var id string
	var nowMs, expMs int64
	for attempt := 0; ; attempt++ {
		id = NewID(r.SenderID)
		rctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
		created, now, exp, _, err := lua.EnvCreate(rctx, s.rdb, id, r.SenderID, wallet.SendID(id), s.cfg.RecentEntries,
			r.TotalCents, r.ExpiresIn.Milliseconds(), shares)
		cancel()
		if err != nil {
			return Envelope{}, fmt.Errorf("%w: %w", ErrRedis, err)
		}
		if created == -1 {
			return Envelope{}, ErrInsufficientFunds
		}
		if created == 1 {
			nowMs, expMs = now, exp
			break
		}
		if attempt == 2 {
			return Envelope{}, fmt.Errorf("envelope ids keep colliding: %w", ErrRedis)
		}
	}
	e := Envelope{ID: id, SenderID: r.SenderID, TotalCents: r.TotalCents, Count: r.Count,
		CreatedAt: time.UnixMilli(nowMs).UTC(), ExpiresAt: time.UnixMilli(expMs).UTC()}

	rctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	// The index is outside the envelope's hash tag: its own command. An
	// envelope missing from it is still refunded by its created event.
	pipe := s.rdb.Pipeline()
	pipe.ZAdd(rctx, lua.EnvelopesKey, redis.Z{Score: float64(expMs), Member: id})
	pipe.ZAdd(rctx, DueKey, redis.Z{Score: float64(expMs), Member: id})
	_, idxErr := pipe.Exec(rctx)
	cancel()
	if idxErr != nil {
		s.log.Warn("index envelope", "envelope", id, "err", idxErr)
	}
	ev := kafka.EnvelopeEvent{Type: kafka.TypeEnvelopeCreated, EnvelopeID: id, SenderID: r.SenderID, TotalCents: r.TotalCents,
		Count: int64(r.Count), AtMs: nowMs, ExpiresAtMs: expMs}
	errs := make([]error, 1)
	pctx, pcancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	s.pub.Publish(pctx, []kafkago.Message{{Key: []byte(id), Value: kafka.AppendEnvelopeEvent(nil, &ev)}}, errs)
	pcancel()
	if err := errs[0]; err != nil {
		// Nobody can have opened it yet in a way that matters: the abort
		// refunds whatever is unopened and the ledger settles to zero.
		s.log.Warn("envelope could not be announced; refunding it now", "envelope", id, "err", err)
		if _, serr := s.Settle(context.WithoutCancel(ctx), id, lua.RefundAbort); serr != nil {
			s.log.Error("abort of an unannounced envelope failed; the refund sweeper will settle it", "envelope", id, "err", serr)
		}
		return e, fmt.Errorf("%w: %w", ErrNotDurable, err)
	}
	s.metrics.created.Inc()
	return e, nil
}

// Opened is the outcome of a successful open.
type Opened struct {
	AmountCents int64
	Seq         int64 // this was the envelope's Seq-th open
}

// Open opens envelope id for user. An envelope this node knows to be empty
// or expired is answered from memory, without Redis: a user who opened it
// before then hears "empty", not "already opened". Otherwise the open is
// settled by the envelope's script with others queued at the same moment,
// announced on Kafka, and credited to the user's wallet.
func (s *Service) Open(ctx context.Context, id, user string) (Opened, error) {
	st, err := s.envelope(ctx, id)
	if err != nil {
		return Opened{}, err
	}
	if st.expired.Load() || time.Now().UnixMilli() >= st.expiresMs {
		return Opened{}, ErrExpired // the script checks again with Redis's clock
	}
	ok, err := st.share.Take(ctx)
	if !ok {
		if err != nil {
			s.log.Warn("envelope share refresh failed", "envelope", id, "err", err)
		}
		return Opened{}, ErrEmpty
	}
	res, ok := s.frame.Do(openReq{env: st, user: user})
	if !ok {
		st.share.Give(1)
		return Opened{}, ErrOverloaded
	}
	return Opened{AmountCents: res.amount, Seq: res.seq}, res.err
}

// envelope returns the node's state of an envelope, loading it on first use.
func (s *Service) envelope(ctx context.Context, id string) (*envState, error) {
	if st, ok := s.envs.Get(id); ok {
		return st, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	return s.envs.Load(ctx, id, func(ctx context.Context) (*envState, error) {
		v, found, err := lua.LoadEnvState(ctx, s.rdb, id)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrRedis, err)
		}
		if !found {
			return nil, ErrNotFound
		}
		st := &envState{id: id, expiresMs: v.ExpiresMs}
		st.share = stock.NewRefill(s.shareOf(v.Left), s.cfg.RefreshInterval, s.reload(st))
		st.empty.Store(v.Left <= 0)
		st.expired.Store(!v.Open)
		return st, nil
	}, s.evict)
}

// evict makes room in a full cache (its lock held): it drops envelopes
// that are expired, gone or empty (their answer is one Redis read away),
// then any, down to 3/4 of the cap. Dropping a live one only forgets its
// allowance; Redis decides every open.
func (s *Service) evict(envs map[string]*envState) error {
	now := time.Now().UnixMilli()
	for id, st := range envs {
		if now >= st.expiresMs || st.expired.Load() || st.share.Gone() || st.empty.Load() {
			delete(envs, id)
		}
	}
	for id := range envs {
		if len(envs) <= s.cfg.MaxEnvelopes*3/4 {
			break
		}
		delete(envs, id)
	}
	return nil
}

func (s *Service) shareOf(left int64) int64 {
	return stock.FairShare(left, s.members.LiveNodes(), s.cfg.BufferUnits, s.cfg.BufferPercent)
}

// reload is an envelope's stock.ReloadFunc: its fair part of the shares
// Redis has left, plus the buffer.
func (s *Service) reload(st *envState) stock.ReloadFunc {
	return func(ctx context.Context) (int64, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
		defer cancel()
		s.metrics.refreshes.Inc()
		v, found, err := lua.EnvLeft(ctx, s.rdb, st.id)
		if err != nil || !found {
			return 0, !found && err == nil, err
		}
		st.empty.Store(v <= 0)
		return s.shareOf(v), false, nil
	}
}

// envelopes is the envelope product of the batch frame: one open script
// per envelope of a batch, envelope.opened for every open, an undo of every
// open Kafka did not take, then one pipelined round of wallet credits.
type envelopes struct{ s *Service }

func (envelopes) Item(r openReq) *envState   { return r.env }
func (envelopes) ItemID(st *envState) string { return st.id }

// Call opens one envelope for a batch of openers with one script call and
// gives the local allowance back what the batch did not use.
func (e envelopes) Call(ctx context.Context, st *envState, batch string, reqs []openReq, res []openRes) ([]int, error) {
	users := make([]string, len(reqs))
	for i, r := range reqs {
		users[i] = r.user
	}
	reply, err := lua.EnvOpen(ctx, e.s.rdb, st.id, e.s.cfg.Node, batch, users)
	if err != nil {
		return nil, err
	}
	if v, refusal := envVerdict(reply.Code); refusal != nil {
		st.expired.Store(st.expired.Load() || reply.Code == lua.OpenExpired)
		st.share.Refuse(v, len(reqs))
		fillErr(res, refusal)
		return nil, nil
	}
	var unused int64
	empty := false
	seq := reply.SeqBefore
	won := make([]int, 0, len(reqs))
	for i, v := range reply.Results {
		switch {
		case v > 0:
			seq++
			res[i] = openRes{amount: v, seq: seq, nowMs: reply.NowMs}
			won = append(won, i)
		case v == lua.OpenEmpty:
			empty = true
			res[i].err = ErrEmpty
		default:
			unused++
			res[i].err = ErrAlready
		}
	}
	if empty {
		st.empty.Store(true)
	}
	st.share.Settle(empty, unused)
	return won, nil
}

// envVerdict maps the open script's envelope-level code; a nil error:
// the envelope is open and every opener has a result.
func envVerdict(code int64) (stock.Verdict, error) {
	switch code {
	case lua.OpenVoid: // cannot happen: only a lost reply is written off
		return stock.GiveBack, ErrRedis
	case lua.OpenNone:
		return stock.NoItem, ErrNotFound
	case lua.OpenExpired:
		return stock.Closed, ErrExpired
	}
	return 0, nil
}

func (envelopes) Unavailable(st *envState, reqs []openReq, res []openRes, _ error) {
	st.share.Give(int64(len(reqs)))
	fillErr(res, ErrRedis)
}

func (e envelopes) AppendEvent(b []byte, st *envState, req openReq, res *openRes) []byte {
	ev := kafka.EnvelopeEvent{Type: kafka.TypeEnvelopeOpened, EnvelopeID: st.id, UserID: req.user, Node: e.s.cfg.Node,
		AmountCents: res.amount, Seq: res.seq, AtMs: res.nowMs}
	return kafka.AppendEnvelopeEvent(b, &ev)
}

// Deadline: an open has no request deadline of its own.
func (envelopes) Deadline(openReq) time.Time { return time.Time{} }

// Answer puts back the shares of opens Kafka did not take; an open of an
// envelope refunded meanwhile stands (its rest is already the sender's),
// without its event. Opens Kafka took stand as they are.
func (e envelopes) Answer(ctx context.Context, st *envState, reqs []openReq, res []openRes, wins []int, errs []error) {
	wins, errs = refused(wins, errs)
	if len(wins) == 0 {
		return
	}
	users := make([]string, len(wins))
	for j, i := range wins {
		users[j] = reqs[i].user
	}
	codes, err := lua.EnvUndo(ctx, e.s.rdb, st.id, users)
	for j, i := range wins {
		switch {
		case err != nil:
			// The open stays recorded; its credit is applied at refund time.
			e.s.log.Error("undo of unannounced opens failed; the refund will credit them", "envelope", st.id, "err", err)
			res[i] = openRes{err: fmt.Errorf("%w: %w", ErrNotDurable, errs[j])}
		case codes[j] == lua.UndoDone:
			st.share.Give(1)
			res[i] = openRes{err: fmt.Errorf("%w: %w", ErrNotDurable, errs[j])}
		default:
			e.s.log.Error("opened event lost for an open that stands", "envelope", st.id, "user", users[j], "err", errs[j])
		}
	}
}

// Settled credits every standing open to its opener's wallet in one
// pipelined round. The opens are recorded and announced already: if the
// credit fails, the refund at expiry re-applies every credit.
func (e envelopes) Settled(reqs []openReq, res []openRes) {
	var credits []wallet.Credit
	for i, r := range res {
		if r.err == nil && r.amount > 0 {
			credits = append(credits, wallet.Credit{User: reqs[i].user,
				Entry: lua.Entry{ID: wallet.OpenID(reqs[i].env.id), Amount: r.amount}})
		}
	}
	e.s.metrics.opened.Add(float64(len(credits)))
	if err := wallet.CreditBatch(e.s.rdb, e.s.cfg.RecentEntries, e.s.cfg.RedisTimeout, credits); err != nil {
		e.s.metrics.creditsDeferred.Inc()
		e.s.log.Warn("wallet credit deferred to the refund", "opens", len(credits), "err", err)
	}
}

// refused keeps the wins whose events Kafka refused, with their errors.
func refused(wins []int, errs []error) ([]int, []error) {
	var w []int
	var e []error
	for j, err := range errs {
		if err != nil {
			w, e = append(w, wins[j]), append(e, err)
		}
	}
	return w, e
}

func fillErr(res []openRes, err error) {
	for i := range res {
		res[i].err = err
	}
}

// Close settles queued openers and stops the flushers.
func (s *Service) Close() { s.frame.Close() }

// OpenRecord is one open as the envelope records it.
type OpenRecord struct {
	UserID      string
	AmountCents int64
	OpenedMs    int64
	Node        string
	Seq         int64
}

// ParseOpenRecord decodes "amount|opened_ms|node|seq".
func ParseOpenRecord(user, s string) (OpenRecord, error) {
	p := strings.Split(s, "|")
	if len(p) != 4 {
		return OpenRecord{}, fmt.Errorf("malformed open record %q", s)
	}
	a, e1 := strconv.ParseInt(p[0], 10, 64)
	at, e2 := strconv.ParseInt(p[1], 10, 64)
	seq, e3 := strconv.ParseInt(p[3], 10, 64)
	if e1 != nil || e2 != nil || e3 != nil {
		return OpenRecord{}, fmt.Errorf("malformed open record %q", s)
	}
	return OpenRecord{UserID: user, AmountCents: a, OpenedMs: at, Node: p[2], Seq: seq}, nil
}

type metrics struct {
	created, opened, refunded, refreshes, creditsDeferred prometheus.Counter
}

func newMetrics() *metrics {
	c := func(name, help string) prometheus.Counter {
		return metric.Counter("envelope", name, help, nil)
	}
	return &metrics{
		created:         c("created_total", "Envelopes sent (stored, debited and announced)."),
		opened:          c("opened_total", "Envelope shares opened through this node."),
		refunded:        c("refunded_total", "Envelopes this node refunded at expiry (or aborted)."),
		refreshes:       c("share_refreshes_total", "Envelope allowance reloads that read Redis."),
		creditsDeferred: c("credits_deferred_total", "Batches whose wallet credits failed and wait for the refund-time repair."),
	}
}

// Describe implements prometheus.Collector.
func (s *Service) Describe(ch chan<- *prometheus.Desc) { s.collectors().Describe(ch) }

// Collect implements prometheus.Collector.
func (s *Service) Collect(ch chan<- prometheus.Metric) { s.collectors().Collect(ch) }

func (s *Service) collectors() metric.Set {
	m := s.metrics
	return metric.Set{s.frame, m.created, m.opened, m.refunded, m.refreshes, m.creditsDeferred}
}
