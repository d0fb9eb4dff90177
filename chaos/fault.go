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
// "broker" stops the broker for down.
func ParseFault(s string, down time.Duration) (Fault, error) {
	switch s {
	case "redis":
		return CrashRedis{Down: down}, nil
	case "broker":
		return StopBroker{Down: down}, nil
	case "node":
		return KillNode("node2"), nil
	case "", "none":
		return nil, nil
	}
	if len(s) > 4 && s[:4] == "node" {
		return KillNode(s), nil
	}
	return nil, fmt.Errorf("unknown fault %q: want node, nodeN, redis, broker or none", s)
}
