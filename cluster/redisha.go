package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flashsale/flashsale/lua"
	"github.com/redis/go-redis/v9"
)

// Redis deployments the launcher can start (Config.Redis).
const (
	RedisSingle   = "single"   // one redis-server with AOF (the default)
	RedisSentinel = "sentinel" // a master, 2 replicas, 3 sentinels
	RedisCluster  = "cluster"  // Redis Cluster: 3 masters, 3 replicas
)

// MasterName is the name the launcher's sentinels monitor.
const MasterName = "flashsale"

// RedisMaster is the name `kill` and `restart` accept for whichever Redis
// server is master now (with Redis Cluster: the master of the slot Kill is
// asked about, the first master by name otherwise).
const RedisMaster = "redis-master"

// haArgs are the arguments every data server of a replicated deployment
// gets. Any of them may become master, so all refuse writes when no replica
// is within 2 s (min-replicas-to-write 1): a master cut off from its
// replicas stops taking writes it could lose, instead of acknowledging
// them. The nodes also WAIT for one replica after each book change.
var haArgs = []string{"--min-replicas-to-write", "1", "--min-replicas-max-lag", "2",
	"--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"}

// prepareRedisHA adds the replicas and sentinels, or the cluster nodes, to
// c.st for mode; c.st.Redis is already the first data server.
func (c *Cluster) prepareRedisHA(mode string, port func(int) (int, error), redisBin string, argv func(port int, dir string) []string) error {
	c.st.RedisMode = mode
	first := c.st.Redis
	switch mode {
	case RedisSentinel:
		c.st.MasterName = MasterName
		first.Name = "redis1"
		first.Argv = append(first.Argv, haArgs...)
		for i := 2; i <= 3; i++ {
			p, err := c.redisProc(port, argv, "redis"+strconv.Itoa(i))
			if err != nil {
				return err
			}
			p.Argv = append(p.Argv, haArgs...)
			p.Argv = append(p.Argv, "--replicaof", "127.0.0.1", strconv.Itoa(portOf(first.Addr)))
			c.st.RedisServers = append(c.st.RedisServers, p)
		}
		for i := 1; i <= 3; i++ {
			sp, err := port(0)
			if err != nil {
				return err
			}
			dir := filepath.Join(c.st.Dir, "sentinel"+strconv.Itoa(i))
			conf := filepath.Join(dir, "sentinel.conf")
			c.st.Sentinels = append(c.st.Sentinels, &Proc{Name: "sentinel" + strconv.Itoa(i), Kind: "sentinel",
				Addr: "127.0.0.1:" + strconv.Itoa(sp), Dir: dir, Log: filepath.Join(dir, "sentinel.log"),
				Argv: []string{redisBin, conf, "--sentinel"}})
		}
	case RedisCluster:
		first.Name = "redis1"
		first.Argv = append(first.Argv, clusterArgs...)
		for i := 2; i <= 6; i++ {
			p, err := c.redisProc(port, argv, "redis"+strconv.Itoa(i))
			if err != nil {
				return err
			}
			p.Argv = append(p.Argv, clusterArgs...)
			c.st.RedisServers = append(c.st.RedisServers, p)
		}
	default:
		return fmt.Errorf("--redis %q: want single, sentinel or cluster", mode)
	}
	return nil
}

// clusterArgs make a Redis Cluster node: 1 s node timeout (a dead master's
// replica takes over within about two seconds), replicas always allowed to
// take over, and the same write guard as the Sentinel servers.
var clusterArgs = append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
	"--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"}, haArgs...)

// redisProc is one more data server like c.st.Redis, on its own port and
// directory.
func (c *Cluster) redisProc(port func(int) (int, error), argv func(int, string) []string, name string) (*Proc, error) {
	p, err := port(0)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(c.st.Dir, name)
	return &Proc{Name: name, Kind: "redis", Addr: "127.0.0.1:" + strconv.Itoa(p), Dir: dir,
		Log: filepath.Join(dir, "redis.log"), Argv: argv(p, dir)}, nil
}

func portOf(addr string) int {
	_, p, _ := strings.Cut(addr, ":")
	n, _ := strconv.Atoi(p)
	return n
}

// redisServers returns every data server: the first and the others.
func (st *State) redisServers() []*Proc {
	return append([]*Proc{st.Redis}, st.RedisServers...)
}

