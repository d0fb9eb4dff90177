// Package wallet is the per-user ledger red envelopes and shake campaigns
// pay through: a balance in cents and one entry per movement of money, each
// keyed by an id that names what it pays for, so every entry is applied at
// most once however often it is retried or repaired.
//
// Money moves between two hash tags (an envelope's and a wallet's), which
// one Lua script may not span on Redis Cluster. So the item's own record is
// the source of truth, and its wallet entries are derived from it with
// lua.WalletApply (HSETNX of the entry id, then HINCRBY of the balance):
// applying them right away is the fast path, re-applying them all later is
// the repair, and neither can double a credit.
package wallet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

// Entry ids. Each names one movement of money; ids never contain '|'.
func SendID(envelope string) string   { return "send:env:" + envelope }
func OpenID(envelope string) string   { return "open:env:" + envelope }
func RefundID(envelope string) string { return "refund:env:" + envelope }
func WinID(winID string) string       { return "win:shake:" + winID }

// Entry is one applied ledger entry.
type Entry struct {
	ID        string    `json:"id"`
	Amount    int64     `json:"amount_cents"`
	AppliedAt time.Time `json:"applied_at"`
}

// Wallet is a user's balance and most recent entries, newest first.
type Wallet struct {
	UserID  string  `json:"user_id"`
	Balance int64   `json:"balance_cents"`
	Entries int64   `json:"entries"`
	Recent  []Entry `json:"recent"`
}

// Get reads a user's wallet with up to n recent entries. A user who never
// moved money has an empty wallet, not a 404.
func Get(ctx context.Context, rdb redis.UniversalClient, user string, n int) (Wallet, error) {
	k := lua.WalletKeysFor(user)
	pipe := rdb.Pipeline()
	meta := pipe.HMGet(ctx, k.Meta, "balance", "entries")
	ids := pipe.LRange(ctx, k.Recent, 0, int64(max(n, 1))-1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Wallet{}, fmt.Errorf("read wallet of %q: %w", user, err)
	}
	w := Wallet{UserID: user, Recent: []Entry{}}
	if v := meta.Val(); len(v) == 2 {
		w.Balance = toInt(v[0])
		w.Entries = toInt(v[1])
	}
	if len(ids.Val()) == 0 {
		return w, nil
	}
	recs, err := rdb.HMGet(ctx, k.Entries, ids.Val()...).Result()
	if err != nil {
		return Wallet{}, fmt.Errorf("read entries of %q: %w", user, err)
	}
	for i, id := range ids.Val() {
		s, _ := recs[i].(string)
		amount, at, ok := ParseEntry(s)
		if !ok {
			continue
		}
		w.Recent = append(w.Recent, Entry{ID: id, Amount: amount, AppliedAt: time.UnixMilli(at).UTC()})
	}
	return w, nil
}

// ParseEntry decodes a stored entry "amount|applied_ms".
func ParseEntry(s string) (amount, appliedMs int64, ok bool) {
	a, b, found := strings.Cut(s, "|")
	if !found {
		return 0, 0, false
	}
	amount, err1 := strconv.ParseInt(a, 10, 64)
	appliedMs, err2 := strconv.ParseInt(b, 10, 64)
	return amount, appliedMs, err1 == nil && err2 == nil
}

func toInt(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// Credit is one entry for one user's wallet.
type Credit struct {
	User  string
	Entry lua.Entry
}

// ApplyAll applies credits, grouping them by user and sending every wallet's
// script in one pipelined round trip; a wallet whose pipelined call failed
// (e.g. NOSCRIPT after a Redis restart) is retried alone. It returns how many
// entries were newly applied and the first error of a wallet that still
// failed; entries already present change nothing, so callers retry freely.
func ApplyAll(ctx context.Context, rdb redis.UniversalClient, recent int, credits []Credit) (applied int, err error) {
	if len(credits) == 0 {
		return 0, nil
	}
	var users []string
	by := map[string][]lua.Entry{}
	for _, c := range credits {
		if _, ok := by[c.User]; !ok {
			users = append(users, c.User)
		}
		by[c.User] = append(by[c.User], c.Entry)
	}
	var firstErr error
	if _, replicated := rdb.(*lua.Replicated); replicated {
		// Each wallet's script must be followed by WAIT on its own master
		// (wallets of different users live on different cluster masters):
		// one call each, through the wrapper.
		for _, u := range users {
			_, ok, err := lua.WalletApply(ctx, rdb, u, recent, by[u])
			if err != nil && firstErr == nil {
				firstErr = err
			}
			for _, a := range ok {
				if a {
					applied++
				}
			}
		}
		return applied, firstErr
	}
	pipe := rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(users))
	for i, u := range users {
		cmds[i] = lua.WalletApplyCmd(ctx, pipe, u, recent, by[u])
	}
	_, _ = pipe.Exec(ctx) // per-command errors are read below
	for i, u := range users {
		_, ok, err := lua.WalletApplyResult(cmds[i], u, len(by[u]))
		if err != nil {
			_, ok, err = lua.WalletApply(ctx, rdb, u, recent, by[u])
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		for _, a := range ok {
			if a {
				applied++
			}
		}
	}
	return applied, firstErr
}

// CreditID is the ledger entry of an admin credit with reference ref.
func CreditID(ref string) string { return "credit:" + ref }

var errReferenceReused = flashsale.Errorf(flashsale.ECONFLICT, "this reference was used for a credit of another amount")

// AddFunds adds cents to user's wallet once per reference: the same
// reference again changes nothing and reports applied false (the same
// reference with another amount is a conflict). Money enters wallets only
// this way. It returns the balance after.
func AddFunds(ctx context.Context, rdb redis.UniversalClient, user, ref string, cents int64, recent int) (applied bool, balance int64, err error) {
	id := CreditID(ref)
	balance, ok, err := lua.WalletApply(ctx, rdb, user, recent, []lua.Entry{{ID: id, Amount: cents}})
	if err != nil {
		return false, 0, fmt.Errorf("credit wallet of %q: %w: %w", user, errUnavailable, err)
	}
	if ok[0] {
		return true, balance, nil
	}
	prev, err := rdb.HGet(ctx, lua.WalletKeysFor(user).Entries, id).Result()
	if err != nil {
		return false, 0, fmt.Errorf("read credit %q of %q: %w: %w", ref, user, errUnavailable, err)
	}
	if amount, _, _ := ParseEntry(prev); amount != cents {
		return false, balance, errReferenceReused
	}
	return false, balance, nil
}

var errUnavailable = flashsale.Errorf(flashsale.EUNAVAILABLE, "wallet unavailable; retry shortly")
