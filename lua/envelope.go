package lua

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed env_create.lua
	envCreateSrc string
	//go:embed env_open.lua
	envOpenSrc string
	//go:embed env_undo.lua
	envUndoSrc string
	//go:embed env_refund.lua
	envRefundSrc string
)

var (
	envCreate = redis.NewScript(envCreateSrc)
	envOpen   = redis.NewScript(envOpenSrc)
	envUndo   = redis.NewScript(envUndoSrc)
	envRefund = redis.NewScript(envRefundSrc)
)

// EnvelopesKey is the sorted set of every envelope id scored by its refund
// deadline (ms). It is outside any envelope's hash tag, so it is written with
// its own command; the refund sweeper and reconcile read it.
const EnvelopesKey = "fs:envelopes"

// EnvelopeKeys are the Redis keys of one red envelope, all under the
// {env:ID} hash tag. The envelope's own record (meta + opened) is the source
// of truth for its money: wallet entries are derived from it and can be
// re-applied at any time (see WalletApply), so a credit lost between the two
// steps is repaired, never doubled.
type EnvelopeKeys struct {
	Meta   string // hash: sender, total, count, expires_at_ms, left, left_cents, seq, opened, opened_cents, state, refunded_cents, ...
	Shares string // list: unopened shares in cents, handed out from the head
	Opened string // hash: user id -> "amount|opened_ms|node|seq"
}

// EnvelopeKeysFor returns the keys of envelope id.
func EnvelopeKeysFor(id string) EnvelopeKeys {
	p := "fs:{env:" + id + "}:"
	return EnvelopeKeys{Meta: p + "meta", Shares: p + "shares", Opened: p + "opened"}
}

// EnvCreate stores a new envelope whose shares (in hand-out order) must sum
// to total, debiting total from sender's wallet in the same step under the
// ledger entry debitID. It reports created 1, 0 when the id is taken, or -1
// when the balance does not cover total (nothing written); the refund
// deadline on Redis's clock; and the sender's balance after. id must share
// the wallet's slot (EnvelopeIDForSender).
func EnvCreate(ctx context.Context, rdb redis.Scripter, id, sender, debitID string, recent int, total, ttlMs int64,
	shares []int64) (created int64, nowMs, expiresMs, balance int64, err error) {
	k, w := EnvelopeKeysFor(id), WalletKeysFor(sender)
	args := make([]any, 0, len(shares)+5)
	args = append(args, sender, total, ttlMs, debitID, max(recent, 1))
	for _, a := range shares {
		args = append(args, a)
	}
	v, err := envCreate.Run(ctx, rdb, []string{k.Meta, k.Shares, w.Meta, w.Entries, w.Recent}, args...).Int64Slice()
	if err != nil {
		return 0, 0, 0, 0, fmt.Errorf("create envelope %q: %w", id, err)
	}
	if len(v) != 4 {
		return 0, 0, 0, 0, fmt.Errorf("create envelope %q: reply %v", id, v)
	}
	return v[0], v[1], v[2], v[3], nil
}

// Envelope-level and per-opener codes of the open script.
const (
	OpenEmpty   = -1 // no share left
	OpenAlready = -2 // the user opened this envelope before
	OpenNone    = -5 // no such envelope
	OpenExpired = -6 // past the deadline, or refunded
	OpenVoid    = -9 // the batch was written off before it ran
)

// OpenReply is the outcome of one batch of openers.
type OpenReply struct {
	NowMs     int64
	Code      int64   // 0, OpenNone or OpenExpired
	SeqBefore int64   // the k-th success of the batch is open number SeqBefore + k
	Results   []int64 // per opener: amount in cents (> 0), OpenEmpty or OpenAlready
}

// EnvBatchKey is the record of one open batch (see env_open.lua).
func EnvBatchKey(id, batch string) string { return "fs:{env:" + id + "}:batch:" + batch }

