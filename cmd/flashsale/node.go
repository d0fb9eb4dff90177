package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/flashsale/flashsale/configs"
	"github.com/flashsale/flashsale/node"
	"github.com/spf13/cobra"
)

// newNodeCommand is `flashsale node`: one HTTP node until SIGINT/SIGTERM.
func newNodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run an HTTP node (config: configs/default.yaml, FLASHSALE_* env, flags)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := configs.Load(cmd.Flags())
			if err != nil {
				return err
			}
			n, err := node.Open(cfg, nil)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return n.Run(ctx)
		},
	}
	configs.RegisterFlags(cmd.Flags())
	return cmd
}

// newConfigCommand is `flashsale config`: print the effective configuration.
func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print the effective configuration (defaults < --config < env < flags)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := configs.Load(cmd.Flags())
			if err != nil {
				return err
			}
			out, err := cfg.YAML()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
	configs.RegisterFlags(cmd.Flags())
	return cmd
}
