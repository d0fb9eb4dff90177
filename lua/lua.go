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
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed create_sale.lua
	createSaleSrc string
	//go:embed buy.lua
	buySrc string
	//go:embed settle.lua
	settleSrc string
	//go:embed archive.lua
	archiveSrc string
	//go:embed batch_void.lua
	batchVoidSrc string
)

var (
	createSale = redis.NewScript(createSaleSrc)
	buy        = redis.NewScript(buySrc)
	settle     = redis.NewScript(settleSrc)
	archive    = redis.NewScript(archiveSrc)
	batchVoid  = redis.NewScript(batchVoidSrc)
)

// SalesIndexKey is the set of every sale id. It is outside any sale's hash
// tag, so it is written with its own command, never from a script.
const SalesIndexKey = "fs:sales"

// SaleKeys are the Redis keys of one sale. All share the {sale:ID} hash tag.
type SaleKeys struct {
	Meta      string // hash: settings and books
	Users     string // hash: user id -> "n1,n2" active (pending or paid) order numbers; their number is the count against the limit
	Orders    string // hash: order number -> record
	Deadlines string // zset: "first-last" order-number ranges, one per batch, by deadline (ms)
	Idem      string // hash: "k|user|key" -> order number (Idempotency-Key); "c|N" -> 1 once a repeat answered N
	IdemExp   string // zset: "N|user|key" by pay deadline (ms): when a key is forgotten
	Outbox    string // hash: "<n>:<status>" -> "<settled_ms>|<payment id or empty>|<record>", transitions whose event is not yet on Kafka
}

// ParseDeadlineRange parses a member of SaleKeys.Deadlines: "first-last", the
// orders one buy batch created (consecutive numbers, one deadline), or a lone
// order number.
func ParseDeadlineRange(member string) (first, last int64, err error) {
	a, b, ok := strings.Cut(member, "-")
	if !ok {
		b = a
	}
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || first <= 0 || last < first {
		return 0, 0, fmt.Errorf("deadline index entry %q: want first-last order numbers", member)
	}
	return first, last, nil
}

// BatchKey is the record of one buy batch (see buy.lua): "ran:<orders>" once
// the batch ran, "void" when it was written off before it could.
func BatchKey(sale, batch string) string { return "fs:{sale:" + sale + "}:batch:" + batch }

// KeysFor returns the keys of sale id.
func KeysFor(id string) SaleKeys {
	p := "fs:{sale:" + id + "}:"
	return SaleKeys{Meta: p + "meta", Users: p + "users", Orders: p + "orders", Deadlines: p + "deadlines",
		Idem: p + "idem", IdemExp: p + "idemexp", Outbox: p + "outbox"}
}

func (k SaleKeys) settle() []string { return []string{k.Meta, k.Users, k.Orders, k.Idem, k.Outbox} }

// OutboxField is the field of SaleKeys.Outbox for order n's move to status.
func OutboxField(n int64, status byte) string {
	return strconv.FormatInt(n, 10) + ":" + string(status)
}

// OutboxEntry is one transition waiting in a sale's outbox.
type OutboxEntry struct {
	Field     string // the hash field, to delete once published
	Order     int64
	SettledMs int64  // Redis clock at the transition
	Payment   string // the payment id that paid it (order.paid only)
	Record    Record
}

// ParseOutboxEntry decodes a field and value of SaleKeys.Outbox.
func ParseOutboxEntry(field, value string) (OutboxEntry, error) {
	ns, st, ok := strings.Cut(field, ":")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || n <= 0 || len(st) != 1 {
		return OutboxEntry{}, fmt.Errorf("malformed outbox field %q", field)
	}
	ts, rest, ok := strings.Cut(value, "|")
	settled, err := strconv.ParseInt(ts, 10, 64)
	payment, rest, ok2 := strings.Cut(rest, "|")
	if !ok || !ok2 || err != nil {
		return OutboxEntry{}, fmt.Errorf("malformed outbox entry %q", value)
	}
	r, err := ParseRecord(rest)
	if err != nil {
		return OutboxEntry{}, err
	}
	if r.Status != st[0] {
		return OutboxEntry{}, fmt.Errorf("outbox field %q holds a record of status %c", field, r.Status)
	}
	return OutboxEntry{Field: field, Order: n, SettledMs: settled, Payment: payment, Record: r}, nil
}

