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
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/flashsale/flashsale/wallet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
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

// Publisher publishes events and reports each one Kafka did not take;
// order.Publisher implements it.
type Publisher interface {
	Publish(ctx context.Context, msgs []kafka.Message, errs []error)
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
	pub     Publisher
	members stock.Membership
	log     *slog.Logger
	co      *stock.Coalescer[openReq, openRes]

	envs *stock.Cache[*envState]

	doubt   *stock.InDoubt // open batches whose reply was lost
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
func NewService(cfg Config, rdb redis.UniversalClient, pub Publisher, members stock.Membership, log *slog.Logger) *Service {
	if members == nil {
		members = stock.SingleNode{}
	}
	if log == nil {
		log = slog.Default()
	}
	cfg.RefreshInterval = or(cfg.RefreshInterval, 100*time.Millisecond)
	cfg.RedisTimeout = or(cfg.RedisTimeout, 500*time.Millisecond)
	cfg.PublishTimeout = or(cfg.PublishTimeout, 5*time.Second)
	cfg.MaxEnvelopes = max(cfg.MaxEnvelopes, 16)
	cfg.RecentEntries = max(cfg.RecentEntries, 1)
	s := &Service{cfg: cfg, rdb: rdb, pub: pub, members: members, log: log, envs: stock.NewCache[*envState](cfg.MaxEnvelopes), metrics: newMetrics()}
	s.doubt = stock.NewInDoubt("envelope", func(ctx context.Context, env, batch string) (int, error) {
		users, err := lua.ResolveEnvBatch(ctx, rdb, env, batch)
		return len(users), err
	}, cfg.RedisTimeout, 4096, log)
	s.co = stock.NewCoalescer(cfg.Coalescer, s.flush)
	return s
}

func or(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
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
	ev := Event{Type: TypeCreated, EnvelopeID: id, SenderID: r.SenderID, TotalCents: r.TotalCents,
		Count: int64(r.Count), AtMs: nowMs, ExpiresAtMs: expMs}
	errs := make([]error, 1)
	pctx, pcancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	s.pub.Publish(pctx, []kafka.Message{{Key: []byte(id), Value: AppendEvent(nil, &ev)}}, errs)
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
	res, ok := s.co.Do(openReq{env: st, user: user})
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
	v, err := s.rdb.HMGet(ctx, lua.EnvelopeKeysFor(id).Meta, "expires_at_ms", "left", "state").Result()
	if err != nil {
		return nil, fmt.Errorf("load envelope %q: %w: %w", id, ErrRedis, err)
	}
	if v[0] == nil {
		return nil, ErrNotFound
	}
	exp, left := toInt(v[0]), toInt(v[1])
	st := &envState{id: id, expiresMs: exp}
	st.share = stock.NewRefill(s.shareOf(left), s.cfg.RefreshInterval, s.reload(st))
	st.empty.Store(left <= 0)
	st.expired.Store(str(v[2]) != "open")

	got, _, err := s.envs.Put(id, st, s.evict)
	return got, err
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
		v, err := s.rdb.HGet(ctx, lua.EnvelopeKeysFor(st.id).Meta, "left").Int64()
		if errors.Is(err, redis.Nil) {
			return 0, true, nil
		} else if err != nil {
			return 0, false, fmt.Errorf("read shares left of envelope %q: %w", st.id, err)
		}
		st.empty.Store(v <= 0)
		return s.shareOf(v), false, nil
	}
}

