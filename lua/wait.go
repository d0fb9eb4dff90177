package lua

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated means a script ran on the master but fewer replicas than
// asked confirmed it within the wait timeout (or the WAIT itself got no
// answer). The write may or may not survive a failover, so its caller must
// treat the call as in doubt: never answer "yes" on it. It is not a
// redis.Error, so stock.Definite reports it as not definite.
var ErrNotReplicated = errors.New("redis write not acknowledged by enough replicas")

// Replicated is a Redis client whose every script call (EVALSHA, and EVAL
// after NOSCRIPT) is followed, in the same round trip and on the same
// connection, by WAIT Replicas Timeout: a script's reply counts only once
// that many replicas have its writes. Every product's scripts run through
// the wrappers of this package, so wrapping the node's one client here puts
// the rule in one place.
//
// On Redis Cluster each script goes, with its WAIT, to the master of its
// first key's slot on one pipelined connection (WAIT counts the writes of
// its own connection, and a cluster client would send a keyless WAIT to a
// random node); a redirect or a dead master refreshes the slot map for the
// next call. This also keeps the cluster client's own retry of a command
// whose reply was lost away from scripts: a buy sent twice is two sales.
//
// Other commands go to the wrapped client unchanged. It is safe for
// concurrent use.
type Replicated struct {
	redis.UniversalClient
	Replicas int           // replicas that must confirm; 0: no WAIT
	Timeout  time.Duration // how long WAIT may wait for them
}

// WithReplicas returns rdb wrapped so that scripts wait for replicas
// replicas (at most timeout), or rdb itself when there is nothing to wait
// for and nothing to route (replicas 0 and not a cluster client).
func WithReplicas(rdb redis.UniversalClient, replicas int, timeout time.Duration) redis.UniversalClient {
	if _, cluster := rdb.(*redis.ClusterClient); replicas <= 0 && !cluster {
		return rdb
	}
	return &Replicated{UniversalClient: rdb, Replicas: max(replicas, 0), Timeout: timeout}
}

// ReplicasOf reports how many replicas rdb's scripts wait for: 0 unless rdb
// is a *Replicated.
func ReplicasOf(rdb any) int {
	if r, ok := rdb.(*Replicated); ok {
		return r.Replicas
	}
	return 0
}

// EvalSha implements redis.Scripter.
func (r *Replicated) EvalSha(ctx context.Context, sha1 string, keys []string, args ...any) *redis.Cmd {
	return r.run(ctx, keys, func(p redis.Pipeliner) *redis.Cmd { return p.EvalSha(ctx, sha1, keys, args...) })
}

// Eval implements redis.Scripter.
func (r *Replicated) Eval(ctx context.Context, script string, keys []string, args ...any) *redis.Cmd {
	return r.run(ctx, keys, func(p redis.Pipeliner) *redis.Cmd { return p.Eval(ctx, script, keys, args...) })
}

func (r *Replicated) run(ctx context.Context, keys []string, queue func(redis.Pipeliner) *redis.Cmd) *redis.Cmd {
	var pipe redis.Pipeliner
	cc, cluster := r.UniversalClient.(*redis.ClusterClient)
	if cluster && len(keys) > 0 {
		m, err := cc.MasterForKey(ctx, keys[0])
		if err != nil {
			cmd := redis.NewCmd(ctx)
			cmd.SetErr(fmt.Errorf("find the master of %q: %w", keys[0], err))
			return cmd
		}
		pipe = m.Pipeline()
	} else {
		pipe = r.UniversalClient.Pipeline()
	}
	cmd := queue(pipe)
	var wait *redis.IntCmd
	if r.Replicas > 0 {
		wait = redis.NewIntCmd(ctx, "wait", r.Replicas, max(r.Timeout.Milliseconds(), 1)) // 0 would block forever
		_ = pipe.Process(ctx, wait)
	}
	_, _ = pipe.Exec(ctx) // each command's own error is read below
	if err := cmd.Err(); err != nil {
		if cluster {
			// MOVED after a failover or a resharding, or a dead master:
			// the next call should find the new owner of the slot.
			cc.ReloadState(ctx)
		}
		return cmd
	}
	if wait == nil {
		return cmd
	}
	if err := wait.Err(); err != nil {
		cmd.SetErr(fmt.Errorf("%w: WAIT: %w", ErrNotReplicated, err))
	} else if n := wait.Val(); n < int64(r.Replicas) {
		cmd.SetErr(fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, n, r.Replicas, r.Timeout))
	}
	return cmd
}

// ProbeReplicas writes a short-lived probe key on every master of rdb (the
// one master of a plain or Sentinel client, each master of a cluster
// client) and reports whether each write was acknowledged by replicas
// replicas within timeout. "Replica online" is not enough for a caller that
// is about to WAIT: after a diskless full sync a master streams to its
// replica only once the replica's first REPLCONF ACK arrives, up to a
// second later, and every WAIT in between fails. Launchers and tests poll
// this before they let anything sell.
func ProbeReplicas(ctx context.Context, rdb redis.UniversalClient, replicas int, timeout time.Duration) error {
	probe := func(c redis.Cmdable, key string) error {
		pipe := c.Pipeline()
		pipe.Set(ctx, key, "1", time.Minute)
		w := redis.NewIntCmd(ctx, "wait", replicas, max(timeout.Milliseconds(), 1))
		_ = pipe.Process(ctx, w)
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("probe %s: %w", key, err)
		}
		if w.Val() < int64(replicas) {
			return fmt.Errorf("probe %s: %w: %d of %d replicas", key, ErrNotReplicated, w.Val(), replicas)
		}
		return nil
	}
	cc, ok := rdb.(*redis.ClusterClient)
	if !ok {
		return probe(rdb, "fs:probe")
	}
	var mu sync.Mutex // ForEachMaster calls back concurrently
	masters := map[string]bool{}
	err := cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		mu.Lock()
		masters[m.Options().Addr] = false
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	for i := 0; i < 10000 && len(masters) > 0; i++ {
		key := fmt.Sprintf("fs:probe:{%d}", i)
		m, err := cc.MasterForKey(ctx, key)
		if err != nil {
			return err
		}
		addr := m.Options().Addr
		if done, ok := masters[addr]; !ok || done {
			continue
		}
		if err := probe(m, key); err != nil {
			return err
		}
		delete(masters, addr)
	}
	return nil
}
