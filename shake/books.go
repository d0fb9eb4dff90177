package shake

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/wallet"
	"github.com/redis/go-redis/v9"
)

// Book is one campaign's books, with every violation of the shake invariants
// reconcile checks listed in Problems:
//   - taken ≤ released ≤ total, released computed from Redis TIME and the rate;
//   - paid-out = the sum of the wins, one record per win, every amount ≥ 1
//     (and in [min, max] for a range campaign); a split campaign pays
//     exactly its budget once exhausted;
//   - no user above the cap of wins;
//   - every win is in its winner's wallet with its amount (Missing lists
//     those not yet credited; SettleLedger applies them).
type Book struct {
	ID          string    `json:"id"`
	Mode        string    `json:"mode"`
	Total       int64     `json:"total_envelopes"`
	RatePerSec  int64     `json:"rate_per_sec"`
	StartsAt    time.Time `json:"starts_at"`
	Now         time.Time `json:"now"` // Redis's clock when read
	Released    int64     `json:"released"`
	Taken       int64     `json:"taken"`
	Undone      int64     `json:"undone"` // wins undone because their batch's reply was lost
	PaidCents   int64     `json:"paid_cents"`
	BudgetCents int64     `json:"budget_cents,omitempty"`
	Wins        int64     `json:"wins"`
	WinsCents   int64     `json:"wins_cents"`
	Winners     int64     `json:"winners"`
	Ledger      struct {
		SumCents int64    `json:"sum_cents"`
		Missing  []string `json:"missing,omitempty"`
	} `json:"ledger"`
	Problems []string `json:"problems,omitempty"`
}

// OK reports whether the books balance.
func (b Book) OK() bool { return len(b.Problems) == 0 }

// WinRecord is one recorded win.
type WinRecord struct {
	N           int64
	UserID      string
	AmountCents int64
	WonMs       int64
	Node        string
}

// ParseWin decodes "user|amount|won_ms|node".
func ParseWin(n int64, s string) (WinRecord, error) {
	p := strings.Split(s, "|")
	if len(p) != 4 {
		return WinRecord{}, fmt.Errorf("%w: %q", errBadWin, s)
	}
	a, e1 := strconv.ParseInt(p[1], 10, 64)
	at, e2 := strconv.ParseInt(p[2], 10, 64)
	if e1 != nil || e2 != nil {
		return WinRecord{}, fmt.Errorf("%w: %q", errBadWin, s)
	}
	return WinRecord{N: n, UserID: p[0], AmountCents: a, WonMs: at, Node: p[3]}, nil
}

