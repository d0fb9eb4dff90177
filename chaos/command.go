package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flashsale/flashsale/cluster"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// errFailed makes `flashsale demo` exit 1 after printing the report.
var errFailed = errors.New("chaos run failed: see FAIL above")

// Command returns `flashsale demo`: the main job end to end on this
// machine. It brings a local cluster up (redis-server, the broker, N nodes,
// nginx), sells out a sale through nginx with demand well above the stock
// while a node is SIGKILLed (or Redis crashes, or the broker stops), lets
// unpaid orders expire and their units sell again, prints the load summary
// and the reconciliation report, and brings the cluster down. It exits 1
// when any check fails.
func Command() *cobra.Command {
	var (
		o         Options
		fault     string
		down      time.Duration
		quiet     bool
		timeout   time.Duration
		basePort  int
		nginxPort int
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "The main job: local cluster, sell out under 10x demand, kill a node mid-sale, reconcile (exit 1 on any failed check)",
		Long: `Run the main job end to end on this machine:

  1. bring up redis-server (AOF), the Kafka-protocol dev broker, --nodes
     flashsale nodes and nginx (weighted round robin) under --dir;
  2. create a sale of --stock units and rush it with --demand x stock
     distinct buyers through nginx; --pay-fraction of the winners pay,
     the rest let their order expire after --pay-timeout;
  3. when --fault-at of the stock is sold, inject --fault: SIGKILL a node
     (never restarted: the others must sell its share), or crash Redis and
     restart it from its AOF, or SIGKILL the master of a replicated Redis
     (--fault redis-failover: Sentinel, or --redis cluster) and let a replica
     take over, or stop and restart the broker;
  4. keep the demand going, every winner paying, until every unit is paid:
     the expired units are sold again by the nodes still alive;
  5. check what the clients saw against the server and print the
     reconciliation of every stat.log, Redis and Kafka.

The cluster is brought down at the end unless --keep. Exit status 1 when any
check fails. It takes about half a minute with the defaults.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := ParseFault(fault, down)
			if err != nil {
				return err
			}
			o.Fault = f
			if _, ok := f.(RedisFailover); ok && (o.Up.Redis == "" || o.Up.Redis == cluster.RedisSingle) {
				o.Up.Redis = cluster.RedisSentinel // a failover needs replicas
			}
			o.Up.BasePort, o.Up.NginxPort = basePort, nginxPort
			o.Up.Fresh = true
			if o.Report != "" {
				o.Up.Dashboard = true
			}
			o.Log = cmd.ErrOrStderr()
			if !quiet {
				o.Progress = cmd.ErrOrStderr()
			}
			// go-redis logs every failed dial of the run's own client while
			// Redis is down; the run reports the outage itself.
			redis.SetLogger(quietRedis{})
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out, err := SellOut(ctx, o)
			if out != nil && (err == nil || out.Rush != nil) {
				out.WriteText(cmd.OutOrStdout())
			}
			if err != nil {
				return err
			}
			if !out.OK() {
				return errFailed
			}
			if o.Keep {
				fmt.Fprintf(cmd.OutOrStdout(), "\nthe cluster is still up: flashsale cluster status --dir %s\n", o.Up.Dir)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.Up.Dir, "dir", "run/demo", "run directory: logs, stat.logs, Redis AOF, broker data (wiped at start)")
	fl.IntVar(&o.Up.Nodes, "nodes", 3, "node processes")
	fl.IntSliceVar(&o.Up.Weights, "weights", nil, "nginx weight of each node (default all 1)")
	fl.IntVar(&basePort, "base-port", 0, "node1's port, node i gets base-port+i-1 (0: free ports)")
	fl.IntVar(&nginxPort, "nginx-port", 0, "nginx's port (0: a free port)")
	fl.BoolVar(&o.Keep, "keep", false, "leave the cluster up at the end")
	fl.StringVar(&o.Sale, "sale", "", "sale id (default chaos-<unix ms>)")
	fl.Int64Var(&o.Stock, "stock", 3000, "units on sale")
	fl.IntVar(&o.Demand, "demand", 10, "distinct buyers per unit, each asking once in the rush")
	fl.Float64Var(&o.Rate, "rate", 4000, "rush arrivals per second")
	fl.IntVar(&o.Connections, "connections", 64, "load generator connections")
	fl.Float64Var(&o.PayFraction, "pay-fraction", 0.5, "fraction of the rush's winners who pay; the others' orders expire")
	fl.DurationVar(&o.PayTimeout, "pay-timeout", 2*time.Second, "the sale's pay deadline")
	fl.StringVar(&fault, "fault", "node2", "what breaks mid-sale: nodeN (SIGKILL, no restart), redis (SIGKILL, restart from AOF), redis-failover (SIGKILL the master of a replicated Redis, a replica promoted), broker (stop, restart) or none")
	fl.StringVar(&o.Up.Redis, "redis", "", "Redis deployment: single, sentinel or cluster (default single; sentinel with --fault redis-failover)")
	fl.Float64Var(&o.FaultAt, "fault-at", 0.3, "inject the fault when this fraction of the stock is sold")
	fl.DurationVar(&down, "down", 2*time.Second, "how long redis or the broker stays down")
	fl.DurationVar(&o.SettleTimeout, "settle-timeout", 60*time.Second, "bound of the settle phase")
	fl.DurationVar(&timeout, "timeout", 3*time.Minute, "bound of the whole run")
	fl.BoolVar(&quiet, "quiet", false, "no per-second load lines")
	fl.BoolVar(&o.Up.Dashboard, "dashboard", true, "start the live dashboard with the cluster and print its URL; the page is up for the whole run (--dashboard=false: none)")
	fl.IntVar(&o.Up.DashboardPort, "dashboard-port", 0, "the dashboard's port (0: a free port)")
	fl.StringVar(&o.Report, "report", "", "save the dashboard's final page (charts of the whole run, one HTML file) here, e.g. run/demo/report.html; implies --dashboard")
	return cmd
}
