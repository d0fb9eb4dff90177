package node_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flashsale/flashsale"
	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/internal/e2e"
	"github.com/flashsale/flashsale/internal/testenv"
	"github.com/flashsale/flashsale/lua"
	"github.com/flashsale/flashsale/node"
	"github.com/flashsale/flashsale/order"
	"github.com/flashsale/flashsale/reconcile"
	"github.com/redis/go-redis/v9"
)

// haSale is one sale of a Redis HA run and what its buyers were told.
type win struct{ order, user string }

type haSale struct {
	id    string
	stock int64
	mu    sync.Mutex
	wins  []win // every 201, in the order they came back
	codes map[string]int
}

func (s *haSale) record(user string, r e2e.Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r.Status == 201 {
		// A list, not a map by order id: after a lossy failover the new
		// master hands out the lost orders' numbers again.
		s.wins = append(s.wins, win{r.Body["order_id"].(string), user})
		s.codes["ok"]++
		return
	}
	s.codes[r.Code()]++
}

// haRun is a cluster of in-process nodes on a replicated Redis, selling
// several sales at once while the Redis master dies.
type haRun struct {
	t     *testing.T
	env   *e2e.Env
	nodes []*e2e.Node
	urls  []string
	rdb   redis.UniversalClient // follows the master, like reconcile
	sales []*haSale
	users atomic.Int64
}

func newHARun(t *testing.T, env *e2e.Env, acked int, nodes int) *haRun {
	t.Helper()
	h := &haRun{t: t, env: env}
	for i := 1; i <= nodes; i++ {
		n := env.StartNode(t, "n"+strconv.Itoa(i), func(c *configs.Config) {
			c.Redis.MinReplicasAcked = acked
			c.Cluster.Heartbeat, c.Cluster.TTL = 250*time.Millisecond, time.Second
		})
		h.nodes = append(h.nodes, n)
		h.urls = append(h.urls, n.URL)
	}
	h.rdb = redis.NewUniversalClient(node.RedisOptions(node.RedisTarget{Addrs: env.RedisAddrs, MasterName: env.MasterName,
		Cluster: env.Cluster}, &redis.UniversalOptions{DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond}))
	t.Cleanup(func() { h.rdb.Close() })
	return h
}

func (h *haRun) createSales(n int, units int64) {
	for i := range n {
		s := &haSale{id: "ha" + strconv.Itoa(i), stock: units, codes: map[string]int{}}
		e2e.CreateSale(h.t, h.urls[i%len(h.urls)], fmt.Sprintf(`{"id":%q,"name":"ha","stock":%d,"price_cents":100,"pay_timeout":"10m"}`, s.id, units))
		h.sales = append(h.sales, s)
	}
}

// buy sends count buys per sale (fresh users, sales interleaved, round
// robin over the nodes) from workers goroutines.
func (h *haRun) buy(perSale int, workers int) {
	type job struct {
		s    *haSale
		user string
		url  string
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				j.s.record(j.user, e2e.Do(h.t, "POST", j.url+"/v1/sales/"+j.s.id+"/buy", "", e2e.As(h.t, j.user)...))
			}
		})
	}
	var total int64
	for _, s := range h.sales {
		total += s.stock
	}
	for i := range perSale {
		// Once everything is sold, the rest of the crowd could only hear
		// sold_out: stop (keeps the test short on a loaded box).
		if i%50 == 49 && h.sold() == total {
			break
		}
		for k, s := range h.sales {
			u := "u" + strconv.FormatInt(h.users.Add(1), 10)
			jobs <- job{s, u, h.urls[(i+k)%len(h.urls)]}
		}
	}
	close(jobs)
	wg.Wait()
}

func (h *haRun) books(id string) (flashsale.Books, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, b, err := order.LoadSale(ctx, h.rdb, id)
	return b, err
}

// sold is the units sold over every sale, as the current master says.
func (h *haRun) sold() int64 {
	var n int64
	for _, s := range h.sales {
		if b, err := h.books(s.id); err == nil {
			n += b.Stock - b.Remaining
		}
	}
	return n
}

