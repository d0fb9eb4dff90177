package order

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	kafkago "github.com/segmentio/kafka-go"
)

// Outbox puts every settle transition on Kafka as an order.* event
// (order.paid, order.cancelled, order.expired, order.aborted), so the order
// store sees each order's final status. It also carries the order.created
// of an order that stands although its own batch never reached Kafka (entry
// "<n>:p", see lua.AbortUnsent): the seller publishes it at once
// (AnnounceKept), Drain if that fails.
//
// settle.lua records each transition in the sale's outbox hash in the same
// atomic step as the transition itself. Announce publishes what one settle
// call did right after it and deletes the entries Kafka acknowledged; what
// it could not publish (Kafka down, the node killed in between, or a
// transition made where no publisher is at hand: the seller's and the
// in-doubt resolver's aborts) stays in the outbox, and Drain — run by the
// sweeper — publishes it later. So a transition is never stranded, and the
// store converges. An event may be published twice (a drain racing an
// announce); consumers apply transitions idempotently.
//
// It is safe for concurrent use.
type Outbox struct {
	rdb     redis.UniversalClient
	pub     stock.Publisher
	timeout time.Duration
	minAge  time.Duration
	page    int
	log     *slog.Logger

	announced   prometheus.Counter
	republished prometheus.Counter
}

// NewOutbox returns an Outbox publishing through pub. timeout bounds each
// Redis call; Drain leaves entries younger than minAge to their Announce.
func NewOutbox(rdb redis.UniversalClient, pub stock.Publisher, timeout, minAge time.Duration, log *slog.Logger) *Outbox {
	if log == nil {
		log = slog.Default()
	}
	return &Outbox{rdb: rdb, pub: pub, timeout: timeout, minAge: minAge, page: 256, log: log,
		announced: metric.Counter("outbox", "announced_total",
			"order.* transition events published right after their settle call.", nil),
		republished: metric.Counter("outbox", "republished_total",
			"order.* transition events published late from the Redis outbox (their first publish failed or never happened).", nil)}
}

// Announce publishes the events of the transitions one settle call made
// (results with code SettleDone) at nowMs, the call's Redis clock. Errors
// are logged: the entries stay in the outbox for Drain.
func (o *Outbox) Announce(ctx context.Context, sale string, nowMs int64, orders []int64, res []lua.SettleResult) {
	if o == nil {
		return
	}
	var entries []lua.OutboxEntry
	for i, r := range res {
		// SettleExpired may be a transition (pay after the deadline) or an
		// order expired before: the entry, if any, is left to Drain.
		if r.Code == lua.SettleDone && TypeOfStatus(r.Record.Status) != "" {
			entries = append(entries, lua.OutboxEntry{Field: lua.OutboxField(orders[i], r.Record.Status),
				Order: orders[i], SettledMs: nowMs, Record: r.Record})
		}
	}
	n, err := o.publish(ctx, sale, entries)
	o.announced.Add(float64(n))
	if err != nil {
		o.log.Warn("order events not published; the sweeper will publish them from the outbox", "sale", sale,
			"events", len(entries)-n, "err", err)
	}
}

// AnnouncePaid publishes the order.paid event of order n of sale, which
// payment paid at nowMs (Redis clock; rec is the paid record). Errors are
// logged: the entry stays in the outbox for Drain.
func (o *Outbox) AnnouncePaid(ctx context.Context, sale string, nowMs, n int64, rec lua.Record, payment string) {
	if o == nil {
		return
	}
	e := lua.OutboxEntry{Field: lua.OutboxField(n, lua.StatusPaid), Order: n, SettledMs: nowMs, Payment: payment, Record: rec}
	done, err := o.publish(ctx, sale, []lua.OutboxEntry{e})
	o.announced.Add(float64(done))
	if err != nil {
		o.log.Warn("order.paid not published; the sweeper will publish it from the outbox", "sale", sale, "err", err)
	}
}

// AnnounceKept publishes the order.created events waiting in sale's outbox
// for orders (entries "<n>:p", written by lua.AbortUnsent for the orders it
// kept) and deletes the acknowledged ones. An order with no such entry is
// skipped: its event was published already (by Drain, or an earlier call).
// Errors are logged: what is not published stays in the outbox for Drain.
func (o *Outbox) AnnounceKept(ctx context.Context, sale string, orders []int64) {
	if o == nil || len(orders) == 0 {
		return
	}
	fields := make([]string, len(orders))
	for i, n := range orders {
		fields[i] = lua.OutboxField(n, lua.StatusPending)
	}
	cctx, cancel := context.WithTimeout(ctx, o.timeout)
	vals, err := o.rdb.HMGet(cctx, lua.KeysFor(sale).Outbox, fields...).Result()
	cancel()
	if err != nil {
		o.log.Warn("kept orders' order.created not read from the outbox; the sweeper will publish them", "sale", sale,
			"orders", len(orders), "err", err)
		return
	}
	var entries []lua.OutboxEntry
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			continue
		}
		e, err := lua.ParseOutboxEntry(fields[i], s)
		if err != nil {
			o.log.Warn("malformed outbox entry of a kept order; Drain drops it", "sale", sale, "err", err)
			continue
		}
		entries = append(entries, e)
	}
	n, err := o.publish(ctx, sale, entries)
	o.announced.Add(float64(n))
	if err != nil {
		o.log.Warn("kept orders' order.created not published; the sweeper will publish them from the outbox", "sale", sale,
			"events", len(entries)-n, "err", err)
	}
}

