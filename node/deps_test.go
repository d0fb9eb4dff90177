package node_test

import (
	"os/exec"
	"strings"
	"testing"
)

// module is this repository's module path.
const module = "github.com/flashsale/flashsale"

// production lists the packages a running node is made of (node.Command is
// the `flashsale node` command itself, so the binary's node path is in it).
var production = []string{
	module, "api", "stock", "order", "envelope", "shake", "wallet", "lua", "kafka",
	"membership", "node", "statlog", "configs", "client", "auth", "limit", "admit", "waitroom", "store",
}

// devTooling is what production code must never pull in: the local cluster
// launcher and dev broker, the chaos job, the load generator, the test
// environments and the in-process Kafka fake.
var devTooling = []string{
	module + "/cluster", module + "/chaos", module + "/bench", module + "/reconcile",
	module + "/internal/testenv", module + "/internal/e2e",
	"github.com/twmb/franz-go/pkg/kfake",
}

// Invariant: no production package imports the dev tooling, directly or
// through anything it imports (tests are not part of the build, so they may).
func TestProductionImportsNoDevTooling(t *testing.T) {
	args := []string{"list", "-deps"}
	for _, p := range production {
		if p != module {
			p = module + "/" + p
		}
		args = append(args, p)
	}
	out, err := exec.Command("go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < len(production) {
		t.Fatalf("go list -deps listed %d packages for %d roots", len(deps), len(production))
	}
	for _, d := range deps {
		for _, bad := range devTooling {
			if d == bad || strings.HasPrefix(d, bad+"/") {
				t.Errorf("the production path imports %s (find who: go list -deps -f '{{.ImportPath}}: {{.Imports}}' ./... | grep %s)", d, bad)
			}
		}
	}
}
