package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/flashsale/flashsale/auth"
	"github.com/flashsale/flashsale/cluster"
)

// newTokenCommand is `flashsale token`: mint buyer tokens for development,
// tests and load runs, with the nodes' auth.secret.
func newTokenCommand() *cobra.Command {
	var user, dir, out, prefix string
	var ttl time.Duration
	var pool int
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a buyer token (--user U) or a pool of them for wrk (--pool N --out FILE)",
		Long: `Mint HS256 buyer tokens with the nodes' auth.secret: $FLASHSALE_AUTH_SECRET,
or the secret of the local cluster in --dir (its state file).

  flashsale token --user u1 [--ttl 1h]
  ab -H "Authorization: Bearer $(flashsale token --user u1)" ...
  flashsale token --pool 10000 --out tokens.txt   # users u0..u9999, one token a line (bench/wrk/*.lua)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			secret := os.Getenv("FLASHSALE_AUTH_SECRET")
			if dir != "" {
				st, err := cluster.ReadState(dir)
				if err != nil {
					return err
				}
				secret = st.AuthSecret
			}
			if len(secret) < auth.MinSecretLen {
				return fmt.Errorf("no auth secret of at least %d bytes: set FLASHSALE_AUTH_SECRET or --dir of a local cluster", auth.MinSecretLen)
			}
			switch {
			case pool > 0:
				if out == "" {
					return errors.New("--pool needs --out FILE")
				}
				return auth.WriteTokenPool(out, []byte(secret), prefix, pool, ttl)
			case user != "":
				tok, err := auth.Mint([]byte(secret), user, ttl)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), tok)
				return nil
			}
			return errors.New("give --user U or --pool N --out FILE")
		},
	}
	f := cmd.Flags()
	f.StringVar(&user, "user", "", "the user id (the token's sub)")
	f.DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	f.IntVar(&pool, "pool", 0, "write N tokens, for users PREFIX0..PREFIX(N-1)")
	f.StringVar(&out, "out", "", "with --pool: the file (one token a line)")
	f.StringVar(&prefix, "user-prefix", "u", "with --pool: user id prefix")
	f.StringVar(&dir, "dir", "", "read the secret from the local cluster in this directory")
	return cmd
}