// Wins reads every win of a campaign, in win order, a page at a time.
func Wins(ctx context.Context, rdb redis.UniversalClient, id string) ([]WinRecord, error) {
	var out []WinRecord
	var cursor uint64
	for {
		kv, next, err := rdb.HScan(ctx, lua.ShakeKeysFor(id).Wins, cursor, "*", 1000).Result()
		if err != nil {
			return nil, fmt.Errorf("read wins of %q: %w", id, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			n, err := strconv.ParseInt(kv[i], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%w: win number %q", errBadWin, kv[i])
			}
			w, err := ParseWin(n, kv[i+1])
			if err != nil {
				return nil, err
			}
			out = append(out, w)
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N < out[j].N })
	return out, nil
}

// Books reads campaign id's books from Redis and checks them.
func Books(ctx context.Context, rdb redis.UniversalClient, id string) (Book, error) {
	r, found, err := lua.ReadShake(ctx, rdb, id)
	if err != nil {
		return Book{}, fmt.Errorf("%w: %w", ErrRedis, err)
	}
	if !found {
		return Book{}, ErrNotFound
	}
	now := r.Now
	b := Book{ID: id, Mode: r.Mode, Total: r.Total, RatePerSec: r.RatePerSec, StartsAt: time.UnixMilli(r.StartsMs).UTC(),
		Now: now.UTC(), Taken: r.Taken, Undone: r.Undone, PaidCents: r.PaidCents}
	if b.Mode == ModeSplit {
		b.BudgetCents = r.BudgetCents
	}
	b.Released = Released(b.Total, b.RatePerSec, r.StartsMs, now.UnixMilli())
	bad := func(format string, args ...any) { b.Problems = append(b.Problems, fmt.Sprintf(format, args...)) }

	wins, err := Wins(ctx, rdb, id)
	if err != nil {
		return Book{}, fmt.Errorf("%w: %w", ErrRedis, err)
	}
	perUser := map[string]int64{}
	lo, hi := r.MinCents, r.MaxCents
	// Win numbers count every win ever made, so they are 1..taken+undone
	// with a hole for each undone win (a campaign from before seq existed
	// has neither: lua.ShakeRecord.Seq is then taken+undone).
	seq := r.Seq
	if seq != b.Taken+b.Undone {
		bad("win numbers reached %d, but taken %d + undone %d", seq, b.Taken, b.Undone)
	}
	for i, w := range wins {
		if w.N < 1 || w.N > seq || i > 0 && w.N <= wins[i-1].N {
			bad("win numbers are not distinct numbers in 1..%d (found %d at %d)", seq, w.N, i+1)
			break
		}
	}
	for _, w := range wins {
		b.Wins++
		b.WinsCents += w.AmountCents
		perUser[w.UserID]++
		if w.AmountCents < 1 || b.Mode == ModeRange && (w.AmountCents < lo || w.AmountCents > hi) {
			bad("win %d of %d cents is out of range", w.N, w.AmountCents)
		}
	}
	b.Winners = int64(len(perUser))
	if !(b.Taken <= b.Released && b.Released <= b.Total) {
		bad("taken %d, released %d, total %d: want taken <= released <= total", b.Taken, b.Released, b.Total)
	}
	if b.Wins != b.Taken || b.WinsCents != b.PaidCents {
		bad("%d wins of %d cents recorded, books say taken %d paid %d", b.Wins, b.WinsCents, b.Taken, b.PaidCents)
	}
	if b.Mode == ModeSplit {
		if b.PaidCents+r.LeftCents != b.BudgetCents {
			bad("paid %d + left %d != budget %d", b.PaidCents, r.LeftCents, b.BudgetCents)
		}
		if b.Taken == b.Total && b.PaidCents != b.BudgetCents {
			bad("exhausted, but paid %d of a budget of %d", b.PaidCents, b.BudgetCents)
		}
	}
	for u, c := range r.Users {
		if v, _ := strconv.ParseInt(c, 10, 64); v != perUser[u] {
			bad("user %s: %s wins counted, %d recorded", u, c, perUser[u])
		}
	}
	if cap := r.MaxWins; cap > 0 {
		for u, c := range perUser {
			if c > cap {
				bad("user %s won %d times, cap %d", u, c, cap)
			}
		}
	}

	// The ledger: each win in its winner's wallet.
	for i := 0; i < len(wins); i += 1000 {
		page := wins[i:min(i+1000, len(wins))]
		pipe := rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(page))
		for j, w := range page {
			cmds[j] = pipe.HGet(ctx, lua.WalletKeysFor(w.UserID).Entries, wallet.WinID(winID(id, w.N)))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return Book{}, fmt.Errorf("read ledger of shake %q: %w: %w", id, ErrRedis, err)
		}
		for j, w := range page {
			a, _, ok := wallet.ParseEntry(cmds[j].Val())
			if !ok {
				b.Ledger.Missing = append(b.Ledger.Missing, w.UserID+" "+wallet.WinID(winID(id, w.N)))
				continue
			}
			if a != w.AmountCents {
				bad("wallet of %s holds %d for win %d of %d cents", w.UserID, a, w.N, w.AmountCents)
			}
			b.Ledger.SumCents += a
		}
	}
	return b, nil
}

// Released is how many envelopes a campaign has released at nowMs: the
// same formula as the take script, min(total, floor(rate × elapsed s)).
func Released(total, rate, startsMs, nowMs int64) int64 {
	if nowMs <= startsMs {
		return 0
	}
	return min(total, int64(float64(rate)*float64(nowMs-startsMs)/1000))
}

func winID(campaign string, n int64) string { return campaign + "." + strconv.FormatInt(n, 10) }

// SettleLedger applies every win of campaign id to its winner's wallet —
// a no-op for the wins already credited — and returns how many were missing.
// Safe to run at any time, on any node, as often as wanted.
func SettleLedger(ctx context.Context, rdb redis.UniversalClient, id string, recent int) (int, error) {
	wins, err := Wins(ctx, rdb, id)
	if err != nil {
		return 0, err
	}
	total := 0
	for i := 0; i < len(wins); i += 500 {
		var credits []wallet.Credit
		for _, w := range wins[i:min(i+500, len(wins))] {
			credits = append(credits, wallet.Credit{User: w.UserID, Entry: lua.Entry{ID: wallet.WinID(winID(id, w.N)), Amount: w.AmountCents}})
		}
		n, err := wallet.ApplyAll(ctx, rdb, recent, credits)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// List returns every campaign id, for reconcile.
func List(ctx context.Context, rdb redis.UniversalClient) ([]string, error) {
	ids, err := rdb.SMembers(ctx, lua.ShakesKey).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("list shakes: %w", err)
	}
	sort.Strings(ids)
	return ids, nil
}
