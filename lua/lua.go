// Package lua holds flashsale's Redis Lua scripts and the Go wrappers that
// call them and turn their replies into typed results.
//
// Every script works on the keys of one item, which share one hash tag —
// {sale:ID}, {env:ID}, {shake:ID} or {wallet:USER} — so each call is legal on
// Redis Cluster. A step that spans two items (taking an envelope share and
// crediting the opener's wallet) is two scripts, made safe by idempotence:
// see EnvelopeKeys and WalletApply. Scripts are sent once
// per connection pool with EVALSHA; go-redis falls back to EVAL (which loads
// the script) when the server answers NOSCRIPT, e.g. after a Redis restart.
package lua

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed create_sale.lua
	createSaleSrc string
	//go:embed buy.lua
	buySrc string
	//go:embed settle.lua
	settleSrc string
)

var (
	createSale = redis.NewScript(createSaleSrc)
	buy        = redis.NewScript(buySrc)
	settle     = redis.NewScript(settleSrc)
)

// SalesIndexKey is the set of every sale id. It is outside any sale's hash
// tag, so it is written with its own command, never from a script.
const SalesIndexKey = "fs:sales"

// SaleKeys are the Redis keys of one sale. All share the {sale:ID} hash tag.
type SaleKeys struct {
	Meta      string // hash: settings and books
	Users     string // hash: user id -> active orders
	Orders    string // hash: order number -> record
	Deadlines string // zset: pending order numbers by deadline (ms)
}

// KeysFor returns the keys of sale id.
func KeysFor(id string) SaleKeys {
	p := "fs:{sale:" + id + "}:"
	return SaleKeys{Meta: p + "meta", Users: p + "users", Orders: p + "orders", Deadlines: p + "deadlines"}
}

func (k SaleKeys) all() []string { return []string{k.Meta, k.Users, k.Orders, k.Deadlines} }

// Load sends every script to the server with SCRIPT LOAD, so the first
// requests of a sale do not all pay for EVAL. Optional: Run reloads on demand.
func Load(ctx context.Context, rdb redis.Scripter) error {
	for _, s := range []*redis.Script{createSale, buy, settle, envCreate, envOpen, envUndo, envRefund,
		walletApply, shakeCreate, shakeTake} {
		if err := s.Load(ctx, rdb).Err(); err != nil {
			return fmt.Errorf("load lua script: %w", err)
		}
	}
	return nil
}

// CreateSale stores a new sale with the given settings (field/value pairs;
// "stock" is required). It reports false when a sale with that id exists.
func CreateSale(ctx context.Context, rdb redis.Scripter, id string, fields []any) (bool, error) {
	n, err := createSale.Run(ctx, rdb, []string{KeysFor(id).Meta}, fields...).Int()
	if err != nil {
		return false, fmt.Errorf("create sale %q: %w", id, err)
	}
	return n == 1, nil
}

// Sale-level and per-buyer codes of the buy script.
const (
	BuySoldOut    = -1 // no unit left
	BuyLimit      = -2 // the user already holds per_user_limit orders
	BuyNotStarted = -3
	BuyEnded      = -4
	BuyNoSale     = -5
)

// BuyReply is the outcome of one batch of buyers.
type BuyReply struct {
	NowMs      int64   // Redis clock when the batch ran
	DeadlineMs int64   // pay deadline of every order created by the batch
	SaleCode   int64   // 0 when the sale is open, else BuyNotStarted, BuyEnded or BuyNoSale
	Results    []int64 // per buyer: order number (> 0) or BuySoldOut / BuyLimit
}

// Buy settles users (one entry per buyer, repeats allowed) against sale id in
// one atomic step, recording node on each order. results, when it has enough
// capacity, is reused for the reply's Results.
func Buy(ctx context.Context, rdb redis.Scripter, id, node string, users []string, results []int64) (BuyReply, error) {
	args := make([]any, 0, len(users)+1)
	args = append(args, node)
	for _, u := range users {
		args = append(args, u)
	}
	v, err := buy.Run(ctx, rdb, KeysFor(id).all(), args...).Int64Slice()
	if err != nil {
		return BuyReply{}, fmt.Errorf("buy script for sale %q: %w", id, err)
	}
	if len(v) < 3 {
		return BuyReply{}, fmt.Errorf("buy script for sale %q: short reply %v", id, v)
	}
	r := BuyReply{NowMs: v[0], DeadlineMs: v[1], SaleCode: v[2], Results: results[:0]}
	if r.SaleCode != 0 {
		return r, nil
	}
	if len(v)-3 != len(users) {
		return BuyReply{}, fmt.Errorf("buy script for sale %q: %d results for %d buyers", id, len(v)-3, len(users))
	}
	r.Results = append(r.Results, v[3:]...)
	return r, nil
}

// Settle actions.
const (
	Pay    = "pay"
	Cancel = "cancel"
	Expire = "expire" // only at or after the deadline
	Abort  = "abort"  // the order could not be made durable: undo it now
)

// Per-order codes of the settle script.
const (
	SettleDone     = 1
	SettleRepeat   = 0
	SettleNotFound = -5
	SettleExpired  = -6
	SettleConflict = -7
	SettleNotDue   = -8
)

// Status letters stored in an order record.
const (
	StatusPending   = 'p'
	StatusPaid      = 'y'
	StatusCancelled = 'c'
	StatusExpired   = 'x'
	StatusAborted   = 'a'
)

// Record is an order as stored in Redis.
type Record struct {
	Status     byte
	DeadlineMs int64
	CreatedMs  int64
	Node       string
	User       string
}

// ParseRecord decodes "status|deadline_ms|created_ms|node|user".
func ParseRecord(s string) (Record, error) {
	parts := strings.SplitN(s, "|", 5)
	if len(parts) != 5 || len(parts[0]) != 1 {
		return Record{}, fmt.Errorf("malformed order record %q", s)
	}
	d, err1 := strconv.ParseInt(parts[1], 10, 64)
	c, err2 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil {
		return Record{}, fmt.Errorf("malformed order record %q", s)
	}
	return Record{Status: parts[0][0], DeadlineMs: d, CreatedMs: c, Node: parts[3], User: parts[4]}, nil
}

// SettleResult is the outcome for one order.
type SettleResult struct {
	Code   int64
	Record Record // zero when Code is SettleNotFound
}

// Settle applies action to the given order numbers of sale id atomically.
// It returns Redis's clock and one result per order, in order.
func Settle(ctx context.Context, rdb redis.Scripter, id, action string, orders []int64) (nowMs int64, res []SettleResult, err error) {
	args := make([]any, 0, len(orders)+1)
	args = append(args, action)
	for _, n := range orders {
		args = append(args, n)
	}
	v, err := settle.Run(ctx, rdb, KeysFor(id).all(), args...).Slice()
	if err != nil {
		return 0, nil, fmt.Errorf("settle (%s) in sale %q: %w", action, id, err)
	}
	if len(v) != 1+2*len(orders) {
		return 0, nil, fmt.Errorf("settle (%s) in sale %q: reply of %d items for %d orders", action, id, len(v), len(orders))
	}
	nowMs, _ = v[0].(int64)
	res = make([]SettleResult, len(orders))
	for i := range orders {
		code, _ := v[1+2*i].(int64)
		res[i].Code = code
		if s, _ := v[2+2*i].(string); s != "" {
			if res[i].Record, err = ParseRecord(s); err != nil {
				return 0, nil, fmt.Errorf("settle (%s) in sale %q: %w", action, id, err)
			}
		}
	}
	return nowMs, res, nil
}
