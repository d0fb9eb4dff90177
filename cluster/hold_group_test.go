package cluster

import (
	"io"
	"strings"
	"testing"
)

// holdClusterConfig is the cluster TestHoldShakeNodeGroup holds its
// connections on: two node processes, no nginx (the clients connect to the
// nodes, as the seed's clients did to its one server).
func holdClusterConfig(t *testing.T, bin string, log io.Writer) Config {
	return Config{Nodes: 2, Dir: t.TempDir(), Binary: bin, Log: log, NoNginx: true, NoPostgres: true,
		NoRateLimits: true, Env: holdEnv}
}

// holdTargets is the --target list for the cluster.
func holdTargets(c *Cluster) string { return strings.Join(c.NodeURLs(), ",") }
