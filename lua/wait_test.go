package lua_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

// Invariant: through lua.Replicated a script's reply counts only once a
// replica has it; with the replica frozen the same buy returns
// ErrNotReplicated (in doubt), and resolving the batch undoes its order.
func TestReplicatedWaitsForTheReplica(t *testing.T) {
	s := testenv.StartSentinel(t, testenv.SentinelOptions{Replicas: 1, Sentinels: 1})
	master := s.Servers[0].Client(t)
	rdb := lua.WithReplicas(master, 1, 200*time.Millisecond)
	ctx := context.Background()
	newSale(t, master, "w", 10, 1, time.Minute)

	if _, err := lua.Buy(ctx, rdb, "w", "n1", newBatch(), []string{"u1"}, nil); err != nil {
		t.Fatalf("buy with the replica up: %v", err)
	}
	replica := s.Servers[1]
	replica.Pause()
	batch := newBatch()
	_, err := lua.Buy(ctx, rdb, "w", "n1", batch, []string{"u2"}, nil)
	if !errors.Is(err, lua.ErrNotReplicated) {
		t.Fatalf("buy with the replica frozen: %v, want ErrNotReplicated", err)
	}
	replica.Resume()
	var undone []int64
	for i := 0; ; i++ {
		// The resolver retries until its own writes are replicated.
		if undone, _, err = lua.ResolveBatch(ctx, rdb, "w", batch); err == nil || i > 50 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || len(undone) != 1 {
		t.Fatalf("resolve: %v %v, want the one order undone", undone, err)
	}
	b := books(t, master, "w")
	if b["remaining"] != "9" || b["pending"] != "1" || b["aborted"] != "1" {
		t.Fatalf("books %v: want remaining 9, pending 1, aborted 1", b)
	}
	// The replica has the same books: nothing acknowledged lives only on the master.
	if err := master.Wait(ctx, 1, time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	rb := books(t, replica.Client(t), "w")
	if rb["remaining"] != b["remaining"] || rb["pending"] != b["pending"] {
		t.Fatalf("replica books %v, master %v", rb, b)
	}
}

// Invariant: on Redis Cluster every script of 30 sales runs on its slot's
// master (no CROSSSLOT, no MOVED) and waits for that master's replica.
func TestReplicatedOnRedisCluster(t *testing.T) {
	rc := testenv.StartRedisCluster(t, 3, 1, 0)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRetries: -1})
	t.Cleanup(func() { cc.Close() })
	rdb := lua.WithReplicas(cc, 1, 500*time.Millisecond)
	ctx := context.Background()
	owners := map[string]bool{}
	for i := range 30 {
		id := "c" + strconv.Itoa(i)
		ok, err := lua.CreateSale(ctx, rdb, id, []any{"name", id, "stock", 5, "price_cents", 1,
			"per_user_limit", 1, "pay_timeout_ms", 60000, "starts_at_ms", 0, "ends_at_ms", 0})
		if err != nil || !ok {
			t.Fatalf("create %s: %v %v", id, ok, err)
		}
		r, err := lua.Buy(ctx, rdb, id, "n1", newBatch(), []string{"a", "b", "a"}, nil)
		if err != nil || len(r.Results) != 3 || r.Results[0] != 1 || r.Results[1] != 2 || r.Results[2] != lua.BuyLimit {
			t.Fatalf("buy in %s: %+v %v", id, r, err)
		}
		if _, _, err := lua.Settle(ctx, rdb, id, lua.Pay, []int64{1}); err != nil {
			t.Fatal(err)
		}
		owners[rc.MasterOf(lua.KeysFor(id).Meta).Addr] = true
	}
	if len(owners) != 3 {
		t.Fatalf("30 sales on %d masters, want all 3", len(owners))
	}
}
