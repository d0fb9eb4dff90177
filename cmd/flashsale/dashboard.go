package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/dashboard"
	"github.com/flashsale/flashsale/node"
)

// newDashboardCommand is `flashsale dashboard`: the live page of a cluster.
func newDashboardCommand() *cobra.Command {
	var redisAddrs, nodes []string
	var addr string
	cmd := &cobra.Command{
		Use:   "dashboard",
		Short: "Serve the live dashboard: per-sale books, sales/s, refusals, latency, nodes (SSE, one page)",
		Long: `Serve the live dashboard of a running cluster on --addr: one page, updated
once a second over Server-Sent Events, that charts per sale the books in Redis
(remaining, pending, paid, expired), sales/s and refusals/s by reason, buy p50
and p99, per-node lines and events (node joined/left, Redis down or failed
over, broker down), and a cluster panel with each node's health and share.

It reads each node's Prometheus metrics (--nodes: the nodes' metrics URLs; a
URL without a path gets /metrics) and Redis (read only, with deadlines); it
never calls the buy path. Its own /metrics exports the books it reads, for
Prometheus. Settings: the dashboard section of configs/default.yaml,
FLASHSALE_DASHBOARD_* and FLASHSALE_REDIS_* env, and these flags.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := configs.Load(cmd.Flags())
			if err != nil {
				return err
			}
			if len(redisAddrs) > 0 {
				cfg.Redis.Addrs = redisAddrs
			}
			if len(nodes) > 0 {
				cfg.Dashboard.Nodes = nodes
			}
			if addr != "" {
				cfg.Dashboard.Addr = addr
			}
			return runDashboard(cmd, cfg)
		},
	}
	f := cmd.Flags()
	f.String("config", "", "YAML file overriding configs/default.yaml")
	f.StringSliceVar(&redisAddrs, "redis", nil, "Redis address(es) (default redis.addrs)")
	f.StringSliceVar(&nodes, "nodes", nil, "the nodes' metrics URLs, comma-separated (default dashboard.nodes)")
	f.StringVar(&addr, "addr", "", "listen address of the page (default dashboard.addr, 127.0.0.1:8090)")
	return cmd
}

func runDashboard(cmd *cobra.Command, cfg *configs.Config) error {
	dc := cfg.Dashboard
	// Built like the node's client, so under Sentinel or Redis Cluster the
	// dashboard reads whichever server is master now.
	rdb := redis.NewUniversalClient(node.RedisOptions(node.RedisTarget{Addrs: cfg.Redis.Addrs, Password: cfg.Redis.Password,
		MasterName: cfg.Redis.MasterName, Cluster: cfg.Redis.Cluster}, &redis.UniversalOptions{
		DialTimeout: cfg.Redis.DialTimeout, ReadTimeout: cfg.Redis.ReadTimeout, WriteTimeout: cfg.Redis.WriteTimeout,
		PoolSize: 2}))
	defer rdb.Close()
	d, err := dashboard.New(dashboard.Config{Redis: rdb, Nodes: dc.Nodes, MemberTTL: cfg.Cluster.TTL,
		Interval: dc.Interval, ScrapeTimeout: dc.ScrapeTimeout, RedisTimeout: dc.RedisTimeout, History: dc.History,
		MaxSubscribers: dc.MaxSubscribers, SubscriberBuffer: dc.SubscriberBuffer, MaxSales: dc.MaxSales})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", dc.Addr)
	if err != nil {
		return fmt.Errorf("dashboard listen %s: %w", dc.Addr, err)
	}
	// No WriteTimeout: the event stream is long-lived; each of its writes
	// has its own deadline instead.
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 5 * time.Second, IdleTimeout: time.Minute}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(cmd.OutOrStdout(), "dashboard on http://%s/ (%d node(s))\n", ln.Addr(), len(dc.Nodes))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	runErr := make(chan error, 1)
	go func() { runErr <- d.Run(ctx) }()
	select {
	case err = <-served:
		stop()
		<-runErr
		return fmt.Errorf("dashboard serve: %w", err)
	case <-ctx.Done():
	}
	<-runErr // closes the streams, so Shutdown does not wait on them
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("dashboard shutdown: %w", err)
	}
	return nil
}
