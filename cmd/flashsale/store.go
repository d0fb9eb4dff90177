package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/node"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
)

// newStoreCommand is `flashsale store`: the order store's consumer and
// archiver alone, for deployments that keep them apart from the nodes.
func newStoreCommand() *cobra.Command {
	var metricsAddr string
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Run the order store consumer (Kafka -> PostgreSQL) and the archiver of finished sales",
		Long: `Consume every order and envelope event into PostgreSQL (store.dsn, or
FLASHSALE_POSTGRES_DSN) and archive finished sales out of Redis, until
SIGINT/SIGTERM. The same consumer group as the nodes' store consumers, so
running both only shares the partitions. Config as for ` + "`flashsale node`" + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := configs.Load(cmd.Flags())
			if err != nil {
				return err
			}
			if cfg.Store.DSN == "" {
				return errors.New("store.dsn is empty: set FLASHSALE_POSTGRES_DSN")
			}
			log := node.NewLogger(cfg)
			rdb := node.NewRedisClient(cfg)
			defer rdb.Close()
			r := node.NewStoreRunner(cfg, rdb, log)
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if metricsAddr != "" {
				reg := prometheus.NewRegistry()
				reg.MustRegister(r)
				srv := &http.Server{Addr: metricsAddr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
					ReadHeaderTimeout: 5 * time.Second}
				go func() {
					if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
						log.Warn("metrics listener stopped", "err", err)
					}
				}()
				defer srv.Close()
			}
			log.Info("order store starting", "dsn", configs.RedactDSN(cfg.Store.DSN), "group", cfg.Store.Group)
			if err := r.Run(ctx); err != nil {
				return fmt.Errorf("store: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&metricsAddr, "metrics-addr", "", "serve /metrics (flashsale_store_lag_events, ...) here; empty: off")
	configs.RegisterFlags(cmd.Flags())
	return cmd
}
