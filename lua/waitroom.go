package lua

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Fields of a sale's meta hash that define its waiting room (0: none).
const (
	FieldRoomAdmitPerSec = "wr_admit_per_sec"
	FieldRoomPreQueueMs  = "wr_pre_queue_ms"
)

var (
	//go:embed wr_tick.lua
	wrTickSrc string
	//go:embed wr_join.lua
	wrJoinSrc string

	wrTick = redis.NewScript(wrTickSrc)
	wrJoin = redis.NewScript(wrJoinSrc)
)

// RoomKeys are the keys of a sale's waiting room, in the sale's hash tag.
type RoomKeys struct {
	Meta   string // the sale
	Room   string // hash: seq, serving, pre, seed, last_ms, lease, lease_until
	Used   string // hash: ticket n -> the order it bought (buy.lua makes tickets single-use with it)
	Buyers string // hash: buyer -> ticket number
}

// RoomKeysFor returns the waiting-room keys of sale id.
func RoomKeysFor(id string) RoomKeys {
	k := KeysFor(id)
	p := "fs:{sale:" + id + "}:"
	return RoomKeys{Meta: k.Meta, Room: p + "wr", Used: p + "wr:used", Buyers: p + "wr:buyers"}
}

// RoomState is what wr_tick.lua reports.
type RoomState struct {
	Exists    bool
	Remaining int64
	Seq       int64  // tickets issued
	Serving   int64  // tickets admitted: ranks 1..Serving may buy
	Pre       int64  // tickets issued before the opening; -1 before it
	Seed      uint64 // the opening's shuffle
	NowMs     int64  // Redis's clock
}

// RoomTick runs one waiting-room step (see wr_tick.lua) and returns the
// room's state. seed is used only if this call opens the room.
func RoomTick(ctx context.Context, rdb redis.Scripter, id, node string, leaseMs int64, seed uint64) (RoomState, error) {
	k := RoomKeysFor(id)
	v, err := wrTick.Run(ctx, rdb, []string{k.Meta, k.Room}, node, leaseMs, strconv.FormatUint(seed, 10)).Slice()
	if err != nil {
		return RoomState{}, fmt.Errorf("waiting room tick of %q: %w", id, err)
	}
	if len(v) == 1 {
		return RoomState{}, nil
	}
	if len(v) != 6 {
		return RoomState{}, fmt.Errorf("waiting room tick of %q: %d values in reply", id, len(v))
	}
	n := func(i int) int64 { x, _ := v[i].(int64); return x }
	s, _ := v[4].(string)
	sd, _ := strconv.ParseUint(s, 10, 64)
	return RoomState{Exists: true, Remaining: n(0), Seq: n(1), Serving: n(2), Pre: n(3), Seed: sd, NowMs: n(5)}, nil
}

// Codes of RoomJoin besides a ticket number (> 0).
const (
	JoinSoldOut = -1 // the sale has no unit left: the room is closed until units come back
	JoinEnded   = -2
	JoinNoSale  = -3
)

// RoomJoin returns buyer's ticket number in sale id's room: the next one on
// a first join, the same one after — or JoinSoldOut, JoinEnded, JoinNoSale,
// read in the same step (see wr_join.lua).
func RoomJoin(ctx context.Context, rdb redis.Scripter, id, buyer string) (int64, error) {
	k := RoomKeysFor(id)
	n, err := wrJoin.Run(ctx, rdb, []string{k.Room, k.Buyers, k.Meta}, buyer).Int64()
	if err != nil {
		return 0, fmt.Errorf("join waiting room of %q: %w", id, err)
	}
	return n, nil
}