// EnvOpen opens envelope id for users (one entry per opener, repeats
// allowed) in one atomic step, recording node on each open and the batch
// under EnvBatchKey(id, batch). After an error that is not a reply from
// Redis, resolve the batch with ResolveEnvBatch.
func EnvOpen(ctx context.Context, rdb redis.Scripter, id, node, batch string, users []string) (OpenReply, error) {
	k := EnvelopeKeysFor(id)
	args := make([]any, 0, len(users)+2)
	args = append(args, node, int64(BatchTTL/time.Second))
	for _, u := range users {
		args = append(args, u)
	}
	v, err := envOpen.Run(ctx, rdb, []string{k.Meta, k.Shares, k.Opened, EnvBatchKey(id, batch)}, args...).Int64Slice()
	if err != nil {
		return OpenReply{}, fmt.Errorf("open envelope %q: %w", id, err)
	}
	if len(v) < 2 {
		return OpenReply{}, fmt.Errorf("open envelope %q: short reply %v", id, v)
	}
	r := OpenReply{NowMs: v[0], Code: v[1]}
	if r.Code != 0 {
		return r, nil
	}
	if len(v) != 3+len(users) {
		return OpenReply{}, fmt.Errorf("open envelope %q: %d results for %d openers", id, len(v)-3, len(users))
	}
	r.SeqBefore, r.Results = v[2], v[3:]
	return r, nil
}

// ResolveEnvBatch settles an open batch whose reply was lost: written off if
// it never ran, or its opens undone (their openers were told 503). It
// returns the users whose open was undone. Safe to repeat.
func ResolveEnvBatch(ctx context.Context, rdb redis.Scripter, id, batch string) ([]string, error) {
	rec, err := VoidBatch(ctx, rdb, EnvBatchKey(id, batch))
	if err != nil {
		return nil, fmt.Errorf("resolve open batch %s of envelope %q: %w", batch, id, err)
	}
	list, ran := strings.CutPrefix(rec, "ran:")
	if !ran || list == "" {
		return nil, nil
	}
	users := strings.Split(list, ",")
	codes, err := EnvUndo(ctx, rdb, id, users)
	if err != nil {
		return nil, err
	}
	var undone []string
	for i, c := range codes {
		if c == UndoDone {
			undone = append(undone, users[i])
		}
	}
	return undone, nil
}

// Codes of the undo script, per user.
const (
	UndoDone = 1  // the share is back in the envelope
	UndoKept = 0  // the envelope was refunded meanwhile: the open stands
	UndoNone = -5 // no open of that user
)

// EnvUndo undoes the opens of users (whose envelope.opened events could not
// be published), returning one UndoDone/UndoKept/UndoNone per user.
func EnvUndo(ctx context.Context, rdb redis.Scripter, id string, users []string) ([]int64, error) {
	k := EnvelopeKeysFor(id)
	args := make([]any, len(users))
	for i, u := range users {
		args[i] = u
	}
	v, err := envUndo.Run(ctx, rdb, []string{k.Meta, k.Shares, k.Opened}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("undo opens of envelope %q: %w", id, err)
	}
	if len(v) != len(users) {
		return nil, fmt.Errorf("undo opens of envelope %q: %d codes for %d users", id, len(v), len(users))
	}
	return v, nil
}

// Refund modes and codes.
const (
	RefundExpire = "expire" // only at or after the deadline
	RefundAbort  = "abort"  // now: the envelope could not be announced

	RefundDone   = 1
	RefundRepeat = 0
	RefundNone   = -5
	RefundNotDue = -8
)

// EnvRefund closes envelope id and reports the unopened rest handed back to
// the sender: code RefundDone (now) or RefundRepeat (before; value is what
// was refunded then), RefundNone, or RefundNotDue (value: the deadline, ms).
func EnvRefund(ctx context.Context, rdb redis.Scripter, id, mode string) (nowMs, code, value int64, err error) {
	k := EnvelopeKeysFor(id)
	v, err := envRefund.Run(ctx, rdb, []string{k.Meta, k.Shares}, mode).Int64Slice()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("refund envelope %q: %w", id, err)
	}
	if len(v) != 3 {
		return 0, 0, 0, fmt.Errorf("refund envelope %q: reply %v", id, v)
	}
	return v[0], v[1], v[2], nil
}
