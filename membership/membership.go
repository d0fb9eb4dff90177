// Package membership tells each node who is alive: every node beats into a
// Redis sorted set and keeps a cached, lock-free view of the live nodes, so
// it can size its share of a sale (see stock.FairShare). It is production
// code: the node imports it; the dev launcher in package cluster does too.
package membership

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultMembersKey is the Redis sorted set that holds the live nodes.
const DefaultMembersKey = "fs:nodes"

// Defaults of Config.
const (
	DefaultBeat = 1 * time.Second
	DefaultTTL  = 3 * time.Second
)

//go:embed membership.lua
var membershipLua string

// membershipScript is loaded once; Run sends EVALSHA and falls back to EVAL
// on NOSCRIPT (after a Redis restart, for instance).
var membershipScript = redis.NewScript(membershipLua)

// Config configures a Members. Zero fields take the defaults.
type Config struct {
	// NodeID names this node in the members set; it must be unique in the
	// cluster and is required.
	NodeID string
	// Key is the members sorted set; DefaultMembersKey when empty.
	Key string
	// Beat is the heartbeat period; DefaultBeat when zero.
	Beat time.Duration
	// TTL is how long a node counts as alive after its last beat; DefaultTTL
	// when zero. It should be at least two beats so one slow beat does not
	// drop a live node.
	TTL time.Duration
	// Logger receives state changes (Redis lost/back, live count changes).
	Logger *slog.Logger
}

// Members registers one node in Redis with a heartbeat and keeps a cached
// view of the live nodes.
//
// LiveNodes and Nodes are lock-free and safe to call from any goroutine, on
// the hot path. When Redis cannot be reached the last known view is kept: a
// node that cannot reach Redis cannot sell anyway, and a view that shrank to
// "just me" would only make it over-claim stock when Redis comes back.
//
// Redis cost: one EVALSHA per node per beat (ZADD, ZREMRANGEBYSCORE, PEXPIRE
// and ZRANGE on a set of N members), so N calls per second cluster-wide with
// the defaults, whatever the request rate.
//
// Detection: a node that dies without deregistering leaves every survivor's
// view within TTL + one beat of its last beat (measured 0.4 s with beat
// 100 ms / TTL 300 ms; at most 4 s with the defaults); a clean stop within
// one beat.
type Members struct {
	rdb redis.UniversalClient
	cfg Config
	log *slog.Logger

	live  atomic.Int64
	nodes atomic.Pointer[[]string]

	mu        sync.Mutex // guards onChange
	onChange  []func(live int)
	redisDown bool // only touched by Run's goroutine
}

// New returns a Members for cfg.NodeID over rdb. It does not
// talk to Redis until Run. Until the first beat, LiveNodes reports 1 and
// Nodes reports just this node.
func New(rdb redis.UniversalClient, cfg Config) (*Members, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("membership: node id is required")
	}
	if cfg.Key == "" {
		cfg.Key = DefaultMembersKey
	}
	if cfg.Beat <= 0 {
		cfg.Beat = DefaultBeat
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < cfg.Beat {
		return nil, fmt.Errorf("membership: ttl %v is shorter than the beat %v", cfg.TTL, cfg.Beat)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &Members{rdb: rdb, cfg: cfg, log: cfg.Logger.With("component", "membership", "node", cfg.NodeID)}
	m.live.Store(1)
	self := []string{cfg.NodeID}
	m.nodes.Store(&self)
	return m, nil
}

// NodeID returns this node's id.
func (m *Members) NodeID() string { return m.cfg.NodeID }

// LiveNodes returns how many nodes are alive, at least 1 (this one). It reads
// a cached value and never blocks.
func (m *Members) LiveNodes() int { return int(m.live.Load()) }

// Nodes returns the ids of the live nodes, sorted. The slice is shared and
// must not be modified.
func (m *Members) Nodes() []string { return *m.nodes.Load() }

// OnChange registers fn to be called, from Run's goroutine, each time the
// number of live nodes changes (including the first beat when it is not 1).
// fn must return quickly; the stock layer uses it to recompute shares.
func (m *Members) OnChange(fn func(live int)) {
	m.mu.Lock()
	m.onChange = append(m.onChange, fn)
	m.mu.Unlock()
}

// Run beats at once and then every Beat until ctx ends. On a clean stop it
// removes this node from the set so the others see it leave at their next
// beat rather than after the TTL. It returns nil when ctx ends; beat errors
// are logged, not returned, because Redis coming back must not need a restart.
func (m *Members) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.Beat)
	defer t.Stop()
	for {
		_ = m.beat(ctx, m.cfg.NodeID) // logged inside; Redis may come back
		select {
		case <-ctx.Done():
			m.deregister()
			return nil
		case <-t.C:
		}
	}
}

// Refresh prunes stale members and reloads the view without beating for
// this node. It is for tools and tests; nodes rely on Run.
func (m *Members) Refresh(ctx context.Context) error {
	return m.beat(ctx, "")
}

func (m *Members) beat(ctx context.Context, id string) error {
	// A beat must finish well within the TTL to mean anything.
	bctx, cancel := context.WithTimeout(ctx, m.cfg.Beat)
	defer cancel()
	ids, err := membershipScript.Run(bctx, m.rdb, []string{m.cfg.Key}, id, m.cfg.TTL.Milliseconds()).StringSlice()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !m.redisDown {
			m.redisDown = true
			m.log.Warn("heartbeat failed; keeping the last view", "live", m.LiveNodes(), "err", err)
		}
		return fmt.Errorf("membership beat: %w", err)
	}
	if m.redisDown {
		m.redisDown = false
		m.log.Info("heartbeat back")
	}
	slices.Sort(ids)
	if id != "" && !slices.Contains(ids, id) {
		// Cannot happen with the script above; keep LiveNodes >= 1 anyway.
		ids = append(ids, id)
		slices.Sort(ids)
	}
	live := max(len(ids), 1)
	m.nodes.Store(&ids)
	if old := m.live.Swap(int64(live)); old != int64(live) {
		m.log.Info("live nodes changed", "from", old, "to", live, "nodes", ids)
		m.mu.Lock()
		fns := slices.Clone(m.onChange)
		m.mu.Unlock()
		for _, fn := range fns {
			fn(live)
		}
	}
	return nil
}

func (m *Members) deregister() {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.Beat)
	defer cancel()
	if err := m.rdb.ZRem(ctx, m.cfg.Key, m.cfg.NodeID).Err(); err != nil {
		m.log.Warn("deregister failed; the others will prune this node after the TTL", "err", err)
	}
}
