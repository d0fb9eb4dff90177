package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/flashsale/flashsale/reconcile"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

// errChecksFailed makes the command exit 1 after printing the report.
var errChecksFailed = fmt.Errorf("reconciliation failed")

func newReconcileCommand() *cobra.Command {
	var (
		in       reconcile.Input
		redisA   []string
		logs     []string
		asJSON   bool
		deadline time.Duration
	)
	cmd := &cobra.Command{
		Use:   "reconcile",
		Short: "Check a sale's books against every stat.log, Redis and Kafka (exit 1 on any failed check)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, pattern := range logs {
				matches, err := filepath.Glob(pattern)
				if err != nil {
					return fmt.Errorf("--statlog %q: %w", pattern, err)
				}
				in.StatLogs = append(in.StatLogs, matches...)
			}
			rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: redisA})
			defer rdb.Close()
			in.Redis = rdb
			ctx, cancel := context.WithTimeout(cmd.Context(), deadline)
			defer cancel()
			rep, err := reconcile.Run(ctx, in)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rep); err != nil {
					return err
				}
			} else {
				rep.WriteText(cmd.OutOrStdout())
			}
			if !rep.OK {
				return errChecksFailed
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in.Sale, "sale", "", "sale id (required)")
	f.StringSliceVar(&redisA, "redis-addrs", []string{"127.0.0.1:6379"}, "Redis address(es)")
	f.StringSliceVar(&in.Brokers, "kafka-brokers", []string{"127.0.0.1:9092"}, "Kafka brokers; empty skips the event checks")
	f.StringVar(&in.Topic, "kafka-topic", "flashsale.orders", "order event topic")
	f.StringSliceVar(&logs, "statlog", nil, "stat.log files or globs, every node's (repeatable)")
	f.StringSliceVar(&in.Killed, "killed", nil, "node ids that were SIGKILLed (their unflushed stat.log lines may be missing)")
	f.BoolVar(&in.RedisCrashed, "redis-crashed", false, "Redis was killed mid-sale: unpaid orders with no ok line and no event (buys it ran but never answered) pass, counted")
	f.BoolVar(&in.ExpectSellout, "expect-sellout", false, "demand exceeded supply: check that every unit is paid or pending")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	f.DurationVar(&deadline, "timeout", time.Minute, "bound of the whole reconciliation")
	_ = cmd.MarkFlagRequired("sale")
	return cmd
}
