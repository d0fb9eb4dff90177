package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// Command returns `flashsale cluster`: up, status, kill, stop, restart, down.
func Command() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Run a local cluster: redis-server, the dev broker, N nodes and nginx",
		Long: `Run the 12306 layout on this machine: a real redis-server (AOF on), the
Kafka-protocol dev broker, N flashsale nodes and nginx with a weighted
round-robin upstream, every piece on 127.0.0.1.

"up" waits until every piece is ready and records the processes in
DIR/cluster.json, so status, kill, restart and down work from another shell.`,
	}
	cmd.PersistentFlags().StringVar(&dir, "dir", "run", "run directory: state file, logs, stat.logs, data")
	cmd.AddCommand(upCommand(&dir), statusCommand(&dir), killCommand(&dir), stopCommand(&dir), restartCommand(&dir), downCommand(&dir))
	return cmd
}

func upCommand(dir *string) *cobra.Command {
	var cfg Config
	var foreground bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start the cluster and wait until every piece is ready",
		Long: `Start the cluster and wait until every piece is ready, then print the URLs,
logs and stat.logs. The processes outlive this command (they run in their own
sessions) unless --foreground is given, in which case Ctrl-C or SIGTERM brings
everything down.

Every node gets FLASHSALE_HTTP_ADDR, _NODE_ID, _REDIS_ADDRS, _KAFKA_BROKERS,
_KAFKA_TOPIC, _ADMIN_TOKEN and _STATLOG_PATH, and inherits this environment,
so any other FLASHSALE_* setting exported here reaches every node.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Dir = *dir
			cfg.Log = cmd.ErrOrStderr()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			c, err := Up(ctx, cfg)
			if err != nil {
				return err
			}
			c.PrintSummary(cmd.OutOrStdout())
			if !foreground {
				return nil
			}
			fmt.Fprintln(cmd.ErrOrStderr(), "running in the foreground: Ctrl-C stops the cluster")
			<-ctx.Done()
			c.SetLog(cmd.ErrOrStderr())
			return c.Down()
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Nodes, "nodes", 3, "node processes to start (0: only redis, broker and nginx)")
	f.IntVar(&cfg.ProcsPerNode, "procs-per-node", 1, "node processes per node sharing its port (SO_REUSEPORT): nodeI-p1..pK, each a cluster member; only p1 runs the expiry/refund/store consumers")
	f.IntSliceVar(&cfg.Weights, "weights", nil, "nginx weight of each node, e.g. 1,1,2 (default all 1)")
	f.IntVar(&cfg.BasePort, "base-port", 8081, "node1's port; node i gets base-port+i-1 (0: free ports)")
	f.IntVar(&cfg.NginxPort, "nginx-port", 8080, "load balancer port (0: a free port)")
	f.BoolVar(&cfg.NoNginx, "no-nginx", false, "start no load balancer")
	f.BoolVar(&cfg.NoPostgres, "no-postgres", false, "start no PostgreSQL order store (started by default when installed)")
	f.BoolVar(&cfg.Dashboard, "dashboard", true, "start the live dashboard (flashsale dashboard) on the nodes and Redis")
	f.IntVar(&cfg.DashboardPort, "dashboard-port", 8090, "the dashboard's port (0: a free port)")
	f.BoolVar(&cfg.NginxAccessLog, "nginx-access-log", false, "write nginx's access log (costs throughput)")
	f.IntVar(&cfg.NginxWorkers, "nginx-workers", 1, "nginx worker processes (the nodes need the other cores)")
	f.IntVar(&cfg.RedisPort, "redis-port", 0, "redis-server port (0: a free port)")
	f.IntVar(&cfg.BrokerPort, "broker-port", 0, "broker port (0: a free port)")
	f.StringVar(&cfg.RedisFsync, "redis-fsync", "always", "redis appendfsync: always or everysec")
	f.StringVar(&cfg.Redis, "redis", RedisSingle, "Redis deployment: single (one redis-server), sentinel (1 master, 2 replicas, 3 sentinels) or cluster (Redis Cluster: 3 masters, 3 replicas)")
	f.BoolVar(&cfg.BrokerSync, "broker-sync", false, "broker fsyncs every batch")
	f.StringVar(&cfg.Topic, "topic", DefaultTopic, "orders topic")
	f.IntVar(&cfg.Partitions, "partitions", 3, "partitions of the orders topic")
	f.StringVar(&cfg.AdminToken, "admin-token", os.Getenv("FLASHSALE_ADMIN_TOKEN"), "admin bearer token for the nodes (default $FLASHSALE_ADMIN_TOKEN, else random)")
	f.BoolVar(&cfg.NoRateLimits, "no-rate-limits", false, "turn the nodes' per-user and per-IP rate limits off (load runs from one host)")
	f.DurationVar(&cfg.PayTimeout, "pay-timeout", 0, "FLASHSALE_PAY_TIMEOUT for the nodes (default: the node's)")
	f.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 30*time.Second, "how long each piece may take to become ready")
	f.BoolVar(&cfg.Fresh, "fresh", false, "delete an earlier cluster's data and logs in --dir first (Redis AOF, broker log, stat.logs)")
	f.BoolVar(&foreground, "foreground", false, "stay in the foreground; Ctrl-C or SIGTERM brings the cluster down")
	return cmd
}

func statusCommand(dir *string) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show each process: pid, ready/not ready/dead, address, log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := Open(*dir)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(c.Status(ctx))
			}
			c.PrintStatus(ctx, cmd.OutOrStdout())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// oneProcCommand is kill, stop and restart: each acts on one named process.
func oneProcCommand(dir *string, use, short string, act func(*Cluster, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   use + " NAME",
		Short: short,
		Long: short + ".\n\nNAME is node1..nodeN (or just the number), redis, broker, nginx or dashboard; with --redis sentinel\n" +
			"or cluster, redis1..redisN, sentinel1..sentinel3, or redis-master: whichever Redis server is master now\n" +
			"(Redis Cluster: the first master by name).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := Open(*dir)
			if err != nil {
				return err
			}
			c.SetLog(cmd.ErrOrStderr())
			return act(c, args[0])
		},
	}
}

func killCommand(dir *string) *cobra.Command {
	return oneProcCommand(dir, "kill", "SIGKILL one process, as a crash would", (*Cluster).Kill)
}

func stopCommand(dir *string) *cobra.Command {
	return oneProcCommand(dir, "stop", "Stop one process gracefully (SIGTERM; SIGKILL after 20 s for a node, 10 s otherwise)", (*Cluster).Stop)
}

func restartCommand(dir *string) *cobra.Command {
	return oneProcCommand(dir, "restart", "Start one process again with the same command line and environment, and wait until it is ready", (*Cluster).Restart)
}

func downCommand(dir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Stop everything up started: nodes, nginx, broker, redis (SIGTERM, then SIGKILL)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := Open(*dir)
			if err != nil {
				return err
			}
			c.SetLog(cmd.ErrOrStderr())
			return c.Down()
		},
	}
}