// flush settles one batch of openers, possibly of several envelopes: one
// open script per envelope, one Publish of every opened event, one undo
// script per envelope for events Kafka refused, one pipelined round of
// wallet credits, and one adjustment of each local allowance.
func (s *Service) flush(reqs []openReq, res []openRes) {
	type group struct {
		st  *envState
		idx []int
	}
	var groups []*group
	byID := map[*envState]*group{}
	for i, r := range reqs {
		g := byID[r.env]
		if g == nil {
			g = &group{st: r.env}
			byID[r.env] = g
			groups = append(groups, g)
		}
		g.idx = append(g.idx, i)
	}

	type win struct {
		i      int
		st     *envState
		amount int64
		seq    int64
		nowMs  int64
	}
	var wins []win
	for _, g := range groups {
		st := g.st
		users := make([]string, len(g.idx))
		for j, i := range g.idx {
			users[j] = reqs[i].user
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
		batch := stock.NewBatchID(s.cfg.Node)
		reply, err := lua.EnvOpen(ctx, s.rdb, st.id, s.cfg.Node, batch, users)
		cancel()
		if err != nil {
			s.log.Warn("open script failed", "envelope", st.id, "batch", len(users), "err", err)
			if !stock.Definite(err) {
				// The opens may still happen, or have happened: undo them
				// once Redis answers, so these openers' 503 stays true.
				s.doubt.Add(st.id, batch)
			}
			st.share.Give(int64(len(users)))
			fillErr(res, g.idx, ErrRedis)
			continue
		}
		switch reply.Code {
		case lua.OpenVoid: // cannot happen: only a lost reply is written off
			st.share.Give(int64(len(users)))
			fillErr(res, g.idx, ErrRedis)
			continue
		case lua.OpenNone:
			st.share.MarkGone()
			fillErr(res, g.idx, ErrNotFound)
			continue
		case lua.OpenExpired:
			st.expired.Store(true)
			st.share.Set(0)
			fillErr(res, g.idx, ErrExpired)
			continue
		}
		var unused int64
		empty := false
		seq := reply.SeqBefore
		for j, v := range reply.Results {
			i := g.idx[j]
			switch {
			case v > 0:
				seq++
				wins = append(wins, win{i: i, st: st, amount: v, seq: seq, nowMs: reply.NowMs})
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
			st.share.Set(0)
		} else {
			st.share.Give(unused)
		}
	}
	if len(wins) == 0 {
		return
	}

	// Durable before anyone hears the amount: one Publish for the batch.
	msgs := make([]kafka.Message, len(wins))
	for k, w := range wins {
		ev := Event{Type: TypeOpened, EnvelopeID: w.st.id, UserID: reqs[w.i].user, Node: s.cfg.Node,
			AmountCents: w.amount, Seq: w.seq, AtMs: w.nowMs}
		msgs[k] = kafka.Message{Key: []byte(w.st.id), Value: AppendEvent(make([]byte, 0, 192), &ev)}
	}
	errs := make([]error, len(wins))
	pctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	s.pub.Publish(pctx, msgs, errs)
	cancel()
	failed := map[*envState][]int{} // envelope -> indexes into wins
	for k, e := range errs {
		if e != nil {
			failed[wins[k].st] = append(failed[wins[k].st], k)
		}
	}
	kept := make([]bool, len(wins))
	for k := range kept {
		kept[k] = errs[k] == nil
	}
	for st, ks := range failed {
		users := make([]string, len(ks))
		for j, k := range ks {
			users[j] = reqs[wins[k].i].user
		}
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
		codes, err := lua.EnvUndo(ctx, s.rdb, st.id, users)
		cancel()
		for j, k := range ks {
			w := wins[k]
			switch {
			case err != nil:
				// The open stays recorded; its credit is applied at refund time.
				s.log.Error("undo of unannounced opens failed; the refund will credit them", "envelope", st.id, "err", err)
				res[w.i].err = fmt.Errorf("%w: %w", ErrNotDurable, errs[k])
			case codes[j] == lua.UndoDone:
				st.share.Give(1)
				res[w.i].err = fmt.Errorf("%w: %w", ErrNotDurable, errs[k])
			default:
				// Refunded meanwhile: the open stands, without its event.
				s.log.Error("opened event lost for an open that stands", "envelope", st.id, "user", users[j], "err", errs[k])
				kept[k] = true
			}
		}
	}

	credits := make([]wallet.Credit, 0, len(wins))
	for k, w := range wins {
		if !kept[k] {
			continue
		}
		res[w.i].amount, res[w.i].seq = w.amount, w.seq
		credits = append(credits, wallet.Credit{User: reqs[w.i].user,
			Entry: lua.Entry{ID: wallet.OpenID(w.st.id), Amount: w.amount}})
	}
	s.metrics.opened.Add(float64(len(credits)))
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.RedisTimeout)
	_, err := wallet.ApplyAll(ctx, s.rdb, s.cfg.RecentEntries, credits)
	cancel()
	if err != nil {
		// The opens are recorded and announced: the openers have their
		// shares, and the refund at expiry re-applies every credit.
		s.metrics.creditsDeferred.Inc()
		s.log.Warn("wallet credit deferred to the refund", "opens", len(credits), "err", err)
	}
}

func fillErr(res []openRes, idx []int, err error) {
	for _, i := range idx {
		res[i].err = err
	}
}

func toInt(v any) int64 {
	switch x := v.(type) {
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	case int64:
		return x
	}
	return 0
}

// Close settles queued openers and stops the flushers.
func (s *Service) Close() {
	s.co.Close()
	s.doubt.Close()
}

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
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "flashsale_envelope_" + name, Help: help})
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
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.collectors() {
		c.Collect(ch)
	}
}

func (s *Service) collectors() []prometheus.Collector {
	m := s.metrics
	return []prometheus.Collector{s.doubt, m.created, m.opened, m.refunded, m.refreshes, m.creditsDeferred}
}
