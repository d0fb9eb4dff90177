package store

import (
	"context"
	"fmt"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/kafka"
	"github.com/flashsale/flashsale/wallet"
	"github.com/jackc/pgx/v5"
)

// Batch is what one database transaction writes: the events of one fetch,
// collapsed so each row is written once (a multi-row upsert may not touch a
// row twice). Not safe for concurrent use.
type Batch struct {
	Events  int // events added (decoded), for metrics
	orders  map[string]orderRow
	sales   map[string]struct{}
	envs    map[string]kafka.EnvelopeEvent
	opens   map[[2]string]kafka.EnvelopeEvent
	refunds map[string]kafka.EnvelopeEvent
	entries map[[2]string]walletRow
}

type orderRow struct {
	id, sale, user, node string
	payment              string // order.paid's payment id; "" for the others
	n                    int64
	status               flashsale.OrderStatus
	createdMs            int64
	deadlineMs           int64
	settledMs            int64
}

type walletRow struct {
	user, id string
	amount   int64
	atMs     int64
}

// NewBatch returns an empty Batch.
func NewBatch() *Batch {
	return &Batch{orders: map[string]orderRow{}, sales: map[string]struct{}{}, envs: map[string]kafka.EnvelopeEvent{},
		opens: map[[2]string]kafka.EnvelopeEvent{}, refunds: map[string]kafka.EnvelopeEvent{}, entries: map[[2]string]walletRow{}}
}

// Len is the number of rows the batch would write.
func (b *Batch) Len() int {
	return len(b.orders) + len(b.envs) + len(b.opens) + len(b.refunds) + len(b.entries)
}

// Forward reports whether an order may move from status from to status to:
// pending to any final status, and expired to aborted (an order whose lost
// reply was resolved after the sweeper expired it). Everything else —
// a repeat, a late order.created after its order.paid, an order.expired
// re-published after the order.aborted — changes nothing.
func Forward(from, to flashsale.OrderStatus) bool {
	return from == flashsale.OrderPending && to != flashsale.OrderPending ||
		from == flashsale.OrderExpired && to == flashsale.OrderAborted
}

// AddOrder adds an order event. Every order event carries the whole order,
// so the first one seen (of any type) creates the row.
func (b *Batch) AddOrder(e kafka.OrderEvent) error {
	st, ok := kafka.OrderStatusOfType(e.Type)
	if !ok {
		return nil // a type this store does not know: nothing to write
	}
	_, n, err := flashsale.ParseOrderID(e.OrderID)
	if err != nil {
		return fmt.Errorf("order event %q: %w", e.OrderID, err)
	}
	b.Events++
	b.sales[e.SaleID] = struct{}{}
	row := orderRow{id: e.OrderID, sale: e.SaleID, user: e.UserID, node: e.Node, n: n, status: st,
		createdMs: e.CreatedMs, deadlineMs: e.DeadlineMs, settledMs: e.SettledMs, payment: e.PaymentID}
	if old, ok := b.orders[e.OrderID]; ok && !Forward(old.status, st) {
		return nil
	}
	b.orders[e.OrderID] = row
	return nil
}

// AddEnvelope adds an envelope event and the wallet entry it implies.
func (b *Batch) AddEnvelope(e kafka.EnvelopeEvent) {
	switch e.Type {
	case kafka.TypeEnvelopeCreated:
		b.envs[e.EnvelopeID] = e
		b.entries[[2]string{e.SenderID, wallet.SendID(e.EnvelopeID)}] = walletRow{e.SenderID, wallet.SendID(e.EnvelopeID), -e.TotalCents, e.AtMs}
	case kafka.TypeEnvelopeOpened:
		k := [2]string{e.EnvelopeID, e.UserID}
		if _, dup := b.opens[k]; !dup {
			b.opens[k] = e
		}
		b.entries[[2]string{e.UserID, wallet.OpenID(e.EnvelopeID)}] = walletRow{e.UserID, wallet.OpenID(e.EnvelopeID), e.AmountCents, e.AtMs}
	case kafka.TypeEnvelopeRefunded:
		b.refunds[e.EnvelopeID] = e
		if e.AmountCents > 0 && e.SenderID != "" {
			b.entries[[2]string{e.SenderID, wallet.RefundID(e.EnvelopeID)}] = walletRow{e.SenderID, wallet.RefundID(e.EnvelopeID), e.AmountCents, e.AtMs}
		}
	default:
		return
	}
	b.Events++
}

