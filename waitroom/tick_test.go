package waitroom

import (
	"context"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/stock"
)

// Invariant: the now-serving number advances at admit_per_sec (never past
// the tickets issued), the opening fixes the pre-queue once, and a second
// node without the lease only reads.
func TestTickAdvancesAtTheRate(t *testing.T) {
	rdb := testenv.StartRedis(t, false).Client(t)
	ctx := context.Background()
	// Far enough ahead that 200 joins fit before it on a loaded box.
	opens := time.Now().Add(3 * time.Second)
	if err := stock.CreateSale(ctx, rdb, flashsale.Sale{ID: "r", Stock: 1000, PerUserLimit: 1, PayTimeout: time.Minute,
		StartsAt: opens, WaitingRoom: flashsale.WaitingRoom{Enabled: true, AdmitPerSec: 50, PreQueue: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		if _, err := lua.RoomJoin(ctx, rdb, "r", "u"+string(rune('a'+i%26))+string(rune('a'+i/26))); err != nil {
			t.Fatal(err)
		}
	}
	st, err := lua.RoomTick(ctx, rdb, "r", "n1", 1000, 7)
	if err != nil || st.Pre != -1 || st.Seq != 200 {
		t.Fatalf("before the opening: %+v %v", st, err)
	}
	time.Sleep(time.Until(opens) + 10*time.Millisecond)
	st, _ = lua.RoomTick(ctx, rdb, "r", "n1", 1000, 8)
	if st.Pre != 200 || st.Seed != 8 || st.Serving != 0 {
		t.Fatalf("at the opening: %+v", st)
	}
	start := time.Now()
	for time.Since(start) < time.Second {
		time.Sleep(20 * time.Millisecond)
		if other, _ := lua.RoomTick(ctx, rdb, "r", "n2", 1000, 9); other.Seed != 8 {
			t.Fatalf("a node without the lease changed the room: %+v", other)
		}
		st, _ = lua.RoomTick(ctx, rdb, "r", "n1", 1000, 10)
	}
	el := time.Since(start).Seconds()
	if want := min(50*el, 200); float64(st.Serving) > want+3 || float64(st.Serving) < want*0.5 {
		t.Fatalf("serving %d after %.2fs at 50/s", st.Serving, el)
	}
	t.Logf("serving %d after %.2fs at 50/s", st.Serving, el)
}
