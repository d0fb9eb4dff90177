package envelope

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/flashsale/flashsale/wallet"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
)

// DueKey is the sorted set of envelopes not yet refunded, scored by their
// deadline (ms). The refund sweeper reads it; a refund removes the envelope.
const DueKey = "fs:envelopes:due"

// Settled is what Settle did.
type Settled struct {
	Code       int64 // lua.RefundDone, RefundRepeat, RefundNone or RefundNotDue
	Refunded   int64 // cents handed back to the sender (Done or Repeat)
	DeadlineMs int64 // NotDue: the deadline on Redis's clock
	NowMs      int64
}

// Settle closes an envelope and settles its money, idempotently: the
// refund script hands the unopened rest back (once: a repeat reports what
// the first call refunded), every wallet entry the envelope's record implies
// is applied (a no-op for those already there — this is also the repair of
// credits lost on the open path), and envelope.refunded is published unless
// a flag in Redis says it was. mode is lua.RefundExpire (refused before the
// deadline: NotDue) or lua.RefundAbort (now).
//
// Calling Settle again after any failure is always safe; the refund consumer
// and the sweeper do exactly that.
func (s *Service) Settle(ctx context.Context, id, mode string) (Settled, error) {
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	nowMs, code, v, err := lua.EnvRefund(rctx, s.rdb, id, mode)
	cancel()
	if err != nil {
		return Settled{}, err
	}
	out := Settled{Code: code, NowMs: nowMs}
	switch code {
	case lua.RefundNotDue:
		out.DeadlineMs = v
		return out, nil
	case lua.RefundNone:
		return out, nil
	}
	out.Refunded = v
	if code == lua.RefundDone {
		s.metrics.refunded.Inc()
		s.forgetAllowance(id)
	}
	if _, err := s.SettleLedger(ctx, id); err != nil {
		return out, err
	}
	rctx, cancel = context.WithTimeout(ctx, s.cfg.RedisTimeout)
	defer cancel()
	rec, _, err := lua.ReadEnvRecord(rctx, s.rdb, id)
	if err != nil {
		return out, fmt.Errorf("read refund of envelope %q: %w", id, err)
	}
	if !rec.RefundPublished {
		if err := s.publishRefund(ctx, id, rec.Sender, v, rec.RefundedMs); err != nil {
			return out, err
		}
	}
	if err := s.rdb.ZRem(rctx, DueKey, id).Err(); err != nil {
		return out, fmt.Errorf("unindex refunded envelope %q: %w", id, err)
	}
	return out, nil
}

// errRefundInFlight: another settler holds the claim to publish this
// envelope's refunded event; the caller retries later and then finds it
// published (or the claim lapsed because that settler died).
var errRefundInFlight = errors.New("another node is publishing this refund; retry later")

// publishRefund publishes envelope.refunded once: a settler first takes a
// short claim (SET NX PX, in the envelope's hash tag), publishes, then marks
// the envelope published. Concurrent settlers (two consumer groups, the
// sweeper) thus do not both publish; only a settler that dies between
// Kafka's ack and the mark leaves a duplicate behind (at least once, keyed
// by envelope id for consumers to deduplicate).
func (s *Service) publishRefund(ctx context.Context, id, sender string, amount, atMs int64) error {
	claim := lua.EnvelopeKeysFor(id).RefundClaim
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RedisTimeout)
	ok, err := s.rdb.SetNX(rctx, claim, s.cfg.Node, 2*s.cfg.PublishTimeout+s.cfg.RedisTimeout).Result()
	cancel()
	if err != nil {
		return fmt.Errorf("claim refund event of envelope %q: %w", id, err)
	}
	if !ok {
		return errRefundInFlight
	}
	release := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RedisTimeout)
		s.rdb.Del(rctx, claim)
		cancel()
	}
	// The claim may have been taken just after another settler marked it.
	rctx, cancel = context.WithTimeout(ctx, s.cfg.RedisTimeout)
	done, err := lua.RefundPublished(rctx, s.rdb, id)
	cancel()
	if err != nil || done {
		release()
		return err
	}
	ev := kafka.EnvelopeEvent{Type: kafka.TypeEnvelopeRefunded, EnvelopeID: id, SenderID: sender, AmountCents: amount, AtMs: atMs}
	errs := make([]error, 1)
	pctx, pcancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	s.pub.Publish(pctx, []kafkago.Message{{Key: []byte(id), Value: kafka.AppendEnvelopeEvent(nil, &ev)}}, errs)
	pcancel()
	if errs[0] != nil {
		release()
		return errs[0]
	}
	rctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), s.cfg.RedisTimeout)
	err = lua.MarkRefundPublished(rctx, s.rdb, id)
	cancel()
	if err != nil {
		return err
	}
	release()
	return nil
}

func (s *Service) forgetAllowance(id string) {
	if st, ok := s.envs.Delete(id); ok {
		st.expired.Store(true)
		st.share.Set(0)
	}
}