// SaleLookup returns a sale's settings (from Redis, where sales are
// created); ok false when there is no such sale.
type SaleLookup func(ctx context.Context, id string) (s flashsale.Sale, ok bool, err error)

// Apply writes b in one transaction. Every statement is an idempotent
// upsert, so applying a batch again (a redelivery after a crash between the
// commit and the offset commit) changes nothing.
func (s *Store) Apply(ctx context.Context, b *Batch, lookup SaleLookup) error {
	ctx, cancel := context.WithTimeout(ctx, 2*s.timeout)
	defer cancel()
	sales, err := s.missingSales(ctx, b, lookup)
	if err != nil {
		return err
	}
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		var batch pgx.Batch
		if len(sales) > 0 {
			queueSales(&batch, sales)
		}
		if len(b.orders) > 0 {
			queueOrders(&batch, b)
		}
		if len(b.envs)+len(b.opens)+len(b.refunds)+len(b.entries) > 0 {
			queueEnvelopes(&batch, b)
		}
		if batch.Len() == 0 {
			return nil
		}
		if err := tx.SendBatch(ctx, &batch).Close(); err != nil {
			return fmt.Errorf("store: apply %d rows: %w", b.Len(), err)
		}
		return nil
	})
}

// missingSales returns the settings of the batch's sales the store has no
// row for yet, read through lookup. A sale lookup cannot answer (Redis down)
// is written with its id only; the archiver fills the rest in.
func (s *Store) missingSales(ctx context.Context, b *Batch, lookup SaleLookup) ([]flashsale.Sale, error) {
	if len(b.sales) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(b.sales))
	for id := range b.sales {
		ids = append(ids, id)
	}
	rows, err := s.Pool.Query(ctx, "SELECT id FROM sales WHERE id = ANY($1)", ids)
	if err != nil {
		return nil, fmt.Errorf("store: known sales: %w", err)
	}
	known, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("store: known sales: %w", err)
	}
	have := map[string]bool{}
	for _, id := range known {
		have[id] = true
	}
	var out []flashsale.Sale
	for _, id := range ids {
		if have[id] {
			continue
		}
		sale := flashsale.Sale{ID: id}
		if lookup != nil {
			if got, ok, err := lookup(ctx, id); err == nil && ok {
				sale = got
			}
		}
		out = append(out, sale)
	}
	return out, nil
}

func nullTime(ms int64) any {
	if ms <= 0 {
		return nil
	}
	return ms
}

func queueSales(batch *pgx.Batch, sales []flashsale.Sale) {
	for _, s := range sales {
		if s.Stock == 0 { // only the id is known
			batch.Queue("INSERT INTO sales (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", s.ID)
			continue
		}
		batch.Queue(`INSERT INTO sales (id, name, stock, price_cents, per_user_limit, pay_timeout_ms, starts_at, ends_at)
			VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::bigint / 1000.0), to_timestamp($8::bigint / 1000.0))
			ON CONFLICT (id) DO NOTHING`,
			s.ID, s.Name, s.Stock, s.PriceCents, s.PerUserLimit, s.PayTimeout.Milliseconds(),
			nullTime(unixMs(s.StartsAt)), nullTime(unixMs(s.EndsAt)))
	}
}

