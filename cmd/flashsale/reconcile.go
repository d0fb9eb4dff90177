package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/flashsale/flashsale/node"
	"github.com/flashsale/flashsale/reconcile"
	"github.com/flashsale/flashsale/store"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// errChecksFailed makes the command exit 1 after printing the report.
var errChecksFailed = fmt.Errorf("reconciliation failed")

func newReconcileCommand() *cobra.Command {
	var (
		in        reconcile.Input
		pools     reconcile.PoolInput
		redisA    []string
		logs      []string
		asJSON    bool
		deadline  time.Duration
		clientLog string
		dsn       string

		masterName   string
		redisCluster bool
	)
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Check the books of a sale, envelopes and shakes against every stat.log, Redis and Kafka (exit 1 on any failed check)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, pattern := range logs {
				matches, err := filepath.Glob(pattern)
				if err != nil {
					return fmt.Errorf("--statlog %q: %w", pattern, err)
				}
				in.StatLogs = append(in.StatLogs, matches...)
			}
			if clientLog != "" {
				f, err := os.Open(clientLog)
				if err != nil {
					return fmt.Errorf("--client-log: %w", err)
				}
				in.Client, err = reconcile.ReadClientLog(f)
				f.Close()
				if err != nil {
					return err
				}
			}
			// The same client construction as the node: with a master name the
			// addresses are sentinels and the books are read from the master
			// they name now; with --redis-cluster (or several addresses) from
			// each sale's slot master.
			rdb := redis.NewUniversalClient(node.RedisOptions(node.RedisTarget{Addrs: redisA, MasterName: masterName,
				Cluster: redisCluster, Password: os.Getenv("FLASHSALE_REDIS_PASSWORD")}, &redis.UniversalOptions{}))
			defer rdb.Close()
			in.Redis = rdb
			if in.Sale == "" && len(pools.Envelopes) == 0 && len(pools.Shakes) == 0 {
				return fmt.Errorf("say what to reconcile: --sale ID, --envelope ID|all, --shake ID|all")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), deadline)
			defer cancel()
			if dsn == "" {
				dsn = os.Getenv("FLASHSALE_POSTGRES_DSN")
			}
			if dsn != "" {
				st, err := store.Open(ctx, store.Config{DSN: dsn, MaxConns: 2, Timeout: 10 * time.Second})
				if err != nil {
					return err
				}
				defer st.Close()
				in.Store = st
			}
			out := struct {
				Sale  *reconcile.Report     `json:"sale,omitempty"`
				Pools *reconcile.PoolReport `json:"pools,omitempty"`
			}{}
			ok := true
			if in.Sale != "" {
				rep, err := reconcile.Run(ctx, in)
				if err != nil {
					return err
				}
				out.Sale, ok = rep, rep.OK
			}
			if len(pools.Envelopes) > 0 || len(pools.Shakes) > 0 {
				pools.Redis, pools.StatLogs, pools.Killed = rdb, in.StatLogs, in.Killed
				rep, err := reconcile.Pools(ctx, pools)
				if err != nil {
					return err
				}
				out.Pools, ok = rep, ok && rep.OK
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(out); err != nil {
					return err
				}
			} else {
				if out.Sale != nil {
					out.Sale.WriteText(cmd.OutOrStdout())
				}
				if out.Pools != nil {
					fmt.Fprintln(cmd.OutOrStdout())
					out.Pools.WriteText(cmd.OutOrStdout())
				}
			}
			if !ok {
				return errChecksFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.Sale, "sale", "", "sale id")
	f.StringSliceVar(&pools.Envelopes, "envelope", nil, `envelope ids to check, or "all"`)
	f.StringSliceVar(&pools.Shakes, "shake", nil, `shake campaign ids to check, or "all"`)
	f.StringSliceVar(&redisA, "redis-addrs", []string{"127.0.0.1:6379"}, "Redis address(es): one server, the sentinels (with --redis-master-name) or Redis Cluster seeds")
	f.StringVar(&masterName, "redis-master-name", "", "Sentinel master name: --redis-addrs are sentinels; the books are read from the current master")
	f.BoolVar(&redisCluster, "redis-cluster", false, "--redis-addrs are Redis Cluster seeds (implied by several addresses)")
	f.StringSliceVar(&in.Brokers, "kafka-brokers", []string{"127.0.0.1:9092"}, "Kafka brokers; empty skips the event checks")
	f.StringVar(&in.Topic, "kafka-topic", "flashsale.orders", "order event topic")
	f.StringSliceVar(&logs, "statlog", nil, "stat.log files or globs, every node's (repeatable)")
	f.StringSliceVar(&in.Killed, "killed", nil, "node ids that were SIGKILLed (their unflushed stat.log lines may be missing)")
	f.BoolVar(&in.RedisCrashed, "redis-crashed", false, "Redis was killed mid-sale: unpaid orders with no ok line and no event (buys it ran but never answered) pass, counted")
	f.BoolVar(&in.ExpectSellout, "expect-sellout", false, "demand exceeded supply: check that every unit is paid or pending")
	f.StringVar(&dsn, "postgres-dsn", "", "order store (PostgreSQL) to check as the third record; default $FLASHSALE_POSTGRES_DSN, empty skips it")
	f.DurationVar(&in.StoreWait, "store-wait", 20*time.Second, "how long to wait for the order store to catch up before judging it")
	f.StringVar(&clientLog, "client-log", "", "a client log (JSON lines: sale, user, status, order, sent, got): check every 201 is a payable order and a buyer told 5xx holds none")
	f.DurationVar(&in.ClientInDoubt, "client-in-doubt", 0, "window after a failed answer in which an order of that buyer still counts against it")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.DurationVar(&deadline, "timeout", time.Minute, "bound of the whole reconciliation")
	return cmd
}
