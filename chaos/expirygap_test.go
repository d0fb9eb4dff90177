package chaos_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

// expiryGap sells unpaid orders at a steady rate (so one comes due every
// few milliseconds), SIGKILLs node2 and restarts it while they come due,
// and returns the longest time the sale's expired counter stood still
// while orders were overdue — the stall a consumer-group rebalance causes
// unless something else covers it.
func expiryGap(t *testing.T, env ...string) time.Duration {
	log := newLog()
	c := upCluster(t, log, env...)
	target := c.LBURL()
	urls := c.NodeURLs()
	secret := []byte(c.AuthSecret())
	const (
		rate = 200
		pay  = time.Second
		run  = 7 * time.Second
	)
	req, _ := http.NewRequest("POST", urls[0]+"/v1/sales", strings.NewReader(
		`{"id":"gap","name":"gap","stock":100000,"per_user_limit":1,"pay_timeout":"1s"}`))
	req.Header.Set("Authorization", "Bearer "+c.AdminToken())
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 201 {
		t.Fatalf("create sale: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	client := &http.Client{Timeout: 5 * time.Second}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512)
	buy := func(i int) {
		defer wg.Done()
		defer func() { <-sem }()
		base := target
		if base == "" { // no nginx: spread over node1 and node3 (node2 dies)
			base = urls[2*(i%2)]
		}
		user := fmt.Sprintf("g%d", i)
		r, _ := http.NewRequest("POST", base+"/v1/sales/gap/buy", strings.NewReader(`{"user_id":"`+user+`"}`))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", bearer(t, secret, user))
		resp, err := client.Do(r)
		if err == nil {
			resp.Body.Close()
		}
	}

	rdb := redis.NewClient(&redis.Options{Addr: c.RedisAddr()})
	defer rdb.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type sample struct {
		at      time.Time
		expired int64
	}
	var samples []sample
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(20 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tk.C:
				v, err := rdb.HGet(ctx, lua.KeysFor("gap").Meta, "expired").Int64()
				if err == nil {
					samples = append(samples, sample{now, v})
				}
			}
		}
	}()

	start := time.Now()
	var killedAt, restartedAt time.Time
	restarted := make(chan error, 1)
	tick := time.NewTicker(time.Second / rate)
	for i := 0; time.Since(start) < run; i++ {
		<-tick.C
		if killedAt.IsZero() && time.Since(start) >= 2*time.Second {
			if err := c.Kill("node2"); err != nil {
				t.Fatal(err)
			}
			killedAt = time.Now()
			go func() {
				time.Sleep(500 * time.Millisecond)
				err := c.Restart("node2")
				restartedAt = time.Now()
				restarted <- err
			}()
		}
		sem <- struct{}{}
		wg.Add(1)
		go buy(i)
	}
	tick.Stop()
	wg.Wait()
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}
	// Orders bought until the end come due up to pay later.
	time.Sleep(pay)
	cancel()
	<-sampled

	// The window: from the kill until the last order sold came due. Orders
	// come due continuously throughout it (bought at `rate` a second).
	from, to := killedAt, start.Add(run)
	var gap time.Duration
	var last sample
	for _, s := range samples {
		if s.at.Before(from) {
			last = s
			continue
		}
		if s.at.After(to) {
			break
		}
		if s.expired != last.expired {
			last = s
			continue
		}
		gap = max(gap, s.at.Sub(last.at))
	}
	t.Logf("node2 killed at %v, ready again at %v; %d samples; longest stretch with no expiry while orders came due: %v",
		killedAt.Sub(start).Round(time.Millisecond), restartedAt.Sub(start).Round(time.Millisecond), len(samples), gap.Round(time.Millisecond))
	return gap
}

// Invariant: killing and restarting a node (two consumer-group rebalances)
// never stalls expiry for the whole group: overdue orders keep being
// released, with no stretch of 1 s or more without an expiry.
func TestExpiryKeepsGoingThroughRebalance(t *testing.T) {
	if gap := expiryGap(t); gap >= time.Second {
		t.Fatalf("expiry stalled for %v through a kill and restart; want < 1 s", gap)
	}
}