// Drain publishes the sale's outbox entries older than minAge and returns
// how many it published.
func (o *Outbox) Drain(ctx context.Context, sale string) (int, error) {
	key := lua.KeysFor(sale).Outbox
	cutoff := time.Now().Add(-o.minAge).UnixMilli()
	var cursor uint64
	total := 0
	for {
		cctx, cancel := context.WithTimeout(ctx, o.timeout)
		kv, next, err := o.rdb.HScan(cctx, key, cursor, "*", int64(o.page)).Result()
		cancel()
		if err != nil {
			return total, fmt.Errorf("scan outbox of sale %q: %w", sale, err)
		}
		var entries []lua.OutboxEntry
		var bad []string
		for i := 0; i+1 < len(kv); i += 2 {
			e, err := lua.ParseOutboxEntry(kv[i], kv[i+1])
			if err != nil {
				o.log.Warn("dropping a malformed outbox entry", "sale", sale, "err", err)
				bad = append(bad, kv[i])
				continue
			}
			if e.SettledMs <= cutoff {
				entries = append(entries, e)
			}
		}
		if len(bad) > 0 {
			if err := o.forget(ctx, key, bad); err != nil {
				return total, err
			}
		}
		n, err := o.publish(ctx, sale, entries)
		total += n
		o.republished.Add(float64(n))
		if err != nil {
			return total, err
		}
		if cursor = next; cursor == 0 {
			return total, nil
		}
	}
}

// Pending reports how many transitions of sale wait in its outbox.
func (o *Outbox) Pending(ctx context.Context, sale string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	n, err := o.rdb.HLen(ctx, lua.KeysFor(sale).Outbox).Result()
	if err != nil {
		return 0, fmt.Errorf("outbox of sale %q: %w", sale, err)
	}
	return n, nil
}

// publish sends entries' events (one produce per partition, key: the sale)
// and deletes the acknowledged ones from the outbox. It returns how many
// were published.
func (o *Outbox) publish(ctx context.Context, sale string, entries []lua.OutboxEntry) (int, error) {
	if len(entries) == 0 {
		return 0, nil
	}
	msgs := make([]kafkago.Message, len(entries))
	errs := make([]error, len(entries))
	buf := make([]byte, 0, 200*len(entries))
	key := []byte(sale)
	for i, e := range entries {
		start := len(buf)
		buf = appendEntry(buf, sale, e)
		msgs[i] = kafkago.Message{Key: key, Value: buf[start:len(buf):len(buf)]}
	}
	o.pub.Publish(ctx, msgs, errs)
	var done []string
	var first error
	for i, err := range errs {
		if err == nil {
			done = append(done, entries[i].Field)
		} else if first == nil {
			first = err
		}
	}
	if err := o.forget(ctx, lua.KeysFor(sale).Outbox, done); err != nil {
		// Published but still listed: a later drain publishes it again,
		// which consumers absorb.
		return len(done), err
	}
	return len(done), first
}

func (o *Outbox) forget(ctx context.Context, key string, fields []string) error {
	if len(fields) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.timeout)
	defer cancel()
	if err := o.rdb.HDel(ctx, key, fields...).Err(); err != nil {
		return fmt.Errorf("drop published outbox entries: %w", err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (o *Outbox) Describe(ch chan<- *prometheus.Desc) {
	o.announced.Describe(ch)
	o.republished.Describe(ch)
}

// Collect implements prometheus.Collector.
func (o *Outbox) Collect(ch chan<- prometheus.Metric) {
	o.announced.Collect(ch)
	o.republished.Collect(ch)
}

// appendEntry appends the event of outbox entry e: the order.created of a
// kept order (a pending record), else the transition's event.
func appendEntry(b []byte, sale string, e lua.OutboxEntry) []byte {
	if r := e.Record; r.Status == lua.StatusPending {
		return kafka.AppendOrderCreated(b, kafka.OrderCreated{SaleID: sale, UserID: r.User, Node: r.Node,
			Order: e.Order, CreatedMs: r.CreatedMs, DeadlineMs: r.DeadlineMs})
	}
	return AppendTransition(b, sale, e.Order, e.Record, e.SettledMs, e.Payment)
}

// AppendTransition appends the event of order n of sale moving to
// rec.Status at settledMs (Redis clock), encoded as JSON; payment is the
// payment id of an order.paid ("" leaves the field out).
func AppendTransition(b []byte, sale string, n int64, rec lua.Record, settledMs int64, payment string) []byte {
	return kafka.AppendOrderTransition(b, kafka.OrderTransition{Type: TypeOfStatus(rec.Status), SaleID: sale, Order: n,
		UserID: rec.User, Node: rec.Node, CreatedMs: rec.CreatedMs, DeadlineMs: rec.DeadlineMs, SettledMs: settledMs,
		PaymentID: payment})
}
