package cluster

import (
	"io"
	"slices"
	"strings"
	"testing"
)

// holdClusterConfig is the cluster TestHoldShakeNodeGroup holds its
// connections on: one node of two processes sharing its port
// (SO_REUSEPORT) on the nbio engine, no nginx (the clients connect to the
// node, as the seed's clients did to its one server).
func holdClusterConfig(t *testing.T, bin string, log io.Writer) Config {
	return Config{Nodes: 1, ProcsPerNode: 2, Dir: t.TempDir(), Binary: bin, Log: log, NoNginx: true, NoPostgres: true,
		NoRateLimits: true, Env: append([]string{"FLASHSALE_HTTP_ENGINE=nbio"}, holdEnv...)}
}

// holdTargets is the --target list: each distinct node port once (the
// processes of a group share one).
func holdTargets(c *Cluster) string {
	urls := c.NodeURLs()
	slices.Sort(urls)
	return strings.Join(slices.Compact(urls), ",")
}
