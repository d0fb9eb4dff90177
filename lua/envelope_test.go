package lua_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

func envMeta(t *testing.T, rdb *redis.Client, id string) map[string]int64 {
	t.Helper()
	m, err := rdb.HGetAll(context.Background(), lua.EnvelopeKeysFor(id).Meta).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for k, v := range m {
		n, _ := strconv.ParseInt(v, 10, 64)
		out[k] = n
	}
	return out
}

func newEnvelope(t *testing.T, rdb *redis.Client, id string, ttl time.Duration, shares ...int64) int64 {
	t.Helper()
	var total int64
	for _, s := range shares {
		total += s
	}
	fund(t, rdb, "sender", total)
	ok, _, exp, _, err := lua.EnvCreate(context.Background(), rdb, id, "sender", "send:env:"+id, 20, total, ttl.Milliseconds(), shares)
	if err != nil || ok != 1 {
		t.Fatalf("create envelope %s: %v %v", id, ok, err)
	}
	return exp
}

var fundSeq int

// fund credits cents to user's wallet: a send needs the balance.
func fund(t *testing.T, rdb *redis.Client, user string, cents int64) {
	t.Helper()
	fundSeq++
	if _, _, err := lua.WalletApply(context.Background(), rdb, user, 20,
		[]lua.Entry{{ID: fmt.Sprintf("credit:test%d", fundSeq), Amount: cents}}); err != nil {
		t.Fatal(err)
	}
}

// A send the balance does not cover writes nothing: no envelope, no debit;
// one it covers debits exactly the total in the same step.
func TestEnvCreateDebitsTheSender(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	fund(t, rdb, "poor", 99)
	c, _, _, bal, err := lua.EnvCreate(ctx, rdb, "e1", "poor", "send:env:e1", 20, 100, 1000, []int64{50, 50})
	if err != nil || c != -1 || bal != 99 {
		t.Fatalf("uncovered send: created %d balance %d err %v", c, bal, err)
	}
	if n, _ := rdb.Exists(ctx, lua.EnvelopeKeysFor("e1").Meta, lua.EnvelopeKeysFor("e1").Shares).Result(); n != 0 {
		t.Fatal("a refused send left the envelope behind")
	}
	c, _, _, bal, err = lua.EnvCreate(ctx, rdb, "e1", "poor", "send:env:e1", 20, 99, 1000, []int64{49, 50})
	if err != nil || c != 1 || bal != 0 {
		t.Fatalf("covered send: created %d balance %d err %v", c, bal, err)
	}
	if v, _ := rdb.HGet(ctx, lua.WalletKeysFor("poor").Meta, "balance").Int64(); v != 0 {
		t.Fatalf("balance %d after sending all of it", v)
	}
}

func TestEnvCreateChecksTheSplitAndNeverResets(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	fund(t, rdb, "s", 1000)
	if _, _, _, _, err := lua.EnvCreate(ctx, rdb, "bad", "s", "send:env:bad", 20, 10, 1000, []int64{5, 4}); err == nil {
		t.Fatal("shares summing to 9 accepted for a total of 10")
	}
	if _, _, _, _, err := lua.EnvCreate(ctx, rdb, "bad", "s", "send:env:bad", 20, 10, 1000, []int64{10, 0}); err == nil {
		t.Fatal("a 0-cent share accepted")
	}
	if n, _ := rdb.Exists(ctx, lua.EnvelopeKeysFor("bad").Meta).Result(); n != 0 {
		t.Fatal("a refused envelope left keys behind")
	}
	newEnvelope(t, rdb, "e", time.Minute, 3, 7)
	ok, _, _, _, err := lua.EnvCreate(ctx, rdb, "e", "s", "send:env:e2", 20, 100, 1000, []int64{100})
	if err != nil || ok != 0 {
		t.Fatalf("second create: %v %v, want refused", ok, err)
	}
	if m := envMeta(t, rdb, "e"); m["total"] != 10 || m["left"] != 2 {
		t.Fatalf("live envelope changed by a second create: %v", m)
	}
	// More shares than one unpack can take.
	big := make([]int64, 2500)
	for i := range big {
		big[i] = 1
	}
	newEnvelope(t, rdb, "big", time.Minute, big...)
	if n, _ := rdb.LLen(ctx, lua.EnvelopeKeysFor("big").Shares).Result(); n != 2500 {
		t.Fatalf("%d shares stored, want 2500", n)
	}
}