// Load sends every script to the server with SCRIPT LOAD, so the first
// requests of a sale do not all pay for EVAL. Optional: Run reloads on demand.
func Load(ctx context.Context, rdb redis.Scripter) error {
	for _, s := range []*redis.Script{createSale, buy, settle, archive, envCreate, envOpen, envUndo, envRefund,
		walletApply, shakeCreate, shakeTake, shakeUndo, batchVoid, payScript} {
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
	BuyTicketUsed = -6 // the buyer's waiting-room ticket already bought an order that stands
	BuyNotStarted = -3
	BuyEnded      = -4
	BuyNoSale     = -5
	BuyVoid       = -9 // the batch was written off before it ran
)

// BatchTTL is how long a batch record lives: longer than any reply can be
// late and than the in-doubt resolver needs once Redis answers again (it
// retries every 200 ms; measured, a lost reply is resolved within one retry
// of Redis coming back), so a written-off batch can never run afterwards.
// It bounds the Redis outage a lost reply survives: a record gone before
// its node could ask leaves that batch's orders to the sweeper. At ~500
// batches a second of ~120 bytes each, 30 s is ~2 MB of live records where
// 10 minutes was ~36 MB.
const BatchTTL = 30 * time.Second

// SaleArchived reports whether sale id's records were archived (moved to
// the order store); see ArchiveSale.
func SaleArchived(ctx context.Context, rdb redis.Cmdable, id string) (bool, error) {
	ok, err := rdb.HExists(ctx, KeysFor(id).Meta, "archived_at_ms").Result()
	if err != nil {
		return false, fmt.Errorf("sale %q archived?: %w", id, err)
	}
	return ok, nil
}

// ArchiveSale drops sale id's per-order and per-buyer state (orders, user
// slots, deadline index, outbox, Idempotency-Keys, payment ids, waiting-room
// buyers) and marks it archived, if its order sequence is still seq,
// nothing is pending, the outbox is empty and no Idempotency-Key still names
// an order inside its pay window; see archive.lua. The meta hash
// (settings and counters) stays as the tombstone.
func ArchiveSale(ctx context.Context, rdb redis.Scripter, id string, seq, nowMs int64) (bool, error) {
	k := KeysFor(id)
	wr := RoomKeysFor(id)
	n, err := archive.Run(ctx, rdb, []string{k.Meta, k.Users, k.Orders, k.Deadlines, k.Outbox,
		k.Idem, k.IdemExp, PaymentsKey(id), wr.Buyers, wr.Used}, seq, nowMs).Int()
	if err != nil {
		return false, fmt.Errorf("archive sale %q: %w", id, err)
	}
	return n == 1, nil
}

// BuyReply is the outcome of one batch of buyers.
type BuyReply struct {
	NowMs      int64   // Redis clock when the batch ran
	DeadlineMs int64   // pay deadline of every order created by the batch
	SaleCode   int64   // 0 when the sale is open, else BuyNotStarted, BuyEnded or BuyNoSale
	Results    []int64 // per buyer: order number (> 0) or BuySoldOut / BuyLimit / BuyTicketUsed
	// Repeats lists the buyers whose Idempotency-Key named a live order:
	// Results[I] is that order (created earlier, or by another buyer of
	// this batch), which this batch did not create.
	Repeats []BuyRepeat
}

// BuyRepeat is a buyer answered with the order its Idempotency-Key names.
type BuyRepeat struct {
	I          int   // index of the buyer
	DeadlineMs int64 // that order's pay deadline
}

// Buy settles users (one entry per buyer, repeats allowed) against sale id in
// one atomic step, recording node on each order and the batch under
// BatchKey(id, batch). results, when it has enough capacity, is reused for
// the reply's Results. When it returns an error other than a script error,
// the batch may or may not have run: resolve it with ResolveBatch.
func Buy(ctx context.Context, rdb redis.Scripter, id, node, batch string, users []string, results []int64) (BuyReply, error) {
	return BuyKeyed(ctx, rdb, id, node, batch, users, nil, results)
}

// ValidIdempotencyKey reports whether k may be an Idempotency-Key: 1-64
// characters of [A-Za-z0-9_.:@-] (a UUID fits; "," and "|" never do, the
// scripts use them as separators).
func ValidIdempotencyKey(k string) bool {
	if len(k) == 0 || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' || c == ':' || c == '@') {
			return false
		}
	}
	return true
}