// whenSold calls fault once frac of every sale's units are sold.
func (h *haRun) whenSold(frac float64, fault func()) (done chan struct{}) {
	done = make(chan struct{})
	var total int64
	for _, s := range h.sales {
		total += s.stock
	}
	go func() {
		defer close(done)
		deadline := time.Now().Add(60 * time.Second)
		for float64(h.sold()) < frac*float64(total) {
			if time.Now().After(deadline) {
				h.t.Errorf("never sold %.0f%% of %d units", frac*100, total)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		h.t.Logf("fault at %d/%d units sold", h.sold(), total)
		fault()
	}()
	return done
}

// inDoubt is how many batches the nodes still have to resolve.
func (h *haRun) inDoubt() float64 {
	var n float64
	for _, nd := range h.nodes {
		mfs, err := nd.Registry.Gather()
		if err != nil {
			h.t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "flashsale_order_indoubt_batches" {
				for _, m := range mf.GetMetric() {
					n += m.GetGauge().GetValue()
				}
			}
		}
	}
	return n
}

// topUp keeps demand coming until every sale is sold out and no node has a
// batch in doubt (a resolved batch may give units back, sold again here).
func (h *haRun) topUp(within time.Duration) {
	h.t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := int64(0)
		for _, s := range h.sales {
			b, err := h.books(s.id)
			if err != nil {
				left++
				continue
			}
			left += b.Remaining
		}
		if left == 0 && h.inDoubt() == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("after %v: %d units unsold, %v batches in doubt", within, left, h.inDoubt())
		}
		h.buy(max(int(left)/len(h.sales)*2, 20), 32)
	}
}

