package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/flashsale/dashboard"
	"github.com/flashsale/flashsale/internal/e2e"
)

var deploy = filepath.Join("..", "deploy")

// grafanaDashboard is the part of Grafana's dashboard JSON the test reads.
type grafanaDashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Type    string `json:"type"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	} `json:"panels"`
	Annotations struct {
		List []struct {
			Expr string `json:"expr"`
		} `json:"list"`
	} `json:"annotations"`
}

func loadGrafana(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deploy, "grafana", "dashboards", "flashsale.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g grafanaDashboard
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatalf("flashsale.json: %v", err)
	}
	return g
}

// exprs returns every PromQL expression of the dashboard, by where it is.
func (g grafanaDashboard) exprs() map[string]string {
	out := map[string]string{}
	for _, p := range g.Panels {
		for _, tg := range p.Targets {
			out[p.Title+"/"+tg.RefID] = tg.Expr
		}
	}
	for i, a := range g.Annotations.List {
		out["annotation "+string(rune('0'+i))] = a.Expr
	}
	return out
}

// metricName finds the metric names in a PromQL expression: flashsale's,
// the Go and process collectors', and Prometheus's own up.
var metricName = regexp.MustCompile(`\b(flashsale_[a-z0-9_]+|process_[a-z0-9_]+|go_[a-z0-9_]+|up)\b`)

// TestGrafanaPanelsNameRealMetrics: every panel's PromQL names a metric that
// a real node (after a sale with sales, refusals and latency) or the
// dashboard's own /metrics really exports; the panels use the provisioned
// datasource.
func TestGrafanaPanelsNameRealMetrics(t *testing.T) {
	g := loadGrafana(t)
	if g.UID == "" || len(g.Panels) < 6 {
		t.Fatalf("dashboard %q has %d panels", g.UID, len(g.Panels))
	}
	ds, err := os.ReadFile(filepath.Join(deploy, "grafana", "provisioning", "datasources", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range g.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if !strings.Contains(string(ds), "uid: "+p.Datasource.UID) {
			t.Errorf("panel %q uses datasource %q, which is not provisioned", p.Title, p.Datasource.UID)
		}
	}

	env := e2e.NewEnv(t)
	n := env.StartNode(t, "node1", nil)
	e2e.CreateSale(t, n.URL, `{"id":"g1","name":"g","stock":2,"price_cents":1}`)
	e2e.Hammer(t, []string{n.URL}, "g1", []string{"a", "a", "b", "c"}, 1) // ok, limit_reached, ok, sold_out
	exported := scrapeNames(t, n.AdminURL+"/metrics")

	rdb := redis.NewClient(&redis.Options{Addr: env.Redis.Addr})
	t.Cleanup(func() { rdb.Close() })
	d, err := dashboard.New(dashboard.Config{Redis: rdb, Nodes: []string{n.AdminURL}})
	if err != nil {
		t.Fatal(err)
	}
	d.Tick(context.Background())
	srv := httptest.NewServer(d.Handler())
	t.Cleanup(srv.Close)
	fromDashboard := scrapeNames(t, srv.URL+"/metrics")

	for where, expr := range g.exprs() {
		names := metricName.FindAllString(expr, -1)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", where, expr)
		}
		for _, m := range names {
			if m != "up" && !exported[m] && !fromDashboard[m] {
				t.Errorf("%s: %s is exported neither by a node nor by the dashboard (%q)", where, m, expr)
			}
		}
	}
}

// scrapeNames returns the sample names of a metrics endpoint (histograms
// give their _bucket, _sum and _count).
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			out[line[:i]] = true
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s exported nothing", url)
	}
	return out
}

// TestPrometheusConfig runs promtool on the compose Prometheus config, and
// on every Grafana expression as a recording rule (promtool parses the
// PromQL). Skipped, saying so, where promtool is not installed.
func TestPrometheusConfig(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (apt-get install -y prometheus, or `make deps`): the Prometheus config is not checked here")
	}
	if out, err := exec.Command(promtool, "check", "config", "--syntax-only", filepath.Join(deploy, "prometheus", "prometheus.yml")).CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	// Grafana's variables are not PromQL: give them values first.
	vars := strings.NewReplacer("$__rate_interval", "1m", `"$sale"`, `".*"`)
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: grafana\n    rules:\n")
	i := 0
	for _, expr := range loadGrafana(t).exprs() {
		q, _ := json.Marshal(vars.Replace(expr))
		rules.WriteString("      - record: grafana:panel" + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + "\n        expr: " + string(q) + "\n")
		i++
	}
	path := filepath.Join(t.TempDir(), "panels.rules.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Fatalf("the Grafana panels' PromQL does not parse: %v\n%s\n%s", err, out, rules.String())
	}
}
