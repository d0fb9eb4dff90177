package chaos

import (
	"context"
	"fmt"
	"time"

	"github.com/flashsale/flashsale/cluster"
)

// Fault is what goes wrong mid-sale. Inject breaks the cluster and, for a
// fault that heals, brings the broken piece back before it returns; the
// sale keeps running meanwhile.
type Fault interface {
	// String names the fault for reports, e.g. "SIGKILL node2".
	String() string
	// Inject breaks c, and heals it again when the fault heals. It returns
	// the ids of the nodes it SIGKILLed: their stat.log may be cut short.
	Inject(ctx context.Context, c *cluster.Cluster) (killed []string, err error)
}

// KillNode is a SIGKILL of one node that is never restarted: the survivors
// must sell its unsold share (the units are still in Redis).
type KillNode string

func (k KillNode) String() string { return "SIGKILL " + string(k) + " (no restart)" }

// Inject implements Fault.
func (k KillNode) Inject(_ context.Context, c *cluster.Cluster) ([]string, error) {
	if err := c.Kill(string(k)); err != nil {
		return nil, err
	}
	// The launcher gives each node its name as its id.
	return []string{string(k)}, nil
}

// CrashRedis SIGKILLs redis-server and starts it again from its AOF after
// Down. The nodes are not restarted: they must answer 503 meanwhile and sell
// again once Redis is back.
type CrashRedis struct{ Down time.Duration }

func (f CrashRedis) String() string {
	return fmt.Sprintf("SIGKILL redis, restart from its AOF after %v", f.Down)
}

// Inject implements Fault.
func (f CrashRedis) Inject(ctx context.Context, c *cluster.Cluster) ([]string, error) {
	return nil, outage(ctx, c, "redis", c.Kill, f.Down)
}

// StopBroker stops the Kafka broker (SIGTERM: it writes its log to disk) and
// starts it again from its data directory after Down. Buys meanwhile must
// fail with their unit returned, or succeed with their order durable.
type StopBroker struct{ Down time.Duration }

func (f StopBroker) String() string {
	return fmt.Sprintf("stop the broker, restart it after %v", f.Down)
}

// Inject implements Fault.
func (f StopBroker) Inject(ctx context.Context, c *cluster.Cluster) ([]string, error) {
	return nil, outage(ctx, c, "broker", c.Stop, f.Down)
}

// RedisFailover SIGKILLs whichever Redis server is master now (with Redis
// Cluster: the master of the sale's slot) and waits until a replica has been
// promoted — by the sentinels, or by the cluster — then starts the dead
// server again, which comes back as the new master's replica (so the new
// master has a replica to WAIT for). The cluster must run with
// --redis sentinel or cluster. The nodes are never restarted: they follow
// the new master.
type RedisFailover struct {
	Key string // a key of the sale, to find its master on Redis Cluster; SellOut sets it
}

func (f RedisFailover) String() string {
	return "SIGKILL the Redis master; a replica is promoted; the old master comes back as a replica"
}

// Inject implements Fault.
func (f RedisFailover) Inject(ctx context.Context, c *cluster.Cluster) ([]string, error) {
	old, err := c.KillRedisMaster(ctx, f.Key)
	if err != nil {
		return nil, err
	}
	if _, err := c.WaitRedisFailover(ctx, old, f.Key, 30*time.Second); err != nil {
		return nil, err
	}
	return nil, c.Restart(old)
}

// outage breaks name with brk, waits down and restarts it.
func outage(ctx context.Context, c *cluster.Cluster, name string, brk func(string) error, down time.Duration) error {
	if err := brk(name); err != nil {
		return err
	}
	t := time.NewTimer(down)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		// Restart anyway: a run that gives up must not leave the cluster broken.
	}
	return c.Restart(name)
}

// ParseFault turns a command-line fault name into a Fault: "node" (or
// "node2", any node name) kills that node, "redis" crashes Redis for down,
// "broker" stops the broker for down, "redis-failover" kills the Redis
// master of a replicated deployment (RedisFailover).
func ParseFault(s string, down time.Duration) (Fault, error) {
	switch s {
	case "redis":
		return CrashRedis{Down: down}, nil
	case "broker":
		return StopBroker{Down: down}, nil
	case "redis-failover":
		return RedisFailover{}, nil
	case "node":
		return KillNode("node2"), nil
	case "", "none":
		return nil, nil
	}
	if len(s) > 4 && s[:4] == "node" {
		return KillNode(s), nil
	}
	return nil, fmt.Errorf("unknown fault %q: want node, nodeN, redis, redis-failover, broker or none", s)
}
