package lua

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed shake_create.lua
	shakeCreateSrc string
	//go:embed shake_take.lua
	shakeTakeSrc string
)

var (
	shakeCreate = redis.NewScript(shakeCreateSrc)
	shakeTake   = redis.NewScript(shakeTakeSrc)
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
)

// TakeReply is the outcome of one batch of would-be winners.
type TakeReply struct {
	NowMs       int64
	Code        int64 // 0, TakeNone or TakeNotStarted
	Released    int64 // released so far, by Redis's clock
	TakenBefore int64 // the k-th winner of the batch has win number TakenBefore + k
	Results     []int64
}

// Shaker is one would-be winner: a user and a random draw in [0, 2^31).
type Shaker struct {
	User string
	Draw int64
}

// ShakeTake confirms shakers against campaign id atomically.
func ShakeTake(ctx context.Context, rdb redis.Scripter, id, node string, shakers []Shaker) (TakeReply, error) {
	k := ShakeKeysFor(id)
	args := make([]any, 0, 1+2*len(shakers))
	args = append(args, node)
	for _, s := range shakers {
		args = append(args, s.User, s.Draw)
	}
	v, err := shakeTake.Run(ctx, rdb, []string{k.Meta, k.Wins, k.Users}, args...).Int64Slice()
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
