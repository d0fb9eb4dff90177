package lua

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed wallet_apply.lua
	walletApplySrc string
	walletApply    = redis.NewScript(walletApplySrc)
)

// WalletKeys are the Redis keys of one user's wallet, under {wallet:USER}.
type WalletKeys struct {
	Meta    string // hash: balance, entries
	Entries string // hash: entry id -> "amount|applied_ms"
	Recent  string // list: entry ids, newest first, capped
}

// WalletKeysFor returns the keys of user's wallet.
func WalletKeysFor(user string) WalletKeys {
	p := "fs:{wallet:" + user + "}:"
	return WalletKeys{Meta: p + "meta", Entries: p + "entries", Recent: p + "recent"}
}

// Entry is one ledger entry: a signed amount under an id that names what it
// pays for, e.g. "open:env:ID".
type Entry struct {
	ID     string
	Amount int64
}

// WalletApply applies entries to user's wallet, each at most once: an entry
// id already in the wallet changes nothing. This is what makes the wallet
// half of a cross-item step (take a share, then credit it) safe to retry and
// to repair later from the item's record. It returns the balance and, per
// entry, whether it was applied by this call.
func WalletApply(ctx context.Context, rdb redis.Scripter, user string, recent int, entries []Entry) (balance int64, applied []bool, err error) {
	cmd := WalletApplyCmd(ctx, rdb, user, recent, entries)
	return WalletApplyResult(cmd, user, len(entries))
}

// WalletApplyCmd queues WalletApply on a pipeline (or runs it on a client);
// read its outcome with WalletApplyResult. One pipeline can thus credit many
// wallets in one round trip.
func WalletApplyCmd(ctx context.Context, rdb redis.Scripter, user string, recent int, entries []Entry) *redis.Cmd {
	k := WalletKeysFor(user)
	args := make([]any, 0, 1+2*len(entries))
	args = append(args, max(recent, 1))
	for _, e := range entries {
		args = append(args, e.ID, e.Amount)
	}
	return walletApply.Run(ctx, rdb, []string{k.Meta, k.Entries, k.Recent}, args...)
}

// WalletApplyResult decodes the reply of WalletApplyCmd.
func WalletApplyResult(cmd *redis.Cmd, user string, n int) (balance int64, applied []bool, err error) {
	v, err := cmd.Int64Slice()
	if err != nil {
		return 0, nil, fmt.Errorf("apply %d entries to wallet of %q: %w", n, user, err)
	}
	if len(v) != 1+n {
		return 0, nil, fmt.Errorf("apply %d entries to wallet of %q: reply %v", n, user, v)
	}
	applied = make([]bool, n)
	for i := range applied {
		applied[i] = v[1+i] == 1
	}
	return v[0], applied, nil
}
