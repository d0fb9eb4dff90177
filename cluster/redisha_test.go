package cluster

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/internal/testenv"
)

// The replicated deployments without nodes: `up --redis sentinel` starts a
// master, 2 replicas and 3 sentinels that see each other; `kill
// redis-master` kills whichever server is master; the sentinels promote a
// replica; the killed server restarts as a replica; down stops everything.
// `--redis cluster` joins 6 servers into 3 masters with a replica each, and
// a killed master's replica takes its slots.
func TestUpReplicatedRedis(t *testing.T) {
	testenv.RedisBinary(t)
	for _, mode := range []string{RedisSentinel, RedisCluster} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := Up(ctx, Config{Nodes: 0, NoNginx: true, Redis: mode, Dir: filepath.Join(t.TempDir(), "run"),
				Binary: testBinary(t)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := c.Down(); err != nil {
					t.Errorf("down: %v", err)
				}
			})
			st := c.State()
			want := map[string]int{RedisSentinel: 3, RedisCluster: 6}[mode]
			if n := len(st.redisServers()); n != want {
				t.Fatalf("%d data servers, want %d", n, want)
			}
			env := strings.Join(st.redisEnv(), " ")
			if mode == RedisSentinel && (len(st.Sentinels) != 3 || !strings.Contains(env, "FLASHSALE_REDIS_MASTER_NAME=flashsale")) {
				t.Fatalf("sentinels %d, node env %q", len(st.Sentinels), env)
			}
			if mode == RedisCluster && !strings.Contains(env, "FLASHSALE_REDIS_CLUSTER=true") {
				t.Fatalf("node env %q", env)
			}
			key := "fs:{sale:s1}:meta"
			old, err := c.KillRedisMaster(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			now, err := c.WaitRedisFailover(ctx, old, key, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Restart(old); err != nil {
				t.Fatal(err)
			}
			p, err := c.find(old)
			if err != nil {
				t.Fatal(err)
			}
			for deadline := time.Now().Add(20 * time.Second); redisRole(ctx, p.Addr) != "slave"; {
				if time.Now().After(deadline) {
					t.Fatalf("%s came back as %q, want a replica of %s", old, redisRole(ctx, p.Addr), now)
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("%s killed, %s promoted, %s back as a replica", old, now, old)
		})
	}
}