// SettleLedger applies every wallet entry envelope id's record implies —
// the sender's debit, each opener's credit, and the refund once refunded —
// and returns how many were missing (and are now applied).
func (s *Service) SettleLedger(ctx context.Context, id string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.RedisTimeout)
	defer cancel()
	credits, err := implied(ctx, s.rdb, id)
	if err != nil {
		return 0, err
	}
	n, err := wallet.ApplyAll(ctx, s.rdb, s.cfg.RecentEntries, credits)
	if err != nil {
		return n, fmt.Errorf("settle ledger of envelope %q: %w", id, err)
	}
	return n, nil
}

// implied lists the wallet entries an envelope's record implies.
func implied(ctx context.Context, rdb redis.UniversalClient, id string) ([]wallet.Credit, error) {
	e, found, err := lua.ReadEnvelope(ctx, rdb, id, false)
	if err != nil || !found {
		return nil, err
	}
	credits := []wallet.Credit{{User: e.Sender, Entry: lua.Entry{ID: wallet.SendID(id), Amount: -e.TotalCents}}}
	if e.State == lua.EnvStateRefunded && e.RefundedCents > 0 {
		credits = append(credits, wallet.Credit{User: e.Sender, Entry: lua.Entry{ID: wallet.RefundID(id), Amount: e.RefundedCents}})
	}
	for user, rec := range e.Opens {
		o, err := ParseOpenRecord(user, rec)
		if err != nil {
			return nil, err
		}
		credits = append(credits, wallet.Credit{User: user, Entry: lua.Entry{ID: wallet.OpenID(id), Amount: o.AmountCents}})
	}
	return credits, nil
}

// RefundConfig configures the refund consumer.
type RefundConfig struct {
	Brokers    []string
	Topic      string
	Group      string
	Workers    int
	QueueSize  int
	MaxHeld    int
	RetryDelay time.Duration
}

// NewRefunder returns the consumer that refunds each envelope at its
// deadline: an kafka.DelayConsumer over envelope.created events whose
// release is Settle(expire). Settle is idempotent, so forced redelivery (a
// crash before the commit, a second group) refunds nothing twice.
func (s *Service) NewRefunder(cfg RefundConfig) *kafka.DelayConsumer[string] {
	return kafka.NewDelayConsumer[string](kafka.DelayConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, Group: cfg.Group, Workers: cfg.Workers, QueueSize: cfg.QueueSize,
		MaxHeld: cfg.MaxHeld, BatchMax: 64, RetryDelay: cfg.RetryDelay, Subsystem: "refund", Noun: "envelopes",
	}, refundHandler{s}, s.log)
}

type refundHandler struct{ s *Service }

func (h refundHandler) Decode(m kafkago.Message) (kafka.Due[string], bool, error) {
	ev, err := kafka.ParseEnvelopeEvent(m.Value)
	if err != nil {
		return kafka.Due[string]{}, false, err
	}
	if ev.Type != kafka.TypeEnvelopeCreated {
		return kafka.Due[string]{}, false, nil
	}
	return kafka.Due[string]{Key: ev.EnvelopeID, Item: ev.EnvelopeID, DeadlineMs: ev.ExpiresAtMs}, true, nil
}

// Release settles one envelope; a batch holds only copies of its event.
func (h refundHandler) Release(ctx context.Context, id string, items []string, out []kafka.Outcome) error {
	r, err := h.s.Settle(ctx, id, lua.RefundExpire)
	if err != nil {
		return err
	}
	for i := range out {
		switch r.Code {
		case lua.RefundNotDue:
			out[i].Wait = max(time.Duration(r.DeadlineMs-r.NowMs)*time.Millisecond, time.Millisecond)
		case lua.RefundDone:
			out[i].Released = i == 0
		}
	}
	return nil
}

// NewSweeper returns the backstop for lost envelope.created events, on the
// engine's sweeper shape: it refunds envelopes still in DueKey more than
// grace past their deadline, batch at a time. Running it on every node is
// safe: Settle is idempotent. Run starts it.
func (s *Service) NewSweeper(interval, grace time.Duration, batch int) *stock.Sweeper {
	sweep := func(ctx context.Context, cutoffMs int64) (int, error) {
		ids, err := s.rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: DueKey, Start: "-inf",
			Stop: strconv.FormatInt(cutoffMs, 10), ByScore: true, Count: int64(max(batch, 1))}).Result()
		if err != nil {
			return 0, fmt.Errorf("overdue envelopes: %w", err)
		}
		n := 0
		var errs []error
		for _, id := range ids {
			r, err := s.Settle(ctx, id, lua.RefundExpire)
			switch {
			case err != nil:
				errs = append(errs, err)
			case r.Code == lua.RefundDone:
				n++
			case r.Code == lua.RefundNone:
				s.rdb.ZRem(ctx, DueKey, id)
			}
		}
		return n, errors.Join(errs...)
	}
	return stock.NewSweeper(stock.SweeperConfig{Subsystem: "envelope", Noun: "envelopes", Interval: interval,
		Grace: grace, Timeout: 4 * s.cfg.RedisTimeout}, sweep, s.log)
}
