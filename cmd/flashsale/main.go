// Command flashsale is the single binary of the flash-sale system: an HTTP
// node, the local cluster launcher, the load generator and the reconciler.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/flashsale/flashsale/bench"
	"github.com/flashsale/flashsale/chaos"
	"github.com/flashsale/flashsale/cluster"
	"github.com/flashsale/flashsale/node"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "flashsale:", err)
		os.Exit(1)
	}
}

// newRootCommand lists every subcommand in one place.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:           "flashsale",
		Short:         "Sell scarce things to a crowd that arrives in the same second",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(
		node.Command(),
		newStoreCommand(),
		node.ConfigCommand(),
		newTokenCommand(),
		newReconcileCommand(),
		bench.Command(),
		cluster.Command(),
		cluster.BrokerCommand(),
		chaos.Command(),
		newDashboardCommand(),
	)
	return root
}
