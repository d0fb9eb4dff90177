package lua_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
)

// The buy script per sold unit, by batch size: what coalescing saves.
func BenchmarkBuyScript(b *testing.B) {
	rdb := testenv.StartRedis(b, false).Client(b)
	ctx := context.Background()
	n := 0 // users are never reused, across runs of one sub-benchmark too
	for _, batch := range []int{1, 16, 64, 256} {
		id := fmt.Sprintf("bench%d", batch)
		if ok, err := lua.CreateSale(ctx, rdb, id, []any{"stock", 1_000_000_000, "per_user_limit", 1,
			"pay_timeout_ms", time.Minute.Milliseconds(), "starts_at_ms", 0, "ends_at_ms", 0}); err != nil || !ok {
			b.Fatal(ok, err)
		}
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			users := make([]string, batch)
			res := make([]int64, 0, batch)
			b.ResetTimer()
			for i := 0; i < b.N; i += batch {
				for j := range users {
					n++
					users[j] = fmt.Sprint("u", n)
				}
				r, err := lua.Buy(ctx, rdb, id, "n1", users, res)
				if err != nil || r.Results[0] <= 0 {
					b.Fatal(r, err)
				}
			}
		})
	}
}