// One batch: fresh users, a repeat, more openers than shares.
func TestEnvOpenBatch(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	newEnvelope(t, rdb, "e", time.Minute, 5, 1, 4)
	r, err := lua.EnvOpen(context.Background(), rdb, "e", "n1", newBatch(), []string{"a", "a", "b", "c", "d", "b"})
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{5, lua.OpenAlready, 1, 4, lua.OpenEmpty, lua.OpenAlready}
	if fmt.Sprint(r.Results) != fmt.Sprint(want) || r.SeqBefore != 0 {
		t.Fatalf("results = %v (seq %d), want %v", r.Results, r.SeqBefore, want)
	}
	m := envMeta(t, rdb, "e")
	if m["left"] != 0 || m["left_cents"] != 0 || m["opened"] != 3 || m["opened_cents"] != 10 || m["seq"] != 3 {
		t.Fatalf("books: %v", m)
	}
	// Already opened beats empty.
	r, _ = lua.EnvOpen(context.Background(), rdb, "e", "n1", newBatch(), []string{"c", "z"})
	if fmt.Sprint(r.Results) != fmt.Sprint([]int64{lua.OpenAlready, lua.OpenEmpty}) || r.SeqBefore != 3 {
		t.Fatalf("after empty: %+v", r)
	}
	if r, _ := lua.EnvOpen(context.Background(), rdb, "nope", "n1", newBatch(), []string{"a"}); r.Code != lua.OpenNone {
		t.Fatalf("unknown envelope: %+v", r)
	}
}