// BuyKeyed is Buy with an Idempotency-Key per buyer: keys is nil or has one
// entry per user ("" for a buyer without a key; others must pass
// ValidIdempotencyKey). A buyer whose key already names a live order of
// this user gets that order back (listed in Repeats) instead of a new one.
func BuyKeyed(ctx context.Context, rdb redis.Scripter, id, node, batch string, users, keys []string, results []int64) (BuyReply, error) {
	return BuyTicketed(ctx, rdb, id, node, batch, users, keys, nil, results)
}

// BuyTicketed is BuyKeyed with a waiting-room ticket number per buyer:
// tickets is nil or has one entry per user (0 for a buyer without one). A
// ticket buys once: a buyer whose ticket already bought an order that
// stands gets BuyTicketUsed, and nothing changes for them; a sale marks the
// ticket with its order in the same atomic step. Only an aborted order (its
// buyer was told no) frees the ticket again, so a "no" leaves nothing
// behind and nothing has to be given back.
func BuyTicketed(ctx context.Context, rdb redis.Scripter, id, node, batch string, users, keys []string, tickets, results []int64) (BuyReply, error) {
	size := len(users)
	for _, u := range users {
		size += len(u)
	}
	joined := make([]byte, 0, size)
	for i, u := range users {
		if i > 0 {
			joined = append(joined, ',')
		}
		joined = append(joined, u...)
	}
	var keyArg []byte
	for i, kk := range keys {
		if kk == "" {
			continue
		}
		if len(keyArg) > 0 {
			keyArg = append(keyArg, ',')
		}
		keyArg = strconv.AppendInt(keyArg, int64(i+1), 10)
		keyArg = append(keyArg, ':')
		keyArg = append(keyArg, kk...)
	}
	var ticketArg []byte
	for i, n := range tickets {
		if n <= 0 {
			continue
		}
		if len(ticketArg) > 0 {
			ticketArg = append(ticketArg, ',')
		}
		ticketArg = strconv.AppendInt(ticketArg, int64(i+1), 10)
		ticketArg = append(ticketArg, ':')
		ticketArg = strconv.AppendInt(ticketArg, n, 10)
	}
	k := KeysFor(id)
	v, err := buy.Run(ctx, rdb, []string{k.Meta, k.Users, k.Orders, k.Deadlines, BatchKey(id, batch), k.Idem, k.IdemExp,
		RoomKeysFor(id).Used}, node, int64(BatchTTL/time.Second), joined, keyArg, ticketArg).Slice()
	if err != nil {
		return BuyReply{}, fmt.Errorf("buy script for sale %q: %w", id, err)
	}
	if len(v) < 3 {
		return BuyReply{}, fmt.Errorf("buy script for sale %q: short reply %v", id, v)
	}
	var r BuyReply
	r.NowMs, _ = v[0].(int64)
	r.DeadlineMs, _ = v[1].(int64)
	r.SaleCode, _ = v[2].(int64)
	r.Results = results[:0]
	if r.SaleCode != 0 {
		return r, nil
	}
	list, _ := v[3].(string)
	for len(list) > 0 {
		var f string
		f, list, _ = strings.Cut(list, ",")
		if rest, ok := strings.CutPrefix(f, "d"); ok {
			on, dl, _ := strings.Cut(rest, ":")
			n, err1 := strconv.ParseInt(on, 10, 64)
			d, err2 := strconv.ParseInt(dl, 10, 64)
			if err1 != nil || err2 != nil || n <= 0 {
				return BuyReply{}, fmt.Errorf("buy script for sale %q: bad repeat %q", id, f)
			}
			r.Repeats = append(r.Repeats, BuyRepeat{I: len(r.Results), DeadlineMs: d})
			r.Results = append(r.Results, n)
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return BuyReply{}, fmt.Errorf("buy script for sale %q: bad result %q", id, f)
		}
		r.Results = append(r.Results, n)
	}
	if len(r.Results) != len(users) {
		return BuyReply{}, fmt.Errorf("buy script for sale %q: %d results for %d buyers", id, len(r.Results), len(users))
	}
	return r, nil
}