// startRedisHA runs after the data servers are up: with Sentinel it waits
// for both replicas, writes the sentinels' configs (first start only: a
// sentinel rewrites its own file with what it learned) and starts them;
// with Redis Cluster it joins the six nodes with redis-cli --cluster create
// (first start only: the nodes keep nodes.conf). Either way it returns once
// a failover could happen: every sentinel sees the others, or the cluster
// reports cluster_state:ok everywhere.
func (c *Cluster) startRedisHA(ctx context.Context) error {
	switch c.st.RedisMode {
	case RedisSentinel:
		if err := waitOnline(ctx, c.st.Redis.Addr, 2, c.ready); err != nil {
			return err
		}
		mc := redis.NewClient(&redis.Options{Addr: c.st.Redis.Addr, MaxRetries: -1})
		err := waitAcked(ctx, mc, 2, c.ready)
		mc.Close()
		if err != nil {
			return err
		}
		for _, s := range c.st.Sentinels {
			conf := s.Argv[1]
			if _, err := os.Stat(conf); err == nil {
				continue
			}
			if err := os.MkdirAll(s.Dir, 0o755); err != nil {
				return err
			}
			body := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nlogfile %q\n"+
				"sentinel monitor %s 127.0.0.1 %d 2\nsentinel down-after-milliseconds %s 1000\n"+
				"sentinel failover-timeout %s 5000\nsentinel parallel-syncs %s 2\n",
				portOf(s.Addr), s.Dir, s.Log, MasterName, portOf(c.st.Redis.Addr), MasterName, MasterName, MasterName)
			if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
				return err
			}
		}
		for _, s := range c.st.Sentinels {
			if err := c.startProc(s); err != nil {
				return err
			}
		}
		for _, s := range c.st.Sentinels {
			if err := c.waitReady(ctx, s); err != nil {
				return err
			}
		}
		return c.waitSentinels(ctx)
	case RedisCluster:
		servers := c.st.redisServers()
		if _, err := os.Stat(filepath.Join(c.st.Redis.Dir, "nodes.conf")); err == nil && clusterOK(ctx, c.st.Redis.Addr) {
			return c.waitClusterOK(ctx)
		}
		cli, err := exec.LookPath("redis-cli")
		if err != nil {
			return errors.New("redis-cli not found: apt-get install -y redis-tools (or `make deps`)")
		}
		args := []string{"--cluster", "create"}
		for _, s := range servers {
			args = append(args, s.Addr)
		}
		args = append(args, "--cluster-replicas", "1", "--cluster-yes")
		if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("redis-cli --cluster create: %v\n%s", err, out)
		}
		fmt.Fprintf(c.log, "redis cluster created: 3 masters, 3 replicas\n")
		if err := c.waitClusterOK(ctx); err != nil {
			return err
		}
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.st.redisAddrs(), MaxRetries: -1})
		defer cc.Close()
		return waitAcked(ctx, cc, 1, c.ready)
	}
	return nil
}

