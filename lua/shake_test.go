package lua_test

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
)

// A take batch whose reply was lost is written off before it runs, or its
// wins are undone (the envelopes go back to the campaign, to the cent), as
// with buy and open batches; undone win numbers are not reused.
func TestResolveShakeBatch(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	if ok, _, err := lua.ShakeCreate(ctx, rdb, "rs", lua.ShakeSettings{Total: 12, RatePerSec: 1,
		StartsMs: time.Now().UnixMilli() - 10_000, Mode: "split", Budget: 1200}); err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	r, err := lua.ShakeTake(ctx, rdb, "rs", "n1", "ran", []lua.Shaker{{User: "a", Draw: 1}, {User: "b", Draw: 2}})
	if err != nil || r.Results[0] <= 0 || r.Results[1] <= 0 {
		t.Fatalf("take: %+v %v", r, err)
	}
	wins, err := lua.ResolveShakeBatch(ctx, rdb, "rs", "ran")
	if err != nil || len(wins) != 2 {
		t.Fatalf("resolve a batch that ran: %v %v", wins, err)
	}
	k := lua.ShakeKeysFor("rs")
	m, _ := rdb.HGetAll(ctx, k.Meta).Result()
	if m["taken"] != "0" || m["paid_cents"] != "0" || m["left_cents"] != "1200" || m["undone"] != "2" {
		t.Fatalf("after undoing both wins: %v", m)
	}
	if n, _ := rdb.HLen(ctx, k.Wins).Result(); n != 0 {
		t.Fatalf("%d win records left", n)
	}
	if a, _ := rdb.HGet(ctx, k.Users, "a").Int64(); a != 0 {
		t.Fatalf("user a holds %d wins", a)
	}
	if again, err := lua.ResolveShakeBatch(ctx, rdb, "rs", "ran"); err != nil || len(again) != 0 {
		t.Fatalf("resolving twice undid %v (%v)", again, err)
	}
	if _, err := lua.ResolveShakeBatch(ctx, rdb, "rs", "late"); err != nil {
		t.Fatal(err)
	}
	if r, err := lua.ShakeTake(ctx, rdb, "rs", "n1", "late", []lua.Shaker{{User: "c", Draw: 3}}); err != nil || r.Code != lua.TakeVoid {
		t.Fatalf("a written-off take batch ran: %+v %v", r, err)
	}
	r, err = lua.ShakeTake(ctx, rdb, "rs", "n1", "next", []lua.Shaker{{User: "c", Draw: 3}})
	if err != nil || r.TakenBefore != 2 || r.Results[0] <= 0 {
		t.Fatalf("the next win must be number 3: %+v %v", r, err)
	}
}
