package store

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/metric"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/order"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// Archiver moves finished sales out of Redis: when a sale has ended, or is
// sold out with nothing pending, its outbox is empty and the store holds
// every one of its orders with the statuses Redis counts, it writes the
// sale's final books into the store, drops the per-order records, user
// slots and deadline index from Redis (lua.ArchiveSale: the settings and
// counters stay as a tombstone, so nothing can buy again and GET
// /v1/sales/{id} still answers) and takes the sale out of fs:sales, so the
// sweepers' cost follows live sales only.
//
// A sale is archived only after it has looked finished, with the same
// books, for Quiet (at least lua.BatchTTL): by then no lost buy reply can
// still be resolved against it. Running it on several nodes is safe.
type Archiver struct {
	rdb      redis.UniversalClient
	store    *Store
	interval time.Duration
	quiet    time.Duration
	timeout  time.Duration
	log      *slog.Logger
	archived prometheus.Counter
	now      func() time.Time
}

// NewArchiver returns an Archiver that checks every interval; Run starts it.
// quiet should be at least lua.BatchTTL (the node's wiring enforces it;
// tests may go below).
func NewArchiver(rdb redis.UniversalClient, s *Store, interval, quiet, timeout time.Duration, log *slog.Logger) *Archiver {
	if log == nil {
		log = slog.Default()
	}
	return &Archiver{rdb: rdb, store: s, interval: interval, quiet: quiet, timeout: timeout, log: log, now: time.Now,
		archived: metric.Counter("store", "archived_sales_total",
			"Finished sales whose per-order state was moved out of Redis (the store holds their orders).", nil)}
}

// Run archives every interval until ctx ends.
func (a *Archiver) Run(ctx context.Context) {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if n, err := a.Pass(ctx); err != nil {
				a.log.Warn("archive finished sales", "err", err)
			} else if n > 0 {
				a.log.Info("archived finished sales out of Redis", "sales", n)
			}
		case <-ctx.Done():
			return
		}
	}
}

// Pass looks at every sale in fs:sales once and returns how many it archived.
func (a *Archiver) Pass(ctx context.Context) (int, error) {
	lctx, cancel := context.WithTimeout(ctx, a.timeout)
	ids, err := order.ListSales(lctx, a.rdb)
	cancel()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		ok, err := a.Archive(ctx, id)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	return n, nil
}

// Archive archives one sale if it is ready (see Archiver) and reports
// whether it did.
func (a *Archiver) Archive(ctx context.Context, id string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*a.timeout)
	defer cancel()
	sale, books, err := order.LoadSale(ctx, a.rdb, id)
	if err != nil {
		if flashsale.ErrorCode(err) == flashsale.ENOTFOUND {
			return false, a.unindex(ctx, id) // a stale index entry
		}
		return false, err
	}
	k := lua.KeysFor(id)
	extra, err := a.rdb.HMGet(ctx, k.Meta, "seq", "archived_at_ms", "finish_seen_ms", "finish_books").Result()
	if err != nil {
		return false, fmt.Errorf("archive %q: %w", id, err)
	}
	str := func(v any) string { s, _ := v.(string); return s }
	seq, _ := strconv.ParseInt(str(extra[0]), 10, 64)
	if str(extra[1]) != "" {
		return false, a.unindex(ctx, id) // archived before; the index removal failed
	}
	now := a.now()
	ended := !sale.EndsAt.IsZero() && !now.Before(sale.EndsAt)
	if books.Pending != 0 || !(ended || books.Remaining == 0) {
		if str(extra[2]) != "" {
			return false, a.rdb.HDel(ctx, k.Meta, "finish_seen_ms", "finish_books").Err()
		}
		return false, nil
	}
	if n, err := a.rdb.HLen(ctx, k.Outbox).Result(); err != nil || n > 0 {
		return false, err // transitions not yet on Kafka
	}
	// An Idempotency-Key names its order until the order's pay deadline
	// (issue 13): a retry until then gets the order back, so wait for the
	// last one (archive.lua checks again, on Redis's clock).
	if last, err := a.rdb.ZRangeWithScores(ctx, k.IdemExp, -1, -1).Result(); err != nil {
		return false, fmt.Errorf("archive %q: %w", id, err)
	} else if len(last) == 1 && int64(last[0].Score) > now.UnixMilli() {
		return false, nil
	}
	have, err := a.store.SaleCounts(ctx, id)
	if err != nil {
		return false, err
	}
	want := Counts{Orders: seq, Paid: books.Paid, Expired: books.Expired, Cancelled: books.Cancelled, Aborted: books.Aborted}
	if have != want {
		return false, nil // the store has not caught up yet
	}
	fp := fmt.Sprintf("%d,%d,%d,%d,%d", seq, books.Paid, books.Expired, books.Cancelled, books.Aborted)
	seen, _ := strconv.ParseInt(str(extra[2]), 10, 64)
	if seen == 0 || str(extra[3]) != fp {
		return false, a.rdb.HSet(ctx, k.Meta, "finish_seen_ms", now.UnixMilli(), "finish_books", fp).Err()
	}
	if now.Sub(time.UnixMilli(seen)) < a.quiet {
		return false, nil
	}
	if err := a.store.ArchiveSale(ctx, sale, books, now); err != nil {
		return false, err
	}
	ok, err := lua.ArchiveSale(ctx, a.rdb, id, seq, now.UnixMilli())
	if err != nil || !ok {
		return false, err
	}
	a.archived.Inc()
	return true, a.unindex(ctx, id)
}

func (a *Archiver) unindex(ctx context.Context, id string) error {
	if err := a.rdb.SRem(ctx, lua.SalesIndexKey, id).Err(); err != nil {
		return fmt.Errorf("unindex sale %q: %w", id, err)
	}
	return nil
}

// Describe implements prometheus.Collector.
func (a *Archiver) Describe(ch chan<- *prometheus.Desc) { a.archived.Describe(ch) }

// Collect implements prometheus.Collector.
func (a *Archiver) Collect(ch chan<- prometheus.Metric) { a.archived.Collect(ch) }