// The last share goes once, however many race for it.
func TestEnvLastShareOnce(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	newEnvelope(t, rdb, "l", time.Minute, 7)
	var wg sync.WaitGroup
	var mu sync.Mutex
	won := 0
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r, err := lua.EnvOpen(context.Background(), rdb, "l", "n1", newBatch(), []string{fmt.Sprint("u", i)})
			if err != nil {
				t.Error(err)
				return
			}
			if r.Results[0] > 0 {
				mu.Lock()
				won++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if m := envMeta(t, rdb, "l"); won != 1 || m["opened_cents"] != 7 || m["left"] != 0 {
		t.Fatalf("won=%d books=%v", won, m)
	}
}

// Expiry: no open after the deadline; refund once, with the exact rest;
// opened + refunded = total.
func TestEnvExpiredAndRefundOnce(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	exp := newEnvelope(t, rdb, "x", 300*time.Millisecond, 2, 3, 5)
	if r, _ := lua.EnvOpen(ctx, rdb, "x", "n1", newBatch(), []string{"a"}); r.Results[0] != 2 {
		t.Fatalf("open: %+v", r)
	}
	if _, code, v, _ := lua.EnvRefund(ctx, rdb, "x", lua.RefundExpire); code != lua.RefundNotDue || v != exp {
		t.Fatalf("refund before the deadline: %d %d", code, v)
	}
	time.Sleep(time.Until(time.UnixMilli(exp)) + 20*time.Millisecond)
	if r, _ := lua.EnvOpen(ctx, rdb, "x", "n1", newBatch(), []string{"b"}); r.Code != lua.OpenExpired {
		t.Fatalf("open after the deadline: %+v", r)
	}
	if _, code, v, _ := lua.EnvRefund(ctx, rdb, "x", lua.RefundExpire); code != lua.RefundDone || v != 8 {
		t.Fatalf("refund: %d %d, want done 8", code, v)
	}
	if _, code, v, _ := lua.EnvRefund(ctx, rdb, "x", lua.RefundExpire); code != lua.RefundRepeat || v != 8 {
		t.Fatalf("refund twice: %d %d, want repeat 8", code, v)
	}
	m := envMeta(t, rdb, "x")
	if m["opened_cents"]+m["refunded_cents"] != m["total"] || m["left_cents"] != 0 {
		t.Fatalf("books after refund: %v", m)
	}
	if n, _ := rdb.Exists(ctx, lua.EnvelopeKeysFor("x").Shares).Result(); n != 0 {
		t.Fatal("shares still there after the refund")
	}
	if _, code, _, _ := lua.EnvRefund(ctx, rdb, "none", lua.RefundExpire); code != lua.RefundNone {
		t.Fatalf("refund unknown: %d", code)
	}
}

// Undo puts the exact share back; after a refund an open stands.
func TestEnvUndo(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	newEnvelope(t, rdb, "u", time.Minute, 4, 6)
	lua.EnvOpen(ctx, rdb, "u", "n1", newBatch(), []string{"a", "b"})
	codes, err := lua.EnvUndo(ctx, rdb, "u", []string{"a", "nobody"})
	if err != nil || fmt.Sprint(codes) != fmt.Sprint([]int64{lua.UndoDone, lua.UndoNone}) {
		t.Fatalf("undo: %v %v", codes, err)
	}
	if m := envMeta(t, rdb, "u"); m["left"] != 1 || m["left_cents"] != 4 || m["opened"] != 1 || m["opened_cents"] != 6 || m["undone"] != 1 {
		t.Fatalf("after undo: %v", m)
	}
	if r, _ := lua.EnvOpen(ctx, rdb, "u", "n1", newBatch(), []string{"a"}); r.Results[0] != 4 || r.SeqBefore != 2 {
		t.Fatalf("reopen after undo: %+v", r)
	}
	lua.EnvRefund(ctx, rdb, "u", lua.RefundAbort)
	if codes, _ := lua.EnvUndo(ctx, rdb, "u", []string{"b"}); codes[0] != lua.UndoKept {
		t.Fatalf("undo after refund: %v", codes)
	}
	if m := envMeta(t, rdb, "u"); m["opened_cents"] != 10 || m["refunded_cents"] != 0 {
		t.Fatalf("after refund: %v", m)
	}
}

func TestWalletApplyOnce(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	bal, applied, err := lua.WalletApply(ctx, rdb, "u", 2, []lua.Entry{{"send:env:a", -10}, {"open:env:b", 3}, {"open:env:b", 3}})
	if err != nil || bal != -7 || fmt.Sprint(applied) != "[true true false]" {
		t.Fatalf("apply: %d %v %v", bal, applied, err)
	}
	bal, applied, _ = lua.WalletApply(ctx, rdb, "u", 2, []lua.Entry{{"open:env:b", 3}, {"refund:env:a", 4}})
	if bal != -3 || fmt.Sprint(applied) != "[false true]" {
		t.Fatalf("repeat: %d %v", bal, applied)
	}
	k := lua.WalletKeysFor("u")
	if ids, _ := rdb.LRange(ctx, k.Recent, 0, -1).Result(); fmt.Sprint(ids) != "[refund:env:a open:env:b]" {
		t.Fatalf("recent = %v", ids)
	}
	if n, _ := rdb.HLen(ctx, k.Entries).Result(); n != 3 {
		t.Fatalf("%d entries", n)
	}
}

func TestShakeTake(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	now := time.Now().UnixMilli()
	// Started 10 s ago at 1/s: 10 released of 12.
	ok, _, err := lua.ShakeCreate(ctx, rdb, "s", lua.ShakeSettings{Total: 12, RatePerSec: 1, StartsMs: now - 10_000,
		Mode: "split", Budget: 1200, MaxWins: 3})
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if ok, _, _ := lua.ShakeCreate(ctx, rdb, "s", lua.ShakeSettings{Total: 1, RatePerSec: 1, Mode: "split", Budget: 1}); ok {
		t.Fatal("second create accepted")
	}
	var shakers []lua.Shaker
	for i := 0; i < 5; i++ {
		shakers = append(shakers, lua.Shaker{User: "greedy", Draw: int64(i * 7919)})
	}
	for i := 0; i < 10; i++ {
		shakers = append(shakers, lua.Shaker{User: fmt.Sprint("u", i), Draw: int64(i * 104729)})
	}
	r, err := lua.ShakeTake(ctx, rdb, "s", "n1", shakers)
	if err != nil {
		t.Fatal(err)
	}
	if r.Released < 10 || r.Released > 11 || r.TakenBefore != 0 {
		t.Fatalf("released %d (taken before %d), want 10", r.Released, r.TakenBefore)
	}
	wins, capped, none := 0, 0, 0
	var paid int64
	for _, v := range r.Results {
		switch {
		case v > 0:
			wins++
			paid += v
		case v == lua.TakeCap:
			capped++
		case v == lua.TakeNotReleased:
			none++
		}
	}
	if wins != int(r.Released) || capped != 2 || wins+capped+none != 15 {
		t.Fatalf("results %v: wins %d capped %d none %d", r.Results, wins, capped, none)
	}
	m, _ := rdb.HGetAll(ctx, lua.ShakeKeysFor("s").Meta).Result()
	if m["taken"] != fmt.Sprint(wins) || m["paid_cents"] != fmt.Sprint(paid) {
		t.Fatalf("meta %v, wins %d paid %d", m, wins, paid)
	}
	// Drain to the end: the split is exact to the cent.
	time.Sleep(2100 * time.Millisecond)
	for {
		r, err = lua.ShakeTake(ctx, rdb, "s", "n1", []lua.Shaker{{User: "late1", Draw: 5}, {User: "late2", Draw: 99}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Results[0] == lua.TakeExhausted {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	m, _ = rdb.HGetAll(ctx, lua.ShakeKeysFor("s").Meta).Result()
	if m["taken"] != "12" || m["paid_cents"] != "1200" || m["left_cents"] != "0" {
		t.Fatalf("exhausted campaign: %v", m)
	}
	all, _ := rdb.HGetAll(ctx, lua.ShakeKeysFor("s").Wins).Result()
	if len(all) != 12 {
		t.Fatalf("%d win records", len(all))
	}
	// Not started; unknown.
	lua.ShakeCreate(ctx, rdb, "later", lua.ShakeSettings{Total: 5, RatePerSec: 1, StartsMs: now + 3_600_000, Mode: "range", Min: 1, Max: 9})
	if r, _ := lua.ShakeTake(ctx, rdb, "later", "n1", []lua.Shaker{{User: "a"}}); r.Code != lua.TakeNotStarted {
		t.Fatalf("not started: %+v", r)
	}
	if r, _ := lua.ShakeTake(ctx, rdb, "nope", "n1", []lua.Shaker{{User: "a"}}); r.Code != lua.TakeNone {
		t.Fatalf("unknown: %+v", r)
	}
}

func TestShakeRangeAmounts(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	lua.ShakeCreate(ctx, rdb, "r", lua.ShakeSettings{Total: 100, RatePerSec: 1000, StartsMs: time.Now().UnixMilli() - 60_000,
		Mode: "range", Min: 5, Max: 8})
	var sh []lua.Shaker
	for i := 0; i < 100; i++ {
		sh = append(sh, lua.Shaker{User: fmt.Sprint("u", i), Draw: int64(i)})
	}
	r, _ := lua.ShakeTake(ctx, rdb, "r", "n1", sh)
	seen := map[int64]bool{}
	for _, v := range r.Results {
		if v < 5 || v > 8 {
			t.Fatalf("amount %d outside [5, 8]", v)
		}
		seen[v] = true
	}
	if len(seen) != 4 {
		t.Fatalf("amounts seen: %v", seen)
	}
}

// An open batch whose reply was lost is written off before it runs, or its
// opens are undone (the shares go back), as with buy batches.
func TestResolveEnvBatch(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	fund(t, rdb, "boss", 10)
	if ok, _, _, _, err := lua.EnvCreate(ctx, rdb, "rb", "boss", "send:env:rb", 20, 10, time.Hour.Milliseconds(), []int64{3, 3, 4}); err != nil || ok != 1 {
		t.Fatalf("create: %v %v", ok, err)
	}
	if _, err := lua.EnvOpen(ctx, rdb, "rb", "n1", "ran", []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	users, err := lua.ResolveEnvBatch(ctx, rdb, "rb", "ran")
	if err != nil || len(users) != 2 {
		t.Fatalf("resolve a batch that ran: %v %v", users, err)
	}
	if left, _ := rdb.HGet(ctx, lua.EnvelopeKeysFor("rb").Meta, "left").Int64(); left != 3 {
		t.Fatalf("left = %d after undoing both opens, want 3", left)
	}
	if _, err := lua.ResolveEnvBatch(ctx, rdb, "rb", "late"); err != nil {
		t.Fatal(err)
	}
	if r, err := lua.EnvOpen(ctx, rdb, "rb", "n1", "late", []string{"c"}); err != nil || r.Code != lua.OpenVoid {
		t.Fatalf("a written-off open batch ran: %+v %v", r, err)
	}
}
