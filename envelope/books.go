package envelope

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/wallet"
	"github.com/redis/go-redis/v9"
)

// Book is one envelope's books as Redis holds them, with every violation of
// the envelope invariants reconcile checks listed in Problems:
//   - opened + unopened (+ refunded) = total, to the cent, and the shares
//     still in Redis are exactly the unopened ones;
//   - every share ≥ 1 cent; one open per user (the opened hash is keyed by
//     user; open numbers are distinct);
//   - refunded once: after the refund nothing is unopened and the refund is
//     total − opened, and the sender's wallet holds one refund entry of it;
//   - the ledger: every wallet entry the envelope implies (the sender's
//     debit, each opener's credit, the refund) is there with its amount, and
//     after the refund they sum to 0.
type Book struct {
	ID            string       `json:"envelope_id"`
	SenderID      string       `json:"sender_id"`
	TotalCents    int64        `json:"total_cents"`
	Count         int64        `json:"count"`
	State         string       `json:"state"` // "open" or "refunded"
	CreatedAt     time.Time    `json:"created_at"`
	ExpiresAt     time.Time    `json:"expires_at"`
	Opened        int64        `json:"opened"`
	OpenedCents   int64        `json:"opened_cents"`
	Left          int64        `json:"remaining"`
	LeftCents     int64        `json:"remaining_cents"`
	RefundedCents int64        `json:"refunded_cents"`
	Undone        int64        `json:"undone"` // opens undone because their event could not be published
	Opens         []OpenRecord `json:"opens"`  // by open number
	Ledger        Ledger       `json:"ledger"`
	Problems      []string     `json:"problems,omitempty"`
}

// Ledger is what the wallets hold for one envelope.
type Ledger struct {
	SumCents int64    `json:"sum_cents"` // of the entries present
	Entries  int      `json:"entries"`   // present
	Missing  []string `json:"missing,omitempty"`
}

// OK reports whether the books balance.
func (b Book) OK() bool { return len(b.Problems) == 0 }

// Books reads envelope id's books from Redis and checks them. It returns
// ErrNotFound for an unknown envelope. It is read-only; call it on settled
// envelopes (after the refund) for the ledger to be final.
func Books(ctx context.Context, rdb redis.UniversalClient, id string) (Book, error) {
	e, found, err := lua.ReadEnvelope(ctx, rdb, id, true)
	if err != nil {
		return Book{}, fmt.Errorf("%w: %w", ErrRedis, err)
	}
	if !found {
		return Book{}, ErrNotFound
	}
	b := Book{ID: id, SenderID: e.Sender, TotalCents: e.TotalCents, Count: e.Count, State: e.State,
		CreatedAt: time.UnixMilli(e.CreatedMs).UTC(), ExpiresAt: time.UnixMilli(e.ExpiresMs).UTC(),
		Opened: e.Opened, OpenedCents: e.OpenedCents, Left: e.Left, LeftCents: e.LeftCents,
		RefundedCents: e.RefundedCents, Undone: e.Undone, Opens: []OpenRecord{}}
	bad := func(format string, args ...any) { b.Problems = append(b.Problems, fmt.Sprintf(format, args...)) }

	var openSum int64
	seqs := map[int64]bool{}
	for user, rec := range e.Opens {
		o, err := ParseOpenRecord(user, rec)
		if err != nil {
			bad("%v", err)
			continue
		}
		if o.AmountCents < 1 {
			bad("user %s opened %d cents (< 1)", user, o.AmountCents)
		}
		if seqs[o.Seq] {
			bad("open number %d recorded twice", o.Seq)
		}
		seqs[o.Seq] = true
		openSum += o.AmountCents
		b.Opens = append(b.Opens, o)
	}
	sort.Slice(b.Opens, func(i, j int) bool { return b.Opens[i].Seq < b.Opens[j].Seq })
	var listSum int64
	for _, s := range e.Shares {
		a, err := strconv.ParseInt(s, 10, 64)
		if err != nil || a < 1 {
			bad("unopened share %q is not ≥ 1 cent", s)
		}
		listSum += a
	}

	if b.OpenedCents+b.LeftCents+b.RefundedCents != b.TotalCents {
		bad("opened %d + unopened %d + refunded %d != total %d", b.OpenedCents, b.LeftCents, b.RefundedCents, b.TotalCents)
	}
	if openSum != b.OpenedCents || int64(len(b.Opens)) != b.Opened {
		bad("%d open records summing to %d, books say %d opens of %d", len(b.Opens), openSum, b.Opened, b.OpenedCents)
	}
	if listSum != b.LeftCents || int64(len(e.Shares)) != b.Left {
		bad("%d shares in Redis summing to %d, books say %d of %d", len(e.Shares), listSum, b.Left, b.LeftCents)
	}
	switch b.State {
	case lua.EnvStateOpen:
		if b.Opened+b.Left != b.Count {
			bad("opened %d + unopened %d shares != count %d", b.Opened, b.Left, b.Count)
		}
		if b.RefundedCents != 0 {
			bad("open envelope has refunded %d", b.RefundedCents)
		}
	case lua.EnvStateRefunded:
		if b.Left != 0 || b.RefundedCents != b.TotalCents-b.OpenedCents {
			bad("refunded %d with %d shares left, want total - opened = %d", b.RefundedCents, b.Left, b.TotalCents-b.OpenedCents)
		}
	default:
		bad("unknown state %q", b.State)
	}

	if err := b.checkLedger(ctx, rdb, bad); err != nil {
		return Book{}, err
	}
	return b, nil
}