// upsertOrders writes orders and moves existing rows forward only (see
// Forward); the price comes from the sale's row.
const upsertOrders = `
INSERT INTO orders (id, sale_id, order_no, user_id, status, price_cents, created_at, deadline_at, settled_at, node, payment_id)
SELECT u.id, u.sale_id, u.order_no, u.user_id, u.status, s.price_cents,
       to_timestamp(u.created_ms / 1000.0), to_timestamp(u.deadline_ms / 1000.0),
       CASE WHEN u.settled_ms > 0 THEN to_timestamp(u.settled_ms / 1000.0) END, u.node, NULLIF(u.payment, '')
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::text[], $10::text[])
     AS u(id, sale_id, order_no, user_id, status, created_ms, deadline_ms, settled_ms, node, payment)
LEFT JOIN sales s ON s.id = u.sale_id
ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, settled_at = EXCLUDED.settled_at,
    payment_id = COALESCE(EXCLUDED.payment_id, orders.payment_id)
WHERE (orders.status = 'pending' AND EXCLUDED.status <> 'pending')
   OR (orders.status = 'expired' AND EXCLUDED.status = 'aborted')`

func queueOrders(batch *pgx.Batch, b *Batch) {
	n := len(b.orders)
	ids, sales, users, statuses, nodes, payments := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	nos, created, deadlines, settled := make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
	for _, r := range b.orders {
		ids, sales, users, statuses, nodes = append(ids, r.id), append(sales, r.sale), append(users, r.user), append(statuses, string(r.status)), append(nodes, r.node)
		payments = append(payments, r.payment)
		nos, created, deadlines, settled = append(nos, r.n), append(created, r.createdMs), append(deadlines, r.deadlineMs), append(settled, r.settledMs)
	}
	batch.Queue(upsertOrders, ids, sales, nos, users, statuses, created, deadlines, settled, nodes, payments)
}

func queueEnvelopes(batch *pgx.Batch, b *Batch) {
	if len(b.envs) > 0 {
		var ids, senders []string
		var totals, counts, at, exp []int64
		for _, e := range b.envs {
			ids, senders = append(ids, e.EnvelopeID), append(senders, e.SenderID)
			totals, counts, at, exp = append(totals, e.TotalCents), append(counts, e.Count), append(at, e.AtMs), append(exp, e.ExpiresAtMs)
		}
		batch.Queue(`INSERT INTO envelopes (id, sender_id, total_cents, count, created_at, expires_at)
			SELECT u.id, u.sender, u.total, u.count, to_timestamp(u.at / 1000.0), to_timestamp(u.exp / 1000.0)
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) AS u(id, sender, total, count, at, exp)
			ON CONFLICT (id) DO NOTHING`, ids, senders, totals, counts, at, exp)
	}
	if len(b.opens) > 0 {
		var envs, users, nodes []string
		var seqs, amounts, at []int64
		for _, e := range b.opens {
			envs, users, nodes = append(envs, e.EnvelopeID), append(users, e.UserID), append(nodes, e.Node)
			seqs, amounts, at = append(seqs, e.Seq), append(amounts, e.AmountCents), append(at, e.AtMs)
		}
		batch.Queue(`INSERT INTO envelope_opens (envelope_id, user_id, seq, amount_cents, node, opened_at)
			SELECT u.env, u.usr, u.seq, u.amount, u.node, to_timestamp(u.at / 1000.0)
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[]) AS u(env, usr, seq, amount, node, at)
			ON CONFLICT (envelope_id, user_id) DO NOTHING`, envs, users, seqs, amounts, nodes, at)
	}
	for _, e := range b.refunds {
		batch.Queue(`UPDATE envelopes SET refunded_cents = $2, refunded_at = to_timestamp($3::bigint / 1000.0)
			WHERE id = $1 AND refunded_at IS NULL`, e.EnvelopeID, e.AmountCents, e.AtMs)
	}
	if len(b.entries) > 0 {
		var users, ids []string
		var amounts, at []int64
		for _, w := range b.entries {
			users, ids, amounts, at = append(users, w.user), append(ids, w.id), append(amounts, w.amount), append(at, w.atMs)
		}
		batch.Queue(`INSERT INTO wallet_entries (user_id, entry_id, amount_cents, at)
			SELECT u.usr, u.id, u.amount, to_timestamp(u.at / 1000.0)
			FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(usr, id, amount, at)
			ON CONFLICT (user_id, entry_id) DO NOTHING`, users, ids, amounts, at)
	}
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
