package store

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/jackc/pgx/v5"
)

// Counts are a sale's orders in the store, by status.
type Counts struct {
	Orders, Pending, Paid, Expired, Cancelled, Aborted int64
}

// SaleCounts counts sale id's orders in the store.
func (s *Store) SaleCounts(ctx context.Context, id string) (Counts, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var c Counts
	err := s.Pool.QueryRow(ctx, `SELECT count(*),
		count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'paid'),
		count(*) FILTER (WHERE status = 'expired'), count(*) FILTER (WHERE status = 'cancelled'),
		count(*) FILTER (WHERE status = 'aborted')
		FROM orders WHERE sale_id = $1`, id).Scan(&c.Orders, &c.Pending, &c.Paid, &c.Expired, &c.Cancelled, &c.Aborted)
	if err != nil {
		return Counts{}, fmt.Errorf("store: count orders of sale %q: %w", id, err)
	}
	return c, nil
}

// ArchiveSale records a finished sale's settings and final books (and the
// price on any order written before the sale's settings were known).
func (s *Store) ArchiveSale(ctx context.Context, sale flashsale.Sale, b flashsale.Books, at time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return pgx.BeginFunc(ctx, s.Pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO sales (id, name, stock, price_cents, per_user_limit, pay_timeout_ms, starts_at, ends_at,
				archived_at, remaining, pending, paid, expired, cancelled, aborted)
			VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::bigint / 1000.0), to_timestamp($8::bigint / 1000.0),
				$9, $10, $11, $12, $13, $14, $15)
			ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, stock = EXCLUDED.stock, price_cents = EXCLUDED.price_cents,
				per_user_limit = EXCLUDED.per_user_limit, pay_timeout_ms = EXCLUDED.pay_timeout_ms,
				starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, archived_at = EXCLUDED.archived_at,
				remaining = EXCLUDED.remaining, pending = EXCLUDED.pending, paid = EXCLUDED.paid,
				expired = EXCLUDED.expired, cancelled = EXCLUDED.cancelled, aborted = EXCLUDED.aborted`,
			sale.ID, sale.Name, sale.Stock, sale.PriceCents, sale.PerUserLimit, sale.PayTimeout.Milliseconds(),
			nullTime(unixMs(sale.StartsAt)), nullTime(unixMs(sale.EndsAt)), at,
			b.Remaining, b.Pending, b.Paid, b.Expired, b.Cancelled, b.Aborted)
		if err != nil {
			return fmt.Errorf("store: archive sale %q: %w", sale.ID, err)
		}
		if _, err := tx.Exec(ctx, "UPDATE orders SET price_cents = $2 WHERE sale_id = $1 AND price_cents IS NULL",
			sale.ID, sale.PriceCents); err != nil {
			return fmt.Errorf("store: price orders of sale %q: %w", sale.ID, err)
		}
		return nil
	})
}

// SaleArchived reports whether sale id was archived, and its final books.
func (s *Store) SaleArchived(ctx context.Context, id string) (bool, flashsale.Books, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var b flashsale.Books
	var at *time.Time
	err := s.Pool.QueryRow(ctx, `SELECT archived_at, coalesce(stock, 0), coalesce(remaining, 0), coalesce(pending, 0),
		coalesce(paid, 0), coalesce(expired, 0), coalesce(cancelled, 0), coalesce(aborted, 0) FROM sales WHERE id = $1`, id).
		Scan(&at, &b.Stock, &b.Remaining, &b.Pending, &b.Paid, &b.Expired, &b.Cancelled, &b.Aborted)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, flashsale.Books{}, nil
	} else if err != nil {
		return false, flashsale.Books{}, fmt.Errorf("store: sale %q: %w", id, err)
	}
	return at != nil, b, nil
}

// Order is an order as the store holds it.
type Order struct {
	flashsale.Order
	PriceCents *int64     // nil until the sale's price is known
	SettledAt  *time.Time // when it left pending (nil while pending)
	PaymentID  string     // the payment that paid it ("" unless paid)
}

// SaleOrders returns every order of sale id, by order number; for reconcile.
func (s *Store) SaleOrders(ctx context.Context, id string) (map[int64]Order, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*s.timeout)
	defer cancel()
	rows, err := s.Pool.Query(ctx, `SELECT order_no, `+orderCols+` FROM orders WHERE sale_id = $1`, id)
	if err != nil {
		return nil, fmt.Errorf("store: orders of sale %q: %w", id, err)
	}
	defer rows.Close()
	out := map[int64]Order{}
	for rows.Next() {
		var n int64
		var o Order
		if err := rows.Scan(append([]any{&n}, o.fields()...)...); err != nil {
			return nil, fmt.Errorf("store: orders of sale %q: %w", id, err)
		}
		out[n] = o
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: orders of sale %q: %w", id, err)
	}
	return out, nil
}

const orderCols = "id, sale_id, user_id, node, status, created_at, deadline_at, price_cents, settled_at, coalesce(payment_id, '')"

func (o *Order) fields() []any {
	return []any{&o.ID, &o.SaleID, &o.UserID, &o.Node, (*string)(&o.Status), &o.CreatedAt, &o.ExpiresAt, &o.PriceCents, &o.SettledAt, &o.PaymentID}
}

// OrderQuery selects a buyer's orders for one page of GET /v1/users/me/orders.
type OrderQuery struct {
	UserID string
	SaleID string                // "" for every sale
	Status flashsale.OrderStatus // "" for every status
	Limit  int
	Cursor string // "" for the first page; else NextCursor of the previous page
}

// MaxPage is the largest page of orders one request returns.
const MaxPage = 100

var errBadCursor = flashsale.Errorf(flashsale.EINVALID, "cursor is not one this server returned")

// UserOrders returns one page of a buyer's orders, newest first, and the
// cursor of the next page ("" after the last). Pages are keyed by
// (created_at, id), so orders written meanwhile never shift a page.
func (s *Store) UserOrders(ctx context.Context, q OrderQuery) ([]Order, string, error) {
	if q.Limit <= 0 || q.Limit > MaxPage {
		q.Limit = 20
	}
	sql := `SELECT ` + orderCols + ` FROM orders WHERE user_id = $1`
	args := []any{q.UserID}
	if q.SaleID != "" {
		args = append(args, q.SaleID)
		sql += ` AND sale_id = $` + strconv.Itoa(len(args))
	}
	if q.Status != "" {
		args = append(args, string(q.Status))
		sql += ` AND status = $` + strconv.Itoa(len(args))
	}
	if q.Cursor != "" {
		at, id, err := ParseCursor(q.Cursor)
		if err != nil {
			return nil, "", err
		}
		args = append(args, at, id)
		sql += fmt.Sprintf(` AND (created_at, id) < ($%d, $%d)`, len(args)-1, len(args))
	}
	args = append(args, q.Limit+1)
	sql += ` ORDER BY created_at DESC, id DESC LIMIT $` + strconv.Itoa(len(args))
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	rows, err := s.Pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, "", fmt.Errorf("store: orders of a user: %w", err)
	}
	defer rows.Close()
	var out []Order
	for rows.Next() {
		var o Order
		if err := rows.Scan(o.fields()...); err != nil {
			return nil, "", fmt.Errorf("store: orders of a user: %w", err)
		}
		o.CreatedAt, o.ExpiresAt = o.CreatedAt.UTC(), o.ExpiresAt.UTC()
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fmt.Errorf("store: orders of a user: %w", err)
	}
	next := ""
	if len(out) > q.Limit {
		out = out[:q.Limit]
		last := out[len(out)-1]
		next = MakeCursor(last.CreatedAt, last.ID)
	}
	return out, next, nil
}

// MakeCursor returns the cursor of the page after the order created at at
// with record id id. A cursor is opaque to clients: base64url of
// "<created_at µs>|<order id>". Pages are ordered by (created_at, id)
// descending, ids compared bytewise (the column's collation is "C").
func MakeCursor(at time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "|" + id))
}

// ParseCursor decodes a MakeCursor cursor; anything else is EINVALID.
func ParseCursor(c string) (time.Time, string, error) {
	if len(c) > 200 {
		return time.Time{}, "", errBadCursor
	}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", errBadCursor
	}
	us, id, ok := strings.Cut(string(raw), "|")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil || n < 0 {
		return time.Time{}, "", errBadCursor
	}
	if _, _, err := flashsale.ParseOrderID(id); err != nil {
		return time.Time{}, "", errBadCursor
	}
	return time.UnixMicro(n).UTC(), id, nil
}

// GetOrder returns one order by id; ok false when the store has none.
func (s *Store) GetOrder(ctx context.Context, id string) (Order, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var o Order
	err := s.Pool.QueryRow(ctx, `SELECT `+orderCols+` FROM orders WHERE id = $1`, id).Scan(o.fields()...)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, false, nil
	} else if err != nil {
		return Order{}, false, fmt.Errorf("store: order %q: %w", id, err)
	}
	o.CreatedAt, o.ExpiresAt = o.CreatedAt.UTC(), o.ExpiresAt.UTC()
	return o, true, nil
}