// ResolveBatch settles a batch whose reply was lost. If the batch never ran,
// it writes the batch off so it never will, and reports no orders. If it
// ran, it aborts the orders it created (nobody was told of them: undone)
// except those a repeat of their Idempotency-Key was answered with (kept):
// those stand, and since their batch never reached Kafka, each gets an
// outbox entry "<n>:p" from which its order.created is published (see
// AbortUnsent). Safe to repeat: after a failover it runs against whichever
// master answers, which holds the batch only if a replica had it.
func ResolveBatch(ctx context.Context, rdb redis.Scripter, sale, batch string) (undone, kept []int64, err error) {
	list, err := claimBatch(ctx, rdb, BatchKey(sale, batch))
	if err != nil || len(list) == 0 {
		return nil, nil, err
	}
	orders := make([]int64, len(list))
	for i, f := range list {
		if orders[i], err = strconv.ParseInt(f, 10, 64); err != nil {
			return nil, nil, fmt.Errorf("batch %s of sale %q: bad record %q", batch, sale, f)
		}
	}
	_, res, err := Settle(ctx, rdb, sale, AbortUnsent, orders)
	if err != nil {
		return nil, nil, err
	}
	for i, r := range res {
		if r.Code == SettleClaimed {
			kept = append(kept, orders[i])
		} else {
			undone = append(undone, orders[i])
		}
	}
	return undone, kept, nil
}

// claimBatch is the first step of resolving every kind of batch (buy, open,
// take) whose reply was lost: it writes the batch record off (VoidBatch), so
// a batch that never ran never will (its script sees the record and does
// nothing), and otherwise returns what the batch's record says it made —
// nothing for a batch written off before, or that made nothing.
func claimBatch(ctx context.Context, rdb redis.Scripter, key string) ([]string, error) {
	rec, err := VoidBatch(ctx, rdb, key)
	if err != nil {
		return nil, fmt.Errorf("resolve batch %s: %w", key, err)
	}
	list, ran := strings.CutPrefix(rec, "ran:")
	if !ran || list == "" {
		return nil, nil
	}
	return strings.Split(list, ","), nil
}

// SaleOrders reads every order record of sale by order number, the limit
// slots of every user (SaleKeys.Users values; see HeldCount) and the
// sale's order sequence (how many orders it ever numbered), for an audit.
// It reads whole hashes: it is for reconcile, never for a hot path.
func SaleOrders(ctx context.Context, rdb redis.UniversalClient, sale string) (map[int64]Record, map[string]string, int64, error) {
	k := KeysFor(sale)
	raw, err := rdb.HGetAll(ctx, k.Orders).Result()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("orders of %q: %w", sale, err)
	}
	held, err := rdb.HGetAll(ctx, k.Users).Result()
	if err != nil {
		return nil, nil, 0, fmt.Errorf("users of %q: %w", sale, err)
	}
	seq, err := rdb.HGet(ctx, k.Meta, "seq").Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, nil, 0, fmt.Errorf("order sequence of %q: %w", sale, err)
	}
	recs := make(map[int64]Record, len(raw))
	for f, v := range raw {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("orders of %q: bad order number %q", sale, f)
		}
		if recs[n], err = ParseRecord(v); err != nil {
			return nil, nil, 0, err
		}
	}
	return recs, held, seq, nil
}

