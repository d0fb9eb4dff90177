package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of StartSentinel monitor.
const MasterName = "flashsale"

// Sentinel is a replicated Redis under Sentinel: Servers[0] starts as the
// master, the others as its replicas, and Sentinels watch them (quorum 2
// with 3 sentinels). Every one is a real redis-server process; sentinels run
// as `redis-server sentinel.conf --sentinel`.
type Sentinel struct {
	MasterName string
	Servers    []*Redis
	Sentinels  []*Redis
	t          testing.TB
}

// SentinelOptions shape StartSentinel. The zero value: 2 replicas, 3
// sentinels, masters that keep writing with no replica.
type SentinelOptions struct {
	Replicas  int // replicas of the master; 2 when 0
	Sentinels int // 3 when 0
	// MinReplicasToWrite is every server's min-replicas-to-write (any of them
	// may become master): a master with fewer replicas than this, lagging at
	// most 2 s, refuses writes (NOREPLICAS). 0: it always writes.
	MinReplicasToWrite int
	// DownAfter is the sentinels' down-after-milliseconds; 1 s when 0.
	DownAfter time.Duration
}

// StartSentinel starts a master, its replicas and the sentinels, waits until
// the replicas are in sync and every sentinel knows the replicas and the
// other sentinels (so a failover can be agreed), and stops all of them when
// the test ends.
func StartSentinel(t testing.TB, o SentinelOptions) *Sentinel {
	t.Helper()
	if o.Replicas <= 0 {
		o.Replicas = 2
	}
	if o.Sentinels <= 0 {
		o.Sentinels = 3
	}
	if o.DownAfter <= 0 {
		o.DownAfter = time.Second
	}
	s := &Sentinel{MasterName: MasterName, t: t}
	data := []string{"--appendonly", "no", "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
		"--min-replicas-to-write", strconv.Itoa(o.MinReplicasToWrite), "--min-replicas-max-lag", "2"}
	master := StartRedisArgs(t, data...)
	s.Servers = append(s.Servers, master)
	for range o.Replicas {
		s.Servers = append(s.Servers, StartRedisArgs(t, append(data, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))...))
	}
	waitReplicas(t, master, o.Replicas)
	waitAcked(t, master.Client(t), o.Replicas)
	for range o.Sentinels {
		s.Sentinels = append(s.Sentinels, startSentinel(t, master.Port, o.DownAfter))
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, sn := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr})
		for {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			m, err := c.Master(ctx, MasterName).Result()
			reps, err2 := c.Replicas(ctx, MasterName).Result()
			cancel()
			if err == nil && err2 == nil && m["num-other-sentinels"] == strconv.Itoa(o.Sentinels-1) && len(reps) == o.Replicas {
				break
			}
			if time.Now().After(deadline) {
				c.Close()
				t.Fatalf("sentinel %s does not see the set: master %v (%v), %d replicas (%v)", sn.Addr, m, err, len(reps), err2)
			}
			time.Sleep(50 * time.Millisecond)
		}
		c.Close()
	}
	return s
}

func startSentinel(t testing.TB, masterPort int, downAfter time.Duration) *Redis {
	t.Helper()
	dir := t.TempDir()
	port := FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf(`port %d
bind 127.0.0.1
protected-mode no
dir %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %s %d
sentinel failover-timeout %s 4000
sentinel parallel-syncs %s 2
`, port, dir, MasterName, masterPort, MasterName, downAfter.Milliseconds(), MasterName, MasterName)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, t: t,
		args: []string{conf, "--sentinel", "--loglevel", "warning"}}
	r.start(RedisBinary(t))
	t.Cleanup(r.Stop)
	return r
}

// waitReplicas waits until master has n replicas online and in sync.
func waitReplicas(t testing.TB, master *Redis, n int) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: master.Addr})
	defer c.Close()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := c.Info(ctx, "replication").Result()
		cancel()
		if err == nil && strings.Count(info, "state=online") >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("master %s: %d replicas not online: %v\n%s", master.Addr, n, err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Addrs returns the sentinels' addresses: what a node takes as
// FLASHSALE_REDIS_ADDRS with FLASHSALE_REDIS_MASTER_NAME.
func (s *Sentinel) Addrs() []string {
	var out []string
	for _, sn := range s.Sentinels {
		out = append(out, sn.Addr)
	}
	return out
}

// MasterAddr asks the sentinels which server is master now.
func (s *Sentinel) MasterAddr() (string, error) {
	var last error
	for _, sn := range s.Sentinels {
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr, MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		a, err := c.GetMasterAddrByName(ctx, s.MasterName).Result()
		cancel()
		c.Close()
		if err == nil && len(a) == 2 {
			return a[0] + ":" + a[1], nil
		}
		last = err
	}
	return "", fmt.Errorf("no sentinel named the master: %v", last)
}

// Master returns the server the sentinels call master now.
func (s *Sentinel) Master() *Redis {
	s.t.Helper()
	a, err := s.MasterAddr()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, r := range s.Servers {
		if r.Addr == a {
			return r
		}
	}
	s.t.Fatalf("the sentinels name %s master, which is none of the servers", a)
	return nil
}

// Replicas returns the servers that are not master now.
func (s *Sentinel) Replicas() []*Redis {
	m := s.Master()
	var out []*Redis
	for _, r := range s.Servers {
		if r != m {
			out = append(out, r)
		}
	}
	return out
}

// WaitFailover waits until the sentinels name a master other than old and
// that server says it is master, and returns it.
func (s *Sentinel) WaitFailover(old string, within time.Duration) *Redis {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if a, err := s.MasterAddr(); err == nil && a != old {
			for _, r := range s.Servers {
				if r.Addr == a && r.Alive() && role(r.Addr) == "master" {
					return r
				}
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no failover away from %s within %v", old, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func role(addr string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	v, err := c.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return ""
	}
	r, _ := v[0].(string)
	return r
}

// RedisCluster is a Redis Cluster of real redis-server processes made with
// `redis-cli --cluster create`.
type RedisCluster struct {
	Nodes []*Redis
	t     testing.TB
}

// StartRedisCluster starts masters×(1+replicas) `--cluster-enabled`
// servers (node timeout 1 s, so a dead master's replica takes over within
// about two seconds), joins them with redis-cli --cluster create
// --cluster-replicas replicas, waits until every node reports cluster_state
// ok, and stops them when the test ends. minReplicasToWrite is every node's
// min-replicas-to-write.
func StartRedisCluster(t testing.TB, masters, replicas, minReplicasToWrite int) *RedisCluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("redis-cli not found on PATH; .ci/run must install redis-server (which brings redis-tools)")
		}
		t.Skip("redis-cli not installed: run `make deps`")
	}
	rc := &RedisCluster{t: t}
	args := []string{"--cluster", "create"}
	for range masters * (1 + replicas) {
		r := StartRedisArgs(t, "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0",
			"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0",
			"--min-replicas-to-write", strconv.Itoa(minReplicasToWrite), "--min-replicas-max-lag", "2")
		rc.Nodes = append(rc.Nodes, r)
		args = append(args, r.Addr)
	}
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.Command(cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	rc.WaitHealthy(masters, 20*time.Second)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.Addrs(), MaxRetries: -1})
	defer cc.Close()
	waitAcked(t, cc, min(replicas, 1))
	return rc
}

