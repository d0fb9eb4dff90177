package lua

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed shake_create.lua
	shakeCreateSrc string
	//go:embed shake_take.lua
	shakeTakeSrc string
	//go:embed shake_undo.lua
	shakeUndoSrc string
)

var (
	shakeCreate = redis.NewScript(shakeCreateSrc)
	shakeTake   = redis.NewScript(shakeTakeSrc)
	shakeUndo   = redis.NewScript(shakeUndoSrc)
)

// ShakesKey is the set of every shake campaign id (outside any hash tag).
const ShakesKey = "fs:shakes"

// ShakeKeys are the Redis keys of one shake campaign, under {shake:ID}.
type ShakeKeys struct {
	Meta  string // hash: total, rate, starts_at_ms, mode, budget, min, max, max_wins, taken, paid_cents, left_cents
	Wins  string // hash: win number -> "user|amount|won_ms|node"
	Users string // hash: user id -> wins
}

// ShakeKeysFor returns the keys of campaign id.
func ShakeKeysFor(id string) ShakeKeys {
	p := "fs:{shake:" + id + "}:"
	return ShakeKeys{Meta: p + "meta", Wins: p + "wins", Users: p + "users"}
}

// ShakeSettings are a campaign's settings as the create script stores them.
type ShakeSettings struct {
	Total      int64
	RatePerSec int64
	StartsMs   int64  // 0: now
	Mode       string // "split" or "range"
	Budget     int64  // split
	Min, Max   int64  // range
	MaxWins    int64  // 0: no cap
}

// ShakeCreate stores a campaign; it reports false when the id is taken, and
// the start on Redis's clock.
func ShakeCreate(ctx context.Context, rdb redis.Scripter, id string, s ShakeSettings) (created bool, startsMs int64, err error) {
	v, err := shakeCreate.Run(ctx, rdb, []string{ShakeKeysFor(id).Meta}, s.Total, s.RatePerSec, s.StartsMs,
		s.Mode, s.Budget, s.Min, s.Max, s.MaxWins).Int64Slice()
	if err != nil {
		return false, 0, fmt.Errorf("create shake %q: %w", id, err)
	}
	if len(v) != 3 {
		return false, 0, fmt.Errorf("create shake %q: reply %v", id, v)
	}
	return v[0] == 1, v[2], nil
}

// Campaign-level and per-shaker codes of the take script.
const (
	TakeNotReleased = -1 // nothing released right now (taken = released)
	TakeCap         = -2 // the user has max_wins wins
	TakeNotStarted  = -3
	TakeExhausted   = -4 // taken = total
	TakeNone        = -5
	TakeVoid        = -9 // the batch was written off before it ran
)

// TakeReply is the outcome of one batch of would-be winners.
type TakeReply struct {
	NowMs       int64
	Code        int64 // 0, TakeNone, TakeNotStarted or TakeVoid
	Released    int64 // released so far, by Redis's clock
	TakenBefore int64 // the k-th winner of the batch has win number TakenBefore + k (numbers of undone wins are not reused)
	Results     []int64
}

// Shaker is one would-be winner: a user and a random draw in [0, 2^31).
type Shaker struct {
	User string
	Draw int64
}

// ShakeBatchKey is the record of one take batch (see shake_take.lua).
func ShakeBatchKey(id, batch string) string { return "fs:{shake:" + id + "}:batch:" + batch }

// ShakeTake confirms shakers against campaign id atomically, recording node
// on each win and the batch under ShakeBatchKey(id, batch). After an error
// that is not a reply from Redis, resolve the batch with ResolveShakeBatch.
func ShakeTake(ctx context.Context, rdb redis.Scripter, id, node, batch string, shakers []Shaker) (TakeReply, error) {
	k := ShakeKeysFor(id)
	args := make([]any, 0, 2+2*len(shakers))
	args = append(args, node, int64(BatchTTL/time.Second))
	for _, s := range shakers {
		args = append(args, s.User, s.Draw)
	}
	v, err := shakeTake.Run(ctx, rdb, []string{k.Meta, k.Wins, k.Users, ShakeBatchKey(id, batch)}, args...).Int64Slice()
	if err != nil {
		return TakeReply{}, fmt.Errorf("shake %q: %w", id, err)
	}
	if len(v) < 3 {
		return TakeReply{}, fmt.Errorf("shake %q: short reply %v", id, v)
	}
	r := TakeReply{NowMs: v[0], Code: v[1], Released: v[2]}
	if r.Code != 0 {
		return r, nil
	}
	if len(v) != 4+len(shakers) {
		return TakeReply{}, fmt.Errorf("shake %q: %d results for %d shakers", id, len(v)-4, len(shakers))
	}
	r.TakenBefore, r.Results = v[3], v[4:]
	return r, nil
}

// ResolveShakeBatch settles a take batch whose reply was lost: written off
// if it never ran, or its wins undone (their shakers were told 503, and no
// credit was made for them). It returns the win numbers it undid. Safe to
// repeat.
func ResolveShakeBatch(ctx context.Context, rdb redis.Scripter, id, batch string) ([]int64, error) {
	list, err := claimBatch(ctx, rdb, ShakeBatchKey(id, batch))
	if err != nil || len(list) == 0 {
		return nil, err
	}
	nums := make([]int64, len(list))
	for i, f := range list {
		if nums[i], err = strconv.ParseInt(f, 10, 64); err != nil {
			return nil, fmt.Errorf("take batch %s of shake %q: bad record %q", batch, id, f)
		}
	}
	codes, err := ShakeUndo(ctx, rdb, id, nums)
	if err != nil {
		return nil, err
	}
	var undone []int64
	for i, c := range codes {
		if c == UndoDone {
			undone = append(undone, nums[i])
		}
	}
	return undone, nil
}

// ShakeUndo undoes wins of campaign id by number, returning one UndoDone or
// UndoNone per win.
func ShakeUndo(ctx context.Context, rdb redis.Scripter, id string, wins []int64) ([]int64, error) {
	k := ShakeKeysFor(id)
	args := make([]any, len(wins))
	for i, n := range wins {
		args[i] = n
	}
	v, err := shakeUndo.Run(ctx, rdb, []string{k.Meta, k.Wins, k.Users}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("undo wins of shake %q: %w", id, err)
	}
	if len(v) != len(wins) {
		return nil, fmt.Errorf("undo wins of shake %q: %d codes for %d wins", id, len(v), len(wins))
	}
	return v, nil
}

// ShakeState is what a node needs of a campaign to run it.
type ShakeState struct {
	Total, RatePerSec, StartsMs, Taken int64
}

// LoadShakeState reads a campaign's state; found is false when there is no
// such campaign.
func LoadShakeState(ctx context.Context, rdb redis.Cmdable, id string) (st ShakeState, found bool, err error) {
	v, err := rdb.HMGet(ctx, ShakeKeysFor(id).Meta, "total", "rate", "starts_at_ms", "taken").Result()
	if err != nil {
		return ShakeState{}, false, fmt.Errorf("load shake %q: %w", id, err)
	}
	if v[0] == nil {
		return ShakeState{}, false, nil
	}
	return ShakeState{Total: ToInt(v[0]), RatePerSec: ToInt(v[1]), StartsMs: ToInt(v[2]), Taken: ToInt(v[3])}, true, nil
}
