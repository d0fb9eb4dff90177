package node

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/flashsale/flashsale/configs"
	"github.com/spf13/cobra"
)

// Command is `flashsale node`: one HTTP node until SIGINT/SIGTERM. It lives
// here, not in cmd/, so the production path the dependency test checks
// includes the command that runs it.
func Command() *cobra.Command {
	var reuseport bool
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run an HTTP node (config: configs/default.yaml, FLASHSALE_* env, flags)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := configs.Load(cmd.Flags())
			if err != nil {
				return err
			}
			if reuseport {
				cfg.HTTP.ReusePort = true
			}
			n, err := Open(cfg, nil)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return n.Run(ctx)
		},
	}
	configs.RegisterFlags(cmd.Flags())
	// The short form of --http-reuseport=true, for node groups sharing a port.
	cmd.Flags().BoolVar(&reuseport, "reuseport", false, "set SO_REUSEPORT on http.addr (same as --http-reuseport=true; env FLASHSALE_HTTP_REUSEPORT)")
	return cmd
}

// ConfigCommand is `flashsale config`: print the effective configuration.
func ConfigCommand() *cobra.Command {
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