// UserOrders returns the live orders (pending or paid) of user in sale, as
// listed in SaleKeys.Users, with their records. An order whose record is
// missing is left out.
func UserOrders(ctx context.Context, rdb redis.UniversalClient, sale, user string) ([]int64, []Record, error) {
	k := KeysFor(sale)
	list, err := rdb.HGet(ctx, k.Users, user).Result()
	if errors.Is(err, redis.Nil) || list == "" && err == nil {
		return nil, nil, nil
	} else if err != nil {
		return nil, nil, fmt.Errorf("orders of a user in sale %q: %w", sale, err)
	}
	fields := strings.Split(list, ",")
	vals, err := rdb.HMGet(ctx, k.Orders, fields...).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("orders of a user in sale %q: %w", sale, err)
	}
	var nums []int64
	var recs []Record
	for i, v := range vals {
		sv, ok := v.(string)
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if !ok || err != nil {
			continue
		}
		r, err := ParseRecord(sv)
		if err != nil {
			return nil, nil, err
		}
		nums = append(nums, n)
		recs = append(recs, r)
	}
	return nums, recs, nil
}

// HeldCount returns how many active orders a SaleKeys.Users value lists.
func HeldCount(v string) int64 {
	if v == "" {
		return 0
	}
	return int64(strings.Count(v, ",") + 1)
}

// Settle actions.
const (
	Pay    = "pay"
	Cancel = "cancel"
	Expire = "expire" // only at or after the deadline
	Abort  = "abort"  // the order could not be made durable: undo it now
	// AbortUnsent is Abort of orders whose order.created is known not to
	// be on Kafka: an order it must keep (claimed) gets an outbox entry
	// "<n>:p" in the same step, from which its creation is published.
	AbortUnsent = "abort_unsent"
	// Claim marks a live order as answered to a repeat of its
	// Idempotency-Key, so a late Abort of its first attempt keeps it.
	Claim = "claim"
)

// Per-order codes of the settle script.
const (
	SettleDone     = 1
	SettleRepeat   = 0
	SettleNotFound = -5
	SettleExpired  = -6
	SettleConflict = -7
	SettleNotDue   = -8
	SettleClaimed  = -10 // abort refused: a repeat was answered with this order
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
	v, err := settle.Run(ctx, rdb, KeysFor(id).settle(), args...).Slice()
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

// SaleState is what a node needs of a sale to sell it: what Redis has left
// and the selling window (0: none), on Redis's clock.
type SaleState struct {
	Remaining, StartsMs, EndsMs int64
}

// LoadSaleState reads a sale's state; found is false when there is no such
// sale.
func LoadSaleState(ctx context.Context, rdb redis.Cmdable, id string) (st SaleState, found bool, err error) {
	v, err := rdb.HMGet(ctx, KeysFor(id).Meta, "remaining", "starts_at_ms", "ends_at_ms").Result()
	if err != nil {
		return SaleState{}, false, fmt.Errorf("load sale %q: %w", id, err)
	}
	if v[0] == nil {
		return SaleState{}, false, nil
	}
	return SaleState{Remaining: ToInt(v[0]), StartsMs: ToInt(v[1]), EndsMs: ToInt(v[2])}, true, nil
}

// SaleRemaining reads how many units of a sale Redis has left; found is
// false when there is no such sale.
func SaleRemaining(ctx context.Context, rdb redis.Cmdable, id string) (n int64, found bool, err error) {
	return hgetInt(ctx, rdb, KeysFor(id).Meta, "remaining")
}

// hgetInt reads one integer field of a hash; found is false when it is
// missing.
func hgetInt(ctx context.Context, rdb redis.Cmdable, key, field string) (int64, bool, error) {
	n, err := rdb.HGet(ctx, key, field).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	} else if err != nil {
		return 0, false, fmt.Errorf("read %s of %s: %w", field, key, err)
	}
	return n, true, nil
}

// ToInt reads an integer from a Redis reply value (a bulk string, or an
// integer); anything else, nil included, is 0. The one parser of HMGET
// replies.
func ToInt(v any) int64 {
	switch x := v.(type) {
	case string:
		n, _ := strconv.ParseInt(x, 10, 64)
		return n
	case int64:
		return x
	}
	return 0
}

// VoidBatch writes off the batch recorded under key unless it already ran,
// in one script (so, like every book change, it waits for the replicas on a
// *Replicated client). It returns the record: "void" when the batch never
// ran (and now never will), else what the batch stored ("ran:...").
func VoidBatch(ctx context.Context, rdb redis.Scripter, key string) (string, error) {
	return batchVoid.Run(ctx, rdb, []string{key}, int64(BatchTTL/time.Second)).Text()
}