func (b *Book) checkLedger(ctx context.Context, rdb redis.UniversalClient, bad func(string, ...any)) error {
	credits, err := implied(ctx, rdb, b.ID)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrRedis, err)
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(credits))
	for i, c := range credits {
		cmds[i] = pipe.HGet(ctx, lua.WalletKeysFor(c.User).Entries, c.Entry.ID)
	}
	refund := pipe.HGet(ctx, lua.WalletKeysFor(b.SenderID).Entries, wallet.RefundID(b.ID))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read ledger of envelope %q: %w: %w", b.ID, ErrRedis, err)
	}
	for i, c := range credits {
		amount, _, ok := wallet.ParseEntry(cmds[i].Val())
		if !ok {
			b.Ledger.Missing = append(b.Ledger.Missing, c.User+" "+c.Entry.ID)
			continue
		}
		if amount != c.Entry.Amount {
			bad("wallet of %s holds %s = %d, the envelope says %d", c.User, c.Entry.ID, amount, c.Entry.Amount)
		}
		b.Ledger.Entries++
		b.Ledger.SumCents += amount
	}
	if b.State == lua.EnvStateRefunded {
		if len(b.Ledger.Missing) > 0 {
			bad("refunded, but wallet entries are missing: %v", b.Ledger.Missing)
		}
		if b.Ledger.SumCents != 0 {
			bad("ledger entries sum to %d after the refund, want 0", b.Ledger.SumCents)
		}
	} else if refund.Val() != "" {
		bad("sender holds a refund entry of an envelope that is not refunded")
	}
	return nil
}

// List returns the ids of envelopes whose deadline is in [from, to]
// (zero times: unbounded), for reconcile.
func List(ctx context.Context, rdb redis.UniversalClient, from, to time.Time) ([]string, error) {
	lo, hi := "-inf", "+inf"
	if !from.IsZero() {
		lo = strconv.FormatInt(from.UnixMilli(), 10)
	}
	if !to.IsZero() {
		hi = strconv.FormatInt(to.UnixMilli(), 10)
	}
	ids, err := rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: lua.EnvelopesKey, Start: lo, Stop: hi, ByScore: true}).Result()
	if err != nil {
		return nil, fmt.Errorf("list envelopes: %w", err)
	}
	return ids, nil
}

// Get returns an envelope's books, for GET /v1/envelopes/{id}.
func (s *Service) Get(ctx context.Context, id string) (Book, error) {
	if !flashsale.ValidID(id) {
		return Book{}, ErrNotFound
	}
	ctx, cancel := context.WithTimeout(ctx, 2*s.cfg.RedisTimeout)
	defer cancel()
	return Books(ctx, s.rdb, id)
}
