package reconcile_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/reconcile"
)

// Envelope and shake books pass when true, and fail when stat.log claims a
// win Redis never issued.
func TestPoolsCatchAPhantomWin(t *testing.T) {
	e := e2e.NewEnv(t)
	n := e.StartNode(t, "a", nil)
	e2e.Credit(t, n.URL, "boss", 1000, "boss-funds")
	r := e2e.Do(t, "POST", n.URL+"/v1/envelopes", `{"total_cents":1000,"count":10}`, e2e.As(t, "boss")...)
	if r.Status != 201 {
		t.Fatalf("send: %d %s", r.Status, r.Raw)
	}
	env := r.Body["envelope_id"].(string)
	opened := 0
	for i := 0; i < 30; i++ {
		if o := e2e.Do(t, "POST", n.URL+"/v1/envelopes/"+env+"/open", "", e2e.As(t, fmt.Sprintf("u%d", i))...); o.Status == 200 {
			opened++
		}
	}
	if r := e2e.Do(t, "POST", n.URL+"/v1/shakes", `{"id":"rain","total_envelopes":20,"budget_cents":2000,"rate_per_sec":1000}`,
		"Authorization", "Bearer "+e2e.AdminToken); r.Status != 201 {
		t.Fatalf("create shake: %d %s", r.Status, r.Raw)
	}
	time.Sleep(100 * time.Millisecond) // let some envelopes be released
	won := 0
	for i := 0; i < 200 && won < 5; i++ {
		if s := e2e.Do(t, "POST", n.URL+"/v1/shakes/rain/shake", "", e2e.As(t, fmt.Sprintf("s%d", i))...); s.Body["won"] == true {
			won++
		}
	}
	n.Stop()
	if opened != 10 || won == 0 {
		t.Fatalf("opened %d of 10, won %d shakes", opened, won)
	}

	in := reconcile.PoolInput{Redis: e.Redis.Client(t), StatLogs: []string{n.StatLog}, Envelopes: []string{"all"}, Shakes: []string{"all"}}
	rep, err := reconcile.Pools(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(rep.Items) != 2 {
		var sb strings.Builder
		rep.WriteText(&sb)
		t.Fatalf("true books fail:\n%s", sb.String())
	}

	f, _ := os.OpenFile(n.StatLog, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, `{"ts":"2026-01-01T00:00:00Z","node":"a","kind":"open","sale":"%s","user":"ghost","result":"ok","amount":5,"latency_us":1}`+"\n", env)
	fmt.Fprintln(f, `{"ts":"2026-01-01T00:00:00Z","node":"a","kind":"shake","sale":"rain","user":"ghost","result":"ok","amount":7,"latency_us":1}`)
	f.Close()
	rep, err = reconcile.Pools(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	for _, it := range rep.Items {
		if it.OK {
			t.Errorf("%s %s passed with a phantom win in stat.log", it.Kind, it.ID)
		}
	}
}