// Addrs returns every node's address: the seeds a node takes.
func (rc *RedisCluster) Addrs() []string {
	var out []string
	for _, r := range rc.Nodes {
		out = append(out, r.Addr)
	}
	return out
}

// Masters returns the live nodes whose ROLE is master.
func (rc *RedisCluster) Masters() []*Redis {
	var out []*Redis
	for _, r := range rc.Nodes {
		if r.Alive() && role(r.Addr) == "master" {
			out = append(out, r)
		}
	}
	return out
}

// WaitHealthy waits until masters live nodes are master, each with a
// replica online, and every live node reports cluster_state:ok.
func (rc *RedisCluster) WaitHealthy(masters int, within time.Duration) {
	rc.t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok := len(rc.Masters()) == masters
		for _, r := range rc.Nodes {
			if !ok || !r.Alive() {
				continue
			}
			c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			info, err := c.ClusterInfo(ctx).Result()
			repl, err2 := c.Info(ctx, "replication").Result()
			cancel()
			c.Close()
			ok = err == nil && err2 == nil && strings.Contains(info, "cluster_state:ok")
			if ok && strings.Contains(repl, "role:master") {
				ok = strings.Contains(repl, "state=online")
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			rc.t.Fatalf("redis cluster not healthy with %d masters within %v", masters, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MasterOf returns the node that is master of key's slot now.
func (rc *RedisCluster) MasterOf(key string) *Redis {
	rc.t.Helper()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: rc.liveAddrs()})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m, err := c.MasterForKey(ctx, key)
	if err != nil {
		rc.t.Fatalf("master of %q: %v", key, err)
	}
	for _, r := range rc.Nodes {
		if r.Addr == m.Options().Addr {
			return r
		}
	}
	rc.t.Fatalf("master of %q is %s, none of the nodes", key, m.Options().Addr)
	return nil
}

func (rc *RedisCluster) liveAddrs() []string {
	var out []string
	for _, r := range rc.Nodes {
		if r.Alive() {
			out = append(out, r.Addr)
		}
	}
	return out
}

// ReplicaOf returns the live node that replicates master now.
func (rc *RedisCluster) ReplicaOf(master *Redis) *Redis {
	rc.t.Helper()
	for _, r := range rc.Nodes {
		if r == master || !r.Alive() {
			continue
		}
		c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		info, err := c.Info(ctx, "replication").Result()
		cancel()
		c.Close()
		if err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_port:"+strconv.Itoa(master.Port)+"\r") {
			return r
		}
	}
	rc.t.Fatalf("no replica of %s", master.Addr)
	return nil
}

// WaitPromoted waits until r says it is a master.
func (rc *RedisCluster) WaitPromoted(r *Redis, within time.Duration) {
	rc.t.Helper()
	deadline := time.Now().Add(within)
	for role(r.Addr) != "master" {
		if time.Now().After(deadline) {
			rc.t.Fatalf("%s not promoted within %v", r.Addr, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// CutReplicas closes r's connections to its replicas (CLIENT KILL TYPE
// replica). With the replicas paused they cannot reconnect, so whatever r
// writes from now on lives only on r: the window in which asynchronous
// replication loses acknowledged writes if r dies.
func (r *Redis) CutReplicas() error {
	c := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return c.Do(ctx, "CLIENT", "KILL", "TYPE", "replica").Err()
}

// waitAcked polls until a write on every master of rdb is acknowledged by
// n replicas (lua.ProbeReplicas): what a node's first WAIT needs.
func waitAcked(t testing.TB, rdb redis.UniversalClient, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := lua.ProbeReplicas(ctx, rdb, n, 200*time.Millisecond)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes not acknowledged by %d replicas: %v", n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