// waitAcked polls until a write on every master is acknowledged by n
// replicas (lua.ProbeReplicas), so the nodes' first WAIT can succeed.
func waitAcked(ctx context.Context, rdb redis.UniversalClient, n int, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := lua.ProbeReplicas(pctx, rdb, n, 200*time.Millisecond)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis writes not acknowledged by %d replicas within %v: %w", n, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitOnline(ctx context.Context, addr string, n int, within time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(within)
	for {
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		info, err := c.Info(ictx, "replication").Result()
		cancel()
		if err == nil && strings.Count(info, "state=online") >= n {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("redis %s: %d replicas not online within %v (%v)", addr, n, within, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (c *Cluster) waitSentinels(ctx context.Context) error {
	deadline := time.Now().Add(c.ready)
	for _, s := range c.st.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
		for {
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			m, err := sc.Master(sctx, MasterName).Result()
			cancel()
			if err == nil && m["num-other-sentinels"] == strconv.Itoa(len(c.st.Sentinels)-1) {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				sc.Close()
				return fmt.Errorf("%s does not see the other sentinels within %v: %v %v", s.Name, c.ready, m, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		sc.Close()
	}
	return nil
}

func clusterOK(ctx context.Context, addr string) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := c.ClusterInfo(ctx).Result()
	return err == nil && strings.Contains(info, "cluster_state:ok")
}

func (c *Cluster) waitClusterOK(ctx context.Context) error {
	deadline := time.Now().Add(c.ready)
	for _, s := range c.st.redisServers() {
		for !clusterOK(ctx, s.Addr) {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("redis cluster not ok on %s within %v", s.Name, c.ready)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// RedisAddrs returns what a node takes as FLASHSALE_REDIS_ADDRS: the one
// server, the sentinels, or every cluster node.
func (c *Cluster) RedisAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.redisAddrs()
}

func (st *State) redisAddrs() []string {
	var out []string
	switch st.RedisMode {
	case RedisSentinel:
		for _, s := range st.Sentinels {
			out = append(out, s.Addr)
		}
	case RedisCluster:
		for _, s := range st.redisServers() {
			out = append(out, s.Addr)
		}
	default:
		out = []string{st.Redis.Addr}
	}
	return out
}

// RedisMasterName returns the Sentinel master name ("" unless Sentinel).
func (c *Cluster) RedisMasterName() string { return c.st.MasterName }

// IsRedisCluster reports whether Redis runs as a Redis Cluster.
func (c *Cluster) IsRedisCluster() bool { return c.st.RedisMode == RedisCluster }

// redisEnv is the nodes' Redis settings for the deployment.
func (st *State) redisEnv() []string {
	env := []string{"FLASHSALE_REDIS_ADDRS=" + strings.Join(st.redisAddrs(), ",")}
	switch st.RedisMode {
	case RedisSentinel:
		env = append(env, "FLASHSALE_REDIS_MASTER_NAME="+st.MasterName)
	case RedisCluster:
		env = append(env, "FLASHSALE_REDIS_CLUSTER=true")
	}
	return env
}

// masterProc finds the data server that is master now: per the sentinels,
// or, on Redis Cluster, the master of key's slot (the first master by name
// when key is empty).
func (c *Cluster) masterProc(ctx context.Context, key string) (*Proc, error) {
	var addr string
	switch c.st.RedisMode {
	case RedisSentinel:
		var last error
		for _, s := range c.st.Sentinels {
			sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
			sctx, cancel := context.WithTimeout(ctx, time.Second)
			a, err := sc.GetMasterAddrByName(sctx, MasterName).Result()
			cancel()
			sc.Close()
			if err == nil && len(a) == 2 {
				addr = a[0] + ":" + a[1]
				break
			}
			last = err
		}
		if addr == "" {
			return nil, fmt.Errorf("no sentinel names the master: %v", last)
		}
	case RedisCluster:
		if key == "" {
			for _, s := range c.st.redisServers() {
				if c.alive(s) && redisRole(ctx, s.Addr) == "master" {
					return s, nil
				}
			}
			return nil, errors.New("no redis cluster node is master")
		}
		cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.st.redisAddrs(), MaxRetries: -1})
		defer cc.Close()
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		m, err := cc.MasterForKey(cctx, key)
		if err != nil {
			return nil, fmt.Errorf("master of %q: %w", key, err)
		}
		addr = m.Options().Addr
	default:
		return c.st.Redis, nil
	}
	for _, s := range c.st.redisServers() {
		if s.Addr == addr {
			return s, nil
		}
	}
	return nil, fmt.Errorf("the master is %s, which is none of this cluster's servers", addr)
}

func redisRole(ctx context.Context, addr string) string {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	v, err := c.Do(ctx, "ROLE").Slice()
	if err != nil || len(v) == 0 {
		return ""
	}
	r, _ := v[0].(string)
	return r
}

// KillRedisMaster SIGKILLs the data server that is master now (of key's
// slot on Redis Cluster; key may be empty) and returns its name.
func (c *Cluster) KillRedisMaster(ctx context.Context, key string) (string, error) {
	c.mu.Lock()
	c.reload()
	p, err := c.masterProc(ctx, key)
	c.mu.Unlock()
	if err != nil {
		return "", err
	}
	return p.Name, c.Kill(p.Name)
}

// WaitRedisFailover waits until a server other than the one called old is
// master (of key's slot on Redis Cluster) and says so itself.
func (c *Cluster) WaitRedisFailover(ctx context.Context, old, key string, within time.Duration) (string, error) {
	deadline := time.Now().Add(within)
	for {
		c.mu.Lock()
		p, err := c.masterProc(ctx, key)
		c.mu.Unlock()
		if err == nil && p.Name != old && redisRole(ctx, p.Addr) == "master" {
			return p.Name, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", fmt.Errorf("no new redis master within %v (last: %v)", within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