// verdict checks one sale after the run and returns how many 201s its
// buyers saw have no order of theirs in the current master.
func (h *haRun) verdict(s *haSale) (lost int, rep *reconcile.Report) {
	t := h.t
	b, err := h.books(s.id)
	if err != nil {
		t.Fatal(err)
	}
	if b.Remaining < 0 || b.Pending+b.Paid > b.Stock {
		t.Errorf("sale %s oversold: %+v", s.id, b)
	}
	if b.Remaining+b.Pending+b.Paid != b.Stock {
		t.Errorf("sale %s: conservation broken: %+v", s.id, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw, err := h.rdb.HGetAll(ctx, lua.KeysFor(s.id).Orders).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range s.wins {
		_, n, err := flashsale.ParseOrderID(e2e.RecordID(w.order)) // the public id carries a tag
		if err != nil {
			t.Fatalf("order id %q: %v", w.order, err)
		}
		rec, err := lua.ParseRecord(raw[strconv.FormatInt(n, 10)])
		if err != nil || rec.User != w.user || rec.Status != lua.StatusPending {
			lost++
		}
	}
	var logs []string
	for _, n := range h.nodes {
		logs = append(logs, n.StatLog)
	}
	rep, err = reconcile.Run(ctx, reconcile.Input{Sale: s.id, Redis: h.rdb, Brokers: []string{h.env.Kafka.Addr},
		Topic: "flashsale.orders", StatLogs: logs, ExpectSellout: true})
	if err != nil {
		t.Fatalf("reconcile %s: %v", s.id, err)
	}
	return lost, rep
}

func (h *haRun) stopNodes() {
	for _, n := range h.nodes {
		n.Stop() // graceful: stat.log flushed, in-doubt queue tried once more
	}
}

// sentinelFailover sells stock units to demand× as many buyers over 3 nodes
// on a master with 2 replicas under 3 sentinels. At 30% sold it freezes
// both replicas (SIGSTOP) and has the master close their links (CLIENT
// KILL TYPE replica), waits 600 ms — the master keeps taking buys they
// never see — then SIGKILLs the master and thaws them; the sentinels
// promote one. It returns the 201s with no order in the new master.
func sentinelFailover(t *testing.T, acked int, units int64, demand int) (int, *reconcile.Report, *haSale) {
	s := testenv.StartSentinel(t, testenv.SentinelOptions{Replicas: 2, Sentinels: 3, MinReplicasToWrite: acked})
	env := &e2e.Env{Kafka: testenv.StartKafka(t, "flashsale.orders", "flashsale.envelopes"),
		RedisAddrs: s.Addrs(), MasterName: s.MasterName}
	h := newHARun(t, env, acked, 3)
	h.createSales(1, units)
	old := s.Master()
	var newMaster *testenv.Redis
	faultDone := h.whenSold(0.3, func() {
		reps := s.Replicas()
		for _, r := range reps {
			r.Pause()
		}
		if err := old.CutReplicas(); err != nil {
			t.Errorf("cut the replication links: %v", err)
		}
		time.Sleep(600 * time.Millisecond)
		old.Kill()
		for _, r := range reps {
			r.Resume()
		}
		newMaster = s.WaitFailover(old.Addr, 30*time.Second)
		t.Logf("sentinels promoted %s", newMaster.Addr)
	})
	h.buy(int(units)*demand, 96)
	<-faultDone
	if newMaster == nil {
		t.Fatal("no failover happened")
	}
	h.topUp(45 * time.Second)
	h.stopNodes()
	lost, rep := h.verdict(h.sales[0])
	sale := h.sales[0]
	t.Logf("buyers told: %v; 201s with no order in the new master: %d", sale.codes, lost)
	return lost, rep, sale
}

// Invariant: with min_replicas_acked 1 (and min-replicas-to-write 1 on
// every server), a master that dies with buys its replicas never saw takes
// no acknowledged order with it: every 201 is an order in the new master,
// no oversell, conservation, sold out, reconcile passes.
func TestSentinelFailoverMidSale(t *testing.T) {
	lost, rep, sale := sentinelFailover(t, 1, 2000, 10)
	if lost != 0 {
		t.Errorf("%d acknowledged orders lost in the failover", lost)
	}
	if !rep.OK {
		var buf strings.Builder
		rep.WriteText(&buf)
		t.Errorf("reconcile failed:\n%s", buf.String())
	}
	if b := rep.Books; int(b.Pending+b.Paid) != len(sale.wins) || b.Remaining != 0 {
		t.Errorf("books %+v, %d buyers told yes: want every unit sold, each to a buyer told so", b, len(sale.wins))
	}
}

// The same failover with min_replicas_acked 0 (what a lone-Redis setup
// would do): buys the master answered while its replicas were frozen are
// gone from the promoted replica. The test proves the check above can fail,
// and reconcile shows it (ok lines and order events with no order).
func TestSentinelFailoverWithoutWaitLosesOrders(t *testing.T) {
	lost, rep, _ := sentinelFailover(t, 0, 1000, 6)
	if lost == 0 {
		t.Fatalf("no acknowledged order lost without WAIT: the failover test could not fail")
	}
	if rep.OK {
		t.Errorf("reconcile passed although %d acknowledged orders are gone", lost)
	}
	for _, c := range rep.Checks {
		if !c.OK {
			t.Logf("reconcile shows it: FAIL %s: %s", c.Name, c.Detail)
		}
	}
	t.Logf("min_replicas_acked 0: %d acknowledged orders lost in one failover", lost)
}

// Invariant: on Redis Cluster (3 masters, 3 replicas) 20 sales at once,
// spread over every master; one master SIGKILLed mid-sale after its
// replica was frozen, the replica promoted, the dead node brought back as a
// replica; per sale: every 201 an order in the cluster, no oversell,
// conservation, sold out, reconcile passes.
func TestRedisClusterFailoverManySales(t *testing.T) {
	rc := testenv.StartRedisCluster(t, 3, 1, 1)
	env := &e2e.Env{Kafka: testenv.StartKafka(t, "flashsale.orders", "flashsale.envelopes"),
		RedisAddrs: rc.Addrs(), Cluster: true}
	h := newHARun(t, env, 1, 3)
	h.createSales(20, 60)
	owners := map[string]int{}
	for _, s := range h.sales {
		owners[rc.MasterOf(lua.KeysFor(s.id).Meta).Addr]++
	}
	if len(owners) != 3 {
		t.Fatalf("20 sales on %d masters, want 3: %v", len(owners), owners)
	}
	victim := rc.MasterOf(lua.KeysFor(h.sales[0].id).Meta)
	faultDone := h.whenSold(0.3, func() {
		replica := rc.ReplicaOf(victim)
		replica.Pause()
		if err := victim.CutReplicas(); err != nil {
			t.Errorf("cut the replication link: %v", err)
		}
		time.Sleep(600 * time.Millisecond)
		victim.Kill()
		replica.Resume()
		rc.WaitPromoted(replica, 30*time.Second)
		t.Logf("master %s killed, replica %s promoted", victim.Addr, replica.Addr)
		victim.Restart() // back as the new master's replica: WAIT can succeed again
		rc.WaitHealthy(3, 30*time.Second)
	})
	h.buy(600, 96)
	<-faultDone
	h.topUp(60 * time.Second)
	h.stopNodes()
	for _, s := range h.sales {
		lost, rep := h.verdict(s)
		if lost != 0 {
			t.Errorf("sale %s: %d acknowledged orders lost", s.id, lost)
		}
		if !rep.OK {
			var buf strings.Builder
			rep.WriteText(&buf)
			t.Errorf("sale %s: reconcile failed:\n%s", s.id, buf.String())
		}
		if b := rep.Books; int(b.Pending+b.Paid) != len(s.wins) || b.Remaining != 0 {
			t.Errorf("sale %s: books %+v, %d buyers told yes", s.id, b, len(s.wins))
		}
	}
	t.Logf("sales per master %v; victim %s", owners, victim.Addr)
}
